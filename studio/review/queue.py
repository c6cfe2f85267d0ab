"""Review > Review queue: items with disagreement or a flag, settled one by one with a reason, and
the comments on each.

A settled item leaves the count and the table in the same run, and the picker moves on to the item
that followed it (it does not jump back to the top, and the tab stays open: the tabs keep state)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotations.comments import add_comment, comments_on
from annotations.labeling import Comment
from annotations.models import Dataset, User
from annotations.review import review_item, review_queue, set_gold
from cftclip_core.errors import CftClipError
from studio.common import Studio, escape_markdown, media_path, plain_text, show_answers, show_error

VALUES = {1: "1: shows an actor", 0: "0: no actor"}
DONE = "review_done"  # what the last gold action did, said after its rerun
FAILED = "review_failed"


def picker_key(dataset_id: int) -> str:
    return f"review_item_{dataset_id}"


def queue_tab(app: Studio, dataset: Dataset, user: User) -> None:
    if DONE in st.session_state:
        st.success(st.session_state.pop(DONE))
    if FAILED in st.session_state:
        show_error(st.session_state.pop(FAILED))
    with_settled = st.toggle("Show settled items too", key=f"settled_{dataset.id}")
    with app.sessions() as session:
        queue = review_queue(session, dataset.id, include_settled=with_settled)
    undecided = queue[~queue["decided"]]
    if queue.empty:
        st.success("No disagreements or flags left to settle.")
        return
    st.caption(f"{len(undecided)} item(s) with disagreement or a flag to settle"
               + (f", and {len(queue) - len(undecided)} settled" if with_settled else "")
               + ". Gold is the majority vote unless you settle an item here.")
    st.dataframe(queue[["external_id", "n_votes", "n_yes", "n_no", "flagged", "majority", "gold", "gold_method"]],
                 hide_index=True, width="stretch", column_config={
                     "external_id": "Item", "n_votes": "Votes", "n_yes": "Yes", "n_no": "No", "flagged": "Flagged",
                     "majority": "Majority", "gold": "Gold", "gold_method": "Gold from"})
    order = queue["item_id"].tolist()
    key = picker_key(dataset.id)
    if st.session_state.get(key) not in order:
        st.session_state[key] = order[0]
    chosen = st.selectbox("Item to settle", order, key=key,
                          format_func=dict(zip(queue["item_id"], queue["external_id"], strict=True)).get)
    row = queue[queue["item_id"] == chosen].iloc[0]
    with app.sessions() as session:
        item, answers = review_item(session, int(chosen))
        comments = comments_on(session, int(chosen))
    picture, text = st.columns([3, 2], gap="large")
    picture.image(str(media_path(item.media_sha256)), width="stretch", alt=f"Thumbnail of the article: {item.title}")
    with text:
        plain_text(item.title, size="1.25rem", weight=600)
        plain_text(item.summary)
        show_answers(answers)
    gold_form(app, dataset, user, row, order)
    comments_box(app, int(chosen), user, comments)


def gold_form(app: Studio, dataset: Dataset, user: User, row: pd.Series, order: list[int]) -> None:
    item_id = int(row["item_id"])
    with st.form(f"gold-{item_id}"):
        current = None if pd.isna(row["gold"]) else int(row["gold"])  # a tie has none: nothing is preselected
        st.radio("Gold label", [1, 0], horizontal=True, format_func=VALUES.get, key=f"gold-value-{item_id}",
                 index=None if current is None else [1, 0].index(current))
        st.text_input("Reason (required)", key=f"gold-reason-{item_id}",
                      value=row["gold_reason"] if isinstance(row["gold_reason"], str) else "")
        save, withdraw = st.columns(2)
        save.form_submit_button("Save gold label", type="primary", on_click=_settle,
                                args=(app, dataset.id, user.id, item_id, order, False))
        withdraw.form_submit_button("Back to the majority vote", on_click=_settle,
                                    args=(app, dataset.id, user.id, item_id, order, True))


def _settle(app: Studio, dataset_id: int, user_id: int, item_id: int, order: list[int], withdraw: bool) -> None:
    """Save (or withdraw) the decision, then point the picker at the item that followed this one."""
    value = None if withdraw else st.session_state.get(f"gold-value-{item_id}")
    try:
        if not withdraw and value is None:
            raise CftClipError("Pick the gold label first: 1 (shows an actor) or 0 (no actor).")
        set_gold(app.sessions, item_id, value, st.session_state.get(f"gold-reason-{item_id}", ""), user_id)
    except CftClipError as exc:
        st.session_state[FAILED] = exc
        return
    st.session_state[DONE] = "Back to the majority vote." if withdraw else f"Gold label saved: {VALUES[value]}."
    later = order[order.index(item_id) + 1:] if item_id in order else []
    if not withdraw and later:
        st.session_state[picker_key(dataset_id)] = later[0]


def comments_box(app: Studio, item_id: int, user: User, comments: list[Comment]) -> None:
    st.subheader(f"Comments ({len(comments)})")
    for comment in comments:
        st.text(f"{comment.author}, {comment.at:%Y-%m-%d %H:%M} UTC: {comment.body}")
    with st.form(f"comment-{item_id}", clear_on_submit=True):
        body = st.text_area("Add a comment", max_chars=2000, height=80,
                            help="The annotators who flagged this item read the comments on it beside their own "
                                 "labels: don't quote other annotators' answers.")
        st.caption("Read by the annotators who flagged this item: don't quote other annotators' answers.")
        if st.form_submit_button("Add comment"):
            try:
                add_comment(app.sessions, item_id, user.id, body)
            except CftClipError as exc:
                show_error(exc)
            else:
                st.session_state[DONE] = escape_markdown("Comment added.")
                st.rerun()
