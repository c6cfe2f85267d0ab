"""Streamlit glue shared by the pages: the instance, cached models and thumbnails."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import make_engine, session_factory, upgrade
from annotations.importer import ensure_demo_dataset
from annotations.settings import Settings
from cftclip_core.images import load_image
from cftclip_core.models import LoadedModel, load_model

THUMBNAIL_PIXELS = 160


@dataclass(frozen=True)
class Studio:
    settings: Settings
    sessions: sessionmaker[Session]


@st.cache_resource(show_spinner="Preparing the studio (first start: database and demo dataset)...")
def studio() -> Studio:
    """The instance folder and database, created and upgraded once per server process."""
    settings = Settings.from_env().ensure()
    upgrade(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    ensure_demo_dataset(settings, sessions)
    return Studio(settings, sessions)


@st.cache_resource(show_spinner="Loading the model...", max_entries=2)
def cached_model(name: str) -> LoadedModel:
    return load_model(name, cache_dir=studio().settings.models_dir)


@st.cache_data(max_entries=5000, show_spinner=False)
def thumbnail_uri(path: str) -> str:
    """A small JPEG as a data URI, for image columns of tables."""
    image = load_image(Path(path))
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
