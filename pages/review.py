"""Review: agreement, the queue of disagreements and flags (gold labels, comments), the team (assignment,
who holds what, pace), control items, dataset settings, export. The tabs live in studio/review."""

import streamlit as st

from annotations.importer import list_datasets
from studio.common import require_role, studio
from studio.review.agreement import agreement_tab
from studio.review.queue import queue_tab
from studio.review.settings import export_tab, settings_tab
from studio.review.team import control_tab, team_tab

TABS = ("Agreement", "Review queue", "Team", "Control items", "Settings", "Export")

user = require_role("researcher", "admin")
app = studio()
st.title("Review")

with app.sessions() as session:
    datasets = {d.name: d for d in list_datasets(session)}
if not datasets:
    st.info("No dataset yet: import one on the Import page.")
    st.stop()
dataset = datasets[st.selectbox("Dataset", list(datasets), key="review_dataset")]

# Tabs that keep state: after saving in one, the page comes back on it; only the open tab runs.
tabs = dict(zip(TABS, st.tabs(TABS, key="review_tab", on_change="rerun"), strict=True))
with tabs["Agreement"]:
    if tabs["Agreement"].open:
        agreement_tab(app, dataset)
with tabs["Review queue"]:
    if tabs["Review queue"].open:
        queue_tab(app, dataset, user)
with tabs["Team"]:
    if tabs["Team"].open:
        team_tab(app, dataset, user)
with tabs["Control items"]:
    if tabs["Control items"].open:
        control_tab(app, dataset, user)
with tabs["Settings"]:
    if tabs["Settings"].open:
        settings_tab(app, dataset)
with tabs["Export"]:
    if tabs["Export"].open:
        export_tab(app, dataset)
