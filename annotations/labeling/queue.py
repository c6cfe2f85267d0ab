"""Who gets which item: leases, the order of the queue, assignment and control items.

Each annotator gets the next item that they have not seen yet (a skip counts as seen), that still
needs labels (fewer than ``Dataset.overlap`` non-skip labels) and that nobody holds an unexpired
lease on. The item is leased to them for ``Dataset.lease_minutes``; an absent annotator's lease
simply expires and the item goes to the next person. At most one lease exists per item (the
``leases`` primary key), which is what makes a hand-out exclusive.

Assignment: a dataset with assigned users (``DatasetAssignment``) hands items only to them; one
without is open to everyone.

Control items (``ControlItem``) have a known answer and are mixed in: an annotator's next item is a
control item they have not seen whenever fewer than ``floor(control_rate * (seen + 1))`` of the
items they have seen were control items (rate 0.1: every tenth item). Control items are wanted from
every annotator (no overlap limit) and are never handed out in the ordinary order; a card does not
say whether it shows one.

PostgreSQL (read committed): candidate items are picked with ``FOR NO KEY UPDATE SKIP LOCKED`` so
annotators asking at the same moment get different items without waiting on each other; the lease
is taken with an upsert that only replaces an expired lease, so the primary key decides any race
that remains, and the item is checked again after the lease is taken.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, Select, and_, case, delete, exists, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from annotations.labeling.base import _P, LabelingError, lock_user, no_dataset, now_or, write
from annotations.models import ControlItem, Dataset, DatasetAssignment, Item, Label, Lease, Score

_CANDIDATES_PER_ROUND = 8  # PostgreSQL: items tried per query before asking again
_MAX_ROUNDS = 25


class NotAssignedError(LabelingError):
    """The dataset is assigned to other annotators."""


@dataclass(frozen=True)
class Card:
    """What the Annotate page shows for one item. Holds nothing about other annotators, models or
    control answers; the page finds the image in the media store by ``media_sha256``."""

    item_id: int
    dataset_id: int
    external_id: str
    title: str
    summary: str
    media_sha256: str
    lease_expires_at: datetime
    position: int


# --- prebuilt statements -------------------------------------------------------------------------
# Built once and executed on the session's connection: SQLAlchemy then reuses their compiled form,
# which keeps a vote plus the next item at about a millisecond per call on SQLite.

_DATASET = select(
    Dataset.id, Dataset.name, Dataset.overlap, Dataset.lease_minutes, Dataset.uncertainty_score_set_id,
    Dataset.uncertainty_threshold, Dataset.reveal_score_after_vote, Dataset.control_rate,
    exists().where(DatasetAssignment.dataset_id == Dataset.id).label("restricted"),
    exists().where(DatasetAssignment.dataset_id == Dataset.id, DatasetAssignment.user_id == _P("user_id"))
    .label("assigned"),
    exists().where(ControlItem.dataset_id == Dataset.id).label("has_control"),
).where(Dataset.id == _P("dataset_id"))
HELD_LEASE = (
    select(Lease.item_id, Lease.leased_at)
    .join(Item, Item.id == Lease.item_id)
    .where(Lease.user_id == _P("user_id"), Item.dataset_id == _P("dataset_id"), Lease.expires_at > _P("now"))
    .order_by(Lease.leased_at.desc())
    .limit(1)
)
_RENEW_LEASE = update(Lease).where(Lease.item_id == _P("k_item")).values(expires_at=_P("expires"))
DROP_MY_LEASE = (
    delete(Lease).where(Lease.item_id == _P("item_id"), Lease.user_id == _P("user_id"))
    .returning(Lease.leased_at, Lease.expires_at)
)
_CARD = select(
    Item.id, Item.dataset_id, Item.external_id, Item.title, Item.summary, Item.media_sha256, Item.position
).where(Item.id == _P("item_id"))
MY_LABEL = select(Label.value).where(Label.item_id == _P("item_id"), Label.user_id == _P("user_id"))
_N_LABELS = select(func.count()).select_from(Label).where(Label.item_id == _P("item_id"), Label.value.is_not(None))
_IS_CONTROL = select(ControlItem.item_id).where(ControlItem.item_id == _P("item_id"))
_MY_SEEN = (
    select(func.count(), func.count(ControlItem.item_id))
    .select_from(Label)
    .join(Item, Item.id == Label.item_id)
    .outerjoin(ControlItem, ControlItem.item_id == Label.item_id)
    .where(Label.user_id == _P("user_id"), Item.dataset_id == _P("dataset_id"))
)


def dataset_row(conn: Connection, dataset_id: int, user_id: int) -> Any:
    """The dataset's annotation settings, and whether ``user_id`` may label it."""
    row = conn.execute(_DATASET, {"dataset_id": dataset_id, "user_id": user_id}).first()
    if row is None:
        raise no_dataset(dataset_id)
    return row


def may_label(row: Any) -> bool:
    return not row.restricted or row.assigned


def _not_assigned(row: Any) -> NotAssignedError:
    return NotAssignedError(
        f"Dataset '{row.name}' is assigned to other annotators; pick another dataset, or ask a researcher to "
        "add you on Review > Team."
    )


@functools.cache
def _candidates(by_uncertainty: bool, postgres: bool, control: bool | None) -> Select[tuple[int]]:
    """Items a user may get, best first. Every test is an index lookup per item (labels and leases
    by their primary keys), so a call costs at most one pass over the dataset's position index.

    ``control``: None for a dataset without control items; False for the ordinary items of one
    with control items; True for its control items (wanted from everyone: no overlap limit)."""
    seen = exists().where(Label.item_id == Item.id, Label.user_id == _P("user_id"))
    leased = exists().where(Lease.item_id == Item.id, Lease.expires_at > _P("now"))
    query = select(Item.id).where(Item.dataset_id == _P("dataset_id"), ~seen, ~leased)
    if control:
        query = query.join(ControlItem, ControlItem.item_id == Item.id)
    else:
        n_labels = (
            select(func.count())
            .select_from(Label)
            .where(Label.item_id == Item.id, Label.value.is_not(None))
            .scalar_subquery()
        )
        query = query.where(n_labels < _P("overlap"))
        if control is False:
            query = query.where(~exists().where(ControlItem.item_id == Item.id))
    if by_uncertainty and not control:
        query = query.outerjoin(
            Score, and_(Score.item_id == Item.id, Score.score_set_id == _P("score_set_id"))
        ).order_by(
            Score.similarity.is_(None),
            func.abs(Score.similarity - _P("threshold", type_=Float)),
            Item.position,
        )
    else:
        query = query.order_by(Item.position)
    if not postgres:  # SQLite: the transaction holds the write lock, the first candidate is free
        return query.limit(1)
    # PostgreSQL: skip items that annotators asking at this moment are considering
    return query.limit(_CANDIDATES_PER_ROUND).with_for_update(of=Item, skip_locked=True, key_share=True)


@functools.cache
def lease_upsert(dialect: str, also_own: bool) -> Any:
    """Insert a lease, or take over the item's lease if it expired (``also_own``: or is the user's)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        raise LabelingError(f"Labeling supports SQLite and PostgreSQL databases, not {dialect}; change CFTCLIP_DATABASE_URL.")
    replace_if = Lease.expires_at <= _P("now")
    if also_own:
        replace_if = or_(replace_if, Lease.user_id == _P("user"))
    stmt = dialect_insert(Lease).values(item_id=_P("item"), user_id=_P("user"), leased_at=_P("now"),
                                        expires_at=_P("expires"))
    return stmt.on_conflict_do_update(
        index_elements=[Lease.item_id],
        set_={"user_id": stmt.excluded.user_id, "leased_at": stmt.excluded.leased_at,
              "expires_at": stmt.excluded.expires_at},
        where=replace_if,
    ).returning(Lease.item_id)


def control_turn(seen: int, control_seen: int, rate: float) -> bool:
    """Whether the next item should be a control item: ``rate`` of the items seen so far, rounded down."""
    return control_seen < math.floor(rate * (seen + 1) + 1e-9)


# --- assignment ----------------------------------------------------------------------------------


def next_item(
    factory: sessionmaker[Session], dataset_id: int, user_id: int, *, now: datetime | None = None
) -> Card | None:
    """The item this annotator should label now, leased to them; None when nothing is left for them.

    An unexpired lease the annotator already holds in the dataset is handed back (browser
    refresh, second tab) and renewed. Otherwise the next wanted item is leased: a control item
    on a control turn (see the module docstring), else in position order, or closest to the
    uncertainty threshold first when the dataset sets a score set and a threshold (unscored items
    last). Raises NotAssignedError when the dataset is assigned to other users.
    """
    now = now_or(now)
    with write(factory) as session:
        conn = session.connection()
        lock_user(conn, user_id)
        dataset = dataset_row(conn, dataset_id, user_id)
        if not may_label(dataset):
            raise _not_assigned(dataset)
        expires = now + timedelta(minutes=dataset.lease_minutes)
        mine = {"user_id": user_id, "dataset_id": dataset_id, "now": now}
        held = conn.execute(HELD_LEASE, mine).first()
        if held is not None:
            conn.execute(_RENEW_LEASE, {"k_item": held.item_id, "expires": expires})
            return _card(conn, held.item_id, expires)

        postgres = conn.dialect.name == "postgresql"
        by_uncertainty = dataset.uncertainty_score_set_id is not None and dataset.uncertainty_threshold is not None
        params = {**mine, "overlap": dataset.overlap, "score_set_id": dataset.uncertainty_score_set_id,
                  "threshold": dataset.uncertainty_threshold}
        kinds: list[bool | None] = [None]
        if dataset.has_control:
            seen, control_seen = conn.execute(_MY_SEEN, mine).one()
            kinds = [True, False] if control_turn(seen, control_seen, dataset.control_rate) else [False]
        for control in kinds:
            card = _lease_first(conn, _candidates(by_uncertainty, postgres, control), params, user_id, expires,
                                dataset.overlap)
            if card is not None:
                return card
        return None


def _lease_first(
    conn: Connection, query: Select[tuple[int]], params: dict[str, Any], user_id: int, expires: datetime, overlap: int
) -> Card | None:
    """Lease the first candidate of ``query`` that is still free; None when there is none."""
    postgres = conn.dialect.name == "postgresql"
    take = lease_upsert(conn.dialect.name, False)
    for _ in range(_MAX_ROUNDS):
        candidates = conn.execute(query, params).scalars().all()
        if not candidates:
            return None
        for item_id in candidates:
            if conn.execute(take, {"item": item_id, "user": user_id, "now": params["now"],
                                   "expires": expires}).first() is None:
                continue  # leased by someone after our snapshot (PostgreSQL only)
            if postgres and not _still_wanted(conn, item_id, user_id, overlap):
                conn.execute(DROP_MY_LEASE, {"item_id": item_id, "user_id": user_id})
                continue
            return _card(conn, item_id, expires)
    raise LabelingError("Too many annotators asked for items at the same moment; reload the page to try again.")


def release_leases(factory: sessionmaker[Session], user_id: int) -> int:
    """Give back every item leased to ``user_id`` (they left the Annotate page or signed out), so others
    get them at once instead of after the lease time. Returns how many were released."""
    with write(factory) as session:
        return session.execute(delete(Lease).where(Lease.user_id == user_id)).rowcount or 0


def _still_wanted(conn: Connection, item_id: int, user_id: int, overlap: int) -> bool:
    """Re-check an item against data committed since the candidate query (read committed)."""
    key = {"item_id": item_id, "user_id": user_id}
    if conn.execute(MY_LABEL, key).first() is not None:
        return False
    return conn.execute(_IS_CONTROL, key).first() is not None or (conn.execute(_N_LABELS, key).scalar() or 0) < overlap


def _card(conn: Connection, item_id: int, expires: datetime) -> Card:
    row = conn.execute(_CARD, {"item_id": item_id}).one()
    return Card(
        item_id=row.id,
        dataset_id=row.dataset_id,
        external_id=row.external_id,
        title=row.title,
        summary=row.summary,
        media_sha256=row.media_sha256,
        lease_expires_at=expires,
        position=row.position,
    )


def items_left_for(session: Session, dataset_id: int, user_id: int) -> int:
    """How many ordinary items of the dataset still need this user (not seen by them, fewer than
    ``overlap`` labels), leased to others or not. Control items are not counted: they come only mixed in."""
    overlap = select(Dataset.overlap).where(Dataset.id == dataset_id).scalar_subquery()
    n_labels = (select(func.count()).select_from(Label)
                .where(Label.item_id == Item.id, Label.value.is_not(None)).scalar_subquery())
    seen = exists().where(Label.item_id == Item.id, Label.user_id == user_id)
    control = exists().where(ControlItem.item_id == Item.id)
    return int(session.scalar(
        select(func.coalesce(func.sum(case((and_(~seen, ~control, n_labels < overlap), 1), else_=0)), 0))
        .where(Item.dataset_id == dataset_id)
    ) or 0)
