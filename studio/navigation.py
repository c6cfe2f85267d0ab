"""The app's pages, who may open which, and the way in: ``run_app`` is all that ``app.py`` calls.

Every page is registered for everyone (so a link never ends on Streamlit's "Page not found"); the sidebar
offers each role its own pages, and each page checks the role itself and says whom it is for. A link opened
before signing in is kept and followed once the user is signed in.

Only Streamlit is imported at module level: ``st.navigation`` is reached on the first run of a cold server
before the database, pandas or the job queue load (they are imported after it, in ``run_app``).

One guard remains for a quirk of ``streamlit run app.py`` beside a ``pages/`` folder: until the process has
seen ``st.navigation`` once, Streamlit serves ``pages/`` in its old folder mode, where a link such as
``/train`` runs ``pages/train.py`` without ``app.py``. ``require_app_entry`` (called by ``studio()`` and
``current_user()``) sends such a run through ``app.py``, remembering the page it was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

if TYPE_CHECKING:
    from streamlit.navigation.page import StreamlitPage

    from annotations.models import User

APP_SCRIPT = "app.py"
ENTERED_THROUGH_APP = "navigation_entered_through_app"  # set by run_app in every session it serves
TARGET = "navigation_target"  # (url path, query parameters) of a page asked for before signing in
RESEARCH = ("researcher", "admin")
EVERYONE = ("annotator", *RESEARCH)


@dataclass(frozen=True)
class PageSpec:
    script: str
    title: str
    icon: str
    roles: tuple[str, ...]


PAGES: dict[str, PageSpec] = {  # url path -> page, in the sidebar's order
    "home": PageSpec("pages/home.py", "Articles", ":material/newspaper:", RESEARCH),
    "thresholds": PageSpec("pages/thresholds.py", "Thresholds", ":material/tune:", RESEARCH),
    "disagreement": PageSpec("pages/disagreement.py", "Disagreement", ":material/call_split:", RESEARCH),
    "models": PageSpec("pages/models.py", "Models", ":material/leaderboard:", RESEARCH),
    "seeds": PageSpec("pages/seeds.py", "Seeds", ":material/scatter_plot:", RESEARCH),
    "train": PageSpec("pages/train.py", "Train", ":material/model_training:", RESEARCH),
    "review": PageSpec("pages/review.py", "Review", ":material/rule:", RESEARCH),
    "import_data": PageSpec("pages/import_data.py", "Import", ":material/upload:", RESEARCH),
    "annotate": PageSpec("pages/annotate.py", "Annotate", ":material/label:", EVERYONE),
    "users": PageSpec("pages/users.py", "Users", ":material/group:", ("admin",)),
    "account": PageSpec("pages/account.py", "My account", ":material/account_circle:", EVERYONE),
}
HOME = {"annotator": "annotate", "researcher": "home", "admin": "home"}


def run_app() -> None:
    """Route this run: sign in (or set up) first, then the page asked for, with the role's sidebar."""
    pages = {name: st.Page(spec.script, title=spec.title, icon=spec.icon, url_path=name)
             for name, spec in PAGES.items()}
    login = st.Page("pages/login.py", title="Sign in", icon=":material/login:", default=True)
    setup = st.Page("pages/setup.py", title="First-run setup", icon=":material/key:", url_path="setup")
    page = st.navigation([login, setup, *pages.values()], position="hidden")
    st.session_state[ENTERED_THROUGH_APP] = True
    # Imported after st.navigation: the database, the queue and pandas load while the browser has its page.
    from annotations.users import needs_setup
    from cftclip_core.errors import CftClipError
    from studio.auth import current_user, sync_sign_in_cookie
    from studio.common import show_error
    from studio.instance import studio
    from studio.services import start_queue_poller

    try:
        app = studio()  # first start: creates the instance folder and database, imports the demo dataset
    except CftClipError as exc:  # e.g. an unreachable CFTCLIP_DATABASE_URL, or a database from a newer version
        show_error(exc)
        st.stop()
    start_queue_poller()  # once per server process: the queue moves with no page open
    if needs_setup(app.sessions):  # no account yet: the first administrator is made first
        _go_unless(page, setup, keep=page is not login)
        page.run()
        return
    user = current_user()
    sync_sign_in_cookie()
    if user is None:
        _go_unless(page, login, keep=page is not setup)
    elif page in (login, setup) or st.session_state.get(TARGET):
        name, params = st.session_state.pop(TARGET, None) or (HOME[user.role], {})
        allowed = name in PAGES and user.role in PAGES[name].roles
        st.switch_page(pages[name if allowed else HOME[user.role]], query_params=params if allowed else None)
    if user is not None:
        _sidebar(user, pages, login)
    page.run()


def require_app_entry() -> None:
    """Send a run of a page that did not come through ``app.py`` (Streamlit's folder mode on a cold server's
    first request) through it, remembering the page. A page run on its own as the main script (a test) is
    left alone."""
    if entered_through_app():
        return
    ctx = get_script_run_ctx()
    if ctx is None or Path(ctx.main_script_path).name != APP_SCRIPT:
        return
    asked = ctx.pages_manager.get_pages().get(ctx.page_script_hash, {}).get("url_pathname", "")
    if asked in PAGES:
        _remember(asked, _query_params())
    # The folder mode's main page is app.py, which then routes to the page asked for (its parameters go along).
    st.switch_page(APP_SCRIPT, query_params=st.query_params.to_dict())


def entered_through_app() -> bool:
    """Whether this browser session is served through ``run_app`` (its pages are registered)."""
    return bool(st.session_state.get(ENTERED_THROUGH_APP))


def home_page(role: str) -> str:
    """The script of a role's first page (where a refused user is sent back to)."""
    return PAGES[HOME[role]].script


def _go_unless(page: StreamlitPage, wanted: StreamlitPage, *, keep: bool) -> None:
    """Switch to ``wanted`` (sign in, set up) unless it is the page already; ``keep`` the page asked for."""
    if page is wanted:
        return
    if keep and page.url_path in PAGES:
        _remember(page.url_path, _query_params())
    st.switch_page(wanted)


def _remember(name: str, params: dict[str, str]) -> None:
    st.session_state[TARGET] = (name, params)


def _query_params() -> dict[str, str]:
    return st.query_params.to_dict()


def _sidebar(user: User, pages: dict[str, StreamlitPage], login: StreamlitPage) -> None:
    from studio.auth import sign_out
    from studio.common import escape_markdown

    with st.sidebar:
        for name, spec in PAGES.items():
            if user.role in spec.roles:
                st.page_link(pages[name])
        st.divider()
        st.caption(f"Signed in as **{escape_markdown(user.username)}** ({user.role})")
        if st.button("Sign out", icon=":material/logout:"):
            sign_out(user.id)
            st.switch_page(login)
