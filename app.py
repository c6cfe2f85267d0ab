"""CFT-CLIP Studio: ``streamlit run app.py``.

Entry point only: prepares the instance folder (database, demo dataset), finds who is signed in,
and offers each role its pages. Every page checks the role again itself.
"""

import streamlit as st

from annotations.users import needs_setup
from cftclip_core.errors import CftClipError
from studio.auth import current_user, sign_out
from studio.common import escape_markdown, show_error
from studio.instance import enter_through_app, studio
from studio.services import start_queue_poller

st.set_page_config(page_title="CFT-CLIP Studio", page_icon=":material/newspaper:", layout="wide")
enter_through_app()
try:
    app = studio()  # first start: creates the instance folder and database, imports the demo dataset
except CftClipError as exc:  # e.g. an unreachable CFTCLIP_DATABASE_URL, or a database from a newer version
    show_error(exc)
    st.stop()


start_queue_poller()  # once per server process: the queue moves with no page open

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
RESULTS = [THRESHOLDS, DISAGREEMENT, MODELS, SEEDS]
PAGES_BY_ROLE = {
    "annotator": [ANNOTATE],
    "researcher": [ARTICLES, *RESULTS, TRAIN, REVIEW, IMPORT, ANNOTATE],
    "admin": [ARTICLES, *RESULTS, TRAIN, REVIEW, IMPORT, ANNOTATE, USERS],
}

user = current_user()
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
