"""Streamlit glue shared by the pages: the instance, the signed-in user, cached models, thumbnails."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
from sqlalchemy.orm import Session, sessionmaker
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from annotations.db import make_engine, session_factory, upgrade
from annotations.importer import ensure_demo_dataset
from annotations.labeling import release_leases
from annotations.models import User
from annotations.settings import Settings
from annotations.users import DEFAULT_SESSION_HOURS, end_session, user_for_session
from cftclip_core.images import load_image
from cftclip_core.media_store import MediaStore
from cftclip_core.models import LoadedModel, load_model

THUMBNAIL_PIXELS = 160
HOLDS_LEASE = "holds_lease"  # set while the Annotate page shows this browser session a card leased to the user
SESSION_PARAM = "session"  # session-state key of this tab's sign-in token
SESSION_COOKIE = "cftclip_session"  # the browser keeps the token here, so that a refresh or a new tab stays signed in
COOKIE_ACTION = "_sign_in_cookie"  # "set" after signing in, "clear" after signing out: app.py tells the browser


@dataclass(frozen=True)
class Studio:
    settings: Settings
    sessions: sessionmaker[Session]


ENTERED_THROUGH_APP = "_entered_through_app"  # session-state flag set by app.py on every run


def enter_through_app() -> None:
    """Called first by app.py: this session's runs go through the entry point."""
    st.session_state[ENTERED_THROUGH_APP] = True


def require_app_entry() -> None:
    """Rerun through app.py when a page was started without it.

    On the first run after a server start Streamlit still treats ``pages/`` as an old-style page folder:
    a link such as ``/train`` runs ``pages/train.py`` directly, without app.py's navigation and start-up
    checks. That happens once per server process; a rerun then goes through app.py and its
    ``st.navigation``, which opens the same page properly. (A page run on its own as the main script,
    as in tests, is left alone.) Streamlit leaves that mode only when ``st.navigation`` is called, which
    the folder mode itself does not do, so the flag is switched off here as ``st.navigation`` would.
    """
    ctx = get_script_run_ctx()
    started_from_app = ctx is not None and Path(ctx.main_script_path).name == "app.py"
    if started_from_app and not st.session_state.get(ENTERED_THROUGH_APP):
        # What st.navigation itself does on its first call (Streamlit 1.67): leave the folder mode for good.
        PagesManager.uses_pages_directory = False
        st.rerun()


def studio() -> Studio:
    """The instance folder and database (every page reaches them through here)."""
    require_app_entry()
    return _open_studio()


@st.cache_resource(show_spinner="Preparing the studio (first start: database and demo dataset)...")
def _open_studio() -> Studio:
    """The instance folder and database, created and upgraded once per server process."""
    settings = Settings.from_env().ensure()
    upgrade(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    ensure_demo_dataset(settings, sessions)
    return Studio(settings, sessions)


@st.cache_resource(show_spinner="Loading the model...", max_entries=2)
def cached_model(name: str) -> LoadedModel:
    return load_model(name, cache_dir=studio().settings.models_dir)


def show_answers(answers: pd.DataFrame) -> None:
    """The annotators' answers to one item (``annotations.review.review_item``), as Review and Articles show them."""
    st.dataframe(answers, hide_index=True, width="stretch", column_config={
        "annotator": "Annotator", "value": st.column_config.NumberColumn("Answer", width="small"),
        "reasons": "Reasons", "note": "Note", "flagged": st.column_config.CheckboxColumn("Flag", width="small"),
        "seconds": st.column_config.NumberColumn("Seconds", format="%.1f", width="small")})


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
    """The signed-in user of this browser tab, or None.

    The token lives in the tab's session state; a refresh or a new tab finds it in the browser's cookie
    (Streamlit sees the cookies of the page's first request, ``st.context.cookies``). A token in the page
    address is never adopted, so a link cannot sign anyone in as someone else; older versions put it
    there, so one found is removed from the address.
    """
    require_app_entry()
    if SESSION_PARAM in st.query_params:
        del st.query_params[SESSION_PARAM]
    token = st.session_state.get(SESSION_PARAM)
    cookie = st.context.cookies.get(SESSION_COOKIE)
    cookie = cookie if isinstance(cookie, str) else None  # (AppTest has no browser: its cookies are stand-ins)
    if not token and st.session_state.get(COOKIE_ACTION) != "clear":  # a tab that signed out ignores the cookie
        token = cookie
    if not token:
        return None
    user = user_for_session(studio().sessions, token)
    if user is None:  # expired, signed out elsewhere, or deactivated
        st.session_state.pop(SESSION_PARAM, None)
        if token == cookie:
            st.session_state[COOKIE_ACTION] = "clear"
        return None
    st.session_state[SESSION_PARAM] = token
    return user


def remember_sign_in(token: str) -> None:
    """This tab is signed in with ``token``; app.py then hands it to the browser's cookie."""
    st.session_state[SESSION_PARAM] = token
    st.session_state[COOKIE_ACTION] = "set"


def sync_sign_in_cookie() -> None:
    """Called by app.py on every run: after a sign-in or sign-out, make the browser's cookie match.

    Streamlit cannot set a cookie from Python, so a small script does (``document.cookie``): the cookie
    is SameSite=Strict, Secure over https, and ends with the session; a script cannot make it HttpOnly.
    """
    action = st.session_state.get(COOKIE_ACTION)
    token = st.session_state.get(SESSION_PARAM)
    if action == "set" and token:
        value, max_age = token, int(DEFAULT_SESSION_HOURS * 3600)
    elif action == "clear":
        value, max_age = "", 0
    else:
        return
    cookie = json.dumps(f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; SameSite=Strict")
    where = st.sidebar if action == "set" else st  # signed in: with the other sign-in controls, out of the page
    where.html(f'<script>document.cookie = {cookie} + (location.protocol === "https:" ? "; Secure" : "");</script>',
               unsafe_allow_javascript=True)


def give_back_leases(user_id: int, *, signing_out: bool = False) -> None:
    """The user left the Annotate page (or signs out): the item they held goes to the next annotator now,
    not when the lease runs out."""
    if st.session_state.pop(HOLDS_LEASE, False) or signing_out:
        release_leases(studio().sessions, user_id)


def sign_out(user_id: int) -> None:
    """End this tab's session everywhere it is used (the cookie's token is the same), and clear the cookie."""
    give_back_leases(user_id, signing_out=True)
    token = st.session_state.pop(SESSION_PARAM, None)
    st.session_state[COOKIE_ACTION] = "clear"
    if token:
        end_session(studio().sessions, token)


def require_role(*roles: str, annotating: bool = False) -> User:
    """The signed-in user if their role may see this page; otherwise stop the page with a refusal.

    Every page but Annotate (``annotating=True``) gives back the item the user held there, so that a
    researcher who looked at Annotate and went on does not keep an item from the annotators."""
    user = current_user()
    if user is None:
        st.error("Please sign in first.")
        st.stop()
    if not annotating:
        give_back_leases(user.id)
    if user.role not in roles:
        st.error(f"This page is for {' and '.join(roles)}s; you are signed in as {user.role}.")
        st.stop()
    return user
