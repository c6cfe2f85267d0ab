"""Across seeds (mean, std and t-interval of a metric) and between two configurations: a paired t-test over
seeds, and a paired bootstrap over the items both scored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cftclip_core.errors import EvaluationError
from cftclip_core.metrics.counts import Grouped, metrics_from_counts, percentile_interval, resample_chunks
from cftclip_core.metrics.inputs import (
    THRESHOLD_METRICS,
    as_labels,
    as_scores,
    as_seed_values,
    check_confidence,
    check_metric,
    check_resamples,
    check_threshold_value,
    json_float,
)


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample std (ddof=1) and t-interval of a metric across seeds (NaN std/CI if n == 1)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "mean": json_float(self.mean),
            "std": json_float(self.std),
            "ci_low": json_float(self.ci_low),
            "ci_high": json_float(self.ci_high),
            "confidence": self.confidence,
        }


def aggregate_seeds(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """Summarise one metric over seeds: mean ± t_{n-1} * std / sqrt(n)."""
    arr = as_seed_values(values, "per-seed values")
    confidence = check_confidence(confidence)
    n = arr.size
    mean = float(arr.mean())
    if n < 2:
        return SeedSummary(n, mean, math.nan, math.nan, math.nan, confidence)
    std = float(arr.std(ddof=1))
    from scipy import stats  # scipy.stats takes a second to import: only where an interval is computed

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return SeedSummary(n, mean, std, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class PairedSeedTest:
    """Configuration A vs B over the same seeds; differences are A - B, higher = better."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    t_statistic: float
    p_value: float
    wins_a: int
    wins_b: int
    ties: int
    confidence: float


def paired_seed_test(
    values_a: Sequence[float], values_b: Sequence[float], confidence: float = 0.95
) -> PairedSeedTest:
    """Paired t-test (``scipy.stats.ttest_rel``) of one metric; ``values_a[i]`` and
    ``values_b[i]`` must come from the same seed. With one seed, std, interval, t and p are NaN."""
    a = as_seed_values(values_a, "values of configuration A")
    b = as_seed_values(values_b, "values of configuration B")
    if a.size != b.size:
        raise EvaluationError(
            f"configuration A has {a.size} seed values and B has {b.size}; "
            "a paired test needs the same seeds for both."
        )
    diff = aggregate_seeds(a - b, confidence)
    if a.size < 2:
        t_stat = p_value = math.nan
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            from scipy import stats

            result = stats.ttest_rel(a, b)
        t_stat, p_value = float(result.statistic), float(result.pvalue)
    return PairedSeedTest(
        n=a.size,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_diff=diff.mean,
        std_diff=diff.std,
        ci_low=diff.ci_low,
        ci_high=diff.ci_high,
        t_statistic=t_stat,
        p_value=p_value,
        wins_a=int(np.count_nonzero(a > b)),
        wins_b=int(np.count_nonzero(b > a)),
        ties=int(np.count_nonzero(a == b)),
        confidence=diff.confidence,
    )


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Difference A - B of one metric on the same items, resampled jointly.

    ``p_value`` is two-sided: ``min(1, 2 * (1 + #{d_b on the less frequent side of 0}) /
    (1 + n_valid))``, where ties at 0 count on both sides, so p < 1 - confidence roughly when the
    percentile interval excludes 0, and p is never exactly 0.
    """

    metric: str
    value_a: float
    value_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n_resamples: int
    n_valid: int
    confidence: float
    seed: int
    samples: np.ndarray = field(repr=False)


def paired_bootstrap(
    scores_a: Any,
    scores_b: Any,
    labels: Any,
    metric: str = "f1",
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedBootstrapResult:
    """Paired bootstrap over items of ``metric(A) - metric(B)``.

    Each configuration keeps its own threshold (score scales differ between models); thresholds are
    required for threshold-based metrics and ignored by ROC-AUC, average precision and Spearman.
    """
    metric = check_metric(metric)
    a = as_scores(scores_a, "scores of configuration A")
    b = as_scores(scores_b, "scores of configuration B")
    if a.size != b.size:
        raise EvaluationError(
            f"configuration A has {a.size} scores and B has {b.size}; "
            "a paired bootstrap needs scores of both on the same items."
        )
    y = as_labels(labels, a.size)
    n_resamples = check_resamples(n_resamples)
    confidence = check_confidence(confidence)
    for name, t in (("a", threshold_a), ("b", threshold_b)):
        if metric in THRESHOLD_METRICS and t is None:
            raise EvaluationError(
                f"{metric} depends on the threshold: pass threshold_{name} for configuration "
                f"{name.upper()}."
            )
    ga, gb = Grouped.build(a, y), Grouped.build(b, y)
    # Without a threshold (threshold-free metric) any k works; 0 = nothing predicted positive.
    ka = 0 if threshold_a is None else ga.n_above(check_threshold_value(threshold_a))
    kb = 0 if threshold_b is None else gb.n_above(check_threshold_value(threshold_b))
    value_a = float(metrics_from_counts(*ga.counts(), ka)[metric][0])
    value_b = float(metrics_from_counts(*gb.counts(), kb)[metric][0])

    diffs = []
    for idx in resample_chunks(y.size, n_resamples, int(seed)):
        da = metrics_from_counts(*ga.counts(idx), ka)[metric]
        db = metrics_from_counts(*gb.counts(idx), kb)[metric]
        diffs.append(da - db)
    samples = np.concatenate(diffs)
    valid = samples[~np.isnan(samples)]
    if valid.size:
        side = min(np.count_nonzero(valid <= 0), np.count_nonzero(valid >= 0))
        p_value = min(1.0, 2.0 * (1 + side) / (1 + valid.size))
    else:
        p_value = math.nan
    low, high = percentile_interval(samples, confidence)
    return PairedBootstrapResult(
        metric=metric,
        value_a=value_a,
        value_b=value_b,
        difference=value_a - value_b,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        n_resamples=n_resamples,
        n_valid=int(valid.size),
        confidence=confidence,
        seed=int(seed),
        samples=samples,
    )
