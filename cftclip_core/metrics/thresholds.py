"""Metrics at every distinct threshold (the sweep behind the charts) and the threshold strategies:
a fixed number, ``val-median`` (the original code's label-free rule) and ``f1-optimal``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cftclip_core.errors import EvaluationError
from cftclip_core.metrics.counts import Grouped, divide, prepare
from cftclip_core.metrics.inputs import STRATEGIES, as_labels, as_scores, check_threshold_value


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


def sweep_grouped(grouped: Grouped, labels: np.ndarray) -> ThresholdSweep:
    pos, neg = grouped.counts()
    pos, neg = pos[0], neg[0]
    tp = np.concatenate(([0.0], np.cumsum(pos)))[::-1]
    fp = np.concatenate(([0.0], np.cumsum(neg)))[::-1]
    n_pos, n_neg = pos.sum(), neg.sum()
    fn, tn = n_pos - tp, n_neg - fp
    f1 = divide(2 * tp, 2 * tp + fp + fn)
    return ThresholdSweep(
        thresholds=_candidate_thresholds(grouped.values)[::-1].copy(),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        precision=divide(tp, tp + fp),
        recall=divide(tp, np.full_like(tp, n_pos)),
        f1=f1,
        macro_f1=0.5 * (f1 + divide(2 * tn, 2 * tn + fn + fp)),
        accuracy=(tp + tn) / labels.size,
    )


def threshold_sweep(scores: Any, labels: Any) -> ThresholdSweep:
    """Precision, recall, F1, macro F1 and accuracy at every distinct threshold (for charts)."""
    s, y = prepare(scores, labels)
    return sweep_grouped(Grouped.build(s, y), y)


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
        return Threshold(check_threshold_value(strategy), "fixed")
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
        return Threshold(check_threshold_value(value), "fixed")

    if val_scores is None:
        raise EvaluationError(
            f"the {name} strategy needs validation scores; score a validation split first "
            "or pass a fixed threshold."
        )
    s = as_scores(val_scores, "validation scores")
    if name == "val-median":
        return Threshold(float(np.median(s)), name, s.size)

    if val_labels is None:
        raise EvaluationError(
            "f1-optimal needs validation labels; pass them, or use val-median or a fixed threshold."
        )
    y = as_labels(val_labels, s.size, "validation labels")
    if y.min() == y.max():
        raise EvaluationError(
            f"f1-optimal needs both classes in the validation labels, but all are {int(y[0])}; "
            "use a labelled validation split with both classes, or val-median."
        )
    sweep = sweep_grouped(Grouped.build(s, y), y)
    best = int(np.argmax(sweep.f1))  # first maximum in ascending order = lowest threshold
    return Threshold(float(sweep.thresholds[best]), name, s.size)
