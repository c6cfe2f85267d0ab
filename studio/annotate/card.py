"""The card: the thumbnail, the article's text (always as plain text), the vote buttons and the
"Why not?" reasons, each with its key; the status line; and the guidelines, zoom and keys dialogs.

Double clicks: ``card_guard.html`` drops, in the browser, a vote, skip or undo made before the card
on screen appeared or less than 400 ms after (the browser may hold a click made while it draws the
next card and hand it to that card's buttons afterwards); the server refuses one that reaches it
sooner than ``actions.MIN_SECONDS_SHOWN`` after the card was drawn, for clients without the script.

Accessibility: Yes and No look alike (nothing nudges a blind vote); the image's alternative text is
the article's title; the result of each action is said once, in one status line (a polite live
region), and nothing else on the card is a live region; at phone width the image is kept short so
that the text and the vote buttons follow it on the first screen.
"""

from __future__ import annotations

import html
from pathlib import Path

import streamlit as st

from annotations.labeling import REASONS, Card, guidelines_of
from annotations.models import Dataset
from studio.annotate import keys
from studio.annotate.actions import ANNOUNCE, ERROR, LAST_SAVED, Annotator, reasons_key
from studio.common import escape_markdown, media_path, show_error

# At phone width the columns stack: keep the image short, so the title, summary and votes come next.
PHONE_CSS = """<style>
@media (max-width: 640px) {
  .st-key-card-image img { max-height: 28vh; width: auto !important; max-width: 100%; object-fit: contain; }
  .st-key-card-image [data-testid="stCaptionContainer"] { display: none; }
  .card-title { font-size: 1.1rem !important; }
  [data-testid="stMainBlockContainer"] { padding-top: 3.75rem; }
  [data-testid="stHorizontalBlock"]:has(.st-key-card-image) { gap: 0.5rem; }
  [data-testid="stMainBlockContainer"] h1 { font-size: 1.5rem; padding: 0; }
}
</style>"""


GUARD = Path(__file__).with_name("card_guard.html")  # our own script: no untrusted text goes into it


def status_line() -> None:
    """The one place where the page says what the last action did (announced once by screen readers)."""
    error = st.session_state.pop(ERROR, None)
    if error is not None:
        show_error(error)
    message = st.session_state.pop(ANNOUNCE, "")
    saved = st.session_state.get(LAST_SAVED, "")  # for the guard's message about a dropped press
    st.html(f'<div class="annotate-status" role="status" aria-live="polite" aria-atomic="true" '
            f'data-saved="{html.escape(saved)}">{html.escape(message)}</div>')


def draw(card: Card, annotator: Annotator, dataset: Dataset) -> None:
    st.html(PHONE_CSS + GUARD.read_text(), unsafe_allow_javascript=True)
    item = (card.item_id, card.external_id)
    picture, text = st.columns([3, 2], gap="large")
    with picture, st.container(key="card-image"):
        st.image(str(media_path(card.media_sha256)), width="stretch", alt=f"Thumbnail of the article: {card.title}")
        st.caption("Z zooms in; H lists every key.")
    with text:
        text_block("card-title", card.title, "font-size:1.35rem;font-weight:600;line-height:1.35")
        text_block("card-summary", card.summary, "line-height:1.45")
        st.write("**Does the thumbnail show an actor of this news event?**")
        with st.container(horizontal=True):  # side by side at any width (columns stack on phones)
            st.button("Yes", key=f"y-{card.item_id}", shortcut=keys.YES, width="stretch", help=keys.KEYS[keys.YES],
                      on_click=annotator.vote, args=(*item, 1))
            st.button("No", key=f"n-{card.item_id}", shortcut=keys.NO, width="stretch", help=keys.KEYS[keys.NO],
                      on_click=annotator.vote, args=(*item, 0))
        with st.container(horizontal=True):
            st.button("Skip", key=f"s-{card.item_id}", shortcut=keys.SKIP, width="stretch",
                      help=keys.KEYS[keys.SKIP], on_click=annotator.vote, args=(*item, None))
            st.button("Undo", key=f"u-{card.item_id}", shortcut=keys.UNDO, width="stretch",
                      help=keys.KEYS[keys.UNDO], on_click=annotator.undo, args=(card.item_id,))
            st.button("Unflag" if st.session_state.flagged else "Flag", key=f"f-{card.item_id}", shortcut=keys.FLAG,
                      width="stretch", help=keys.KEYS[keys.FLAG], on_click=annotator.flag, args=(card.item_id,))
        with st.container(horizontal=True):
            zoom = st.button("Zoom", key="zoom", shortcut=keys.ZOOM, width="stretch", help=keys.KEYS[keys.ZOOM])
            guide = st.button("Guide", key="guide", shortcut=keys.GUIDE, width="stretch", help=keys.KEYS[keys.GUIDE])
            listed = st.button("Keys", key="keys", shortcut=keys.HELP, width="stretch", help=keys.KEYS[keys.HELP])
        if zoom:
            zoomed(card)
        if guide:
            guidelines(dataset)
        if listed:
            keys_dialog()
        if st.session_state.flagged:
            st.caption(":material/flag: Flagged for review: vote as usual.")
        reasons(card, annotator)
        st.text_input("Note (optional)", key=f"note-{card.item_id}", max_chars=2000)


def text_block(css_class: str, text: str, style: str) -> None:
    """Untrusted article text exactly as written (never Markdown or HTML), with a class the layout uses."""
    st.html(f'<div class="{css_class}" style="white-space:pre-wrap;{style}">{html.escape(text)}</div>')


def reasons(card: Card, annotator: Annotator) -> None:
    """The "Why not?" reasons as buttons that toggle, with number keys; picked ones are marked."""
    picked = st.session_state.get(reasons_key(card.item_id)) or []
    st.caption("Why not? (optional: pick with 1-6, then vote N)")
    with st.container(horizontal=True, gap="small"):
        for reason in REASONS:
            number = keys.REASON_KEYS[reason]
            chosen = reason in picked
            st.button(f"{number} {reason}" + (" (picked)" if chosen else ""), key=f"r{number}-{card.item_id}",
                      shortcut=number, icon=":material/check:" if chosen else None, on_click=annotator.toggle_reason,
                      args=(card.item_id, reason), help=keys.KEYS[number])


@st.dialog("Guidelines", width="large")
def guidelines(dataset: Dataset) -> None:
    st.markdown(guidelines_of(dataset))  # written by researchers, not by article authors
    st.subheader("Keys")
    keys.keys_table()


@st.dialog("Keys", width="medium")
def keys_dialog() -> None:
    keys.keys_table()


@st.dialog("Zoom", width="large")
def zoomed(card: Card) -> None:
    st.image(str(media_path(card.media_sha256)), width="content", alt=f"Thumbnail of the article: {card.title}")
    st.caption(escape_markdown(card.title))
