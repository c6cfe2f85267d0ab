"""One score set's metrics under one *evaluation choice* (reference, threshold strategy, item set), and the
sentence that states that choice beside every metric shown.

Every page that shows a model's metric (Models, Seeds, Train) computes it here, from the score set stored in
the database, so that the same choice gives the same number everywhere. A training run's own report
(``eval/metrics.json``) took its threshold from the run's validation pairs and its labels from a snapshot at
launch; the pages do not show it, since neither can be reproduced from what the database holds now.
"""

from __future__ import annotations

from dataclasses import dataclass

from cftclip_core import metrics
from cftclip_core.results.data import (
    ALL_ITEMS,
    OUTSIDE_VALIDATION,
    REFERENCES,
    VALIDATION_SPLIT,
    ResultsData,
    evaluated,
    labelled,
)
from cftclip_core.results.thresholds import ThresholdChoice, choose_threshold
from cftclip_core.wording import plural

METRIC_COLUMNS = ("f1", "macro_f1", "precision", "recall", "accuracy", "roc_auc", "average_precision", "spearman")


@dataclass(frozen=True)
class Evaluation:
    """What a metric is measured against: the reference labels, the threshold strategy (tuned per score set:
    their scales differ) and the items evaluated. The defaults are every page's defaults."""

    reference: str = "gold"
    strategy: str = "val-median"
    subset: str = OUTSIDE_VALIDATION


def evaluate_score_set(data: ResultsData, score_set_id: int, strategy: str, subset: str = OUTSIDE_VALIDATION,
                       n_bootstrap: int = 0, seed: int = 0) -> dict[str, object]:
    """The score set's threshold under ``strategy``, its metrics on the labelled items of ``subset`` (with a
    bootstrap interval of F1 when ``n_bootstrap``), how many items they cover, and a ``note`` saying why a
    number is missing."""
    choice = choose_threshold(data, score_set_id, strategy)
    scores, labels = labelled(evaluated(data, score_set_id, subset))
    row: dict[str, object] = {"n_evaluated": int(scores.size), "n_positive": int(labels.sum()),
                              "threshold": choice.value, "threshold_choice": choice, "note": choice.note}
    if choice.value is not None and scores.size:
        report = metrics.evaluate(scores, labels, metrics.Threshold(choice.value, choice.strategy, choice.n_val),
                                  n_bootstrap=n_bootstrap, seed=seed)
        row.update(report.metrics.values())
        if report.bootstrap is not None:
            row["f1_low"], row["f1_high"] = report.bootstrap.intervals["f1"]
        row["note"] = "; ".join(filter(None, [choice.note, *report.metrics.notes]))
    elif not scores.size:
        row["note"] = "no labelled item to evaluate: label items, or pick another reference or subset"
    return row


def describe_threshold(choice: ThresholdChoice) -> str:
    """"0.231 (val-median: the median similarity of 12 'val' items)": the value and how it was chosen."""
    if choice.value is None:
        return f"none ({choice.note})"
    items = plural(choice.n_val, f"'{VALIDATION_SPLIT}' item")
    how = {"val-median": f"val-median: the median similarity of {items}",
           "f1-optimal": f"f1-optimal: the best F1 on {items}, labelled",
           "fixed": "a fixed number"}.get(choice.strategy, choice.strategy)
    if choice.note:
        how = f"{choice.strategy}: {choice.note}"
    return f"{choice.value:.3f} ({how})"


def describe_evaluation(evaluation: Evaluation, n_items: int | None = None, threshold: str | None = None) -> str:
    """The caption beside a metric: reference, threshold and item set (``threshold`` as ``describe_threshold``
    wrote it for one score set; else the strategy alone, for a table of several)."""
    items = {OUTSIDE_VALIDATION: f"the labelled items outside the '{VALIDATION_SPLIT}' split (where thresholds "
                                 "are tuned)",
             ALL_ITEMS: "every labelled item"}.get(evaluation.subset, f"the labelled items of the "
                                                                     f"'{evaluation.subset}' split")
    count = "" if n_items is None else f" ({plural(n_items, 'item')})"
    return (f"Reference: {REFERENCES.get(evaluation.reference, evaluation.reference)}. "
            f"Threshold: {threshold or evaluation.strategy + ', tuned per score set'}. Items: {items}{count}.")
