"""Sign in. The same message for an unknown user and a wrong password."""

import streamlit as st

from annotations.users import AuthError, authenticate, start_session
from studio.common import remember_sign_in, show_error, studio

app = studio()
st.title("Sign in to CFT-CLIP Studio")
with st.form("sign-in"):
    username = st.text_input("Username", autocomplete="username")
    password = st.text_input("Password", type="password", autocomplete="current-password")
    submitted = st.form_submit_button("Sign in", type="primary")
if submitted:
    try:
        user = authenticate(app.sessions, username, password)
    except AuthError as exc:
        show_error(exc)
    else:
        remember_sign_in(start_session(app.sessions, user.id))
        st.rerun()
st.caption("No account? Ask an administrator to create one.")
