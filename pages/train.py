"""Train: launch an experiment (one config run once per seed) or the synthetic-proof demo, and watch the
runs live. Jobs run as separate processes (``train_jobs``), never inside Streamlit: restarting the app
does not stop them, and the instance's poller catches up with whatever happened meanwhile."""

import streamlit as st

from cftclip_core.errors import CftClipError
from studio.common import escape_markdown, require_role, show_error, studio
from studio.job_widgets import machine_gpus
from studio.proof_demo import demo_section
from studio.train_form import launch_section
from studio.train_watch import live_view
from train_jobs import api

FORM_OPEN = "train_form_open"  # the New experiment form starts open on a first visit (no experiment yet)

user = require_role("researcher", "admin")
app = studio()
st.title("Train")
st.caption("Each seed of an experiment runs as its own process outside the app; closing the browser or restarting "
           "the app does not stop it, and the queue moves with no page open.")
try:
    api.JobSettings.from_env()  # a wrong CFTCLIP_* job setting is said here, not only in the poller's log
except CftClipError as exc:
    show_error(exc)
    st.stop()
inventory = machine_gpus()
if inventory.cpu_only:
    st.info(f"**CPU only.** {escape_markdown(inventory.note)}", icon=":material/memory:")
else:
    st.caption(escape_markdown(inventory.note))

if FORM_OPEN not in st.session_state:  # decided once per visit, so that the form never folds away under the user
    with app.sessions() as session:
        st.session_state[FORM_OPEN] = not api.training_experiments(session)
with st.expander("New experiment", icon=":material/add:", expanded=st.session_state[FORM_OPEN]):
    launch_section(app, user, inventory)
with st.expander("Demo: the synthetic proof, in one click", icon=":material/science:"):
    demo_section(app, user)
st.subheader("Experiments")
live_view(app, user)
