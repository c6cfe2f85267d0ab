"""Who is signed in to this browser tab: the session token (in the tab's session state, and in a cookie so
that a refresh or a new tab stays signed in), signing in and out, and giving back the item a user held on
the Annotate page."""

from __future__ import annotations

import json

import streamlit as st

from annotations.labeling import release_leases
from annotations.models import User
from annotations.users import DEFAULT_SESSION_HOURS, end_session, user_for_session
from studio.instance import studio
from studio.navigation import require_app_entry

HOLDS_LEASE = "holds_lease"  # set while the Annotate page shows this browser session a card leased to the user
SESSION_PARAM = "session"  # session-state key of this tab's sign-in token
SESSION_COOKIE = "cftclip_session"  # the browser keeps the token here, so that a refresh or a new tab stays signed in
COOKIE_ACTION = "_sign_in_cookie"  # "set" after signing in, "clear" after signing out: the app tells the browser


def current_user() -> User | None:
    """The signed-in user of this browser tab, or None.

    The token lives in the tab's session state; a refresh or a new tab finds it in the browser's cookie
    (Streamlit sees the cookies of the page's first request, ``st.context.cookies``). A token in the page
    address is never adopted, so a link cannot sign anyone in as someone else; older versions put it
    there, so one found is removed from the address.
    """
    require_app_entry()
    if SESSION_PARAM in st.query_params:
        del st.query_params[SESSION_PARAM]
    token = st.session_state.get(SESSION_PARAM)
    cookie = st.context.cookies.get(SESSION_COOKIE)
    cookie = cookie if isinstance(cookie, str) else None  # (AppTest has no browser: its cookies are stand-ins)
    if not token and st.session_state.get(COOKIE_ACTION) != "clear":  # a tab that signed out ignores the cookie
        token = cookie
    if not token:
        return None
    user = user_for_session(studio().sessions, token)
    if user is None:  # expired, signed out elsewhere, or deactivated
        st.session_state.pop(SESSION_PARAM, None)
        if token == cookie:
            st.session_state[COOKIE_ACTION] = "clear"
        return None
    st.session_state[SESSION_PARAM] = token
    return user


def remember_sign_in(token: str) -> None:
    """This tab is signed in with ``token``; the app then hands it to the browser's cookie."""
    st.session_state[SESSION_PARAM] = token
    st.session_state[COOKIE_ACTION] = "set"


def sync_sign_in_cookie() -> None:
    """Called by the app on every run: after a sign-in or sign-out, make the browser's cookie match.

    Streamlit cannot set a cookie from Python, so a small script does (``document.cookie``): the cookie
    is SameSite=Strict, Secure over https, and ends with the session; a script cannot make it HttpOnly.
    """
    action = st.session_state.get(COOKIE_ACTION)
    token = st.session_state.get(SESSION_PARAM)
    if action == "set" and token:
        value, max_age = token, int(DEFAULT_SESSION_HOURS * 3600)
    elif action == "clear":
        value, max_age = "", 0
    else:
        return
    cookie = json.dumps(f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; SameSite=Strict")
    where = st.sidebar if action == "set" else st  # signed in: with the other sign-in controls, out of the page
    where.html(f'<script>document.cookie = {cookie} + (location.protocol === "https:" ? "; Secure" : "");</script>',
               unsafe_allow_javascript=True)


def give_back_leases(user_id: int, *, signing_out: bool = False) -> None:
    """The user left the Annotate page (or signs out): the item they held goes to the next annotator now,
    not when the lease runs out."""
    if st.session_state.pop(HOLDS_LEASE, False) or signing_out:
        release_leases(studio().sessions, user_id)


def sign_out(user_id: int) -> None:
    """End this tab's session everywhere it is used (the cookie's token is the same), and clear the cookie."""
    give_back_leases(user_id, signing_out=True)
    token = st.session_state.pop(SESSION_PARAM, None)
    st.session_state[COOKIE_ACTION] = "clear"
    if token:
        end_session(studio().sessions, token)
