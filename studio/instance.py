"""The instance folder and its database, opened once per server process (every page reaches them here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from annotations.db import make_engine, session_factory, upgrade
from annotations.importer import ensure_demo_dataset
from annotations.settings import Settings


@dataclass(frozen=True)
class Studio:
    settings: Settings
    sessions: sessionmaker[Session]


ENTERED_THROUGH_APP = "_entered_through_app"  # session-state flag set by app.py on every run


def enter_through_app() -> None:
    """Called first by app.py: this session's runs go through the entry point."""
    st.session_state[ENTERED_THROUGH_APP] = True


def require_app_entry() -> None:
    """Rerun through app.py when a page was started without it (the first run after a server start)."""
    ctx = get_script_run_ctx()
    started_from_app = ctx is not None and Path(ctx.main_script_path).name == "app.py"
    if started_from_app and not st.session_state.get(ENTERED_THROUGH_APP):
        PagesManager.uses_pages_directory = False
        st.rerun()


def studio() -> Studio:
    """The instance folder and database, created, upgraded and given the demo dataset on first use."""
    require_app_entry()
    return _open_studio()


@st.cache_resource(show_spinner="Preparing the studio (first start: database and demo dataset)...")
def _open_studio() -> Studio:
    settings = Settings.from_env().ensure()
    upgrade(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    ensure_demo_dataset(settings, sessions)
    return Studio(settings, sessions)
