"""Alembic environment. ``annotations.db.upgrade`` passes an open connection in
``config.attributes["connection"]``; the ``alembic`` command line uses ``sqlalchemy.url`` (or
``CFTCLIP_DATABASE_URL`` / the instance default when it is empty)."""

from __future__ import annotations

from alembic import context

from annotations.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs need table rebuilds
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from annotations.db import make_engine
    from annotations.settings import Settings

    url = config.get_main_option("sqlalchemy.url") or Settings.from_env().ensure().database_url
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
