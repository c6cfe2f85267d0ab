"""CFT-CLIP Studio: ``streamlit run app.py``.

Entry point only: prepares the instance folder (database, demo dataset) and routes to the pages.
"""

import streamlit as st

from pages.common import studio

st.set_page_config(page_title="CFT-CLIP Studio", page_icon=":material/newspaper:", layout="wide")
studio()  # first start: creates the instance folder and database, imports the demo dataset

navigation = st.navigation([
    st.Page("pages/home.py", title="Articles", icon=":material/newspaper:", default=True),
])
navigation.run()
