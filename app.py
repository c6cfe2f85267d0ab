"""CFT-CLIP Studio: ``streamlit run app.py``.

Entry point only: the page list, sign-in and each role's sidebar are ``studio.navigation``'s, reached with
nothing but Streamlit loaded; every page checks the role again itself.
"""

import streamlit as st

from studio.navigation import run_app

st.set_page_config(page_title="CFT-CLIP Studio", page_icon=":material/newspaper:", layout="wide")
run_app()
