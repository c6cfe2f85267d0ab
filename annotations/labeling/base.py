"""What every labeling module shares: the error types, limits, checks, and the write transaction.

Concurrency. Every write runs in one short transaction (``_write``):
- SQLite: ``write_session`` starts it with ``BEGIN IMMEDIATE``, so read-then-write sequences are
  serialised by SQLite's single writer lock. Threads of one process first queue, in arrival
  order, on an in-process lock: it wakes the next writer at once, where SQLite's busy handler
  polls with sleeps of up to 100 ms and lets some writers wait seconds under load.
- PostgreSQL (read committed): each write first locks the acting user's row (``_lock_user``), so
  the actions of one annotator (two tabs, a double click) are serialised and see each other.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import Dataset, User, utcnow
from cftclip_core.errors import CftClipError

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


class LabelingError(CftClipError):
    """A labeling action cannot be done as asked (bad value, unknown item or user, ...)."""


class TooSoonError(LabelingError):
    """An action came before its card had been on screen for the minimum time: a double click or a
    key pressed twice, whose second press reached the next card. Nothing was saved."""

    def __init__(self, item_id: int | None, seconds_shown: float, minimum: float) -> None:
        self.item_id = item_id
        self.seconds_shown = seconds_shown
        self.minimum = minimum
        super().__init__(
            f"Nothing saved: that click or key came {seconds_shown * 1000:.0f} ms after this card appeared, "
            f"sooner than anyone reads it ({minimum * 1000:.0f} ms), so it is taken for the second half of "
            "a double click. Vote again if you meant it."
        )


_P = bindparam  # short alias for the prebuilt statements of this package
_LOCK_USER = select(User.id).where(User.id == _P("user_id")).with_for_update(key_share=True)  # FOR NO KEY UPDATE


def now_or(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (use annotations.models.utcnow())")
    return now


def lock_user(conn: Connection, user_id: int) -> None:
    """Check the user exists and, on PostgreSQL, serialise this user's writes (FOR NO KEY UPDATE
    does not block the foreign-key checks of other annotators' inserts)."""
    if conn.execute(_LOCK_USER, {"user_id": user_id}).first() is None:
        raise LabelingError(f"No user with id {user_id}; sign in again.")


def no_dataset(dataset_id: int) -> LabelingError:
    return LabelingError(f"No dataset with id {dataset_id}; pick one from the list of datasets.")


def get_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise no_dataset(dataset_id)
    return dataset


def answer_is_final() -> LabelingError:
    """Blindness: once the model's score was shown for a vote, changing that vote would use it."""
    return LabelingError(
        "This dataset shows the model's score after each vote, so an answer cannot be changed once given; "
        "flag the item (F) on your next vote or tell a researcher instead. Nothing was changed."
    )


def request_id_reused() -> LabelingError:
    return LabelingError(
        "This request id was already used for a different action; nothing was saved. "
        "Reload the page (each click must send a new request id)."
    )


def check_int(what: str, value: Any, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LabelingError(f"The {what} must be a whole number from {low} to {high}, not {value!r}; nothing was changed.")
    return value


def check_request_id(request_id: Any) -> None:
    if request_id is None:
        return
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise LabelingError(
            f"The request id must be a non-empty text of at most {MAX_REQUEST_ID_LENGTH} characters "
            "(e.g. a UUID); nothing was saved."
        )


def check_min_seconds(min_seconds_shown: Any) -> float:
    if isinstance(min_seconds_shown, bool) or not isinstance(min_seconds_shown, (int, float)) or not (
        math.isfinite(min_seconds_shown) and min_seconds_shown >= 0
    ):
        raise LabelingError(f"min_seconds_shown must be a number of seconds >= 0, not {min_seconds_shown!r}.")
    return float(min_seconds_shown)


def refuse_if_too_soon(item_id: int | None, now: datetime, minimum: float, *since: datetime | None) -> None:
    """Raise TooSoonError when the latest of ``since`` (the card handed out, the card drawn) is less
    than ``minimum`` seconds before ``now``."""
    known = [moment for moment in since if moment is not None]
    if minimum <= 0 or not known:
        return
    shown = (now - max(known)).total_seconds()
    if shown < minimum:
        raise TooSoonError(item_id, max(shown, 0.0), minimum)


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
def write(factory: sessionmaker[Session]) -> Iterator[Session]:
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
def reading(session_or_factory: Session | sessionmaker[Session]) -> Iterator[Session]:
    if isinstance(session_or_factory, Session):
        yield session_or_factory
        return
    with session_or_factory() as session:
        yield session
