"""Every key the Annotate page answers, in one table: the buttons take their shortcuts from it and
the keys help lists it, so the help cannot miss a key."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotations.labeling import REASONS

YES, NO, SKIP, UNDO, FLAG, ZOOM, GUIDE, HELP = "y", "n", "s", "u", "f", "z", "g", "h"
REASON_KEYS = {reason: str(number) for number, reason in enumerate(REASONS, start=1)}
KEYS: dict[str, str] = {
    YES: "Yes: the thumbnail shows an actor of the news event",
    NO: "No: it does not (with the reasons picked)",
    **{key: f"Why not? pick or drop the reason '{reason}'" for reason, key in REASON_KEYS.items()},
    SKIP: "Skip: cannot judge, or the image does not load",
    UNDO: "Undo your last vote (press again to go further back)",
    FLAG: "Flag the item for a researcher, then vote as usual",
    ZOOM: "Zoom: the image at full size",
    GUIDE: "Guidelines",
    HELP: "This list of keys",
}


def keys_table() -> None:
    """The keys as a plain HTML table (readable by screen readers, unlike a data grid)."""
    st.table(pd.DataFrame({"Key": [k.upper() for k in KEYS], "What it does": list(KEYS.values())}), hide_index=True)
