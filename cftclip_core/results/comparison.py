"""Score sets side by side: one metrics table (like a paper's main table, with bootstrap intervals) and a
paired bootstrap of two score sets over the items both scored."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cftclip_core import metrics
from cftclip_core.results.data import OUTSIDE_VALIDATION, ResultsData, ResultsError, evaluated
from cftclip_core.results.evaluation import METRIC_COLUMNS, evaluate_score_set
from cftclip_core.results.thresholds import HISTOGRAM_BINS, choose_threshold


def metrics_table(data: ResultsData, strategy: str, subset: str = OUTSIDE_VALIDATION,
                  n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per score set, like a paper's main table: the threshold of ``strategy``, the metrics on the
    labelled evaluated items, and a bootstrap interval of F1. ``note`` says why a row has no numbers."""
    rows = []
    for info in data.score_sets:
        row = evaluate_score_set(data, info.id, strategy, subset, n_bootstrap, seed)
        rows.append({"score_set_id": info.id, "score_set": info.name, "model": info.model_name,
                     "text_field": info.text_field, **row})
    columns = ["score_set_id", "score_set", "model", "text_field", "n_evaluated", "threshold", *METRIC_COLUMNS,
               "f1_low", "f1_high", "note"]
    return pd.DataFrame(rows).reindex(columns=columns)


@dataclass(frozen=True)
class Comparison:
    """Two score sets on the same labelled items: the paired bootstrap of one metric, A - B."""

    result: metrics.PairedBootstrapResult = field(repr=False)
    threshold_a: float | None
    threshold_b: float | None
    n_items: int
    differences: pd.DataFrame = field(repr=False)  # histogram of the resampled differences: bin_start, bin_end, count
    points: pd.DataFrame = field(repr=False)  # item_id, external_id, title, similarity_a, similarity_b, reference


def compare_score_sets(data: ResultsData, a: int, b: int, strategy: str, metric: str = "f1",
                       subset: str = OUTSIDE_VALIDATION, n_resamples: int = 1000, seed: int = 0) -> Comparison:
    """Paired bootstrap over the labelled items both score sets scored; each keeps its own threshold."""
    if a == b:
        raise ResultsError("Pick two different score sets to compare.")
    frame = evaluated(data, a, subset)
    column_b = data.score_set(b).column
    both = frame[frame[column_b].notna() & frame["reference"].notna()]
    if both.empty:
        raise ResultsError("The two score sets share no labelled item in this subset; score the same dataset with "
                           "both models, label some items, or pick another subset.")
    choice_a, choice_b = choose_threshold(data, a, strategy), choose_threshold(data, b, strategy)
    threshold_a, threshold_b = choice_a.value, choice_b.value
    missing = choice_a if threshold_a is None else choice_b if threshold_b is None else None
    if missing is not None and metric in metrics.THRESHOLD_METRICS:
        raise ResultsError(f"{metric} needs a threshold, but {missing.note}.")
    result = metrics.paired_bootstrap(both["similarity"].to_numpy(float), both[column_b].to_numpy(float),
                                      both["reference"].to_numpy(int), metric=metric, threshold_a=threshold_a,
                                      threshold_b=threshold_b, n_resamples=n_resamples, seed=seed)
    valid = result.samples[~np.isnan(result.samples)]
    counts, edges = np.histogram(valid, bins=HISTOGRAM_BINS) if valid.size else (np.array([], int), np.array([0.0]))
    differences = pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:], "count": counts})
    points = both[["item_id", "external_id", "title", "similarity", column_b, "reference"]].rename(
        columns={"similarity": "similarity_a", column_b: "similarity_b"})
    points["reference"] = points["reference"].astype(int)
    return Comparison(result, threshold_a, threshold_b, len(both), differences, points.reset_index(drop=True))

