"""A dataset's annotation settings: labels per item, lease time, score reveal, guidelines, the
uncertainty ordering and the control-item rate."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.labeling.base import (
    LEASE_MINUTES_RANGE,
    MAX_GUIDELINES_LENGTH,
    OVERLAP_RANGE,
    LabelingError,
    check_int,
    get_dataset,
    write,
)
from annotations.models import Dataset, ScoreSet

CONTROL_RATE_RANGE = (0.0, 0.5)  # above half, control items would crowd out the work itself
_UNCHANGED: Any = object()

DEFAULT_GUIDELINES = """\
**Does the thumbnail show at least one actor of the news event in the text?**

- **Yes (Y)**: a person who takes part in the event the text describes is visible: the one who speaks,
  acts, is arrested, elected, injured... A recognisable face is not required if the text makes clear
  who is shown (e.g. a named speaker at the podium).
- **No (N)**: nobody in the image is an actor of the event: a generic or stock photo, a logo or graphic,
  another person, a place or object only, or a crop that hides the subject. Pick reasons if you can.
- **Skip (S)**: the image does not load or you cannot judge; the item goes to someone else.
- **Flag (F)**: mark the item for a researcher to look at, then vote as usual.
"""


def guidelines_of(dataset: Dataset) -> str:
    """The guidelines annotators of the dataset read: the researchers' own, else the built-in ones."""
    return dataset.guidelines or DEFAULT_GUIDELINES


def set_annotation_settings(
    factory: sessionmaker[Session],
    dataset_id: int,
    *,
    overlap: int | None = None,
    lease_minutes: int | None = None,
    reveal_score_after_vote: bool | None = None,
    guidelines: str | None = None,
    control_rate: float | None = None,
    uncertainty_score_set_id: int | None = _UNCHANGED,
    uncertainty_threshold: float | None = _UNCHANGED,
) -> Dataset:
    """Change a dataset's annotation settings; arguments left out stay as they are. For the two
    uncertainty arguments None switches uncertainty ordering off. Guidelines equal to the built-in
    ones are stored as empty (so they follow the built-in text). Nothing changes on an error."""
    changes: dict[str, Any] = {}
    if overlap is not None:
        changes["overlap"] = check_int("overlap (labels per item)", overlap, OVERLAP_RANGE)
    if lease_minutes is not None:
        changes["lease_minutes"] = check_int("lease time in minutes", lease_minutes, LEASE_MINUTES_RANGE)
    if reveal_score_after_vote is not None:
        changes["reveal_score_after_vote"] = bool(reveal_score_after_vote)
    if guidelines is not None:
        if len(guidelines) > MAX_GUIDELINES_LENGTH:
            raise LabelingError(
                f"The guidelines are {len(guidelines):,} characters long; shorten them to at most "
                f"{MAX_GUIDELINES_LENGTH:,} (link to a longer document instead)."
            )
        changes["guidelines"] = "" if guidelines.strip() == DEFAULT_GUIDELINES.strip() else guidelines
    if control_rate is not None:
        changes["control_rate"] = _check_rate(control_rate)
    if uncertainty_threshold is not _UNCHANGED:
        if uncertainty_threshold is not None:
            uncertainty_threshold = _finite(uncertainty_threshold)
            if uncertainty_threshold is None:
                raise LabelingError("The uncertainty threshold must be a finite number (e.g. 0.25); nothing was changed.")
        changes["uncertainty_threshold"] = uncertainty_threshold
    with write(factory) as session:
        dataset = get_dataset(session, dataset_id)
        if uncertainty_score_set_id is not _UNCHANGED:
            if uncertainty_score_set_id is not None:
                owner = session.scalar(select(ScoreSet.dataset_id).where(ScoreSet.id == uncertainty_score_set_id))
                if owner != dataset_id:
                    raise LabelingError(
                        f"Score set {uncertainty_score_set_id} is not a score set of dataset {dataset_id}; "
                        "score this dataset first, then pick one of its score sets. Nothing was changed."
                    )
            changes["uncertainty_score_set_id"] = uncertainty_score_set_id
        for key, value in changes.items():
            setattr(dataset, key, value)
    return dataset


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _check_rate(rate: Any) -> float:
    low, high = CONTROL_RATE_RANGE
    number = _finite(rate)
    if number is None or not low <= number <= high:
        raise LabelingError(
            f"The control rate is the share of an annotator's items that are control items: a number from {low:g} "
            f"to {high:g} (0.1: one item in ten), not {rate!r}; nothing was changed."
        )
    return number
