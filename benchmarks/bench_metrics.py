"""Speed of evaluation with bootstrap intervals: cftclip_core.metrics vs a naive per-resample loop.

ours:     threshold sweep + f1-optimal threshold + evaluate() (all metrics, 1,000 bootstrap
          resamples), best of 3.
baseline: a Python loop over the same 1,000 resamples calling scikit-learn's f1_score,
          precision_score, recall_score, accuracy_score, roc_auc_score, average_precision_score and
          SciPy's spearmanr on each (no sweep, no macro F1: the baseline does less work), run once.

Both use the same synthetic items and the same resample indices; the largest difference between
their interval bounds is printed as a correctness check. Run from the repository root:

    python benchmarks/bench_metrics.py [--n 1000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import scipy
import sklearn
from scipy import stats
from sklearn import metrics as skm

from cftclip_core import metrics as M

BASELINE_METRICS = (
    "f1", "precision", "recall", "accuracy", "roc_auc", "average_precision", "spearman"
)


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine-like scores rounded to 4 decimals (ties, as real scores have), half positives."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.round(0.22 + 0.04 * labels + 0.03 * rng.normal(size=n), 4)
    return scores, labels


def ours(scores: np.ndarray, labels: np.ndarray, n_resamples: int) -> M.EvaluationReport:
    M.threshold_sweep(scores, labels)
    threshold = M.choose_threshold("f1-optimal", scores, labels)
    return M.evaluate(scores, labels, threshold, n_bootstrap=n_resamples, seed=0)


def baseline(
    scores: np.ndarray, labels: np.ndarray, threshold: float, n_resamples: int
) -> dict[str, tuple[float, float]]:
    idx = np.random.default_rng(0).integers(0, scores.size, size=(n_resamples, scores.size))
    values: dict[str, list[float]] = {name: [] for name in BASELINE_METRICS}
    for row in idx:
        s, y = scores[row], labels[row]
        pred = (s > threshold).astype(int)
        values["f1"].append(skm.f1_score(y, pred, zero_division=0))
        values["precision"].append(skm.precision_score(y, pred, zero_division=0))
        values["recall"].append(skm.recall_score(y, pred, zero_division=0))
        values["accuracy"].append(skm.accuracy_score(y, pred))
        values["roc_auc"].append(skm.roc_auc_score(y, s))
        values["average_precision"].append(skm.average_precision_score(y, s))
        values["spearman"].append(stats.spearmanr(s, y).statistic)
    return {
        name: tuple(float(q) for q in np.quantile(v, [0.025, 0.975])) for name, v in values.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="items")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args()
    scores, labels = synthetic(args.n)

    ours(scores, labels, 10)  # warm-up (imports, first allocations)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        report = ours(scores, labels, args.resamples)
        timings.append(time.perf_counter() - start)
    ours_s = min(timings)

    start = time.perf_counter()
    reference = baseline(scores, labels, report.threshold.value, args.resamples)
    baseline_s = time.perf_counter() - start

    max_ci_diff = max(
        abs(a - b)
        for name in BASELINE_METRICS
        for a, b in zip(report.bootstrap.intervals[name], reference[name])
    )
    print(
        json.dumps(
            {
                "benchmark": "metrics: sweep + metrics + bootstrap CIs",
                "n_items": args.n,
                "n_resamples": args.resamples,
                "ours_s_best_of_3": round(ours_s, 4),
                "ours_s_all": [round(t, 4) for t in timings],
                "baseline": "python loop, sklearn + scipy.spearmanr per resample",
                "baseline_s": round(baseline_s, 4),
                "speedup": round(baseline_s / ours_s, 1),
                "max_abs_ci_bound_difference": max_ci_diff,
                "machine": {
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                    "scipy": scipy.__version__,
                    "sklearn": sklearn.__version__,
                    "cpu_count": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
