"""Engines, sessions and schema upgrades for the studio database (SQLite or PostgreSQL).

SQLite is tuned for several Streamlit sessions and worker processes sharing one file: WAL journal
(readers never block the writer), a busy timeout instead of instant "database is locked" errors,
foreign keys enforced, and write transactions that take the write lock at BEGIN (``BEGIN
IMMEDIATE``) so a read-then-write cannot fail half way with a lock upgrade error. Keep write
transactions short: one writer at a time holds the file.

A write the database cannot make for a reason outside the studio (full disk, read-only file, a lock
held too long) becomes a ``DatabaseError`` with one plain message: never the SQL statement or its
values, which may hold people's data.

One Streamlit server serves every browser tab from one engine, a thread per tab, besides its queue
poller: the connection pool (``POOL``) has room for 20 annotators voting at once with a double click
each, so none waits on the pool, and stays well under PostgreSQL's default of 100 connections.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from cftclip_core.errors import CftClipError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
POOL = {"pool_size": 10, "max_overflow": 30}  # see the module docstring
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_BEGIN_OPTION = "cftclip_sqlite_begin"  # execution option read by the SQLite "begin" hook
_UPGRADE_LOCK_KEY = 0x0CF7C11  # PostgreSQL advisory lock id serialising concurrent upgrades
MAX_INTEGER = 2**31 - 1  # an Integer column holds 32 bits on PostgreSQL (64 on SQLite): the smaller rules
_FREE_SPACE = ("Free some space on that disk (or move the database, CFTCLIP_DATABASE_URL, to a larger one) "
               "and try again; nothing was saved.")
# Recognised causes: SQLite's error names and PostgreSQL's SQLSTATE codes -> what to tell the user.
_WRITE_FAILURES = {
    "SQLITE_FULL": "The database's disk is full. " + _FREE_SPACE,
    "53100": "The database server's disk is full. " + _FREE_SPACE,
    "SQLITE_READONLY": "The database file is read-only for the studio: make it (and its folder) writable "
                       "by the user running the studio, then try again; nothing was saved.",
    "SQLITE_IOERR": "The disk holding the database could not be written (an input/output error: full, "
                    "removed or failing). Check it, then try again; nothing was saved.",
    "SQLITE_BUSY": f"The database stayed busy for more than {BUSY_TIMEOUT_S:g} s (another process was "
                   "writing); try again in a moment. Nothing was saved.",
}


class DatabaseError(CftClipError):
    """The database cannot be opened or its schema does not match this version of the studio."""


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for any SQLAlchemy URL; SQLite gets the settings described in the module docstring."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            "The database URL is not valid (not shown: it may hold a password). Use e.g. sqlite:////path/studio.db or "
            "postgresql+psycopg://user:password@host/dbname in CFTCLIP_DATABASE_URL."
        ) from None
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(parsed, echo=echo, pool_pre_ping=True, **POOL)
        except (ImportError, NoSuchModuleError) as exc:
            raise DatabaseError(
                f"Cannot use {safe_url(url)}: its database driver is not installed ({exc}). For PostgreSQL "
                "install it with `pip install \"psycopg[binary]\"` and use a postgresql+psycopg:// URL."
            ) from None
    kwargs: dict[str, Any] = {"connect_args": {"timeout": BUSY_TIMEOUT_S}}
    if parsed.database in (None, "", ":memory:"):
        # One shared connection, or each checkout would see its own empty in-memory database.
        kwargs["connect_args"]["check_same_thread"] = False
        kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(POOL)
    engine = create_engine(parsed, echo=echo, **kwargs)
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    # SQLAlchemy's documented recipe: switch off the sqlite3 module's own transaction handling
    # and emit BEGIN ourselves, so every transaction (reads, DDL) really is one.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = FULL")  # a committed label survives a power cut too
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (handy for passing them to pages)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def write_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for one write transaction: commits on success, rolls back on any error.

    On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (takes the write lock first, waiting
    up to the busy timeout), so reads made inside it cannot be invalidated by another writer.
    Do not call ``commit()`` inside the block: a second transaction would start without the lock.
    """
    session = factory()
    try:
        if session.get_bind().dialect.name == "sqlite":
            session.connection(execution_options={_BEGIN_OPTION: "IMMEDIATE"})
        yield session
        session.commit()
    except BaseException as exc:
        session.rollback()
        failure = write_failure(exc) if isinstance(exc, DBAPIError) else None
        if failure is not None:
            raise failure from None
        raise
    finally:
        session.close()


def write_failure(exc: DBAPIError) -> DatabaseError | None:
    """A plain ``DatabaseError`` for a write that failed for a reason outside the studio (full disk,
    read-only file, lock held too long), or None for any other error. The SQL and its values stay out."""
    orig = exc.orig
    code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text_of = str(orig).lower()
    if code is None:  # older drivers: recognise SQLite's fixed messages
        code = next((name for name, words in (("SQLITE_FULL", "database or disk is full"),
                                              ("SQLITE_READONLY", "readonly database"),
                                              ("SQLITE_IOERR", "disk i/o error"),
                                              ("SQLITE_BUSY", "database is locked")) if words in text_of), None)
    base = str(code).split("_")[0:2]  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    message = _WRITE_FAILURES.get(str(code)) or _WRITE_FAILURES.get("_".join(base))
    if message is None:
        return None
    log.error("A database write failed: %s", type(orig).__name__)
    return DatabaseError(message)


def database_id(text: str) -> int:
    """A row id as typed on a command line (an ``argparse`` type): a whole number the database can hold."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_INTEGER:
        raise argparse.ArgumentTypeError(f"'{text}' is not an id: give a whole number from 1 to {MAX_INTEGER}")
    return value


def alembic_config(url: str) -> Config:
    """Alembic configuration pointing at this package's migrations, usable from any directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolation
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    """The schema revision of the database at ``url`` (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseError(_open_failed(url, exc)) from None
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Create the schema or bring it up to date (Alembic ``upgrade head``). Existing data is kept.

    Migrations run in one transaction (SQLite and PostgreSQL both have transactional DDL), so a
    failed upgrade leaves the database as it was. Concurrent callers are serialised.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # SQLite migrations rebuild tables (copy, DROP, rename); with foreign keys on, the DROP
                # would cascade into every referencing table. The pragma only works outside a
                # transaction, so it is set on the raw connection before BEGIN, and the keys are
                # checked before commit instead.
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
                conn = conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            try:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
                    config = alembic_config(url)
                    config.attributes["connection"] = conn
                    command.upgrade(config, revision)
                    if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                        raise DatabaseError(f"Upgrading {safe_url(url)} would break references between "
                                            "tables; nothing was changed. Please report this.")
            finally:
                if sqlite:
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")
    except OperationalError as exc:
        raise DatabaseError(_open_failed(url, exc)) from None
    except CommandError as exc:
        if "Can't locate revision" in str(exc):
            raise DatabaseError(
                f"The database at {safe_url(url)} was made by a newer version of CFT-CLIP Studio ({exc}). "
                "Update the studio's code, or point CFTCLIP_DATABASE_URL at another database."
            ) from None
        raise
    finally:
        engine.dispose()


def _open_failed(url: str, exc: OperationalError) -> str:
    return (
        f"Cannot use the database at {safe_url(url)}: {exc.orig}. Check CFTCLIP_DATABASE_URL (or the "
        "instance folder's permissions and free disk space) and try again."
    )
