"""CFT-CLIP Studio: ``streamlit run app.py``.

Entry point only: prepares the instance folder (database, demo dataset), finds who is signed in,
and offers each role its pages. Every page checks the role again itself.
"""

import logging

import streamlit as st

from annotations.users import needs_setup
from cftclip_core.errors import CftClipError
from studio.common import (current_user, enter_through_app, escape_markdown, show_error, sign_out, studio,
                           sync_sign_in_cookie)
from train_jobs.api import poll

st.set_page_config(page_title="CFT-CLIP Studio", page_icon=":material/newspaper:", layout="wide")
enter_through_app()
try:
    app = studio()  # first start: creates the instance folder and database, imports the demo dataset
except CftClipError as exc:  # e.g. an unreachable CFTCLIP_DATABASE_URL, or a database from a newer version
    show_error(exc)
    st.stop()


@st.cache_resource(show_spinner="Catching up with the training jobs...")
def catch_up_with_jobs() -> None:
    """Once per server process: settle runs that ended while the app was down, launch queued ones."""
    poll(app.sessions, app.settings)


try:
    catch_up_with_jobs()
except Exception as exc:  # noqa: BLE001 - the jobs must never keep the app from starting; the Train page retries
    logging.getLogger(__name__).exception("Polling the training jobs at start failed")
    st.error(escape_markdown(f"The training jobs could not be checked at start ({exc}); the Train page tries "
                             "again."), icon=":material/error:")

ANNOTATE = st.Page("pages/annotate.py", title="Annotate", icon=":material/label:")
ARTICLES = st.Page("pages/home.py", title="Articles", icon=":material/newspaper:")
IMPORT = st.Page("pages/import_data.py", title="Import", icon=":material/upload:")
REVIEW = st.Page("pages/review.py", title="Review", icon=":material/rule:")
USERS = st.Page("pages/users.py", title="Users", icon=":material/group:")
THRESHOLDS = st.Page("pages/thresholds.py", title="Thresholds", icon=":material/tune:")
DISAGREEMENT = st.Page("pages/disagreement.py", title="Disagreement", icon=":material/call_split:")
MODELS = st.Page("pages/models.py", title="Models", icon=":material/leaderboard:")
SEEDS = st.Page("pages/seeds.py", title="Seeds", icon=":material/scatter_plot:")
TRAIN = st.Page("pages/train.py", title="Train", icon=":material/model_training:")
ACCOUNT = st.Page("pages/account.py", title="My account", icon=":material/account_circle:")
RESULTS = [THRESHOLDS, DISAGREEMENT, MODELS, SEEDS]
PAGES_BY_ROLE = {
    "annotator": [ANNOTATE, ACCOUNT],
    "researcher": [ARTICLES, *RESULTS, TRAIN, REVIEW, IMPORT, ANNOTATE, ACCOUNT],
    "admin": [ARTICLES, *RESULTS, TRAIN, REVIEW, IMPORT, ANNOTATE, USERS, ACCOUNT],
}

user = current_user()
sync_sign_in_cookie()
if needs_setup(app.sessions):
    pages = [st.Page("pages/setup.py", title="First-run setup", icon=":material/key:")]
elif user is None:
    pages = [st.Page("pages/login.py", title="Sign in", icon=":material/login:")]
else:
    pages = PAGES_BY_ROLE[user.role]
    with st.sidebar:
        st.caption(f"Signed in as **{escape_markdown(user.username)}** ({user.role})")
        if st.button("Sign out", icon=":material/logout:"):
            sign_out(user.id)
            st.rerun()

st.navigation(pages).run()
