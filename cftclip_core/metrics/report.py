"""Metrics at one threshold, their percentile bootstrap intervals, and the evaluation report that puts them
together (what ``python -m cftclip_core eval`` writes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cftclip_core.errors import EvaluationError
from cftclip_core.metrics.counts import Grouped, metrics_from_counts, percentile_interval, prepare, resample_chunks
from cftclip_core.metrics.inputs import (
    METRIC_NAMES,
    check_confidence,
    check_resamples,
    check_threshold_value,
    json_float,
)
from cftclip_core.metrics.thresholds import Threshold, choose_threshold

logger = logging.getLogger("cftclip_core.metrics")


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


def _point_metrics(grouped: Grouped, threshold: float) -> Metrics:
    pos, neg = grouped.counts()
    counted = metrics_from_counts(pos, neg, grouped.n_above(threshold))
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
    s, y = prepare(scores, labels)
    return _point_metrics(Grouped.build(s, y), check_threshold_value(threshold))


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


def _bootstrap(
    grouped: Grouped, threshold: float, n_resamples: int, seed: int, confidence: float
) -> BootstrapResult:
    k = grouped.n_above(threshold)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for idx in resample_chunks(grouped.n, n_resamples, seed):
        chunk = metrics_from_counts(*grouped.counts(idx), k)
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
        intervals={name: percentile_interval(v, confidence) for name, v in samples.items()},
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
    s, y = prepare(scores, labels)
    return _bootstrap(
        Grouped.build(s, y),
        check_threshold_value(threshold),
        check_resamples(n_resamples),
        int(seed),
        check_confidence(confidence),
    )


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
            entry = {"value": json_float(getattr(m, name))}
            if self.bootstrap is not None:
                low, high = self.bootstrap.intervals[name]
                entry["ci_low"], entry["ci_high"] = json_float(low), json_float(high)
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
    value = check_threshold_value(threshold.value)
    confidence = check_confidence(confidence)
    if int(n_bootstrap) < 0:
        raise EvaluationError(f"n_bootstrap must be 0 or more (got {n_bootstrap}).")
    s, y = prepare(scores, labels)
    grouped = Grouped.build(s, y)
    metrics = _point_metrics(grouped, value)
    boot = None
    if n_bootstrap:
        boot = _bootstrap(grouped, value, int(n_bootstrap), int(seed), confidence)
    report = EvaluationReport(threshold=threshold, metrics=metrics, bootstrap=boot)
    for note in report.notes:
        logger.warning("evaluation: %s", note)
    return report
