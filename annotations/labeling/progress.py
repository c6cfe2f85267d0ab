"""Counts an annotator sees: their progress and the team's in a dataset, and which datasets still need them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlalchemy import case, exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.labeling.base import get_dataset, reading
from annotations.labeling.queue import items_left_for
from annotations.models import Dataset, DatasetAssignment, Item, Label


@dataclass(frozen=True)
class Progress:
    n_items: int
    overlap: int
    labels_needed: int  # n_items * overlap
    team_labels: int  # non-skip labels counted towards that target (at most ``overlap`` per item)
    items_complete: int  # items with at least ``overlap`` non-skip labels
    my_labels: int  # this annotator's non-skip labels in the dataset
    my_skips: int


@dataclass(frozen=True)
class DatasetChoice:
    """A dataset the user may label, and how many of its items still need them."""

    dataset_id: int
    name: str
    items_left: int


def progress(session_or_factory: Session | sessionmaker[Session], dataset_id: int, user_id: int) -> Progress:
    """Counts for the progress bars: mine and the team's."""
    with reading(session_or_factory) as session:
        team = team_counts(session, dataset_id)
        mine = session.execute(
            select(
                func.coalesce(func.sum(case((Label.value.is_not(None), 1), else_=0)), 0),
                func.coalesce(func.sum(case((Label.value.is_(None), 1), else_=0)), 0),
            )
            .join(Item, Item.id == Label.item_id)
            .where(Label.user_id == user_id, Item.dataset_id == dataset_id)
        ).one()
    return dataclasses.replace(team, my_labels=int(mine[0]), my_skips=int(mine[1]))


def team_counts(session: Session, dataset_id: int) -> Progress:
    """The team's counts alone (``my_labels`` and ``my_skips`` are 0)."""
    overlap = get_dataset(session, dataset_id).overlap
    n_items = session.scalar(select(func.count()).select_from(Item).where(Item.dataset_id == dataset_id)) or 0
    per_item = (
        select(func.count().label("n"))
        .select_from(Label)
        .join(Item, Item.id == Label.item_id)
        .where(Item.dataset_id == dataset_id, Label.value.is_not(None))
        .group_by(Label.item_id)
        .subquery()
    )
    team = session.execute(
        select(
            func.coalesce(func.sum(case((per_item.c.n > overlap, overlap), else_=per_item.c.n)), 0),
            func.coalesce(func.sum(case((per_item.c.n >= overlap, 1), else_=0)), 0),
        )
    ).one()
    return Progress(n_items=int(n_items), overlap=overlap, labels_needed=int(n_items) * overlap,
                    team_labels=int(team[0]), items_complete=int(team[1]), my_labels=0, my_skips=0)


def datasets_for(session: Session, user_id: int) -> list[DatasetChoice]:
    """Every dataset the user may label (open to everyone, or assigned to them), by name, with the
    number of its items that still need them."""
    assigned_elsewhere = exists().where(DatasetAssignment.dataset_id == Dataset.id)
    assigned_to_me = exists().where(DatasetAssignment.dataset_id == Dataset.id, DatasetAssignment.user_id == user_id)
    rows = session.execute(
        select(Dataset.id, Dataset.name).where(or_(~assigned_elsewhere, assigned_to_me)).order_by(Dataset.name)
    ).all()
    return [DatasetChoice(row.id, row.name, items_left_for(session, row.id, user_id)) for row in rows]
