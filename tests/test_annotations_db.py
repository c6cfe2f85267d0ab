"""The database foundation: instance settings, engine behaviour, sessions and schema migrations."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from annotations.db import (
    DatabaseError,
    current_revision,
    head_revision,
    make_engine,
    session_factory,
    upgrade,
    write_session,
)
from annotations.models import Base, Dataset, Item, Media, Score, ScoreSet, utcnow
from annotations.results import hard_cases
from annotations.settings import Settings

TABLES = {"media", "datasets", "items", "score_sets", "scores", "alembic_version"}


def _dataset(name: str) -> Dataset:
    return Dataset(name=name, description="", source_file=None, created_at=utcnow(), item_count=0)


def test_settings_default_to_instance_folder_in_cwd_and_create_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CFTCLIP_INSTANCE", raising=False)
    monkeypatch.delenv("CFTCLIP_DATABASE_URL", raising=False)
    settings = Settings.from_env()
    assert settings.instance_dir == tmp_path / "instance"
    assert settings.database_url == f"sqlite:///{tmp_path / 'instance' / 'studio.db'}"
    assert settings.media_dir == tmp_path / "instance" / "media"
    assert not (tmp_path / "instance").exists()
    settings.ensure()
    for folder in (settings.media_dir, settings.cache_dir, settings.models_dir):
        assert folder.is_dir()


def test_settings_follow_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("CFTCLIP_DATABASE_URL", "postgresql+psycopg://u:p@db/studio")
    settings = Settings.from_env()
    assert settings.models_dir == tmp_path / "elsewhere" / "models"
    assert settings.database_url == "postgresql+psycopg://u:p@db/studio"


def test_upgrade_creates_all_tables_and_is_idempotent(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert current_revision(db_url) == head_revision()


def test_models_match_migrations(db_url: str) -> None:
    """A model change without a migration would break every existing database."""
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def _insert_scored_item(conn: Connection) -> None:
    """Dataset 1 with item 1 and score set 1 scoring it, in SQL that every revision's schema accepts."""
    conn.execute(text("INSERT INTO datasets (id, name, description, created_at, item_count) "
                      "VALUES (1, 'kept', '', CURRENT_TIMESTAMP, 1)"))
    conn.execute(text("INSERT INTO media (sha256, suffix, size_bytes, width, height, created_at) "
                      "VALUES (:sha, '.jpg', 1, 1, 1, CURRENT_TIMESTAMP)"), {"sha": "a" * 64})
    conn.execute(text("INSERT INTO items (id, dataset_id, external_id, media_sha256, title, summary, extra, "
                      "position) VALUES (1, 1, 'x', :sha, 't', 's', '{}', 0)"), {"sha": "a" * 64})
    conn.execute(text("INSERT INTO score_sets (id, dataset_id, model_name, model_fingerprint, text_field, "
                      "created_at, n_items, n_truncated, note) VALUES (1, 1, 'm', 'f', 'title', "
                      "CURRENT_TIMESTAMP, 1, 0, '')"))
    conn.execute(text("INSERT INTO scores (score_set_id, item_id, similarity, truncated) VALUES (1, 1, 0.5, false)"))


def test_upgrade_keeps_existing_data(db_url: str) -> None:
    upgrade(db_url, "0001")  # a database made by the first release, written with its own schema
    engine = make_engine(db_url)
    with engine.begin() as conn:
        _insert_scored_item(conn)
    upgrade(db_url)
    upgrade(db_url)
    factory = session_factory(engine)
    with factory() as session:
        kept = session.scalars(select(Dataset)).one()
        assert (kept.name, kept.overlap, kept.reveal_score_after_vote) == ("kept", 3, False)
        counts = [session.scalar(select(func.count()).select_from(t)) for t in (Item, ScoreSet, Score, Media)]
        assert counts == [1, 1, 1, 1]  # a table rebuild must not cascade-delete what refers to it
    engine.dispose()


def test_database_from_a_newer_version_is_refused_not_touched(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with pytest.raises(DatabaseError, match="newer version"):
        upgrade(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "f00dfeed"
    engine.dispose()


def test_unreachable_database_gives_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'studio.db'}"
    with pytest.raises(DatabaseError, match="CFTCLIP_DATABASE_URL"):
        upgrade(url)


def test_malformed_url_or_missing_driver_gives_a_clear_error() -> None:
    with pytest.raises(DatabaseError, match="not valid") as info:
        make_engine("postgres:/secret@nowhere")
    assert "secret" not in str(info.value)
    with pytest.raises(DatabaseError, match="driver is not installed"):
        make_engine("postgresql+nosuchdriver://user@localhost/db")


def test_write_session_rolls_back_on_error(factory) -> None:
    with pytest.raises(RuntimeError):
        with write_session(factory) as session:
            session.add(_dataset("half"))
            session.flush()
            raise RuntimeError("boom")
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0


def test_foreign_keys_are_enforced(factory) -> None:
    with pytest.raises(IntegrityError):
        with write_session(factory) as session:
            session.add(Item(dataset_id=999, external_id="a", media_sha256="0" * 64, title="t", summary="s", extra={}, position=0))


def test_timestamps_come_back_timezone_aware(factory) -> None:
    with write_session(factory) as session:
        session.add(Media(sha256="a" * 64, suffix=".png", size_bytes=1, width=1, height=1, created_at=utcnow()))
    with factory() as session:
        assert session.get(Media, "a" * 64).created_at.utcoffset() is not None


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 5000
        assert pragma("synchronous") == 2  # FULL: a committed label survives a power cut
    engine.dispose()


def test_twenty_annotators_double_clicking_at_once_each_get_a_connection_without_waiting(db_url: str) -> None:
    """One server's engine serves every tab: 25 requests at once (20 annotators, 5 of them double clicking)
    must not queue for the pool, where a slow machine turned the wait into timeouts."""
    engine = make_engine(db_url)
    engine.pool._timeout = 0.5  # a checkout that would wait for a free connection fails at once instead
    connections = []
    try:
        for _ in range(25):
            connections.append(engine.connect())
            assert connections[-1].exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        for conn in connections:
            conn.close()
        engine.dispose()


def test_concurrent_read_then_write_sessions_do_not_fail_on_sqlite(tmp_path: Path) -> None:
    """Each writer reads the dataset count and inserts a dataset named after it. With deferred
    transactions the second writer would read a stale count (or hit 'database is locked')."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    engines = [make_engine(url), make_engine(url)]  # like two processes
    first_inside = threading.Event()
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            with write_session(session_factory(engines[index])) as session:
                count = session.scalar(select(func.count()).select_from(Dataset))
                if index == 0:
                    first_inside.set()
                    time.sleep(0.3)  # give the other writer the chance to interleave
                session.add(_dataset(f"d{count}"))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    first = threading.Thread(target=writer, args=(0,))
    first.start()
    first_inside.wait(5)
    second = threading.Thread(target=writer, args=(1,))
    second.start()
    first.join()
    second.join()
    assert errors == []
    with session_factory(engines[0])() as session:
        assert sorted(session.scalars(select(Dataset.name))) == ["d0", "d1"]
    for engine in engines:
        engine.dispose()


def test_a_tiny_model_score_set_from_before_the_flag_column_is_flagged_by_the_upgrade(db_url: str) -> None:
    upgrade(db_url, "0006")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        _insert_scored_item(conn)
        conn.execute(text("INSERT INTO score_sets (id, dataset_id, model_name, model_fingerprint, text_field, "
                          "created_at, n_items, n_truncated, note) VALUES (2, 1, 'tiny-demo', 'f', 'title', "
                          "CURRENT_TIMESTAMP, 1, 0, :note)"),
                     {"note": "tiny offline model with random weights: these scores carry no meaning"})
    upgrade(db_url)
    with session_factory(engine)() as session:
        flags = {s.id: (s.meaningless, s.note) for s in session.scalars(select(ScoreSet))}
    assert flags == {1: (False, ""), 2: (True, "")}
    engine.dispose()


def test_a_verdict_from_before_thresholds_were_kept_exports_without_one(db_url: str) -> None:
    upgrade(db_url, "0004")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        _insert_scored_item(conn)
        conn.execute(text("INSERT INTO triage_decisions (item_id, score_set_id, verdict, note, decided_at) "
                          "VALUES (1, 1, 'ambiguous', 'old', CURRENT_TIMESTAMP)"))
    upgrade(db_url)
    with session_factory(engine)() as session:
        hard = hard_cases(session, 1)
    assert hard[["verdict", "note"]].values.tolist() == [["ambiguous", "old"]]
    assert pd.isna(hard.iloc[0]["threshold"]) and pd.isna(hard.iloc[0]["prediction"])
    engine.dispose()
