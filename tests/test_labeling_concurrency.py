"""20 annotators labelling at once through the functions the Annotate page calls: nothing lost,
nothing duplicated, every vote logged once, no item handed to two annotators at the same time.

Runs on a file SQLite database (WAL, several pooled connections: the real setup, not ``:memory:``)
and on every database in CFTCLIP_TEST_DATABASE_URLS.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select

from annotations.db import make_engine, session_factory, upgrade, write_session
from annotations.labeling import VoteResult, cast_vote, next_item
from annotations.models import Dataset, Item, Label, LabelEvent, Lease, Media, User, utcnow

N_ITEMS = 500
N_ANNOTATORS = 20
VOTES_EACH = 100
OVERLAP = 3
DOUBLE_CLICKERS = 5  # annotators 0-4 send every 4th vote twice at once, with the same request id


@dataclass
class Annotator:
    user_id: int
    cards: list[int] = field(default_factory=list)
    results: list[VoteResult] = field(default_factory=list)  # one per click (the first answer)
    double_clicks: list[tuple[VoteResult, VoteResult]] = field(default_factory=list)


def _seed(factory) -> tuple[int, list[int]]:
    now = utcnow()
    with write_session(factory) as session:
        session.add(Media(sha256="0" * 64, suffix=".jpg", size_bytes=1, width=1, height=1, created_at=now))
        dataset = Dataset(name="load", description="", created_at=now, item_count=N_ITEMS, overlap=OVERLAP)
        session.add(dataset)
        session.flush()
        session.execute(insert(Item), [
            {"dataset_id": dataset.id, "external_id": f"i{i}", "media_sha256": "0" * 64, "title": f"t{i}",
             "summary": f"s{i}", "extra": {}, "position": i}
            for i in range(N_ITEMS)
        ])
        session.execute(insert(User), [
            {"username": f"annotator{i}", "display_name": "", "password_hash": "x", "role": "annotator",
             "active": True, "created_at": now}
            for i in range(N_ANNOTATORS)
        ])
        dataset_id = dataset.id
    with factory() as session:
        return dataset_id, list(session.scalars(select(User.id).order_by(User.id)))


def test_twenty_annotators_voting_at_once_lose_and_duplicate_nothing(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    dataset_id, user_ids = _seed(factory)
    annotators = [Annotator(user_id) for user_id in user_ids]
    errors: list[BaseException] = []
    start = threading.Barrier(N_ANNOTATORS)

    def work(index: int) -> None:
        me = annotators[index]
        try:
            start.wait()
            for i in range(VOTES_EACH):
                card = next_item(factory, dataset_id, me.user_id)
                if card is None:
                    return
                me.cards.append(card.item_id)
                value = None if i % 3 == 2 else i % 2  # a third are skips: 2,000 clicks, 1,340 votes for 1,500 label slots
                rid = f"u{me.user_id}-{i}"
                if index < DOUBLE_CLICKERS and i % 4 == 0:
                    with ThreadPoolExecutor(2) as pool:
                        first, second = [
                            f.result()
                            for f in [pool.submit(cast_vote, factory, me.user_id, card.item_id, value, request_id=rid)
                                      for _ in range(2)]
                        ]
                    me.double_clicks.append((first, second))
                    me.results.append(first if not first.replayed else second)
                else:
                    me.results.append(cast_vote(factory, me.user_id, card.item_id, value, request_id=rid))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(N_ANNOTATORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [len(a.results) for a in annotators] == [VOTES_EACH] * N_ANNOTATORS

    with factory() as session:
        labels = {(label.item_id, label.user_id): label.value for label in session.scalars(select(Label))}
        events = session.execute(select(LabelEvent.item_id, LabelEvent.user_id, LabelEvent.request_id)).all()
        leases_left = session.scalar(select(func.count()).select_from(Lease))
    engine.dispose()

    committed = {(r.item_id, r.user_id): r.value for a in annotators for r in a.results}
    assert len(committed) == N_ANNOTATORS * VOTES_EACH  # nobody was handed the same item twice
    assert labels == committed  # zero lost, nothing extra
    assert all(not r.replayed and r.lease_held for a in annotators for r in a.results)  # exclusive leases
    per_item = Counter(item for (item, _), value in labels.items() if value is not None)
    assert max(per_item.values()) <= OVERLAP
    assert len(events) == len(committed)  # exactly one event per vote
    assert Counter((item, user) for item, user, _ in events) == Counter(committed.keys())
    assert {rid for _, _, rid in events} == {f"u{u}-{i}" for u in user_ids for i in range(VOTES_EACH)}
    assert leases_left == 0
    double = [pair for a in annotators for pair in a.double_clicks]
    assert len(double) == DOUBLE_CLICKERS * VOTES_EACH // 4
    for first, second in double:  # each double click: one write, one replay of the same event
        assert first.event_id == second.event_id and sorted([first.replayed, second.replayed]) == [False, True]


def test_sqlite_writers_of_one_process_are_served_in_arrival_order() -> None:
    """No annotator starves: the in-process write queue hands over first come, first served."""
    import time

    from annotations.labeling.base import _FairLock

    lock = _FairLock()
    order: list[int] = []

    def writer(index: int) -> None:
        with lock:
            order.append(index)

    lock.__enter__()
    threads = []
    for index in range(5):
        threads.append(threading.Thread(target=writer, args=(index,)))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while len(lock._waiting) <= index and time.monotonic() < deadline:  # wait until it queued
            time.sleep(0.001)
    lock.__exit__(None, None, None)
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4]
