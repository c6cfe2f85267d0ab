"""Who is signed in to this browser tab: the session token (kept in the page address, so that a refresh
keeps it), signing in and out, and giving back the item a user held on the Annotate page."""

from __future__ import annotations

import streamlit as st

from annotations.labeling import release_leases
from annotations.models import User
from annotations.users import end_session, user_for_session
from studio.instance import studio
from studio.navigation import SESSION_PARAM, require_app_entry

HOLDS_LEASE = "holds_lease"  # set while the Annotate page shows this browser session a card leased to the user


def current_user() -> User | None:
    """The signed-in user of this browser tab, or None."""
    require_app_entry()
    token = st.session_state.get(SESSION_PARAM) or st.query_params.get(SESSION_PARAM)
    if not token:
        return None
    user = user_for_session(studio().sessions, token)
    if user is None:  # expired, signed out elsewhere, or deactivated
        st.session_state.pop(SESSION_PARAM, None)
        st.query_params.pop(SESSION_PARAM, None)
        return None
    st.session_state[SESSION_PARAM] = token
    st.query_params[SESSION_PARAM] = token
    return user


def remember_sign_in(token: str) -> None:
    st.session_state[SESSION_PARAM] = token
    st.query_params[SESSION_PARAM] = token


def give_back_leases(user_id: int, *, signing_out: bool = False) -> None:
    """The user left the Annotate page (or signs out): the item they held goes to the next annotator now,
    not when the lease runs out."""
    if st.session_state.pop(HOLDS_LEASE, False) or signing_out:
        release_leases(studio().sessions, user_id)


def sign_out(user_id: int) -> None:
    give_back_leases(user_id, signing_out=True)
    token = st.session_state.pop(SESSION_PARAM, None)
    st.query_params.pop(SESSION_PARAM, None)
    if token:
        end_session(studio().sessions, token)
