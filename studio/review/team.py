"""Review > Team and Control items: who may label the dataset, who holds what now, the team's pace
and time to finish, and the control items with each annotator's accuracy on them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial

import streamlit as st

from annotations.control import SOURCES, clear_control_items, control_accuracy, control_items, make_control_items
from annotations.models import Dataset, User
from annotations.team import assign, assigned_usernames, team_view
from annotations.users import list_users
from cftclip_core.errors import CftClipError
from studio.common import Studio, escape_markdown, show_error

REFRESH_S = 15


def team_tab(app: Studio, dataset: Dataset, user: User) -> None:
    with app.sessions() as session:
        people = [u.username for u in list_users(session) if u.active]
        assigned = assigned_usernames(session, dataset.id)
    st.subheader("Who labels this dataset")
    chosen = st.multiselect("Assigned annotators (none: everyone may label it)", people, default=assigned,
                            key=f"assigned_{dataset.id}")
    if st.button("Save assignment", disabled=sorted(chosen) == assigned):
        try:
            names = assign(app.sessions, dataset.id, chosen, user.id)
        except CftClipError as exc:
            show_error(exc)
        else:
            st.toast(escape_markdown(f"Assigned to {', '.join(names)}." if names else "Open to everyone."))
            st.rerun()
    live_view(app, dataset)


@st.fragment(run_every=timedelta(seconds=REFRESH_S))
def live_view(app: Studio, dataset: Dataset) -> None:
    with app.sessions() as session:
        view = team_view(session, dataset.id)
    st.subheader("Now")
    st.caption(f"Refreshed every {REFRESH_S} s.")
    hour, day = view.last_hour, view.last_day
    cols = st.columns(4)
    cols[0].metric("Labels still needed", hour.remaining)
    cols[1].metric("Labels in the last hour", hour.labels, help=f"by {hour.annotators} annotator(s)")
    cols[2].metric("Labels in the last 24 h", day.labels, help=f"by {day.annotators} annotator(s)")
    cols[3].metric("Done in, at the last hour's pace", _duration(hour.eta),
                   help=f"At the last 24 hours' pace: {_duration(day.eta)}")
    st.write("**Who holds which item**")
    if view.holds.empty:
        st.caption("Nobody holds an item of this dataset right now.")
    else:
        st.dataframe(view.holds.drop(columns=["since"]), hide_index=True, width="stretch", column_config={
            "annotator": "Annotator", "item": "Item", "title": "Title", "expires": "Lease ends (UTC)",
            "minutes_held": st.column_config.NumberColumn("Minutes held", format="%.1f")})
    st.write("**Labels per annotator**")
    st.dataframe(view.activity, hide_index=True, width="stretch", column_config={
        "annotator_id": "Annotator", "last_hour": "Last hour", "last_day": "Last 24 h",
        "last_label_at": "Last label (UTC)"})


def _duration(eta: timedelta | None) -> str:
    if eta is None:
        return "n/a"
    hours = eta.total_seconds() / 3600
    return "done" if hours == 0 else f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def control_tab(app: Studio, dataset: Dataset, user: User) -> None:
    with app.sessions() as session:
        items = control_items(session, dataset.id)
        accuracy = control_accuracy(session, dataset.id)
    st.caption(f"Control items have a known answer. About {dataset.control_rate:.0%} of each annotator's items are "
               "control items they have not seen (the rate is on the Settings tab), never shown as such. Their votes "
               "count like any other in agreement and gold; here each annotator's accuracy on them.")
    make = st.columns(len(SOURCES) + 1)
    for column, (source, described) in zip(make, SOURCES.items(), strict=False):
        if column.button(f"Use {described}", key=f"control-{source}"):
            _act(partial(make_control_items, app.sessions, dataset.id, source, user.id),
                 "{n} control item(s) from " + described + ".")
    if make[-1].button("Make them ordinary items again", disabled=items.empty):
        _act(partial(clear_control_items, app.sessions, dataset.id), "{n} control item(s) made ordinary.")
    if items.empty:
        st.info("No control items in this dataset yet.")
        return
    st.write(f"**Accuracy on the {len(items)} control item(s)**")
    st.dataframe(accuracy, hide_index=True, width="stretch", column_config={
        "annotator_id": "Annotator", "n_control": "Control items answered", "n_correct": "Correct",
        "accuracy": st.column_config.NumberColumn("Accuracy", format="%.2f"),
        "ci_low": st.column_config.NumberColumn("95% from", format="%.2f"),
        "ci_high": st.column_config.NumberColumn("to", format="%.2f")})
    with st.expander("The control items"):
        st.dataframe(items.drop(columns=["item_id"]), hide_index=True, width="stretch",
                     column_config={"external_id": "Item", "value": "Known answer", "source": "From"})


def _act(action: Callable[[], int], said: str) -> None:
    """Run ``action``; say ``said`` with its count as ``{n}``, or show why it was refused."""
    try:
        count = action()
    except CftClipError as exc:
        show_error(exc)
    else:
        st.toast(escape_markdown(said.format(n=count)))
        st.rerun()
