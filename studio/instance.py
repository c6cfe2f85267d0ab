"""The instance folder and its database, opened once per server process (every page reaches them here)."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import make_engine, session_factory, upgrade
from annotations.importer import ensure_demo_dataset
from annotations.settings import Settings
from studio.navigation import require_app_entry


@dataclass(frozen=True)
class Studio:
    settings: Settings
    sessions: sessionmaker[Session]


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
