"""First run: create the first administrator. Offered only while no user exists."""

import streamlit as st

from annotations.users import AuthError, create_first_admin, start_session
from studio.common import remember_sign_in, show_error, studio

app = studio()
st.title("Welcome to CFT-CLIP Studio")
st.write("No account exists yet. Create the first administrator; they can then add researchers and annotators.")
with st.form("setup"):
    username = st.text_input("Administrator username", autocomplete="username")
    display_name = st.text_input("Display name (optional)")
    password = st.text_input("Password (at least 8 characters)", type="password", autocomplete="new-password")
    repeat = st.text_input("Password again", type="password", autocomplete="new-password")
    submitted = st.form_submit_button("Create administrator", type="primary")
if submitted:
    if password != repeat:
        st.error("The two passwords differ; type the same password twice.")
    else:
        try:
            admin = create_first_admin(app.sessions, username, password, display_name=display_name)
        except AuthError as exc:
            show_error(exc)
        else:
            remember_sign_in(start_session(app.sessions, admin.id))
            st.rerun()
