"""Annotate: one thumbnail and its text at a time, keyboard first (every key: studio/annotate/keys.py).

Blind: nothing here shows other annotators' labels, or the model's score before the vote.
"""

import streamlit as st

from annotations.importer import get_dataset
from annotations.labeling import next_item, progress
from cftclip_core.errors import CftClipError
from studio.annotate import card as card_view
from studio.annotate import panels
from studio.annotate.actions import SWITCHED, Annotator
from studio.common import HOLDS_LEASE, require_role, show_error, studio

user = require_role("annotator", "researcher", "admin", annotating=True)
app = studio()
st.title("Annotate")
chosen = panels.choose_dataset(app, user.id)
if chosen is None:
    st.stop()
with app.sessions() as session:
    dataset = get_dataset(session, chosen.dataset_id)


@st.fragment
def label_card(annotator: Annotator) -> None:
    if st.session_state.pop(SWITCHED, False):  # the end screen chose another dataset
        st.rerun(scope="app")
    with app.sessions() as session:
        mine = progress(session, dataset.id, user.id)
    st.progress(min(mine.team_labels / max(mine.labels_needed, 1), 1.0),
                text=f"You: {mine.my_labels} labelled, {mine.my_skips} skipped  ·  Team: {mine.team_labels} of "
                     f"{mine.labels_needed} labels, {mine.items_complete} of {mine.n_items} items complete")
    card_view.status_line()
    try:
        card = next_item(app.sessions, dataset.id, user.id)
    except CftClipError as exc:  # e.g. the dataset was assigned to others meanwhile
        show_error(exc)
        return
    st.session_state[HOLDS_LEASE] = card is not None  # app.py gives it back when the user goes to another page
    if card is None:
        panels.end_screen(annotator)
        panels.labels_panel(annotator, expanded=True)
        return
    annotator.show_card(card.item_id)
    card_view.draw(card, annotator, dataset)
    panels.labels_panel(annotator)
    annotator.card_drawn()


label_card(Annotator(app, user.id, dataset.id))
