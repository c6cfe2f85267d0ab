"""The Articles table: every item with one score set's similarity, its prediction and a disagreement marker;
filters; and one item's similarity under every score set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cftclip_core.results.data import ResultsData, ResultsError, with_predictions
from cftclip_core.results.thresholds import ThresholdChoice


@dataclass(frozen=True)
class ArticleFilter:
    splits: tuple[str, ...] = ()  # empty: every split
    references: tuple[int | None, ...] = ()  # 1, 0 and None (no label); empty: all
    predictions: tuple[int, ...] = ()  # empty: all
    disagreement: str = "any"  # any | annotators (they disagree) | model (model vs reference) | either | none
    flagged_only: bool = False
    text: str = ""  # case-insensitive, in the title, summary or id
DISAGREEMENTS = {"any": "no filter", "annotators": "annotators disagree", "model": "model vs reference",
                 "either": "either", "none": "no disagreement"}


def articles(data: ResultsData, score_set_id: int | None, threshold: float | None) -> pd.DataFrame:
    """Every item with the similarity of one score set (NaN without one), its prediction, and a
    ``disagreement`` marker: annotators (they disagree), model (with the reference), both, or empty."""
    frame = data.items.copy()
    frame["similarity"] = frame[data.score_set(score_set_id).column] if score_set_id is not None else float("nan")
    frame = with_predictions(frame, threshold if score_set_id is not None else None)
    frame["disagreement"] = np.select(
        [frame["annotators_disagree"] & frame["model_disagrees"], frame["annotators_disagree"],
         frame["model_disagrees"]], ["both", "annotators", "model"], "")
    return frame


def filter_articles(frame: pd.DataFrame, wanted: ArticleFilter) -> pd.DataFrame:
    """Rows of an articles frame (``with_predictions`` applied) that match every condition given."""
    keep = pd.Series(True, index=frame.index)
    if wanted.splits:
        keep &= frame["split"].isin(wanted.splits)
    if wanted.references:
        known = [v for v in wanted.references if v is not None]
        keep &= frame["reference"].isin(known).fillna(False).astype(bool) | (
            frame["reference"].isna() if None in wanted.references else False)
    if wanted.predictions:
        keep &= frame["prediction"].isin(list(wanted.predictions)).fillna(False).astype(bool)
    marker = {"annotators": frame["annotators_disagree"], "model": frame["model_disagrees"],
              "either": frame["annotators_disagree"] | frame["model_disagrees"],
              "none": ~(frame["annotators_disagree"] | frame["model_disagrees"])}.get(wanted.disagreement)
    if marker is not None:
        keep &= marker
    if wanted.flagged_only:
        keep &= frame["flagged"]
    text = wanted.text.strip().lower()
    if text:
        haystack = frame["title"].str.lower() + "\n" + frame["summary"].str.lower() + "\n" + \
            frame["external_id"].str.lower()
        keep &= haystack.str.contains(text, regex=False)
    return frame[keep]


def model_similarities(data: ResultsData, item_id: int, thresholds: dict[int, ThresholdChoice]) -> pd.DataFrame:
    """One row per score set for one item: similarity, threshold in force, prediction (for the detail view)."""
    row = data.items[data.items["item_id"] == item_id]
    if row.empty:
        raise ResultsError(f"No item with id {item_id} in this dataset; pick one from the table.")
    records = []
    for info in data.score_sets:
        similarity = row.iloc[0][info.column]
        threshold = thresholds.get(info.id, ThresholdChoice("", None)).value
        scored = not pd.isna(similarity)
        records.append({"score_set": info.name, "similarity": float(similarity) if scored else None,
                        "threshold": threshold,
                        "prediction": int(similarity > threshold) if scored and threshold is not None else None})
    return pd.DataFrame(records, columns=["score_set", "similarity", "threshold", "prediction"])

