"""Streamlit glue shared by the pages: the instance, the signed-in user, cached models, thumbnails."""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import make_engine, session_factory, upgrade
from annotations.importer import ensure_demo_dataset
from annotations.models import User
from annotations.settings import Settings
from annotations.users import end_session, user_for_session
from cftclip_core.images import load_image
from cftclip_core.media_store import MediaStore
from cftclip_core.models import LoadedModel, load_model

THUMBNAIL_PIXELS = 160
SESSION_PARAM = "session"  # the sign-in token rides in the URL so that a browser refresh keeps it


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


def media_path(sha256: str) -> Path:
    return MediaStore(studio().settings.media_dir).path_for(sha256)


def escape_markdown(text: str) -> str:
    """Text for Markdown-rendering elements (st.error, st.success...) that must show as typed."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text)


def show_error(exc: Exception) -> None:
    """A user error as a message, never a traceback; its text (paths, names) is shown as typed."""
    st.error(escape_markdown(str(exc)), icon=":material/error:")


def plain_text(text: str, *, size: str = "1rem", weight: int = 400) -> None:
    """Show untrusted article text exactly as written: never as Markdown or HTML."""
    st.html(f'<div style="font-size:{size};font-weight:{weight};white-space:pre-wrap;line-height:1.45">'
            f"{html.escape(text)}</div>")


@st.cache_data(max_entries=5000, show_spinner=False)
def thumbnail_uri(path: str) -> str:
    """A small JPEG as a data URI, for image columns of tables."""
    image = load_image(Path(path))
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def current_user() -> User | None:
    """The signed-in user of this browser tab, or None."""
    token = st.session_state.get(SESSION_PARAM) or st.query_params.get(SESSION_PARAM)
    if not token:
        return None
    user = user_for_session(studio().sessions, token)
    if user is None:  # expired, signed out elsewhere, or deactivated
        st.session_state.pop(SESSION_PARAM, None)
        st.query_params.pop(SESSION_PARAM, None)
        return None
    st.session_state[SESSION_PARAM] = token
    st.query_params[SESSION_PARAM] = token
    return user


def remember_sign_in(token: str) -> None:
    st.session_state[SESSION_PARAM] = token
    st.query_params[SESSION_PARAM] = token


def sign_out() -> None:
    token = st.session_state.pop(SESSION_PARAM, None)
    st.query_params.pop(SESSION_PARAM, None)
    if token:
        end_session(studio().sessions, token)


def require_role(*roles: str) -> User:
    """The signed-in user if their role may see this page; otherwise stop the page with a refusal."""
    user = current_user()
    if user is None:
        st.error("Please sign in first.")
        st.stop()
    if user.role not in roles:
        st.error(f"This page is for {' and '.join(roles)}s; you are signed in as {user.role}.")
        st.stop()
    return user
