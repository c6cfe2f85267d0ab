"""The panels around the card: the dataset switch, the end screen, and my labels (change any of them,
read the comments on my flags)."""

from __future__ import annotations

import streamlit as st

from annotations.labeling import DatasetChoice, comments_on_my_flags, datasets_for, my_labels
from studio.annotate.actions import DATASET, SAID, Annotator
from studio.common import Studio, escape_markdown

PAGE_SIZE = 10
SEARCH = "my_labels_search"
PAGE = "my_labels_page"


def choose_dataset(app: Studio, user_id: int) -> DatasetChoice | None:
    """The dataset to label, picked on the page itself; None (with a message) when none is open to the user."""
    with app.sessions() as session:
        choices = {choice.name: choice for choice in datasets_for(session, user_id)}
    if not choices:
        st.info("No dataset to label for you yet: a researcher imports one on the Import page, or assigns you to one "
                "on Review > Team.")
        return None
    if st.session_state.get(DATASET) not in choices:
        st.session_state[DATASET] = next((c.name for c in choices.values() if c.items_left), next(iter(choices)))
    if len(choices) == 1:
        return next(iter(choices.values()))
    name = st.selectbox("Dataset", list(choices), key=DATASET,
                        format_func=lambda n: f"{n} ({choices[n].items_left} item(s) left for you)")
    return choices[name]


def end_screen(annotator: Annotator) -> None:
    """Nothing left in this dataset: say which other datasets still need this annotator, with a switch."""
    st.success("Nothing left for you in this dataset for now (items others hold may come back). Thank you!")
    with annotator.app.sessions() as session:
        others = [c for c in datasets_for(session, annotator.user_id)
                  if c.dataset_id != annotator.dataset_id and c.items_left]
    if not others:
        st.write("No other dataset needs you at the moment.")
        return
    st.write("**These datasets still need you:**")
    for choice in others:
        st.button(f"Label {choice.name} ({choice.items_left} item(s) left for you)", key=f"switch-{choice.dataset_id}",
                  on_click=annotator.switch_dataset, args=(choice.name,))


def labels_panel(annotator: Annotator, *, expanded: bool = False) -> None:
    """Every label of mine in the dataset, newest first, searchable and paged: change any of them."""
    search = st.session_state.get(SEARCH, "")
    page = st.session_state.get(PAGE, 0)
    with annotator.app.sessions() as session:
        found = my_labels(session, annotator.dataset_id, annotator.user_id, search=search, offset=page * PAGE_SIZE,
                          limit=PAGE_SIZE)
        comments = comments_on_my_flags(session, annotator.dataset_id, annotator.user_id)
    with st.expander(f"My labels ({found.total if not search else str(found.total) + ' found'}): change any",
                     expanded=expanded):
        st.text_input("Find by id or title", key=SEARCH, on_change=lambda: st.session_state.update({PAGE: 0}))
        if not found.labels:
            st.caption("Nothing labelled yet." if not search else "None of your labels matches.")
        by_item: dict[int, list[str]] = {}
        for comment in comments:
            by_item.setdefault(comment.item_id, []).append(f"{comment.author}: {comment.body}")
        for label in found.labels:
            what, yes, no = st.columns([6, 1, 1], vertical_alignment="center")
            flag = "  ·  flagged" if label.flagged else ""
            what.text(f"{label.external_id}: {SAID[label.value]}{flag}  ·  {label.title}")
            version = label.updated_at.isoformat()
            yes.button("Set yes", key=f"edit-y-{label.item_id}", disabled=label.value == 1,
                       on_click=annotator.relabel, args=(label.item_id, label.external_id, 1, version))
            no.button("Set no", key=f"edit-n-{label.item_id}", disabled=label.value == 0,
                      on_click=annotator.relabel, args=(label.item_id, label.external_id, 0, version))
            for line in by_item.get(label.item_id, []):
                what.caption(":material/comment: " + escape_markdown(line))
        pages = max(1, -(-found.total // PAGE_SIZE))
        if pages > 1:
            back, where, forward = st.columns([1, 2, 1], vertical_alignment="center")
            back.button("Newer", key="labels-newer", disabled=page == 0,
                        on_click=lambda: st.session_state.update({PAGE: page - 1}))
            where.caption(f"Page {page + 1} of {pages}")
            forward.button("Older", key="labels-older", disabled=page + 1 >= pages,
                           on_click=lambda: st.session_state.update({PAGE: page + 1}))
