"""The card: the thumbnail, the article's text (always as plain text), the vote buttons and the
"Why not?" reasons, each with its key; the status line; and the guidelines, zoom and keys dialogs.

Accessibility: Yes and No look alike (nothing nudges a blind vote); the image's alternative text is
the article's title; the result of each action is said once, in one status line (a polite live
region), and nothing else on the card is a live region; at phone width the image is kept short so
that the text and the vote buttons follow it on the first screen.
"""

from __future__ import annotations

import html

import streamlit as st

from annotations.labeling import REASONS, Card, guidelines_of
from annotations.models import Dataset
from studio.annotate import keys
from studio.annotate.actions import ANNOUNCE, ERROR, Annotator, reasons_key
from studio.common import escape_markdown, media_path, plain_text, show_error

# At phone width the columns stack: keep the image short, so the title, summary and votes come next.
PHONE_CSS = """<style>
@media (max-width: 640px) {
  .st-key-card-image img { max-height: 32vh; width: auto !important; max-width: 100%; object-fit: contain; }
  .st-key-card-image [data-testid="stCaptionContainer"] { display: none; }
  .card-title { font-size: 1.1rem !important; }
  [data-testid="stMainBlockContainer"] { padding-top: 2.5rem; }
}
</style>"""


def status_line() -> None:
    """The one place where the page says what the last action did (announced once by screen readers)."""
    error = st.session_state.pop(ERROR, None)
    if error is not None:
        show_error(error)
    message = st.session_state.pop(ANNOUNCE, "")
    st.html(f'<div class="annotate-status" role="status" aria-live="polite" aria-atomic="true">'
            f"{html.escape(message)}</div>")


def draw(card: Card, annotator: Annotator, dataset: Dataset) -> None:
    st.html(PHONE_CSS)
    item = (card.item_id, card.external_id)
    picture, text = st.columns([3, 2], gap="large")
    with picture, st.container(key="card-image"):
        st.image(str(media_path(card.media_sha256)), width="stretch", alt=f"Thumbnail of the article: {card.title}")
        st.caption("Z zooms in; H lists every key.")
    with text:
        st.html(f'<div class="card-title" style="font-size:1.35rem;font-weight:600;white-space:pre-wrap;'
                f'line-height:1.35">{html.escape(card.title)}</div>')
        plain_text(card.summary)
        st.write("**Does the thumbnail show an actor of this news event?**")
        yes, no = st.columns(2)
        yes.button("Yes", key=f"y-{card.item_id}", shortcut=keys.YES, width="stretch", help=keys.KEYS[keys.YES],
                   on_click=annotator.vote, args=(*item, 1))
        no.button("No", key=f"n-{card.item_id}", shortcut=keys.NO, width="stretch", help=keys.KEYS[keys.NO],
                  on_click=annotator.vote, args=(*item, 0))
        skip, undo = st.columns(2)  # two a row: four do not fit their labels and key hints beside the image
        skip.button("Skip", key=f"s-{card.item_id}", shortcut=keys.SKIP, width="stretch", help=keys.KEYS[keys.SKIP],
                    on_click=annotator.vote, args=(*item, None))
        undo.button("Undo", key=f"u-{card.item_id}", shortcut=keys.UNDO, width="stretch", help=keys.KEYS[keys.UNDO],
                    on_click=annotator.undo, args=(card.item_id,))
        flag, zoom = st.columns(2)
        flag.button("Unflag" if st.session_state.flagged else "Flag", key=f"f-{card.item_id}", shortcut=keys.FLAG,
                    width="stretch", help=keys.KEYS[keys.FLAG], on_click=annotator.flag, args=(card.item_id,))
        if zoom.button("Zoom", key="zoom", shortcut=keys.ZOOM, width="stretch", help=keys.KEYS[keys.ZOOM]):
            zoomed(card)
        guide, help_ = st.columns(2)
        if guide.button("Guide", key="guide", shortcut=keys.GUIDE, width="stretch", help=keys.KEYS[keys.GUIDE]):
            guidelines(dataset)
        if help_.button("Keys", key="keys", shortcut=keys.HELP, width="stretch", help=keys.KEYS[keys.HELP]):
            keys_dialog()
        if st.session_state.flagged:
            st.caption(":material/flag: Flagged for review: vote as usual.")
        reasons(card, annotator)
        st.text_input("Note (optional)", key=f"note-{card.item_id}", max_chars=2000)


def reasons(card: Card, annotator: Annotator) -> None:
    """The "Why not?" reasons as buttons that toggle, with number keys; picked ones are marked."""
    picked = st.session_state.get(reasons_key(card.item_id)) or []
    st.caption("Why not? (optional: pick with 1-6, then vote N)")
    columns = st.columns(2)
    for index, reason in enumerate(REASONS):
        number = keys.REASON_KEYS[reason]
        chosen = reason in picked
        columns[index % 2].button(
            f"{number} {reason}" + (" (picked)" if chosen else ""), key=f"r{number}-{card.item_id}", shortcut=number,
            width="stretch", icon=":material/check:" if chosen else None, on_click=annotator.toggle_reason,
            args=(card.item_id, reason), help=keys.KEYS[number],
        )


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
