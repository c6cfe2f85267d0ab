"""Review > Settings and Export: a dataset's annotation settings (not a form: choosing a score set
for the ordering fills in its real default threshold at once), and the downloads."""

from __future__ import annotations

import streamlit as st

from annotations.labeling import CONTROL_RATE_RANGE, guidelines_of, set_annotation_settings
from annotations.models import Dataset
from annotations.review import export_archive, export_table
from annotations.score_sets import is_meaningless, score_set_median, score_sets_for
from cftclip_core.errors import CftClipError
from studio.common import Studio, show_error


def settings_tab(app: Studio, dataset: Dataset) -> None:
    with app.sessions() as session:
        score_sets = {s.id: f"#{s.id} {s.model_name} on {s.text_field}" + (" (tiny model: meaningless)" if
                                                                            is_meaningless(s) else "")
                      for s in score_sets_for(session, dataset.id)}
    key = f"{dataset.id}"  # every field is the dataset's own: switching datasets shows its values
    overlap = st.number_input("Annotators per item", 1, 20, value=dataset.overlap, key=f"overlap-{key}")
    lease = st.number_input("Minutes an annotator holds an item", 1, 240, value=dataset.lease_minutes,
                            key=f"lease-{key}")
    reveal = st.toggle("Show the model's similarity after each vote", value=dataset.reveal_score_after_vote,
                       key=f"reveal-{key}")
    low, high = CONTROL_RATE_RANGE
    rate = st.number_input("Share of each annotator's items that are control items (when the dataset has some)",
                           low, high, value=float(dataset.control_rate), step=0.05, format="%.2f", key=f"rate-{key}")
    options = [None, *score_sets]
    order = st.selectbox("Order items by model uncertainty (closest to the threshold first)", options,
                         format_func=lambda i: "no: in import order" if i is None else score_sets[i],
                         index=options.index(dataset.uncertainty_score_set_id)
                         if dataset.uncertainty_score_set_id in score_sets else 0, key=f"order-{key}")
    threshold = None
    if order is not None:
        with app.sessions() as session:
            median = score_set_median(session, order)
        stored = dataset.uncertainty_threshold if order == dataset.uncertainty_score_set_id else None
        threshold = st.number_input(
            f"Threshold for that ordering (the score set's median: {median:.3f})", -1.0, 1.0,
            value=stored if stored is not None else median, step=0.01, format="%.3f", key=f"threshold-{key}-{order}")
    guidelines = st.text_area("Guidelines shown to annotators (Markdown; these are the built-in ones until you "
                              "change them)", value=guidelines_of(dataset), height=260, key=f"guidelines-{key}")
    if st.button("Save settings", type="primary"):
        try:
            set_annotation_settings(app.sessions, dataset.id, overlap=int(overlap), lease_minutes=int(lease),
                                    reveal_score_after_vote=reveal, guidelines=guidelines, control_rate=float(rate),
                                    uncertainty_score_set_id=order, uncertainty_threshold=threshold)
        except CftClipError as exc:
            show_error(exc)
        else:
            st.toast("Settings saved.")
            st.rerun()


def export_tab(app: Studio, dataset: Dataset) -> None:
    with app.sessions() as session:
        table = export_table(session, dataset.id)
    st.caption("NewsTT layout: `label` is the gold label; `label_<name>` is each annotator's label; "
               "`gold_method` says how the gold was decided. The ZIP holds the same table as `labels.csv` and the "
               "images in `images/` (as `python -m annotations export` writes them).")
    st.dataframe(table.head(20), hide_index=True, width="stretch")
    csv, jsonl, archive = st.columns(3)
    csv.download_button("Download CSV", table.to_csv(index=False), f"{dataset.name}-labels.csv", "text/csv")
    jsonl.download_button("Download JSONL", table.to_json(orient="records", lines=True, force_ascii=False),
                          f"{dataset.name}-labels.jsonl", "application/json")

    def zipped() -> bytes:  # built when clicked, not on every run
        with app.sessions() as session:
            return export_archive(session, dataset.id, app.settings)

    archive.download_button("Download images and labels (ZIP)", zipped, f"{dataset.name}-labels-and-images.zip",
                            "application/zip")
