"""Thresholds of a score set and what they trade: each strategy's threshold (``val-median``: median
similarity of the items whose split is ``val``, label-free; ``f1-optimal``: best F1 on the labelled ``val``
items; or a number), metrics at named thresholds, and curves and histograms thinned for charts (well under
Altair's 5,000-row limit whatever the size of the dataset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cftclip_core import metrics
from cftclip_core.agreement import kappa_from_counts
from cftclip_core.errors import EvaluationError
from cftclip_core.results.data import VALIDATION_SPLIT, ResultsData, ResultsError, label_name

STRATEGIES = ("val-median", "f1-optimal")
CURVE_POINTS = 300
HISTOGRAM_BINS = 40


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and where it came from; ``value`` None when the strategy cannot be applied (``note``)."""

    strategy: str
    value: float | None
    n_val: int = 0
    note: str = ""


def choose_threshold(data: ResultsData, score_set_id: int, strategy: str | float) -> ThresholdChoice:
    """The threshold of one score set under a strategy (see the module docstring)."""
    similarity = data.items[data.score_set(score_set_id).column]
    scored = similarity.notna()
    if not scored.any():
        return ThresholdChoice(str(strategy), None, note="this score set scored none of the dataset's items")
    if not isinstance(strategy, str):
        return ThresholdChoice("fixed", metrics.choose_threshold(float(strategy)).value)
    is_val = scored & (data.items["split"] == VALIDATION_SPLIT)
    if strategy == "val-median":
        if not is_val.any():
            value = float(similarity[scored].median())
            return ThresholdChoice(strategy, value, 0, f"no scored item in the '{VALIDATION_SPLIT}' split: the "
                                                       f"median of all {int(scored.sum())} scored items")
        chosen = metrics.choose_threshold(strategy, similarity[is_val].to_numpy())
        return ThresholdChoice(strategy, chosen.value, chosen.n_val)
    if strategy == "f1-optimal":
        labelled = is_val & data.items["reference"].notna()
        try:
            chosen = metrics.choose_threshold(strategy, similarity[labelled].to_numpy(),
                                              data.items.loc[labelled, "reference"].to_numpy(dtype=int))
        except EvaluationError:
            return ThresholdChoice(strategy, None, int(labelled.sum()),
                                   f"f1-optimal needs labelled items of both classes in the '{VALIDATION_SPLIT}' "
                                   "split; label some, or use val-median or your own threshold")
        return ThresholdChoice(strategy, chosen.value, chosen.n_val)
    raise ResultsError(f"Unknown threshold strategy {strategy!r}; use {', '.join(STRATEGIES)} or a number.")


def threshold_curves(scores: np.ndarray, labels: np.ndarray, max_points: int = CURVE_POINTS) -> pd.DataFrame:
    """Precision, recall, F1, accuracy, kappa vs the labels, and ROC coordinates at each threshold, thinned
    to at most ``max_points`` rows (the best-F1 row always kept). Thresholds ascending."""
    sweep = metrics.threshold_sweep(scores, labels).to_frame()
    n_pos, n_neg = int(labels.sum()), int(labels.size - labels.sum())
    sweep["kappa"] = kappa_from_counts(sweep["tp"], sweep["fp"], sweep["tn"], sweep["fn"])
    sweep["tpr"] = sweep["tp"] / n_pos if n_pos else np.nan
    sweep["fpr"] = sweep["fp"] / n_neg if n_neg else np.nan
    keep = np.unique(np.r_[np.linspace(0, len(sweep) - 1, min(max_points, len(sweep))).round().astype(int),
                           int(sweep["f1"].to_numpy().argmax())])
    return sweep.iloc[keep].reset_index(drop=True)


def similarity_histogram(frame: pd.DataFrame, bins: int = HISTOGRAM_BINS) -> pd.DataFrame:
    """Counts of items per similarity bin and reference label (1, 0, unlabelled): ``bin_start, bin_end,
    reference, count``; the same bins for every label."""
    values = frame["similarity"].to_numpy(dtype=float)
    if values.size == 0:
        return pd.DataFrame(columns=["bin_start", "bin_end", "reference", "count"])
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high if high > low else low + 1e-6, bins + 1)
    parts = []
    for name, group in frame.groupby(frame["reference"].map(label_name), sort=True):
        counts, _ = np.histogram(group["similarity"].to_numpy(dtype=float), bins=edges)
        parts.append(pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:], "reference": name,
                                   "count": counts}))
    return pd.concat(parts, ignore_index=True)


def metrics_at(scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float]) -> pd.DataFrame:
    """One row per named threshold: the library's metrics at it, plus kappa against the labels."""
    rows = []
    for name, value in thresholds.items():
        m = metrics.compute_metrics(scores, labels, value)
        rows.append({"threshold_name": name, "threshold": value, "f1": m.f1, "macro_f1": m.macro_f1,
                     "precision": m.precision, "recall": m.recall, "accuracy": m.accuracy,
                     "kappa": float(kappa_from_counts(m.tp, m.fp, m.tn, m.fn)),
                     "tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn})
    return pd.DataFrame(rows)

