"""Votes, skips, edits and undo: every change to an annotator's labels, each with one log event.

Votes are never lost: a vote on an item whose lease expired, or was taken over, is still saved.
Each client action can carry a ``request_id``; an action whose id is already recorded changes
nothing and returns the earlier result (double clicks and resent requests count once).

A double click whose second click lands on the next card carries a new request id. To refuse it,
the page passes ``min_seconds_shown`` and, where it knows it, ``shown_at``: when the card was fully
drawn. A vote on (or an undo from) a card shown (or leased to the annotator) less than that long ago
is refused with ``TooSoonError`` and nothing is written. The time the card was handed out alone is
not enough in a browser: the second click's request often waits until the page has drawn the next
card, which can take longer than the minimum.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from annotations.labeling.base import (
    _P,
    MAX_NOTE_LENGTH,
    REASONS,
    LabelingError,
    answer_is_final,
    check_min_seconds,
    check_request_id,
    lock_user,
    now_or,
    refuse_if_too_soon,
    request_id_reused,
    write,
)
from annotations.labeling.queue import DROP_MY_LEASE, HELD_LEASE, MY_LABEL, dataset_row, lease_upsert
from annotations.models import Dataset, Item, Label, LabelEvent, Lease

log = logging.getLogger(__name__)


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


_REVEALS_SCORES = select(Dataset.reveal_score_after_vote).join(Item, Item.dataset_id == Dataset.id).where(
    Item.id == _P("item_id"))
_ITEM_EXISTS = select(Item.id).where(Item.id == _P("item_id"))
_INSERT_LABEL = insert(Label)
_UPDATE_LABEL = update(Label).where(Label.item_id == _P("k_item"), Label.user_id == _P("k_user"))
_INSERT_EVENT = insert(LabelEvent).returning(LabelEvent.id)
_EVENT_BY_REQUEST = select(
    LabelEvent.id, LabelEvent.item_id, LabelEvent.user_id, LabelEvent.action, LabelEvent.value,
    LabelEvent.previous_value, LabelEvent.had_previous,
).where(LabelEvent.request_id == _P("request_id"))


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
    min_seconds_shown: float = 0.0,
    shown_at: datetime | None = None,
    now: datetime | None = None,
) -> VoteResult:
    """Record a vote (1 = shows an actor, 0 = does not) or a skip (None) in one transaction.

    Upserts the annotator's one current label for the item, appends a LabelEvent (with the value
    it replaces, so an edit is traceable) and releases the annotator's lease on the item. Also used
    to relabel an item from the "fix a mistake" list. Nothing is written if a value is invalid, or
    (TooSoonError) if the item was leased to the annotator, or ``shown_at``, less than
    ``min_seconds_shown`` ago.
    """
    reasons_list, note = _check_vote(value, reasons, note, flagged, seconds_spent)
    check_request_id(request_id)
    minimum = check_min_seconds(min_seconds_shown)
    now = now_or(now)
    action = "skip" if value is None else "vote"
    key = {"item_id": item_id, "user_id": user_id}
    try:
        with write(factory) as session:
            conn = session.connection()
            lock_user(conn, user_id)
            if request_id is not None:
                earlier = conn.execute(_EVENT_BY_REQUEST, {"request_id": request_id}).first()
                if earlier is not None:
                    return _replayed_vote(earlier, user_id)
            if conn.execute(_ITEM_EXISTS, key).first() is None:
                raise LabelingError(
                    f"Item {item_id} does not exist (its dataset may have been deleted); nothing was saved. "
                    "Reload the page to get the next item."
                )
            lease = conn.execute(DROP_MY_LEASE, key).first()  # rolled back with everything on an error below
            refuse_if_too_soon(item_id, now, minimum, lease.leased_at if lease is not None else None, shown_at)
            current = conn.execute(MY_LABEL, key).first()
            if current is not None and current.value is not None and conn.execute(_REVEALS_SCORES, key).scalar():
                raise answer_is_final()
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
            lease_held = lease is not None and lease.expires_at > now
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
    """Change an earlier answer (the "my labels" list): a vote like any other, logged with the
    value it replaces."""
    return cast_vote(factory, user_id, item_id, value, **kwargs)


def undo_last(
    factory: sessionmaker[Session],
    user_id: int,
    dataset_id: int,
    *,
    request_id: str | None = None,
    min_seconds_shown: float = 0.0,
    shown_at: datetime | None = None,
    now: datetime | None = None,
) -> int | None:
    """Undo this annotator's most recent vote or skip in the dataset that is not undone yet.

    An edit gets its previous answer back; a first answer is removed. Repeated undos walk further
    back. The item is leased to the annotator again (unless someone else now holds it), so
    ``next_item`` shows it next, and their other leases in the dataset are released. Returns the
    item id, or None when there is nothing to undo. TooSoonError when the card the annotator holds
    was handed out, or ``shown_at``, less than ``min_seconds_shown`` ago (a double press of U).
    """
    check_request_id(request_id)
    minimum = check_min_seconds(min_seconds_shown)
    now = now_or(now)
    with write(factory) as session:
        conn = session.connection()
        lock_user(conn, user_id)
        if request_id is not None:
            earlier = conn.execute(_EVENT_BY_REQUEST, {"request_id": request_id}).first()
            if earlier is not None:
                if earlier.user_id != user_id or earlier.action != "undo":
                    raise request_id_reused()
                return earlier.item_id
        dataset = dataset_row(conn, dataset_id, user_id)
        if minimum:
            held = conn.execute(HELD_LEASE, {"user_id": user_id, "dataset_id": dataset_id, "now": now}).first()
            refuse_if_too_soon(held.item_id if held is not None else None, now, minimum,
                               held.leased_at if held is not None else None, shown_at)
        target = _last_current_event(session, dataset_id, user_id)
        if target is None:
            return None
        if target.action == "vote" and dataset.reveal_score_after_vote:
            raise answer_is_final()
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
        if conn.execute(lease_upsert(conn.dialect.name, True), lease).first() is None:
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
        raise request_id_reused()
    return VoteResult(event.id, event.item_id, event.user_id, event.action, event.value, event.previous_value,
                      bool(event.had_previous), None, True)


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

