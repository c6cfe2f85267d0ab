"""What every metric function accepts: names, and checks of scores, labels and parameters with messages
that say how to fix them (conventions in the package docstring)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cftclip_core.errors import EvaluationError

METRIC_NAMES: tuple[str, ...] = (
    "f1",
    "macro_f1",
    "precision",
    "recall",
    "accuracy",
    "roc_auc",
    "average_precision",
    "spearman",
)

THRESHOLD_METRICS = frozenset({"f1", "macro_f1", "precision", "recall", "accuracy"})

STRATEGIES: tuple[str, ...] = ("val-median", "f1-optimal", "fixed")


def positions(mask: np.ndarray, limit: int = 5) -> str:
    where = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in where[:limit])
    return shown + (", ..." if where.size > limit else "")


def as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(
            f"{name} must be numbers ({exc}); pass a list or array of similarity scores."
        ) from None
    if arr.ndim != 1:
        raise EvaluationError(
            f"{name} must be one-dimensional (got shape {arr.shape}); pass one score per item."
        )
    if arr.size == 0:
        raise EvaluationError(f"{name} is empty; score at least one item before evaluating.")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise EvaluationError(
            f"{name} contain {int(bad.sum())} NaN or infinite value(s) "
            f"(at index {positions(bad)}); "
            "re-score those items or remove them from the evaluation set."
        )
    return arr


def as_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    try:
        arr = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(
            f"{name} must be 0 or 1; found a value that is not a number. "
            "Fix the label column (1 = thumbnail shows an actor, 0 = not)."
        ) from None
    if arr.ndim != 1 or arr.size != n:
        raise EvaluationError(
            f"{name} has shape {arr.shape} but there are {n} scores; pass one label per score."
        )
    missing = np.isnan(arr)
    if missing.any():
        raise EvaluationError(
            f"{name} has {int(missing.sum())} missing value(s) (at index {positions(missing)}); "
            "evaluate only labelled items, or label the rest first."
        )
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        first = arr[np.flatnonzero(bad)[0]]
        raise EvaluationError(
            f"{name} must be 0 or 1, but {int(bad.sum())} value(s) are not "
            f"(e.g. {first:g} at index "
            f"{positions(bad)}); recode them (1 = thumbnail shows an actor, 0 = not)."
        )
    return arr.astype(np.int64)


def check_confidence(confidence: float) -> float:
    if not 0.0 < float(confidence) < 1.0:
        raise EvaluationError(
            f"confidence must lie strictly between 0 and 1 (got {confidence}); use e.g. 0.95."
        )
    return float(confidence)


def check_threshold_value(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise EvaluationError(f"threshold must be a finite number (got {value}).")
    return value


def check_metric(metric: str) -> str:
    if metric not in METRIC_NAMES:
        raise EvaluationError(
            f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}."
        )
    return metric


def check_resamples(n_resamples: int) -> int:
    if int(n_resamples) < 1:
        raise EvaluationError(f"n_resamples must be at least 1 (got {n_resamples}); use e.g. 1000.")
    return int(n_resamples)


def as_seed_values(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(f"{name} must be numbers, one per seed.") from None
    if arr.ndim != 1 or arr.size == 0:
        raise EvaluationError(f"{name} must be a non-empty list of numbers, one per seed.")
    bad = np.isnan(arr)
    if bad.any():
        raise EvaluationError(
            f"{name} has NaN at position {positions(bad)}; the metric is undefined for that seed "
            "(e.g. one class only), so aggregate a metric that is defined or drop that seed."
        )
    return arr


def json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
