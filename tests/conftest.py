"""Shared fixtures. ``db_url``: a fresh, empty database per test, on SQLite and on every URL listed
in ``CFTCLIP_TEST_DATABASE_URLS`` (comma-separated, e.g. a PostgreSQL server in CI)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def _extra_urls() -> list[str]:
    urls = [u.strip() for u in os.environ.get("CFTCLIP_TEST_DATABASE_URLS", "").split(",") if u.strip()]
    for url in urls:
        try:
            make_url(url)
        except ArgumentError:
            raise pytest.UsageError(
                f"CFTCLIP_TEST_DATABASE_URLS holds {url!r}, which is not a SQLAlchemy URL; "
                "give comma-separated URLs such as postgresql+psycopg://user:pass@127.0.0.1:5432/db"
            ) from None
    return urls


_EXTRA_URLS = _extra_urls()


@pytest.fixture(
    params=["sqlite", *_EXTRA_URLS],
    ids=["sqlite", *(f"{make_url(u).get_backend_name()}-{i}" for i, u in enumerate(_EXTRA_URLS))],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    url = make_url(request.param)
    if url.get_backend_name() != "postgresql":
        pytest.skip(f"no fresh-database recipe for {url.get_backend_name()} in conftest.py")
    # A private schema per test, first on the search path; dropped afterwards with everything in it.
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def factory(db_url: str):  # noqa: ANN201 - yields a sessionmaker
    """Sessions on ``db_url`` with the schema at the newest revision."""
    from annotations.db import make_engine, session_factory, upgrade

    upgrade(db_url)
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def instance(tmp_path: Path, db_url: str):  # noqa: ANN201 - returns annotations.settings.Settings
    """Settings for a fresh instance folder under tmp_path, using ``db_url``, folders created."""
    from annotations.settings import Settings

    return Settings.for_instance(tmp_path / "instance", database_url=db_url).ensure()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny offline CLIP, built once per test session through the product's own builder."""
    from cftclip_core.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):  # noqa: ANN201 - returns cftclip_core.models.LoadedModel
    from cftclip_core.models import load_model

    return load_model(str(tiny_model_dir))


def make_image(path: Path, size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    """A small valid JPEG for tests."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")
    return path


APP_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - yields Settings
    """A fresh instance folder for the Streamlit app (SQLite), with the app's caches cleared (which also stops
    a queue poller the app started)."""
    import streamlit as st

    from annotations.db import upgrade
    from annotations.settings import Settings

    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.delenv("CFTCLIP_DATABASE_URL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CFTCLIP_APP_POLLER", "0")  # tests poll by hand; a test that wants the app's poller sets 1
    st.cache_resource.clear()
    st.cache_data.clear()
    settings = Settings.from_env().ensure()
    upgrade(settings.database_url)
    yield settings
    st.cache_resource.clear()
    st.cache_data.clear()


def sessions(settings):  # noqa: ANN001, ANN201 - returns a sessionmaker
    """A session factory on the app instance's database (``app_instance``'s settings)."""
    from annotations.db import make_engine, session_factory

    return session_factory(make_engine(settings.database_url))


def labels_in(settings) -> list[tuple[int, str, int | None]]:  # noqa: ANN001
    """Every label in the database as (item id, username, value)."""
    from sqlalchemy import select

    from annotations.models import Label, User

    with sessions(settings)() as session:
        return session.execute(select(Label.item_id, User.username, Label.value).join(User)).all()


def app_test(settings, page: str = "app.py", *, user: tuple[str, str] | None = None):  # noqa: ANN001, ANN201
    """An AppTest of ``page``, signed in as ``user`` = (username, role), created on first use."""
    from streamlit.testing.v1 import AppTest

    from annotations.users import create_user, get_user, start_session

    at = AppTest.from_file(str(APP_ROOT / page), default_timeout=60)
    if user is not None:
        factory = sessions(settings)
        username, role = user
        with factory() as session:
            try:
                account = get_user(session, username)
            except Exception:  # noqa: BLE001 - not created yet
                account = None
        if account is None:
            account = create_user(factory, username, "correct horse battery", role)
        at.session_state["session"] = start_session(factory, account.id)
    return at
