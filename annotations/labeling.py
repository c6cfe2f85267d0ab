"""Assignment and labeling: every rule behind the Annotate page (the page only calls these).

Assignment. Each annotator gets the next item that they have not seen yet (a skip counts as
seen), that still needs labels (fewer than ``Dataset.overlap`` non-skip labels) and that nobody
holds an unexpired lease on. The item is leased to them for ``Dataset.lease_minutes``; an absent
annotator's lease simply expires and the item goes to the next person. At most one lease exists
per item (the ``leases`` primary key), which is what makes a hand-out exclusive.

Concurrency. Every write runs in one short transaction:
- SQLite: ``write_session`` starts it with ``BEGIN IMMEDIATE``, so read-then-write sequences are
  serialised by SQLite's single writer lock. Threads of one process first queue, in arrival
  order, on an in-process lock: it wakes the next writer at once, where SQLite's busy handler
  polls with sleeps of up to 100 ms and lets some writers wait seconds under load.
- PostgreSQL (read committed): each write first locks the acting user's row, so the actions of
  one annotator (two tabs, a double click) are serialised and see each other; candidate items are
  picked with ``FOR NO KEY UPDATE SKIP LOCKED`` so annotators asking at the same moment get
  different items without waiting on each other; the lease is taken with an upsert that only
  replaces an expired lease, so the primary key decides any race that remains, and the item is
  checked again after the lease is taken.

Votes are never lost: a vote on an item whose lease expired, or was taken over, is still saved.
Each client action can carry a ``request_id``; an action whose id is already recorded changes
nothing and returns the earlier result (double clicks and resent requests count once).

Blindness: nothing here hands an annotator other annotators' labels, and a model score only
after the annotator's own (non-skip) vote, and only where the dataset allows it.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Float, Select, and_, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import Dataset, Item, Label, LabelEvent, Lease, Score, ScoreSet, User, utcnow
from cftclip_core.errors import CftClipError

log = logging.getLogger(__name__)

REASONS = (
    "generic or stock photo",
    "logo or graphic",
    "wrong person",
    "no person",
    "crop hides the subject",
    "other",
)
MAX_NOTE_LENGTH = 2_000
MAX_GUIDELINES_LENGTH = 20_000
MAX_REQUEST_ID_LENGTH = 64  # LabelEvent.request_id
OVERLAP_RANGE = (1, 20)
LEASE_MINUTES_RANGE = (1, 240)
_CANDIDATES_PER_ROUND = 8  # PostgreSQL: items tried per query before asking again
_MAX_ROUNDS = 25

_UNCHANGED: Any = object()


class LabelingError(CftClipError):
    """A labeling action cannot be done as asked (bad value, unknown item or user, ...)."""


@dataclass(frozen=True)
class Card:
    """What the Annotate page shows for one item. Holds nothing about other annotators or models;
    the page finds the image in the media store by ``media_sha256``."""

    item_id: int
    dataset_id: int
    external_id: str
    title: str
    summary: str
    media_sha256: str
    lease_expires_at: datetime
    position: int


@dataclass(frozen=True)
class VoteResult:
    event_id: int
    item_id: int
    user_id: int
    action: str  # "vote" or "skip"
    value: int | None
    previous_value: int | None
    had_previous: bool  # True: this changed an earlier answer of the same annotator (an edit)
    # Whether the voter still held an unexpired lease on the item. False: saved anyway (late vote).
    # None when ``replayed`` (not recorded with the earlier action).
    lease_held: bool | None
    replayed: bool  # True: the request id was already recorded; nothing was changed this time


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
class RecentLabel:
    item_id: int
    external_id: str
    title: str
    value: int | None
    reasons: list[str]
    note: str
    flagged: bool
    updated_at: datetime


# --- prebuilt statements -------------------------------------------------------------------------
# Built once and executed on the session's connection: SQLAlchemy then reuses their compiled form,
# which keeps a vote plus the next item at about a millisecond per call on SQLite.

_P = bindparam  # short alias for the statements below
_LOCK_USER = select(User.id).where(User.id == _P("user_id")).with_for_update(key_share=True)  # FOR NO KEY UPDATE
_DATASET = select(
    Dataset.id, Dataset.overlap, Dataset.lease_minutes, Dataset.uncertainty_score_set_id, Dataset.uncertainty_threshold,
    Dataset.reveal_score_after_vote,
).where(Dataset.id == _P("dataset_id"))
_REVEALS_SCORES = select(Dataset.reveal_score_after_vote).join(Item, Item.dataset_id == Dataset.id).where(
    Item.id == _P("item_id"))
_HELD_LEASE = (
    select(Lease.item_id)
    .join(Item, Item.id == Lease.item_id)
    .where(Lease.user_id == _P("user_id"), Item.dataset_id == _P("dataset_id"), Lease.expires_at > _P("now"))
    .order_by(Lease.leased_at.desc())
    .limit(1)
)
_RENEW_LEASE = update(Lease).where(Lease.item_id == _P("k_item")).values(expires_at=_P("expires"))
_DROP_MY_LEASE = (
    delete(Lease).where(Lease.item_id == _P("item_id"), Lease.user_id == _P("user_id")).returning(Lease.expires_at)
)
_CARD = select(
    Item.id, Item.dataset_id, Item.external_id, Item.title, Item.summary, Item.media_sha256, Item.position
).where(Item.id == _P("item_id"))
_ITEM_EXISTS = select(Item.id).where(Item.id == _P("item_id"))
_MY_LABEL = select(Label.value).where(Label.item_id == _P("item_id"), Label.user_id == _P("user_id"))
_N_LABELS = select(func.count()).select_from(Label).where(Label.item_id == _P("item_id"), Label.value.is_not(None))
_INSERT_LABEL = insert(Label)
_UPDATE_LABEL = update(Label).where(Label.item_id == _P("k_item"), Label.user_id == _P("k_user"))
_INSERT_EVENT = insert(LabelEvent).returning(LabelEvent.id)
_EVENT_BY_REQUEST = select(
    LabelEvent.id, LabelEvent.item_id, LabelEvent.user_id, LabelEvent.action, LabelEvent.value,
    LabelEvent.previous_value, LabelEvent.had_previous,
).where(LabelEvent.request_id == _P("request_id"))


@functools.cache
def _candidates(by_uncertainty: bool, postgres: bool) -> Select[tuple[int]]:
    """Items a user may get, best first. Every test is an index lookup per item (labels and leases
    by their primary keys), so a call costs at most one pass over the dataset's position index."""
    seen = exists().where(Label.item_id == Item.id, Label.user_id == _P("user_id"))
    n_labels = (
        select(func.count())
        .select_from(Label)
        .where(Label.item_id == Item.id, Label.value.is_not(None))
        .scalar_subquery()
    )
    leased = exists().where(Lease.item_id == Item.id, Lease.expires_at > _P("now"))
    query = select(Item.id).where(Item.dataset_id == _P("dataset_id"), ~seen, ~leased, n_labels < _P("overlap"))
    if by_uncertainty:
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
def _lease_upsert(dialect: str, also_own: bool) -> Any:
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


# --- assignment ----------------------------------------------------------------------------------


def next_item(
    factory: sessionmaker[Session], dataset_id: int, user_id: int, *, now: datetime | None = None
) -> Card | None:
    """The item this annotator should label now, leased to them; None when nothing is left for them.

    An unexpired lease the annotator already holds in the dataset is handed back (browser
    refresh, second tab) and renewed. Otherwise the next wanted item is leased: in position order,
    or closest to the uncertainty threshold first when the dataset sets a score set and a
    threshold (unscored items last).
    """
    now = _now(now)
    with _write(factory) as session:
        conn = session.connection()
        _lock_user(conn, user_id)
        dataset = _dataset_row(conn, dataset_id)
        expires = now + timedelta(minutes=dataset.lease_minutes)
        mine = {"user_id": user_id, "dataset_id": dataset_id, "now": now}
        held = conn.execute(_HELD_LEASE, mine).scalar()
        if held is not None:
            conn.execute(_RENEW_LEASE, {"k_item": held, "expires": expires})
            return _card(conn, held, expires)

        postgres = conn.dialect.name == "postgresql"
        by_uncertainty = dataset.uncertainty_score_set_id is not None and dataset.uncertainty_threshold is not None
        query = _candidates(by_uncertainty, postgres)
        params = {**mine, "overlap": dataset.overlap, "score_set_id": dataset.uncertainty_score_set_id,
                  "threshold": dataset.uncertainty_threshold}
        take = _lease_upsert(conn.dialect.name, False)
        for _ in range(_MAX_ROUNDS):
            candidates = conn.execute(query, params).scalars().all()
            if not candidates:
                return None
            for item_id in candidates:
                if conn.execute(take, {"item": item_id, "user": user_id, "now": now, "expires": expires}).first() is None:
                    continue  # leased by someone after our snapshot (PostgreSQL only)
                if postgres and not _still_wanted(conn, item_id, user_id, dataset.overlap):
                    conn.execute(_DROP_MY_LEASE, {"item_id": item_id, "user_id": user_id})
                    continue
                return _card(conn, item_id, expires)
    raise LabelingError("Too many annotators asked for items at the same moment; reload the page to try again.")


def release_leases(factory: sessionmaker[Session], user_id: int) -> int:
    """Give back every item leased to ``user_id`` (they left the Annotate page or signed out), so others
    get them at once instead of after the lease time. Returns how many were released."""
    with _write(factory) as session:
        return session.execute(delete(Lease).where(Lease.user_id == user_id)).rowcount or 0


def _still_wanted(conn: Connection, item_id: int, user_id: int, overlap: int) -> bool:
    """Re-check an item against data committed since the candidate query (read committed)."""
    key = {"item_id": item_id, "user_id": user_id}
    return conn.execute(_MY_LABEL, key).first() is None and (conn.execute(_N_LABELS, key).scalar() or 0) < overlap


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


# --- votes ---------------------------------------------------------------------------------------


def cast_vote(
    factory: sessionmaker[Session],
    user_id: int,
    item_id: int,
    value: int | None,
    *,
    reasons: Sequence[str] = (),
    note: str = "",
    flagged: bool = False,
    seconds_spent: float | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> VoteResult:
    """Record a vote (1 = shows an actor, 0 = does not) or a skip (None) in one transaction.

    Upserts the annotator's one current label for the item, appends a LabelEvent (with the value
    it replaces, so an edit is traceable) and releases the annotator's lease on the item. Also used
    to relabel an item from the "fix a mistake" list. Nothing is written if a value is invalid.
    """
    reasons_list, note = _check_vote(value, reasons, note, flagged, seconds_spent)
    _check_request_id(request_id)
    now = _now(now)
    action = "skip" if value is None else "vote"
    key = {"item_id": item_id, "user_id": user_id}
    try:
        with _write(factory) as session:
            conn = session.connection()
            _lock_user(conn, user_id)
            if request_id is not None:
                earlier = conn.execute(_EVENT_BY_REQUEST, {"request_id": request_id}).first()
                if earlier is not None:
                    return _replayed_vote(earlier, user_id)
            if conn.execute(_ITEM_EXISTS, key).first() is None:
                raise LabelingError(
                    f"Item {item_id} does not exist (its dataset may have been deleted); nothing was saved. "
                    "Reload the page to get the next item."
                )
            current = conn.execute(_MY_LABEL, key).first()
            if current is not None and current.value is not None and conn.execute(_REVEALS_SCORES, key).scalar():
                raise _answer_is_final()
            fields = {"value": value, "reasons": reasons_list, "note": note, "flagged": flagged,
                      "seconds_spent": seconds_spent, "updated_at": now}
            if current is None:
                conn.execute(_INSERT_LABEL, {**key, "created_at": now, **fields})
            else:
                conn.execute(_UPDATE_LABEL, {"k_item": item_id, "k_user": user_id, **fields})
            previous = current.value if current is not None else None
            event_id = conn.execute(
                _INSERT_EVENT,
                {**key, "action": action, "value": value, "previous_value": previous, "had_previous": current is not None,
                 "reasons": reasons_list, "note": note, "flagged": flagged, "seconds_spent": seconds_spent, "at": now,
                 "request_id": request_id},
            ).scalar_one()
            lease_expiry = conn.execute(_DROP_MY_LEASE, key).scalar()
            lease_held = lease_expiry is not None and lease_expiry > now
    except IntegrityError:
        # The same request id committed by a concurrent transaction (different users only: one
        # user's actions are serialised). Answer like a replay if it is ours.
        if request_id is not None:
            with factory() as session:
                earlier = session.connection().execute(_EVENT_BY_REQUEST, {"request_id": request_id}).first()
            if earlier is not None:
                return _replayed_vote(earlier, user_id)
        raise
    if not lease_held:
        log.info("Late vote kept: user %d, item %d (lease expired or taken over)", user_id, item_id)
    return VoteResult(event_id, item_id, user_id, action, value, previous, current is not None, lease_held, False)


def relabel(
    factory: sessionmaker[Session],
    user_id: int,
    item_id: int,
    value: int | None,
    **kwargs: Any,
) -> VoteResult:
    """Change an earlier answer (the "fix a mistake" list): a vote like any other, logged with the
    value it replaces."""
    return cast_vote(factory, user_id, item_id, value, **kwargs)


def undo_last(
    factory: sessionmaker[Session],
    user_id: int,
    dataset_id: int,
    *,
    request_id: str | None = None,
    now: datetime | None = None,
) -> int | None:
    """Undo this annotator's most recent vote or skip in the dataset that is not undone yet.

    An edit gets its previous answer back; a first answer is removed. Repeated undos walk further
    back. The item is leased to the annotator again (unless someone else now holds it), so
    ``next_item`` shows it next, and their other leases in the dataset are released. Returns the
    item id, or None when there is nothing to undo.
    """
    _check_request_id(request_id)
    now = _now(now)
    with _write(factory) as session:
        conn = session.connection()
        _lock_user(conn, user_id)
        if request_id is not None:
            earlier = conn.execute(_EVENT_BY_REQUEST, {"request_id": request_id}).first()
            if earlier is not None:
                if earlier.user_id != user_id or earlier.action != "undo":
                    raise _request_id_reused()
                return earlier.item_id
        dataset = _dataset_row(conn, dataset_id)
        target = _last_current_event(session, dataset_id, user_id)
        if target is None:
            return None
        if target.action == "vote" and dataset.reveal_score_after_vote:
            raise _answer_is_final()
        item_id = target.item_id
        before = _state_before(session, target) if target.had_previous else None
        if not target.had_previous:
            session.execute(delete(Label).where(Label.item_id == item_id, Label.user_id == user_id))
            restored: dict[str, Any] = {"value": None, "reasons": [], "note": "", "flagged": False, "seconds_spent": None}
        else:
            restored = {
                "value": target.previous_value,
                "reasons": list(before.reasons or []) if before is not None else [],
                "note": before.note if before is not None else "",
                "flagged": bool(before.flagged) if before is not None else False,
                "seconds_spent": before.seconds_spent if before is not None else None,
            }
            session.execute(
                update(Label)
                .where(Label.item_id == item_id, Label.user_id == user_id)
                .values(updated_at=now, **restored)
            )
        session.execute(
            insert(LabelEvent).values(
                item_id=item_id, user_id=user_id, action="undo", previous_value=target.value, had_previous=True,
                at=now, request_id=request_id, **restored,
            )
        )
        session.execute(
            delete(Lease).where(
                Lease.user_id == user_id,
                Lease.item_id != item_id,
                Lease.item_id.in_(select(Item.id).where(Item.dataset_id == dataset_id)),
            )
        )
        expires = now + timedelta(minutes=dataset.lease_minutes)
        lease = {"item": item_id, "user": user_id, "now": now, "expires": expires}
        if conn.execute(_lease_upsert(conn.dialect.name, True), lease).first() is None:
            log.info("Undo by user %d: item %d is leased to someone else now; not re-leased", user_id, item_id)
        return item_id


def _last_current_event(session: Session, dataset_id: int, user_id: int) -> LabelEvent | None:
    """The newest vote/skip of the user in the dataset that no undo has cancelled.

    Undos cancel votes last-in first-out, so walking back from the newest event, each undo
    cancels the next older vote not cancelled yet (bracket matching); usually this reads a few rows.
    """
    pending_undos = 0
    before_id: int | None = None
    while True:
        query = (
            select(LabelEvent)
            .join(Item, Item.id == LabelEvent.item_id)
            .where(LabelEvent.user_id == user_id, Item.dataset_id == dataset_id)
            .order_by(LabelEvent.id.desc())
            .limit(64)
        )
        if before_id is not None:
            query = query.where(LabelEvent.id < before_id)
        events = session.scalars(query).all()
        if not events:
            return None
        for event in events:
            if event.action == "undo":
                pending_undos += 1
            elif pending_undos:
                pending_undos -= 1
            else:
                return event
        before_id = events[-1].id


def _state_before(session: Session, target: LabelEvent) -> LabelEvent | None:
    """The event that set the label ``target`` replaced (same item and user, still current)."""
    events = session.scalars(
        select(LabelEvent)
        .where(LabelEvent.item_id == target.item_id, LabelEvent.user_id == target.user_id, LabelEvent.id < target.id)
        .order_by(LabelEvent.id)
    ).all()
    stack: list[LabelEvent] = []
    for event in events:
        if event.action == "undo":
            if stack:
                stack.pop()
        else:
            stack.append(event)
    return stack[-1] if stack else None


def _replayed_vote(event: Any, user_id: int) -> VoteResult:
    if event.user_id != user_id or event.action not in ("vote", "skip"):
        raise _request_id_reused()
    return VoteResult(event.id, event.item_id, event.user_id, event.action, event.value, event.previous_value,
                      bool(event.had_previous), None, True)


def _request_id_reused() -> LabelingError:
    return LabelingError(
        "This request id was already used for a different action; nothing was saved. "
        "Reload the page (each click must send a new request id)."
    )


# --- reading -------------------------------------------------------------------------------------


def progress(session_or_factory: Session | sessionmaker[Session], dataset_id: int, user_id: int) -> Progress:
    """Counts for the progress bars: mine and the team's."""
    with _reading(session_or_factory) as session:
        dataset = _dataset(session, dataset_id)
        overlap = dataset.overlap
        n_items = session.scalar(select(func.count()).select_from(Item).where(Item.dataset_id == dataset_id)) or 0
        mine = session.execute(
            select(
                func.coalesce(func.sum(case((Label.value.is_not(None), 1), else_=0)), 0),
                func.coalesce(func.sum(case((Label.value.is_(None), 1), else_=0)), 0),
            )
            .join(Item, Item.id == Label.item_id)
            .where(Label.user_id == user_id, Item.dataset_id == dataset_id)
        ).one()
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
    return Progress(
        n_items=int(n_items),
        overlap=overlap,
        labels_needed=int(n_items) * overlap,
        team_labels=int(team[0]),
        items_complete=int(team[1]),
        my_labels=int(mine[0]),
        my_skips=int(mine[1]),
    )


def score_after_vote(session: Session, dataset_id: int, item_id: int, user_id: int) -> float | None:
    """The newest score of the item, but only once this annotator has voted on it (a skip does not
    count: skipping, reading the score and undoing would break blindness) and only if the dataset
    reveals scores after votes."""
    reveal = session.scalar(select(Dataset.reveal_score_after_vote).where(Dataset.id == dataset_id))
    if not reveal:
        return None
    voted = session.scalar(
        select(Label.value)
        .join(Item, Item.id == Label.item_id)
        .where(Label.item_id == item_id, Label.user_id == user_id, Item.dataset_id == dataset_id)
    )
    if voted is None:
        return None
    return session.scalar(
        select(Score.similarity)
        .join(ScoreSet, ScoreSet.id == Score.score_set_id)
        .where(ScoreSet.dataset_id == dataset_id, Score.item_id == item_id)
        .order_by(ScoreSet.created_at.desc(), ScoreSet.id.desc())
        .limit(1)
    )


def my_recent_labels(session: Session, dataset_id: int, user_id: int, limit: int = 20) -> list[RecentLabel]:
    """This annotator's own latest answers in the dataset (newest first), for fixing a mistake."""
    rows = session.execute(
        select(Label.item_id, Item.external_id, Item.title, Label.value, Label.reasons, Label.note, Label.flagged,
               Label.updated_at)
        .join(Item, Item.id == Label.item_id)
        .where(Label.user_id == user_id, Item.dataset_id == dataset_id)
        .order_by(Label.updated_at.desc(), Label.item_id.desc())
        .limit(limit)
    ).all()
    return [
        RecentLabel(r.item_id, r.external_id, r.title, r.value, list(r.reasons or []), r.note, bool(r.flagged), r.updated_at)
        for r in rows
    ]


# --- settings ------------------------------------------------------------------------------------


def set_annotation_settings(
    factory: sessionmaker[Session],
    dataset_id: int,
    *,
    overlap: int | None = None,
    lease_minutes: int | None = None,
    reveal_score_after_vote: bool | None = None,
    guidelines: str | None = None,
    uncertainty_score_set_id: int | None = _UNCHANGED,
    uncertainty_threshold: float | None = _UNCHANGED,
) -> Dataset:
    """Change a dataset's annotation settings; arguments left out stay as they are. For the two
    uncertainty arguments None switches uncertainty ordering off. Nothing changes on an error."""
    changes: dict[str, Any] = {}
    if overlap is not None:
        changes["overlap"] = _check_int("overlap (labels per item)", overlap, OVERLAP_RANGE)
    if lease_minutes is not None:
        changes["lease_minutes"] = _check_int("lease time in minutes", lease_minutes, LEASE_MINUTES_RANGE)
    if reveal_score_after_vote is not None:
        changes["reveal_score_after_vote"] = bool(reveal_score_after_vote)
    if guidelines is not None:
        if len(guidelines) > MAX_GUIDELINES_LENGTH:
            raise LabelingError(
                f"The guidelines are {len(guidelines):,} characters long; shorten them to at most "
                f"{MAX_GUIDELINES_LENGTH:,} (link to a longer document instead)."
            )
        changes["guidelines"] = guidelines
    if uncertainty_threshold is not _UNCHANGED:
        if uncertainty_threshold is not None:
            try:
                uncertainty_threshold = float(uncertainty_threshold)
            except (TypeError, ValueError):
                uncertainty_threshold = math.nan
            if not math.isfinite(uncertainty_threshold):
                raise LabelingError("The uncertainty threshold must be a finite number (e.g. 0.25); nothing was changed.")
        changes["uncertainty_threshold"] = uncertainty_threshold
    with _write(factory) as session:
        dataset = _dataset(session, dataset_id)
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


# --- helpers -------------------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (use annotations.models.utcnow())")
    return now


def _lock_user(conn: Connection, user_id: int) -> None:
    """Check the user exists and, on PostgreSQL, serialise this user's writes (FOR NO KEY UPDATE
    does not block the foreign-key checks of other annotators' inserts)."""
    if conn.execute(_LOCK_USER, {"user_id": user_id}).first() is None:
        raise LabelingError(f"No user with id {user_id}; sign in again.")


def _dataset_row(conn: Connection, dataset_id: int) -> Any:
    row = conn.execute(_DATASET, {"dataset_id": dataset_id}).first()
    if row is None:
        raise _no_dataset(dataset_id)
    return row


def _answer_is_final() -> LabelingError:
    """Blindness: once the model's score was shown for a vote, changing that vote would use it."""
    return LabelingError(
        "This dataset shows the model's score after each vote, so an answer cannot be changed once given; "
        "flag the item (F) on your next vote or tell a researcher instead. Nothing was changed."
    )


def _no_dataset(dataset_id: int) -> LabelingError:
    return LabelingError(f"No dataset with id {dataset_id}; pick one from the list of datasets.")


def _dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise _no_dataset(dataset_id)
    return dataset


def _check_int(what: str, value: Any, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LabelingError(f"The {what} must be a whole number from {low} to {high}, not {value!r}; nothing was changed.")
    return value


def _check_vote(
    value: Any, reasons: Sequence[str], note: Any, flagged: Any, seconds_spent: Any
) -> tuple[list[str], str]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1)):
        raise LabelingError(
            f"A vote must be 1 (shows an actor), 0 (does not) or None (skip), not {value!r}; nothing was saved."
        )
    if isinstance(reasons, str):
        reasons = [reasons]
    reasons_list = list(dict.fromkeys(reasons))
    unknown = [r for r in reasons_list if r not in REASONS]
    if unknown:
        raise LabelingError(
            f"Unknown reason(s) {unknown}; use some of: {', '.join(REASONS)}. Nothing was saved."
        )
    if reasons_list and value != 0:
        raise LabelingError("Reasons explain a 'no' vote; remove them or vote 'no' (N). Nothing was saved.")
    if not isinstance(note, str):
        raise LabelingError("The note must be text; nothing was saved.")
    note = note.strip()
    if len(note) > MAX_NOTE_LENGTH:
        raise LabelingError(
            f"The note is {len(note):,} characters long; shorten it to at most {MAX_NOTE_LENGTH:,}. Nothing was saved."
        )
    if not isinstance(flagged, bool):
        raise LabelingError("flagged must be True or False; nothing was saved.")
    if seconds_spent is not None:
        if isinstance(seconds_spent, bool) or not isinstance(seconds_spent, (int, float)) or not (
            math.isfinite(seconds_spent) and seconds_spent >= 0
        ):
            raise LabelingError(f"seconds_spent must be a number of seconds >= 0, not {seconds_spent!r}; nothing was saved.")
    return reasons_list, note


def _check_request_id(request_id: Any) -> None:
    if request_id is None:
        return
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise LabelingError(
            f"The request id must be a non-empty text of at most {MAX_REQUEST_ID_LENGTH} characters "
            "(e.g. a UUID); nothing was saved."
        )


class _FairLock:
    """A lock handed to waiting threads in arrival order. ``threading.Lock`` is not fair: under
    load one thread can take it again and again while another waits (p95 130 ms vs 60 ms with
    this one, 20 annotators voting flat out in benchmarks/bench_labeling.py)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._guard:
            if not self._held:
                self._held = True
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        try:
            turn.acquire()  # released by the holder when it is our turn
        except BaseException:
            with self._guard:
                if turn in self._waiting:
                    self._waiting.remove(turn)
                else:  # our turn came meanwhile: pass it on
                    self._hand_over()
            raise

    def __exit__(self, *exc: object) -> None:
        with self._guard:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._waiting:
            self._waiting.popleft().release()
        else:
            self._held = False


_sqlite_write_locks: weakref.WeakKeyDictionary[Engine, _FairLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


@contextmanager
def _write(factory: sessionmaker[Session]) -> Iterator[Session]:
    """``write_session``, queued in arrival order behind one in-process lock per SQLite engine
    (see the module docstring); other processes still wait through SQLite's busy timeout."""
    engine = factory.kw.get("bind")
    if not isinstance(engine, Engine) or engine.dialect.name != "sqlite":
        with write_session(factory) as session:
            yield session
        return
    with _locks_guard:
        lock = _sqlite_write_locks.get(engine)
        if lock is None:
            lock = _sqlite_write_locks[engine] = _FairLock()
    with lock, write_session(factory) as session:
        yield session


@contextmanager
def _reading(session_or_factory: Session | sessionmaker[Session]) -> Iterator[Session]:
    if isinstance(session_or_factory, Session):
        yield session_or_factory
        return
    with session_or_factory() as session:
        yield session
