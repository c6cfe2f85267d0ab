"""The data the results pages work on: one dataset's items with every score set's similarity and the
reference label, and the annotators' votes (``ResultsData``, read from the database by
``annotations.results.load_results``); which items are evaluated, and the model's prediction.

Labels are compared with a *reference*: ``gold`` (a researcher's adjudication, else the annotators'
majority; ties have none) or ``imported`` (the label column of the imported file). Items are predicted 1
iff similarity > threshold. Metrics are computed on the *evaluated* items: by default every labelled item
outside the ``val`` split (all items when the dataset has no ``val`` split).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cftclip_core.errors import CftClipError

REFERENCES = {"gold": "gold (adjudicated, else the annotators' majority)", "imported": "the imported file's label"}
VALIDATION_SPLIT = "val"  # the split thresholds are tuned on, as in ``python -m cftclip_core eval``
OUTSIDE_VALIDATION = "every item outside the val split"
ALL_ITEMS = "all items"


class ResultsError(CftClipError):
    """A results view or a triage verdict that cannot be produced or recorded as asked."""


@dataclass(frozen=True)
class ScoreSetInfo:
    id: int
    model_name: str
    text_field: str
    meaningless: bool  # the tiny offline model's scores

    @property
    def column(self) -> str:
        return f"sim_{self.id}"

    @property
    def name(self) -> str:
        return f"#{self.id} {self.model_name} on {self.text_field}" + (" (tiny model: meaningless)"
                                                                        if self.meaningless else "")


@dataclass(frozen=True)
class ResultsData:
    """One dataset: an ``items`` frame with every score set's similarity and the reference label, and
    the annotators' votes.

    ``items`` columns: item_id, external_id, title, summary, split, media_sha256, image_url, reference
    (Int64, NA = none), reference_source (adjudicated, majority, tie, none or imported), n_votes, n_yes,
    share_yes, annotators_disagree, flagged, ``label_<annotator>`` per annotator and ``sim_<id>`` per score
    set (NaN where that set scored no such item). ``votes``: item_id, annotator, value (skips left out).
    """

    dataset_id: int
    reference: str
    items: pd.DataFrame = field(repr=False)
    votes: pd.DataFrame = field(repr=False)
    score_sets: tuple[ScoreSetInfo, ...]
    annotators: tuple[str, ...]

    def score_set(self, score_set_id: int) -> ScoreSetInfo:
        for info in self.score_sets:
            if info.id == score_set_id:
                return info
        raise ResultsError(f"Score set #{score_set_id} does not belong to this dataset; pick one from its list.")

    def subsets(self) -> list[str]:
        """What the metrics can be computed on: the default, all items, then each split."""
        splits = sorted(s for s in self.items["split"].dropna().unique())
        return [OUTSIDE_VALIDATION, ALL_ITEMS, *splits] if splits else [ALL_ITEMS]


def evaluated(data: ResultsData, score_set_id: int, subset: str = OUTSIDE_VALIDATION) -> pd.DataFrame:
    """The scored items of ``subset`` with their similarity (``similarity``) and reference (NA kept)."""
    items = data.items
    if subset == OUTSIDE_VALIDATION:
        keep = items["split"] != VALIDATION_SPLIT  # NaN splits compare unequal: kept
    elif subset == ALL_ITEMS:
        keep = pd.Series(True, index=items.index)
    else:
        keep = items["split"] == subset
    column = data.score_set(score_set_id).column
    frame = items[keep & items[column].notna()].copy()
    frame["similarity"] = frame[column]
    return frame


def labelled(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, 0/1 reference labels) of the items of ``frame`` that have a reference label."""
    known = frame[frame["reference"].notna()]
    return known["similarity"].to_numpy(dtype=float), known["reference"].to_numpy(dtype=int)


def predict(similarity: pd.Series, threshold: float | pd.Series) -> pd.Series:
    """The model's answer (Int64): 1 where the similarity is above the threshold, else 0; NA where either is
    missing. ``threshold`` is one number or one per row."""
    threshold = pd.Series(threshold, index=similarity.index, dtype=float)
    return (similarity > threshold).astype("Int64").mask(similarity.isna() | threshold.isna())


def with_predictions(frame: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """``frame`` (with ``similarity``) plus ``prediction`` (Int64) and ``model_disagrees`` (model vs reference)."""
    out = frame.copy()
    out["prediction"] = predict(out["similarity"], float("nan") if threshold is None else threshold)
    out["model_disagrees"] = (out["prediction"] != out["reference"]).fillna(False).astype(bool)
    return out


def label_name(value: object) -> str:
    return "unlabelled" if pd.isna(value) else f"{int(value)}"

