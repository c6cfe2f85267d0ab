"""Users (admins only): add people, set roles, reset passwords, deactivate. Passwords are never shown."""

import pandas as pd
import streamlit as st

from annotations.models import ROLES
from annotations.users import AuthError, create_user, list_users, reset_password, set_active, set_role
from studio.common import escape_markdown, require_role, show_error, studio

require_role("admin")
app = studio()
st.title("Users")
DONE = "users_done"  # what the last action did, shown after its rerun
ADD_FIELDS = ("add_username", "add_display_name", "add_password")
if DONE in st.session_state:
    st.success(escape_markdown(st.session_state.pop(DONE)))

with app.sessions() as session:
    users = list_users(session)
st.dataframe(
    pd.DataFrame([{"username": u.username, "name": u.display_name, "role": u.role, "active": u.active,
                   "since": u.created_at} for u in users]),
    hide_index=True, width="stretch",
)


def attempt(action, success: str, *, clear: tuple[str, ...] = ()) -> None:  # noqa: ANN001 - no-argument callable
    """Run ``action``; on success empty the ``clear`` fields and say ``success`` after the rerun. A refusal
    keeps every field as typed, so only the wrong one needs fixing."""
    try:
        action()
    except AuthError as exc:
        show_error(exc)
    else:
        for key in clear:
            del st.session_state[key]
        st.session_state[DONE] = success
        st.rerun()


add, change = st.columns(2, gap="large")
with add, st.form("add-user"):
    st.subheader("Add a user")
    username = st.text_input("Username (letters, digits, . _ -)", key="add_username")
    display_name = st.text_input("Display name (optional)", key="add_display_name")
    role = st.selectbox("Role", ROLES, index=ROLES.index("annotator"))
    password = st.text_input("First password (at least 8 characters; they can be given a new one later)",
                             type="password", autocomplete="new-password", key="add_password")
    if st.form_submit_button("Add user", type="primary"):
        attempt(lambda: create_user(app.sessions, username, password, role, display_name), f"Added {username}.",
                clear=ADD_FIELDS)

with change:  # not a form: choosing a user must fill in their current role and state at once
    st.subheader("Change a user")
    who = st.selectbox("User", [u.username for u in users], key="change_user")
    chosen = next(u for u in users if u.username == who)
    new_role = st.selectbox("New role", ROLES, index=ROLES.index(chosen.role), key=f"role-{who}")
    promoting = new_role == "admin" and chosen.role != "admin"
    confirmed = promoting and st.checkbox(
        f"Yes, make {who} an administrator: they can manage every user, role and password", key=f"promote-{who}")
    if st.button("Set role", disabled=new_role == chosen.role):
        if promoting and not confirmed:
            st.error(escape_markdown(f"Tick the box above to confirm that {who} becomes an administrator; "
                                     "nothing was changed."), icon=":material/error:")
        else:
            attempt(lambda: set_role(app.sessions, who, new_role), f"{who} is now {new_role}.")
    new_password = st.text_input("New password", type="password", autocomplete="new-password", key=f"password-{who}")
    if st.button("Reset password (signs them out everywhere)"):
        attempt(lambda: reset_password(app.sessions, who, new_password), f"New password set for {who}.")
    if chosen.active:
        if st.button("Deactivate", help="Signs them out and gives back the items they hold"):
            attempt(lambda: set_active(app.sessions, who, False), f"{who} is deactivated.")
    elif st.button("Activate"):
        attempt(lambda: set_active(app.sessions, who, True), f"{who} is active.")
