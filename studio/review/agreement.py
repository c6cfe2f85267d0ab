"""Review > Agreement: the team's agreement statistics and each annotator's numbers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotations.models import Dataset
from annotations.review import review_summary
from studio import charts
from studio.common import Studio

KAPPA_HELP = "1 = perfect agreement, 0 = what chance gives; above 0.6 is usually read as substantial."


def agreement_tab(app: Studio, dataset: Dataset) -> None:
    with app.sessions() as session:
        summary = review_summary(session, dataset.id)
    report = summary.report
    cols = st.columns(5)
    cols[0].metric("Votes", report.n_votes)
    cols[1].metric("Items with 2+ votes", f"{report.n_items_multi} of {summary.n_items}")
    agreeing = report.percent.pairwise
    cols[2].metric("Percent agreement", "n/a" if agreeing is None or pd.isna(agreeing) else f"{agreeing:.1%}",
                   help="Share of agreeing annotator pairs per item, averaged over items with 2+ votes.")
    cols[3].metric("Fleiss' kappa", charts.number(report.fleiss.kappa), help=KAPPA_HELP)
    cols[4].metric("Krippendorff's alpha", charts.number(report.krippendorff.alpha), help=KAPPA_HELP)
    for note in {report.fleiss.note, report.krippendorff.note, report.percent.note} - {"", None}:
        st.caption(note)
    st.subheader("Annotators")
    st.caption("Votes on control items count here like any other; each annotator's accuracy on them is on the "
               "Control items tab.")
    st.dataframe(summary.annotators.drop(columns=["note"], errors="ignore"), hide_index=True, width="stretch",
                 column_config={
                     "annotator_id": "Annotator", "n_votes": "Votes", "share_yes": st.column_config.NumberColumn(
                         "Share yes", format="%.2f"),
                     "n_compared": "Items compared",
                     "agreement_with_majority": st.column_config.NumberColumn("Agrees with others' majority",
                                                                              format="%.2f"),
                     "kappa_with_majority": st.column_config.NumberColumn("Kappa vs majority", format="%.2f"),
                     "median_seconds": st.column_config.NumberColumn("Median seconds per item", format="%.1f"),
                 })
    if not summary.streaks.empty:
        st.warning(f"{len(summary.streaks)} suspiciously fast streak(s): 10 or more votes in a row, each under 2 s.")
        st.dataframe(summary.streaks, hide_index=True, width="stretch")
    st.subheader("Cohen's kappa per pair of annotators")
    st.dataframe(report.pairwise, hide_index=True, width="stretch", column_config={
        "annotator_a": "Annotator", "annotator_b": "and annotator", "n_items": "Items both labelled",
        "observed_agreement": st.column_config.NumberColumn("Observed agreement", format="%.2f"),
        "expected_agreement": st.column_config.NumberColumn("Expected by chance", format="%.2f"),
        "kappa": st.column_config.NumberColumn("Cohen's kappa", format="%.2f"), "note": "Note",
    })
