"""What the app runs beside its pages: the instance's queue poller, started with the server's first page
run and kept for the life of the server process (so the queue moves with no browser open).

``CFTCLIP_APP_POLLER=0`` starts none: for a server whose queue is polled by ``python -m train_jobs poll
--watch`` as a service of its own (the two would take turns anyway: one poller per instance), and for tests
that poll by hand.
"""

from __future__ import annotations

import os

import streamlit as st

from studio.instance import studio
from train_jobs import api

APP_POLLER_ENV = "CFTCLIP_APP_POLLER"


@st.cache_resource(show_spinner=False, on_release=lambda poller: poller and poller.stop(),
                   validate=lambda poller: poller is None or poller.is_running())
def start_queue_poller() -> api.Poller | None:
    """The app's poller thread, once per server process (started again by the next page run should it ever
    end); None when switched off."""
    if os.environ.get(APP_POLLER_ENV, "1").strip() == "0":
        return None
    poller = api.Poller(studio().settings, owner="the app")
    poller.start_thread()
    return poller
