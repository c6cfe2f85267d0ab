"""Streamlit glue shared by the pages: error messages, untrusted text, thumbnails, the role check.

The instance and database are in ``studio.instance``, who is signed in in ``studio.auth``; ``studio`` and
``require_role`` are importable from here too, as every page needs them.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from annotations.models import User
from cftclip_core.images import load_image
from cftclip_core.media_store import MediaStore
from studio.auth import (  # noqa: F401 - also importable from here (pages written before studio.auth)
    HOLDS_LEASE,
    SESSION_PARAM,
    current_user,
    give_back_leases,
    remember_sign_in,
    sign_out,
    sync_sign_in_cookie,
)
from studio.instance import Studio, studio  # noqa: F401 - Studio: also importable from here
from studio.navigation import entered_through_app, home_page

THUMBNAIL_PIXELS = 160


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
        whom = " and ".join(f"{role}s" for role in roles)
        article = "an" if user.role[0] in "aeiou" else "a"
        st.error(f"This page is for {whom}; you are signed in as {article} {user.role}.", icon=":material/block:")
        if entered_through_app():  # a page run on its own (a test) has no other page to link to
            st.page_link(home_page(user.role), label="Go to your first page", icon=":material/arrow_forward:")
        st.stop()
    return user
