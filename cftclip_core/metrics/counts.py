"""The core every metric is computed from: items grouped by tied score, and per-resample counts of positives
and negatives in each group, so that all metrics of 1,000 bootstrap resamples take a few vectorised passes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cftclip_core.metrics.inputs import as_labels, as_scores

# Upper bound on resamples x items held in memory at once by the bootstrap.
CHUNK_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class Grouped:
    """Items grouped by tied score; groups are ordered by descending score."""

    values: np.ndarray  # (G,) distinct scores, descending
    item_code: np.ndarray  # (n,) 2 * group + label, for one bincount per resample chunk
    n: int

    @classmethod
    def build(cls, scores: np.ndarray, labels: np.ndarray) -> Grouped:
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


def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (zero_division=0)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def metrics_from_counts(pos: np.ndarray, neg: np.ndarray, k: int) -> dict[str, np.ndarray]:
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
    f1 = divide(2 * tp, 2 * tp + fp + fn)
    f1_neg = divide(2 * tn, 2 * tn + fn + fp)

    both = (n_pos > 0) & (n_neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Mann-Whitney: each positive beats the negatives in lower groups, ties count half.
        beaten = (n_neg[:, None] - cum_neg + 0.5 * neg) * pos
        auc = np.where(both, beaten.sum(axis=1) / (n_pos * n_neg), np.nan)
        # AP: each positive contributes the precision at the end of its tie group.
        cum = cum_pos + cum_neg
        # With no negatives AP would be trivially 1 (scikit-learn's value); NaN like the others.
        ap = np.where(both, (pos * divide(cum_pos, cum)).sum(axis=1) / n_pos, np.nan)
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
        "precision": divide(tp, tp + fp),
        "recall": divide(tp, n_pos),
        "accuracy": (tp + tn) / n,
        "roc_auc": auc,
        "average_precision": ap,
        "spearman": np.clip(rho, -1.0, 1.0),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def resample_chunks(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_ELEMENTS // n)
    done = 0
    while done < n_resamples:
        b = min(rows, n_resamples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def prepare(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_scores(scores)
    return s, as_labels(labels, s.size)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(low), float(high))
