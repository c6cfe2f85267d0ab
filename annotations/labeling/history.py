"""What an annotator may read about their own work: their labels (to change any of them), comments
on the items they flagged, and the model's score once they have voted (where the dataset allows it).

Blindness: nothing here hands an annotator other annotators' labels, and a model score only
after the annotator's own (non-skip) vote, and only where the dataset allows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from annotations.models import Dataset, Item, ItemComment, Label, Score, ScoreSet, User
from annotations.score_sets import is_meaningless

VALIDATION_SPLIT = "val"  # as the results pages: label-free thresholds come from this split when it has scores


@dataclass(frozen=True)
class RecentLabel:
    item_id: int
    external_id: str
    title: str
    value: int | None
    reasons: list[str]
    note: str
    flagged: bool
    updated_at: datetime


@dataclass(frozen=True)
class LabelPage:
    """One page of an annotator's labels, and how many match the search in all."""

    labels: list[RecentLabel]
    total: int


@dataclass(frozen=True)
class Comment:
    item_id: int
    author: str
    body: str
    at: datetime


@dataclass(frozen=True)
class RevealedScore:
    """The model's view of an item, shown after the annotator's vote: which score set, its similarity,
    the threshold used and where it came from, and the prediction (1: similarity above the threshold)."""

    score_set_id: int
    model_name: str
    text_field: str
    meaningless: bool  # the tiny offline model's scores
    similarity: float
    threshold: float
    threshold_source: str
    prediction: int


def my_labels(
    session: Session, dataset_id: int, user_id: int, *, search: str = "", offset: int = 0, limit: int = 20
) -> LabelPage:
    """This annotator's own answers in the dataset, newest first, optionally only those whose id or
    title contains ``search`` (any case), ``limit`` from ``offset`` on: every label can be reached."""
    query = (
        select(Label.item_id, Item.external_id, Item.title, Label.value, Label.reasons, Label.note, Label.flagged,
               Label.updated_at)
        .join(Item, Item.id == Label.item_id)
        .where(Label.user_id == user_id, Item.dataset_id == dataset_id)
    )
    search = search.strip()
    if search:
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(func.lower(Item.external_id).like(pattern, escape="\\"),
                                func.lower(Item.title).like(pattern, escape="\\")))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(
        query.order_by(Label.updated_at.desc(), Label.item_id.desc()).offset(max(offset, 0)).limit(limit)
    ).all()
    labels = [RecentLabel(r.item_id, r.external_id, r.title, r.value, list(r.reasons or []), r.note, bool(r.flagged),
                          r.updated_at) for r in rows]
    return LabelPage(labels, int(total))


def my_recent_labels(session: Session, dataset_id: int, user_id: int, limit: int = 20) -> list[RecentLabel]:
    """This annotator's own latest answers in the dataset (newest first)."""
    return my_labels(session, dataset_id, user_id, limit=limit).labels


def comments_on_my_flags(session: Session, dataset_id: int, user_id: int) -> list[Comment]:
    """Comments on the items this annotator flagged (the answers to their flags), oldest first."""
    rows = session.execute(
        select(ItemComment.item_id, User.username, ItemComment.body, ItemComment.at)
        .join(User, User.id == ItemComment.user_id)
        .join(Label, (Label.item_id == ItemComment.item_id) & (Label.user_id == user_id))
        .join(Item, Item.id == ItemComment.item_id)
        .where(Item.dataset_id == dataset_id, Label.flagged.is_(True))
        .order_by(ItemComment.at, ItemComment.id)
    ).all()
    return [Comment(*row) for row in rows]


def score_after_vote(session: Session, dataset_id: int, item_id: int, user_id: int) -> RevealedScore | None:
    """The newest score set's view of the item, but only once this annotator has voted on it (a skip
    does not count: skipping, reading the score and undoing would break blindness) and only if the
    dataset reveals scores after votes.

    The threshold is the dataset's uncertainty-ordering threshold when that ordering uses this score
    set, else a label-free one: the median similarity of the set's validation split (all its items
    when that split has none), as the results pages' val-median."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not dataset.reveal_score_after_vote:
        return None
    voted = session.scalar(
        select(Label.value)
        .join(Item, Item.id == Label.item_id)
        .where(Label.item_id == item_id, Label.user_id == user_id, Item.dataset_id == dataset_id)
    )
    if voted is None:
        return None
    row = session.execute(
        select(ScoreSet, Score.similarity)
        .join(Score, Score.score_set_id == ScoreSet.id)
        .where(ScoreSet.dataset_id == dataset_id, Score.item_id == item_id)
        .order_by(ScoreSet.created_at.desc(), ScoreSet.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    score_set, similarity = row
    if dataset.uncertainty_score_set_id == score_set.id and dataset.uncertainty_threshold is not None:
        threshold, source = float(dataset.uncertainty_threshold), "the dataset's ordering threshold"
    else:
        threshold, source = _val_median(session, score_set.id)
    return RevealedScore(score_set.id, score_set.model_name, score_set.text_field, is_meaningless(score_set),
                         float(similarity), threshold, source, int(similarity > threshold))


def _val_median(session: Session, score_set_id: int) -> tuple[float, str]:
    rows = session.execute(
        select(Score.similarity, Item.split).join(Item, Item.id == Score.item_id).where(Score.score_set_id == score_set_id)
    ).all()
    val = [s for s, split in rows if split == VALIDATION_SPLIT]
    if val:
        return float(np.median(val)), f"val-median: the median of its {len(val)} '{VALIDATION_SPLIT}' items"
    return float(np.median([s for s, _ in rows])), f"the median of its {len(rows)} items (no '{VALIDATION_SPLIT}' split)"
