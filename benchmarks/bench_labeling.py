"""Server-side time from a vote to the next item ready: annotations.labeling vs a naive baseline.

Both run in the same process, one after the other, on a fresh SQLite file each: a dataset of
1,000 items with overlap 3, and 20 annotator threads voting at once, each as fast as it can (a
closed loop with no thinking time: a stress test, real annotators are far slower). The time of
one vote is cast_vote + next_item, the two calls the Annotate page makes, measured around the
calls (no HTTP, no browser).

ours:     annotations.labeling on one shared engine (db.make_engine: WAL, busy timeout,
          BEGIN IMMEDIATE), prebuilt statements, an index-driven next-item query.
baseline: what a first version often does: a new engine per vote, SQLite's default rollback
          journal (no WAL), ORM objects, the vote committed, then every item, label and lease of
          the dataset loaded into Python to pick the next item, and the lease merged and committed.
          On "database is locked" or a key conflict it sleeps 50 ms and re-runs the whole step
          (as Label Studio's middleware re-runs a request), up to 20 times.

Afterwards each side is checked: votes lost (reported as saved but not in the database), items
with more than ``overlap`` labels, and items leased to two annotators at once (a vote that found
its lease gone). Run from the repository root:

    python benchmarks/bench_labeling.py [--votes-each 50] [--postgres URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import sqlalchemy
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from annotations.db import make_engine, session_factory, upgrade, write_session
from annotations.labeling import cast_vote, next_item
from annotations.models import Dataset, Item, Label, LabelEvent, Lease, Media, User, utcnow

N_ITEMS = 1_000
N_ANNOTATORS = 20
OVERLAP = 3
LEASE = dt.timedelta(minutes=15)
NAIVE_RETRIES = 20


def seed(url: str) -> tuple[int, list[int]]:
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    now = utcnow()
    with write_session(factory) as session:
        session.add(Media(sha256="0" * 64, suffix=".jpg", size_bytes=1, width=1, height=1, created_at=now))
        dataset = Dataset(name="bench", description="", created_at=now, item_count=N_ITEMS, overlap=OVERLAP)
        session.add(dataset)
        session.flush()
        session.execute(insert(Item), [
            {"dataset_id": dataset.id, "external_id": f"i{i}", "media_sha256": "0" * 64,
             "title": f"A news title number {i}", "summary": f"A summary of article {i}.", "extra": {}, "position": i}
            for i in range(N_ITEMS)
        ])
        session.execute(insert(User), [
            {"username": f"annotator{i}", "display_name": "", "password_hash": "x", "role": "annotator",
             "active": True, "created_at": now}
            for i in range(N_ANNOTATORS)
        ])
        dataset_id = dataset.id
    with factory() as session:
        users = list(session.scalars(select(User.id).order_by(User.id)))
    engine.dispose()
    return dataset_id, users


# --- the two implementations ---------------------------------------------------------------------
# Each annotator: get a first item (not timed), then votes_each times: vote on it, get the next.
# Returns (seconds per vote, votes reported as saved as (item, user, value), votes whose lease was gone, retries)

Outcome = tuple[list[float], list[tuple[int, int, int]], int, int]


def run_ours(url: str, dataset_id: int, user_id: int, votes_each: int, factory) -> Outcome:
    times: list[float] = []
    saved: list[tuple[int, int, int]] = []
    lease_gone = 0
    card = next_item(factory, dataset_id, user_id)
    for i in range(votes_each):
        if card is None:
            break
        value = i % 2
        start = time.perf_counter()
        result = cast_vote(factory, user_id, card.item_id, value, request_id=f"{user_id}-{i}")
        card = next_item(factory, dataset_id, user_id)
        times.append(time.perf_counter() - start)
        saved.append((result.item_id, user_id, value))
        lease_gone += not result.lease_held
    return times, saved, lease_gone, 0


def run_naive(url: str, dataset_id: int, user_id: int, votes_each: int, factory) -> Outcome:
    times: list[float] = []
    saved: list[tuple[int, int, int]] = []
    lease_gone = retries = 0
    first, tries = _naive_retrying(url, dataset_id, user_id, None, 0)
    retries += tries
    item_id = first[0] if first else None
    for i in range(votes_each):
        if item_id is None:
            break
        value = i % 2
        start = time.perf_counter()
        step, tries = _naive_retrying(url, dataset_id, user_id, item_id, value)
        times.append(time.perf_counter() - start)
        retries += tries
        if step is None:
            break  # gave up: the annotator sees an error
        saved.append((item_id, user_id, value))
        lease_gone += not step[1]
        item_id = step[0]
    return times, saved, lease_gone, retries


def _naive_retrying(
    url: str, dataset_id: int, user_id: int, vote_item: int | None, value: int
) -> tuple[tuple[int | None, bool] | None, int]:
    """Re-run the whole step after a lock error or key conflict; None after too many tries."""
    for attempt in range(NAIVE_RETRIES):
        try:
            return _naive_step(url, dataset_id, user_id, vote_item, value), attempt
        except (OperationalError, IntegrityError, StaleDataError):
            time.sleep(0.05)
    return None, NAIVE_RETRIES


def _naive_step(url: str, dataset_id: int, user_id: int, vote_item: int | None, value: int) -> tuple[int | None, bool]:
    """Save a vote (if any), then pick and lease the next item by looking at everything in Python."""
    engine = create_engine(url, connect_args={"timeout": 5.0})
    try:
        with Session(engine) as session:
            had_lease = True
            now = utcnow()
            if vote_item is not None:
                session.merge(Label(item_id=vote_item, user_id=user_id, value=value, reasons=[], note="",
                                    flagged=False, created_at=now, updated_at=now))
                session.add(LabelEvent(item_id=vote_item, user_id=user_id, action="vote", value=value,
                                       had_previous=False, reasons=[], note="", flagged=False, at=now))
                lease = session.get(Lease, vote_item)
                had_lease = lease is not None and lease.user_id == user_id
                if had_lease:
                    session.delete(lease)
                session.commit()
            items = session.scalars(select(Item).where(Item.dataset_id == dataset_id)).all()
            labels = session.scalars(select(Label)).all()
            leases = {lease.item_id: lease for lease in session.scalars(select(Lease)).all()}
            mine = {label.item_id for label in labels if label.user_id == user_id}
            counts = Counter(label.item_id for label in labels if label.value is not None)
            for item in sorted(items, key=lambda it: it.position):
                lease = leases.get(item.id)
                if item.id in mine or counts[item.id] >= OVERLAP or (lease is not None and lease.expires_at > now):
                    continue
                session.merge(Lease(item_id=item.id, user_id=user_id, leased_at=now, expires_at=now + LEASE))
                session.commit()
                return item.id, had_lease
            return None, had_lease
    finally:
        engine.dispose()


# --- running and checking ------------------------------------------------------------------------


def measure(name: str, runner: Callable[..., Outcome], url: str, votes_each: int, annotators: int = N_ANNOTATORS) -> dict:
    dataset_id, users = seed(url)
    users = users[:annotators]
    engine = make_engine(url)
    factory = session_factory(engine)
    if runner is run_naive:
        engine.dispose()
        _set_journal_mode(url, "delete")  # SQLite's default, and Label Studio's
    outcomes: list[Outcome | None] = [None] * len(users)
    errors: list[str] = []
    barrier = threading.Barrier(len(users))

    def annotator(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = runner(url, dataset_id, users[index], votes_each, factory)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    threads = [threading.Thread(target=annotator, args=(i,)) for i in range(len(users))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    engine.dispose()

    times = [t for o in outcomes if o for t in o[0]]
    saved = [v for o in outcomes if o for v in o[1]]
    check = make_engine(url) if runner is run_ours else create_engine(url)
    with Session(check) as session:
        stored = {(label.item_id, label.user_id): label.value for label in session.scalars(select(Label))}
        n_events = session.scalar(select(func.count()).select_from(LabelEvent))
    check.dispose()
    per_item = Counter(item for (item, _), value in stored.items() if value is not None)
    return {
        "implementation": name,
        "annotators": annotators,
        "votes": len(saved),
        "errors_shown_to_annotators": len(errors) + sum(1 for o in outcomes if o and len(o[0]) > len(o[1])),
        "ms_per_vote_and_next": {
            "p50": _ms(_quantile(times, 0.50)),
            "p95": _ms(_quantile(times, 0.95)),
            "max": _ms(max(times)) if times else None,
            "mean": _ms(statistics.fmean(times)) if times else None,
        },
        "votes_per_s": round(len(saved) / wall, 1),
        "wall_s": round(wall, 2),
        "lost": sum(1 for item, user, value in saved if stored.get((item, user)) != value),
        "items_over_overlap": sum(1 for n in per_item.values() if n > OVERLAP),
        "votes_whose_lease_was_gone": sum(o[2] for o in outcomes if o),
        "label_events": n_events,
        "extra_label_events": n_events - len(saved),
        "retries_after_lock_or_conflict": sum(o[3] for o in outcomes if o),
        "first_error": errors[0] if errors else None,
    }


def _set_journal_mode(url: str, mode: str) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        got = conn.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
    assert got == mode, got


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes-each", type=int, default=50, help="votes per annotator (20 annotators)")
    parser.add_argument("--postgres", help="also run ours on this PostgreSQL URL (a fresh schema is created)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ours = measure("ours (annotations.labeling, SQLite WAL)", run_ours, f"sqlite:///{tmp}/ours.db", args.votes_each)
        naive = measure("naive baseline (SQLite rollback journal)", run_naive, f"sqlite:///{tmp}/naive.db", args.votes_each)
        alone = measure("ours, one annotator alone (no contention)", run_ours, f"sqlite:///{tmp}/alone.db", 200, 1)
    report = {
        "benchmark": "labeling: server-side time from a vote to the next item ready (cast_vote + next_item)",
        "setup": {"items": N_ITEMS, "annotators": N_ANNOTATORS, "votes_each": args.votes_each, "overlap": OVERLAP,
                  "closed_loop_no_think_time": True},
        "ours": ours,
        "baseline": naive,
        "p95_ratio_baseline_over_ours": round(naive["ms_per_vote_and_next"]["p95"] / ours["ms_per_vote_and_next"]["p95"], 1),
        "p50_ratio_baseline_over_ours": round(naive["ms_per_vote_and_next"]["p50"] / ours["ms_per_vote_and_next"]["p50"], 1),
        "throughput_ratio_ours_over_baseline": round(ours["votes_per_s"] / naive["votes_per_s"], 1),
        "ours_one_annotator_alone": alone,
        "machine": machine(),
    }
    if args.postgres:
        report["ours_postgresql"] = measure_postgres(args.postgres, args.votes_each)
    print(json.dumps(report, indent=2))


def measure_postgres(url: str, votes_each: int) -> dict:
    from sqlalchemy.engine import make_url

    schema = f"bench_labeling_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        result = measure("ours (annotations.labeling, PostgreSQL)", run_ours, scoped, votes_each)
        result["postgresql"] = admin.dialect.server_version_info and ".".join(map(str, admin.dialect.server_version_info))
        return result
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


if __name__ == "__main__":
    main()
