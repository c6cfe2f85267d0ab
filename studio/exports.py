"""Downloads beside every chart (its data as CSV, the picture as SVG and PNG) and table (CSV), and the
point a user picked in a chart."""

from __future__ import annotations

from collections.abc import Callable

import altair as alt
import pandas as pd
import streamlit as st
import vl_convert


def csv_button(frame: pd.DataFrame, name: str, key: str, label: str = "CSV") -> None:
    st.download_button(label, data=lambda: frame.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
                       on_click="ignore", key=f"{key}_csv", icon=":material/download:")


def show_chart(chart: alt.TopLevelMixin, data: pd.DataFrame, name: str, key: str, *,
               on_select: Callable[[], None] | str | None = None, selection: str | None = None) -> None:
    """The chart, with its data (CSV) and the picture (SVG, PNG) to download beside it.

    The pictures are drawn only when a button is clicked (``vl_convert``, offline)."""
    if on_select is None:
        st.altair_chart(chart, width="stretch", key=key)
    else:
        st.altair_chart(chart, width="stretch", key=key, on_select=on_select, selection_mode=selection)
    with st.container(horizontal=True, gap="small"):
        csv_button(data, name, key, "Data (CSV)")
        st.download_button("SVG", data=lambda: vl_convert.vegalite_to_svg(chart.to_json()), file_name=f"{name}.svg",
                           mime="image/svg+xml", on_click="ignore", key=f"{key}_svg", icon=":material/download:")
        st.download_button("PNG", data=lambda: vl_convert.vegalite_to_png(chart.to_json(), scale=2),
                           file_name=f"{name}.png", mime="image/png", on_click="ignore", key=f"{key}_png",
                           icon=":material/download:")


def selected(key: str, param: str, field: str) -> object | None:
    """The ``field`` of the point picked in chart ``key`` under selection ``param`` (None if nothing is)."""
    state = st.session_state.get(key)
    points = state.selection.get(param, []) if state is not None else []
    return points[0].get(field) if points else None


