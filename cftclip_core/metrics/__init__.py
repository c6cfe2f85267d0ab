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

from cftclip_core.metrics.comparisons import (
    PairedBootstrapResult,
    PairedSeedTest,
    SeedSummary,
    aggregate_seeds,
    paired_bootstrap,
    paired_seed_test,
)
from cftclip_core.metrics.inputs import METRIC_NAMES, STRATEGIES, THRESHOLD_METRICS
from cftclip_core.metrics.report import (
    BootstrapResult,
    EvaluationReport,
    Metrics,
    bootstrap_metrics,
    compute_metrics,
    evaluate,
)
from cftclip_core.metrics.thresholds import Threshold, ThresholdSweep, choose_threshold, threshold_sweep

__all__ = [
    "METRIC_NAMES", "STRATEGIES", "THRESHOLD_METRICS", "BootstrapResult", "EvaluationReport", "Metrics",
    "PairedBootstrapResult", "PairedSeedTest", "SeedSummary", "Threshold", "ThresholdSweep", "aggregate_seeds",
    "bootstrap_metrics", "choose_threshold", "compute_metrics", "evaluate", "paired_bootstrap", "paired_seed_test",
    "threshold_sweep",
]
