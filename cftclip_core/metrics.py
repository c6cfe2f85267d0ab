"""Evaluation of similarity scores against binary labels.

Scores are CLIP cosine similarities, labels are 1 (the thumbnail shows an actor of the news event)
or 0. An item is predicted 1 iff ``score > threshold`` (the rule of the original ``evaluation.py``).

Conventions shared by every function here:

* Scores must be finite; a NaN or infinite score raises :class:`EvaluationError` naming how many
  there are and where (no silent dropping: a missing score usually means a failed image load that
  should be fixed or removed from the set explicitly).
* Labels must be 0 or 1 (booleans and the strings "0"/"1" are accepted); a missing label raises.
* Division by zero (``zero_division=0``, scikit-learn's default value): precision is 0 when nothing
  is predicted positive, recall is 0 when there is no positive label, and an F1 score is 0 when its
  class is absent from both labels and predictions. Each case adds a line to ``Metrics.notes``.
* Macro F1 is the mean of the F1 of class 1 and class 0, always over both classes
  (= ``f1_score(..., average="macro", labels=[0, 1], zero_division=0)``).
* ROC-AUC, average precision and Spearman are undefined (NaN, with a note) when only one class is
  present (also AP with positives only, where scikit-learn returns a trivial 1.0); Spearman is
  also NaN when all scores are tied. Ties in scores count half in ROC-AUC and are grouped in
  average precision exactly as in scikit-learn; Spearman uses mid-ranks as SciPy does.
* Bootstrap resample ``b`` uses row ``b`` of
  ``np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))`` (drawn in row chunks, which
  yields the same rows). The threshold stays fixed: the interval covers the sampling of the
  evaluated items, not the choice of threshold. Intervals are percentile intervals over the
  resamples in which the metric is defined.

All metrics, the threshold sweep and the bootstrap are computed from per-resample counts of
positives and negatives in each group of tied scores, so 1,000 resamples of 1,000 items take a few
vectorised numpy passes instead of 1,000 calls into scikit-learn.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cftclip_core.errors import EvaluationError

logger = logging.getLogger(__name__)

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

# Upper bound on resamples x items held in memory at once by the bootstrap.
_CHUNK_ELEMENTS = 1_000_000


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _positions(mask: np.ndarray, limit: int = 5) -> str:
    where = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in where[:limit])
    return shown + (", ..." if where.size > limit else "")


def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
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
            f"(at index {_positions(bad)}); "
            "re-score those items or remove them from the evaluation set."
        )
    return arr


def _as_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
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
            f"{name} has {int(missing.sum())} missing value(s) (at index {_positions(missing)}); "
            "evaluate only labelled items, or label the rest first."
        )
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        first = arr[np.flatnonzero(bad)[0]]
        raise EvaluationError(
            f"{name} must be 0 or 1, but {int(bad.sum())} value(s) are not "
            f"(e.g. {first:g} at index "
            f"{_positions(bad)}); recode them (1 = thumbnail shows an actor, 0 = not)."
        )
    return arr.astype(np.int64)


def _check_confidence(confidence: float) -> float:
    if not 0.0 < float(confidence) < 1.0:
        raise EvaluationError(
            f"confidence must lie strictly between 0 and 1 (got {confidence}); use e.g. 0.95."
        )
    return float(confidence)


def _check_threshold_value(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise EvaluationError(f"threshold must be a finite number (got {value}).")
    return value


def _check_metric(metric: str) -> str:
    if metric not in METRIC_NAMES:
        raise EvaluationError(
            f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}."
        )
    return metric


# --------------------------------------------------------------------------------------------
# Core: tie groups and per-resample counts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grouped:
    """Items grouped by tied score; groups are ordered by descending score."""

    values: np.ndarray  # (G,) distinct scores, descending
    item_code: np.ndarray  # (n,) 2 * group + label, for one bincount per resample chunk
    n: int

    @classmethod
    def build(cls, scores: np.ndarray, labels: np.ndarray) -> _Grouped:
        ascending, inverse = np.unique(scores, return_inverse=True)
        group = (ascending.size - 1) - inverse.ravel()
        return cls(values=ascending[::-1].copy(), item_code=2 * group + labels, n=scores.size)

    @property
    def n_groups(self) -> int:
        return self.values.size

    def n_above(self, threshold: float) -> int:
        """Number of groups predicted positive (score > threshold)."""
        return int(np.count_nonzero(self.values > threshold))

    def counts(self, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positives and negatives per group, shape (resamples, G); ``idx=None``: the data."""
        g2 = 2 * self.n_groups
        if idx is None:
            c = np.bincount(self.item_code, minlength=g2).reshape(1, self.n_groups, 2)
        else:
            codes = self.item_code[idx]
            codes += (np.arange(idx.shape[0], dtype=np.int64) * g2)[:, None]
            c = np.bincount(codes.ravel(), minlength=idx.shape[0] * g2)
            c = c.reshape(idx.shape[0], self.n_groups, 2)
        return c[..., 1].astype(np.float64), c[..., 0].astype(np.float64)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (zero_division=0)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _metrics_from_counts(pos: np.ndarray, neg: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """All metrics per row of group counts, with the top ``k`` groups predicted positive."""
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    n = n_pos + n_neg
    cum_pos = np.cumsum(pos, axis=1)
    cum_neg = np.cumsum(neg, axis=1)
    if k > 0:
        tp, fp = cum_pos[:, k - 1], cum_neg[:, k - 1]
    else:
        tp = fp = np.zeros_like(n)
    fn, tn = n_pos - tp, n_neg - fp
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    f1_neg = _div(2 * tn, 2 * tn + fn + fp)

    both = (n_pos > 0) & (n_neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Mann-Whitney: each positive beats the negatives in lower groups, ties count half.
        beaten = (n_neg[:, None] - cum_neg + 0.5 * neg) * pos
        auc = np.where(both, beaten.sum(axis=1) / (n_pos * n_neg), np.nan)
        # AP: each positive contributes the precision at the end of its tie group.
        cum = cum_pos + cum_neg
        # With no negatives AP would be trivially 1 (scikit-learn's value); NaN like the others.
        ap = np.where(both, (pos * _div(cum_pos, cum)).sum(axis=1) / n_pos, np.nan)
        # Spearman = Pearson(mid-rank of score, label); centred mid-rank of a group:
        # (n - cum_before - cum_through) / 2, exactly 0 when all scores are tied.
        centred = 0.5 * (n[:, None] - 2 * cum + (pos + neg))
        cov = (pos * centred).sum(axis=1)
        var_rank = ((pos + neg) * centred**2).sum(axis=1)
        rho = cov / np.sqrt(var_rank * n_pos * n_neg / n)
        rho = np.where(both & (var_rank > 0), rho, np.nan)

    return {
        "f1": f1,
        "macro_f1": 0.5 * (f1 + f1_neg),
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, n_pos),
        "accuracy": (tp + tn) / n,
        "roc_auc": auc,
        "average_precision": ap,
        "spearman": np.clip(rho, -1.0, 1.0),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def _resample_chunks(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    done = 0
    while done < n_resamples:
        b = min(rows, n_resamples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _prepare(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_scores(scores)
    return s, _as_labels(labels, s.size)


# --------------------------------------------------------------------------------------------
# Threshold sweep and threshold strategies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdSweep:
    """Metrics at every distinct decision threshold, thresholds ascending.

    Candidates are one value below the lowest score (everything predicted 1), the midpoints between
    consecutive distinct scores, and the highest score (everything predicted 0).
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    macro_f1: np.ndarray
    accuracy: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "threshold": self.thresholds,
                "tp": self.tp.astype(np.int64),
                "fp": self.fp.astype(np.int64),
                "tn": self.tn.astype(np.int64),
                "fn": self.fn.astype(np.int64),
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
                "macro_f1": self.macro_f1,
                "accuracy": self.accuracy,
            }
        )


def _candidate_thresholds(desc: np.ndarray) -> np.ndarray:
    """Threshold predicting the top k groups positive, for k = 0..G (descending thresholds)."""
    if desc.size > 1:
        upper, lower = desc[:-1], desc[1:]
        mid = 0.5 * (upper + lower)
        # Adjacent floats: the midpoint may round up onto the upper score; the lower score then
        # separates the same way (score > lower holds for exactly the top k groups).
        mid = np.where(mid >= upper, lower, mid)
        below = desc[-1] - 0.5 * (desc[-2] - desc[-1])
    else:
        mid = np.empty(0)
        below = desc[-1] - 0.5
    if not below < desc[-1]:
        below = np.nextafter(desc[-1], -np.inf)
    # "score > max" is false for every item, so the top score itself predicts all 0.
    return np.concatenate(([desc[0]], mid, [below]))


def _sweep(grouped: _Grouped, labels: np.ndarray) -> ThresholdSweep:
    pos, neg = grouped.counts()
    pos, neg = pos[0], neg[0]
    tp = np.concatenate(([0.0], np.cumsum(pos)))[::-1]
    fp = np.concatenate(([0.0], np.cumsum(neg)))[::-1]
    n_pos, n_neg = pos.sum(), neg.sum()
    fn, tn = n_pos - tp, n_neg - fp
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return ThresholdSweep(
        thresholds=_candidate_thresholds(grouped.values)[::-1].copy(),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        precision=_div(tp, tp + fp),
        recall=_div(tp, np.full_like(tp, n_pos)),
        f1=f1,
        macro_f1=0.5 * (f1 + _div(2 * tn, 2 * tn + fn + fp)),
        accuracy=(tp + tn) / labels.size,
    )


def threshold_sweep(scores: Any, labels: Any) -> ThresholdSweep:
    """Precision, recall, F1, macro F1 and accuracy at every distinct threshold (for charts)."""
    s, y = _prepare(scores, labels)
    return _sweep(_Grouped.build(s, y), y)


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and how it was chosen (``n_val`` = validation scores it used)."""

    value: float
    strategy: str
    n_val: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "strategy": self.strategy, "n_val": self.n_val}


def choose_threshold(
    strategy: str | float, val_scores: Any = None, val_labels: Any = None
) -> Threshold:
    """Choose a decision threshold.

    * a number (or a string such as ``"0.27"``): ``fixed``, used as given.
    * ``"val-median"``: median of ALL validation scores, label-free, as in the original code (the
      median over a held-out file of matched image-text pairs that has no labels). ``val_labels``
      are ignored, so the same validation scores always give the same threshold.
    * ``"f1-optimal"``: the candidate of :func:`threshold_sweep` with the highest binary F1 on the
      labelled validation split; among equal F1 the lowest threshold wins (more recall).
      Needs both classes in the validation labels.
    """
    if isinstance(strategy, bool):
        raise EvaluationError("threshold strategy must be a number or a strategy name, not a bool.")
    if isinstance(strategy, (int, float, np.number)):
        return Threshold(_check_threshold_value(strategy), "fixed")
    if not isinstance(strategy, str):
        raise EvaluationError(
            f"threshold strategy must be a number or one of {', '.join(STRATEGIES)} "
            f"(got {type(strategy).__name__})."
        )
    name = strategy.strip().lower()
    if name == "fixed":
        raise EvaluationError(
            "the fixed strategy needs a number: pass the threshold itself, e.g. 0.25."
        )
    if name not in STRATEGIES:
        try:
            value = float(name)
        except ValueError:
            raise EvaluationError(
                f"unknown threshold strategy {strategy!r}; use val-median, f1-optimal or a number."
            ) from None
        return Threshold(_check_threshold_value(value), "fixed")

    if val_scores is None:
        raise EvaluationError(
            f"the {name} strategy needs validation scores; score a validation split first "
            "or pass a fixed threshold."
        )
    s = _as_scores(val_scores, "validation scores")
    if name == "val-median":
        return Threshold(float(np.median(s)), name, s.size)

    if val_labels is None:
        raise EvaluationError(
            "f1-optimal needs validation labels; pass them, or use val-median or a fixed threshold."
        )
    y = _as_labels(val_labels, s.size, "validation labels")
    if y.min() == y.max():
        raise EvaluationError(
            f"f1-optimal needs both classes in the validation labels, but all are {int(y[0])}; "
            "use a labelled validation split with both classes, or val-median."
        )
    sweep = _sweep(_Grouped.build(s, y), y)
    best = int(np.argmax(sweep.f1))  # first maximum in ascending order = lowest threshold
    return Threshold(float(sweep.thresholds[best]), name, s.size)


# --------------------------------------------------------------------------------------------
# Metrics at a threshold and bootstrap intervals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """Point estimates at one threshold (see the module docstring for undefined cases)."""

    threshold: float
    f1: float
    macro_f1: float
    precision: float
    recall: float
    accuracy: float
    roc_auc: float
    average_precision: float
    spearman: float
    n: int
    n_pos: int
    n_neg: int
    tp: int
    fp: int
    tn: int
    fn: int
    notes: tuple[str, ...] = ()

    def values(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in METRIC_NAMES}


def _notes(m: dict[str, float], n_pos: int, n_neg: int, all_tied: bool) -> tuple[str, ...]:
    notes = []
    if n_pos == 0 or n_neg == 0:
        present = 1 if n_neg == 0 else 0
        notes.append(
            f"only class {present} is present: ROC-AUC, average precision and Spearman are "
            "undefined (NaN)."
        )
    elif all_tied:
        notes.append("all scores are tied: Spearman is undefined (NaN) and ROC-AUC is 0.5.")
    if m["tp"] + m["fp"] == 0:
        notes.append("no item is predicted 1 (score > threshold): precision is set to 0.")
    if n_pos == 0:
        notes.append("no item is labelled 1: recall and F1 are set to 0.")
    if n_neg == 0 and m["tn"] + m["fn"] == 0:
        notes.append("no item is labelled or predicted 0: the class-0 F1 in macro F1 is set to 0.")
    return tuple(notes)


def _point_metrics(grouped: _Grouped, threshold: float) -> Metrics:
    pos, neg = grouped.counts()
    counted = _metrics_from_counts(pos, neg, grouped.n_above(threshold))
    raw = {k: float(v[0]) for k, v in counted.items()}
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    return Metrics(
        threshold=threshold,
        **{name: raw[name] for name in METRIC_NAMES},
        n=grouped.n,
        n_pos=n_pos,
        n_neg=n_neg,
        tp=int(raw["tp"]),
        fp=int(raw["fp"]),
        tn=int(raw["tn"]),
        fn=int(raw["fn"]),
        notes=_notes(raw, n_pos, n_neg, grouped.n_groups == 1),
    )


def compute_metrics(scores: Any, labels: Any, threshold: float) -> Metrics:
    """All metrics at ``threshold`` (predict 1 iff score > threshold)."""
    s, y = _prepare(scores, labels)
    return _point_metrics(_Grouped.build(s, y), _check_threshold_value(threshold))


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(low), float(high))


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile intervals; ``samples[metric][b]`` = metric on resample b (NaN: undefined)."""

    n_resamples: int
    confidence: float
    seed: int
    samples: dict[str, np.ndarray] = field(repr=False)
    intervals: dict[str, tuple[float, float]]
    n_valid: dict[str, int]
    notes: tuple[str, ...] = ()


def _check_resamples(n_resamples: int) -> int:
    if int(n_resamples) < 1:
        raise EvaluationError(f"n_resamples must be at least 1 (got {n_resamples}); use e.g. 1000.")
    return int(n_resamples)


def _bootstrap(
    grouped: _Grouped, threshold: float, n_resamples: int, seed: int, confidence: float
) -> BootstrapResult:
    k = grouped.n_above(threshold)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for idx in _resample_chunks(grouped.n, n_resamples, seed):
        chunk = _metrics_from_counts(*grouped.counts(idx), k)
        for name in METRIC_NAMES:
            parts[name].append(chunk[name])
    samples = {name: np.concatenate(p) for name, p in parts.items()}
    n_valid = {name: int(np.count_nonzero(~np.isnan(v))) for name, v in samples.items()}
    notes = tuple(
        f"{name} is undefined in {n_resamples - n_valid[name]} of {n_resamples} resamples; "
        "its interval uses the rest."
        for name in METRIC_NAMES
        if 0 < n_valid[name] < n_resamples
    )
    return BootstrapResult(
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        samples=samples,
        intervals={name: _percentile_interval(v, confidence) for name, v in samples.items()},
        n_valid=n_valid,
        notes=notes,
    )


def bootstrap_metrics(
    scores: Any,
    labels: Any,
    threshold: float,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Percentile bootstrap intervals of every metric at a fixed threshold."""
    s, y = _prepare(scores, labels)
    return _bootstrap(
        _Grouped.build(s, y),
        _check_threshold_value(threshold),
        _check_resamples(n_resamples),
        int(seed),
        _check_confidence(confidence),
    )


def _json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class EvaluationReport:
    threshold: Threshold
    metrics: Metrics
    bootstrap: BootstrapResult | None

    @property
    def notes(self) -> tuple[str, ...]:
        return self.metrics.notes + (self.bootstrap.notes if self.bootstrap else ())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict; NaN becomes None."""
        m = self.metrics
        metrics: dict[str, dict[str, float | None]] = {}
        for name in METRIC_NAMES:
            entry = {"value": _json_float(getattr(m, name))}
            if self.bootstrap is not None:
                low, high = self.bootstrap.intervals[name]
                entry["ci_low"], entry["ci_high"] = _json_float(low), _json_float(high)
            metrics[name] = entry
        out: dict[str, Any] = {
            "threshold": self.threshold.to_dict(),
            "n": m.n,
            "n_pos": m.n_pos,
            "n_neg": m.n_neg,
            "confusion": {"tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn},
            "metrics": metrics,
            "bootstrap": None,
            "notes": list(self.notes),
        }
        if self.bootstrap is not None:
            b = self.bootstrap
            out["bootstrap"] = {
                "n_resamples": b.n_resamples,
                "confidence": b.confidence,
                "seed": b.seed,
                "method": "percentile",
                "n_valid": dict(b.n_valid),
            }
        return out


def evaluate(
    scores: Any,
    labels: Any,
    threshold: float | Threshold,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> EvaluationReport:
    """Metrics at ``threshold`` with bootstrap intervals (``n_bootstrap=0`` skips the bootstrap)."""
    if not isinstance(threshold, Threshold):
        threshold = choose_threshold(threshold)
    value = _check_threshold_value(threshold.value)
    confidence = _check_confidence(confidence)
    if int(n_bootstrap) < 0:
        raise EvaluationError(f"n_bootstrap must be 0 or more (got {n_bootstrap}).")
    s, y = _prepare(scores, labels)
    grouped = _Grouped.build(s, y)
    metrics = _point_metrics(grouped, value)
    boot = None
    if n_bootstrap:
        boot = _bootstrap(grouped, value, int(n_bootstrap), int(seed), confidence)
    report = EvaluationReport(threshold=threshold, metrics=metrics, bootstrap=boot)
    for note in report.notes:
        logger.warning("evaluation: %s", note)
    return report


# --------------------------------------------------------------------------------------------
# Across seeds and between configurations
# --------------------------------------------------------------------------------------------


def _as_seed_values(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(f"{name} must be numbers, one per seed.") from None
    if arr.ndim != 1 or arr.size == 0:
        raise EvaluationError(f"{name} must be a non-empty list of numbers, one per seed.")
    bad = np.isnan(arr)
    if bad.any():
        raise EvaluationError(
            f"{name} has NaN at position {_positions(bad)}; the metric is undefined for that seed "
            "(e.g. one class only), so aggregate a metric that is defined or drop that seed."
        )
    return arr


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
            "mean": _json_float(self.mean),
            "std": _json_float(self.std),
            "ci_low": _json_float(self.ci_low),
            "ci_high": _json_float(self.ci_high),
            "confidence": self.confidence,
        }


def aggregate_seeds(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """Summarise one metric over seeds: mean ± t_{n-1} * std / sqrt(n)."""
    arr = _as_seed_values(values, "per-seed values")
    confidence = _check_confidence(confidence)
    n = arr.size
    mean = float(arr.mean())
    if n < 2:
        return SeedSummary(n, mean, math.nan, math.nan, math.nan, confidence)
    std = float(arr.std(ddof=1))
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
    a = _as_seed_values(values_a, "values of configuration A")
    b = _as_seed_values(values_b, "values of configuration B")
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
    metric = _check_metric(metric)
    a = _as_scores(scores_a, "scores of configuration A")
    b = _as_scores(scores_b, "scores of configuration B")
    if a.size != b.size:
        raise EvaluationError(
            f"configuration A has {a.size} scores and B has {b.size}; "
            "a paired bootstrap needs scores of both on the same items."
        )
    y = _as_labels(labels, a.size)
    n_resamples = _check_resamples(n_resamples)
    confidence = _check_confidence(confidence)
    for name, t in (("a", threshold_a), ("b", threshold_b)):
        if metric in THRESHOLD_METRICS and t is None:
            raise EvaluationError(
                f"{metric} depends on the threshold: pass threshold_{name} for configuration "
                f"{name.upper()}."
            )
    ga, gb = _Grouped.build(a, y), _Grouped.build(b, y)
    # Without a threshold (threshold-free metric) any k works; 0 = nothing predicted positive.
    ka = 0 if threshold_a is None else ga.n_above(_check_threshold_value(threshold_a))
    kb = 0 if threshold_b is None else gb.n_above(_check_threshold_value(threshold_b))
    value_a = float(_metrics_from_counts(*ga.counts(), ka)[metric][0])
    value_b = float(_metrics_from_counts(*gb.counts(), kb)[metric][0])

    diffs = []
    for idx in _resample_chunks(y.size, n_resamples, int(seed)):
        da = _metrics_from_counts(*ga.counts(idx), ka)[metric]
        db = _metrics_from_counts(*gb.counts(idx), kb)[metric]
        diffs.append(da - db)
    samples = np.concatenate(diffs)
    valid = samples[~np.isnan(samples)]
    if valid.size:
        side = min(np.count_nonzero(valid <= 0), np.count_nonzero(valid >= 0))
        p_value = min(1.0, 2.0 * (1 + side) / (1 + valid.size))
    else:
        p_value = math.nan
    low, high = _percentile_interval(samples, confidence)
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
