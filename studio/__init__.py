"""The Streamlit app's own package: UI helpers, charts and pickers shared by the pages.

Pages under ``pages/`` are page scripts only (Streamlit treats every file there as a page); what they
share lives here.
"""
