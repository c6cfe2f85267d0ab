"""My account (every role): who I am, and changing my own password."""

import streamlit as st

from annotations.users import AuthError, change_own_password
from studio.common import SESSION_PARAM, escape_markdown, require_role, show_error, studio

user = require_role("annotator", "researcher", "admin")
app = studio()
st.title("My account")
st.caption(escape_markdown(f"Signed in as {user.username}" + (f" ({user.display_name})" if user.display_name else "")
                           + f", {user.role}."))
DONE = "account_done"
if st.session_state.pop(DONE, False):
    st.success("Password changed. You stay signed in here; your other sessions were signed out.")

with st.form("change-password"):
    st.subheader("Change my password")
    current = st.text_input("Current password", type="password", autocomplete="current-password", key="pw_current")
    new = st.text_input("New password (at least 8 characters)", type="password", autocomplete="new-password",
                        key="pw_new")
    repeat = st.text_input("New password again", type="password", autocomplete="new-password", key="pw_repeat")
    submitted = st.form_submit_button("Change password", type="primary")
if submitted:
    if new != repeat:
        st.error("The two new passwords differ; type the same new password twice.")
    else:
        try:
            change_own_password(app.sessions, user.id, current, new, keep_token=st.session_state.get(SESSION_PARAM))
        except AuthError as exc:
            show_error(exc)
        else:
            for key in ("pw_current", "pw_new", "pw_repeat"):
                del st.session_state[key]
            st.session_state[DONE] = True
            st.rerun()
