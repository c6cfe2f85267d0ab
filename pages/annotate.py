"""Annotate: one thumbnail and its text at a time, keyboard first.

Y = shows an actor, N = does not, S = skip, U = undo the last vote, F = flag, G = guidelines.
Blind: nothing here shows other annotators' labels, or the model's score before the vote.
"""

import time
import uuid

import streamlit as st

from annotations.importer import list_datasets
from annotations.labeling import (
    REASONS,
    cast_vote,
    my_recent_labels,
    next_item,
    progress,
    relabel,
    score_after_vote,
    undo_last,
)
from annotations.models import Dataset
from annotations.score_sets import is_meaningless, score_sets_for
from cftclip_core.errors import CftClipError
from studio.common import HOLDS_LEASE, escape_markdown, media_path, plain_text, require_role, show_error, studio

DEFAULT_GUIDELINES = """\
**Does the thumbnail show at least one actor of the news event in the text?**

- **Yes (Y)**: a person who takes part in the event the text describes is visible: the one who speaks,
  acts, is arrested, elected, injured... A recognisable face is not required if the text makes clear
  who is shown (e.g. a named speaker at the podium).
- **No (N)**: nobody in the image is an actor of the event: a generic or stock photo, a logo or graphic,
  another person, a place or object only, or a crop that hides the subject. Pick reasons if you can.
- **Skip (S)**: the image does not load or you cannot judge; the item goes to someone else.
- **Flag (F)**: mark the item for a researcher to look at, then vote as usual.
"""

SAID = {1: "yes, shows an actor", 0: "no actor", None: "skipped"}

user = require_role("annotator", "researcher", "admin", annotating=True)
app = studio()
tab = st.session_state.setdefault("tab_id", uuid.uuid4().hex[:12])  # one browser tab

with app.sessions() as session:
    datasets = {d.name: d for d in list_datasets(session)}
if not datasets:
    st.info("No dataset to label yet. A researcher imports one on the Import page.")
    st.stop()
if len(datasets) == 1:
    dataset: Dataset = next(iter(datasets.values()))
else:
    dataset = datasets[st.sidebar.selectbox("Dataset to label", list(datasets), key="annotate_dataset")]


@st.dialog("Guidelines", width="large")
def show_guidelines() -> None:
    st.markdown(dataset.guidelines or DEFAULT_GUIDELINES)  # written by researchers, not by article authors


def request_id(action: str, item_id: int) -> str:
    """The same click on the same card always maps to the same id, so it is recorded once."""
    return f"{tab}:{action}:{item_id}:{st.session_state.get('card_shown_at', 0)}"


def on_current_card(item_id: int) -> bool:
    """Whether a button press was meant for the card on screen. While the next card is drawn, the
    previous card's buttons stay on the page for a moment and answer the same shortcut keys (one key
    press can then reach both cards' buttons): such a press on the previous card is dropped."""
    if item_id == st.session_state.get("card_item"):
        return True
    before = st.session_state.get("last_saved")  # what the key before it did: a double press must not hide it
    st.session_state.setdefault("last_vote", "Nothing saved for that key: it came while the next card was loading. "
                                             "Press it again if this card did not get it."
                                             + (f" The key before it: {before}" if before else ""))
    return False


# Button callbacks run before the card is drawn again, so the next card appears in the same run.
def on_vote(item_id: int, external_id: str, value: int | None) -> None:
    if not on_current_card(item_id):
        return
    reasons = st.session_state.get(f"reasons-{item_id}") or []
    try:
        result = cast_vote(app.sessions, user.id, item_id, value, reasons=reasons if value == 0 else (),
                  note=st.session_state.get(f"note-{item_id}", ""), flagged=st.session_state.flagged,
                  seconds_spent=time.monotonic() - st.session_state.card_shown_at,
                  request_id=request_id("skip" if value is None else "vote", item_id))
    except CftClipError as exc:
        st.session_state.card_error = exc
        return
    st.session_state.last_vote = st.session_state.last_saved = vote_summary(item_id, external_id, value)
    if result.had_previous and not result.replayed:  # e.g. answered in another tab already
        st.session_state.last_vote += f" You had answered it before ({SAID[result.previous_value]}); that was replaced."


def on_undo(item_id: int) -> None:
    if not on_current_card(item_id):
        return
    try:
        undone = undo_last(app.sessions, user.id, dataset.id, request_id=request_id("undo", item_id))
    except CftClipError as exc:
        st.session_state.card_error = exc
        return
    st.session_state.last_vote = st.session_state.last_saved = ("Undone: that item is back for you." if undone
                                                                else "Nothing to undo.")


def on_relabel(item_id: int, external_id: str, value: int, version: str) -> None:
    """Change an earlier answer; the same click on the same label version is recorded once."""
    try:
        relabel(app.sessions, user.id, item_id, value, request_id=f"{tab}:edit:{item_id}:{value}:{version}")
    except CftClipError as exc:
        st.session_state.card_error = exc
        return
    st.session_state.last_vote = f"Changed {external_id} to {SAID[value]}."


def on_flag(item_id: int) -> None:
    if not on_current_card(item_id):
        return
    st.session_state.flagged = not st.session_state.flagged


def vote_summary(item_id: int, external_id: str, value: int | None) -> str:
    summary = f"Saved {external_id}: {SAID[value]}. Press U to undo."
    if value is not None:
        with app.sessions() as session:
            score = score_after_vote(session, dataset.id, item_id, user.id)
            newest = score_sets_for(session, dataset.id)[:1]
        if score is not None:
            summary += f" The model's similarity for it was {score:.3f}."
            if newest and is_meaningless(newest[0]):
                summary += " (From the tiny offline model: it means nothing.)"
    return summary


@st.fragment
def label_card() -> None:
    with app.sessions() as session:
        mine = progress(session, dataset.id, user.id)
    st.progress(min(mine.team_labels / max(mine.labels_needed, 1), 1.0),
                text=f"You: {mine.my_labels} labelled, {mine.my_skips} skipped  ·  Team: {mine.team_labels} of "
                     f"{mine.labels_needed} labels, {mine.items_complete} of {mine.n_items} items complete")
    error = st.session_state.pop("card_error", None)
    if error is not None:
        show_error(error)
    last = st.session_state.pop("last_vote", None)
    if last is not None:
        st.caption(escape_markdown(last))

    card = next_item(app.sessions, dataset.id, user.id)
    st.session_state[HOLDS_LEASE] = card is not None  # app.py gives it back when the user goes to another page
    if card is None:
        st.success("Nothing left for you in this dataset for now (items others hold may come back). Thank you!")
        return
    if st.session_state.get("card_item") != card.item_id:
        st.session_state.card_item = card.item_id
        st.session_state.card_shown_at = time.monotonic()
        st.session_state.flagged = False

    picture, text = st.columns([3, 2], gap="large")
    with picture:
        st.image(str(media_path(card.media_sha256)), width="stretch")
        st.caption("Hover the image and use its full-screen button to zoom.")
    item = (card.item_id, card.external_id)
    with text:
        plain_text(card.title, size="1.35rem", weight=600)
        plain_text(card.summary)
        st.write("**Does the thumbnail show an actor of this news event?**")
        yes, no = st.columns(2)
        yes.button("Yes", key=f"y-{card.item_id}", shortcut="y", type="primary", width="stretch",
                   help="The image shows at least one actor of the event", on_click=on_vote, args=(*item, 1))
        no.button("No", key=f"n-{card.item_id}", shortcut="n", width="stretch",
                  help="No actor of the event is shown", on_click=on_vote, args=(*item, 0))
        skip, undo = st.columns(2)  # two a row: four do not fit their labels and key hints beside the image
        skip.button("Skip", key=f"s-{card.item_id}", shortcut="s", width="stretch", on_click=on_vote,
                    args=(*item, None))
        undo.button("Undo", key=f"u-{card.item_id}", shortcut="u", width="stretch", on_click=on_undo,
                    args=(card.item_id,))
        flag, guide = st.columns(2)
        flag.button("Flag", key=f"f-{card.item_id}", shortcut="f", width="stretch", on_click=on_flag,
                    args=(card.item_id,))
        if guide.button("Guide", key="g", shortcut="g", width="stretch"):
            show_guidelines()
        if st.session_state.flagged:
            st.warning("Flagged for review: vote as usual.", icon=":material/flag:")
        st.multiselect("Why not? (optional, pick before N)", REASONS, key=f"reasons-{card.item_id}",
                       placeholder="reasons for a No")
        st.text_input("Note (optional)", key=f"note-{card.item_id}", max_chars=2000)
    recent_labels()


def recent_labels() -> None:
    """Fix a mistake further back than Undo reaches."""
    with app.sessions() as session:
        recent = my_recent_labels(session, dataset.id, user.id, limit=10)
    with st.expander(f"My recent labels ({len(recent)}): change one"):
        if not recent:
            st.caption("Nothing labelled yet.")
        for label in recent:
            what, yes, no = st.columns([6, 1, 1], vertical_alignment="center")
            what.text(f"{label.external_id}: {SAID[label.value]}  ·  {label.title}")
            version = label.updated_at.isoformat()
            yes.button("Set yes", key=f"edit-y-{label.item_id}", disabled=label.value == 1, on_click=on_relabel,
                       args=(label.item_id, label.external_id, 1, version))
            no.button("Set no", key=f"edit-n-{label.item_id}", disabled=label.value == 0, on_click=on_relabel,
                      args=(label.item_id, label.external_id, 0, version))

st.title("Annotate")
label_card()
