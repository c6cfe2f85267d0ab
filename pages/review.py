"""Review: agreement, the queue of disagreements and flags, gold labels, dataset settings, export."""


import pandas as pd
import streamlit as st

from annotations.importer import list_datasets
from annotations.labeling import set_annotation_settings
from annotations.review import export_table, review_item, review_queue, review_summary, set_gold
from annotations.score_sets import is_meaningless, score_set_median, score_sets_for
from cftclip_core.errors import CftClipError
from studio import charts
from studio.common import media_path, plain_text, require_role, show_answers, show_error, studio

user = require_role("researcher", "admin")
app = studio()
st.title("Review")

with app.sessions() as session:
    datasets = {d.name: d for d in list_datasets(session)}
if not datasets:
    st.info("No dataset yet: import one on the Import page.")
    st.stop()
dataset = datasets[st.selectbox("Dataset", list(datasets), key="review_dataset")]

agreement_tab, queue_tab, settings_tab, export_tab = st.tabs(["Agreement", "Review queue", "Settings", "Export"])

with agreement_tab:
    with app.sessions() as session:
        summary = review_summary(session, dataset.id)
    report = summary.report
    kappa_help = "1 = perfect agreement, 0 = what chance gives; above 0.6 is usually read as substantial."
    cols = st.columns(5)
    cols[0].metric("Votes", report.n_votes)
    cols[1].metric("Items with 2+ votes", f"{report.n_items_multi} of {summary.n_items}")
    agreeing = report.percent.pairwise
    cols[2].metric("Percent agreement", "n/a" if agreeing is None or pd.isna(agreeing) else f"{agreeing:.1%}",
                   help="Share of agreeing annotator pairs per item, averaged over items with 2+ votes.")
    cols[3].metric("Fleiss' kappa", charts.number(report.fleiss.kappa), help=kappa_help)
    cols[4].metric("Krippendorff's alpha", charts.number(report.krippendorff.alpha), help=kappa_help)
    for note in {report.fleiss.note, report.krippendorff.note, report.percent.note} - {"", None}:
        st.caption(note)
    st.subheader("Annotators")
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

with queue_tab:
    with app.sessions() as session:
        queue = review_queue(session, dataset.id)
    if queue.empty:
        st.success("No disagreements or flags so far.")
    else:
        undecided = int((~queue["decided"]).sum())
        st.caption(f"{len(queue)} item(s) with disagreement or a flag; {undecided} not settled yet. "
                   "Gold is the majority vote unless you settle an item here.")
        st.dataframe(queue[["external_id", "n_votes", "n_yes", "n_no", "flagged", "majority", "gold", "gold_method"]],
                     hide_index=True, width="stretch", column_config={
                         "external_id": "Item", "n_votes": "Votes", "n_yes": "Yes", "n_no": "No", "flagged": "Flagged",
                         "majority": "Majority", "gold": "Gold", "gold_method": "Gold from"})
        chosen = st.selectbox("Item to settle", queue["item_id"].tolist(),
                              format_func=dict(zip(queue["item_id"], queue["external_id"])).get)
        row = queue[queue["item_id"] == chosen].iloc[0]
        with app.sessions() as session:
            item, answers = review_item(session, int(chosen))
        picture, text = st.columns([3, 2], gap="large")
        picture.image(str(media_path(item.media_sha256)), width="stretch")
        with text:
            plain_text(item.title, size="1.25rem", weight=600)
            plain_text(item.summary)
            show_answers(answers)
        with st.form(f"gold-{chosen}"):
            current = None if pd.isna(row["gold"]) else int(row["gold"])  # a tie has none: nothing is preselected
            value = st.radio("Gold label", [1, 0], horizontal=True,
                             format_func={1: "1: shows an actor", 0: "0: no actor"}.get,
                             index=None if current is None else [1, 0].index(current))
            reason = st.text_input("Reason (required)", value=row["gold_reason"] if isinstance(row["gold_reason"], str) else "")
            save, withdraw = st.columns(2)
            saved = save.form_submit_button("Save gold label", type="primary")
            withdrawn = withdraw.form_submit_button("Back to the majority vote")
        if saved or withdrawn:
            try:
                if saved and value is None:
                    raise CftClipError("Pick the gold label first: 1 (shows an actor) or 0 (no actor).")
                set_gold(app.sessions, int(chosen), None if withdrawn else value, reason, user.id)
            except CftClipError as exc:
                show_error(exc)
            else:
                st.toast("Gold label saved." if saved else "Back to the majority vote.")
                st.rerun()

with settings_tab:
    with app.sessions() as session:
        score_sets = {s.id: f"#{s.id} {s.model_name} on {s.text_field}" + (" (tiny model: meaningless)" if
                                                                            is_meaningless(s) else "")
                      for s in score_sets_for(session, dataset.id)}
    with st.form("settings"):
        overlap = st.number_input("Annotators per item", 1, 20, value=dataset.overlap)
        lease = st.number_input("Minutes an annotator holds an item", 1, 240, value=dataset.lease_minutes)
        reveal = st.toggle("Show the model's similarity after each vote", value=dataset.reveal_score_after_vote)
        order = st.selectbox("Order items by model uncertainty (closest to the threshold first)",
                             [None, *score_sets], format_func=lambda i: "no: in import order" if i is None else score_sets[i],
                             index=([None, *score_sets].index(dataset.uncertainty_score_set_id)
                                    if dataset.uncertainty_score_set_id in score_sets else 0))
        if dataset.uncertainty_threshold is not None:
            default_threshold = dataset.uncertainty_threshold
        else:  # the score set's median, a label-free threshold like val-median
            with app.sessions() as session:
                default_threshold = score_set_median(session, order) if order is not None else 0.0
        threshold = st.number_input("Threshold for that ordering (default: the score set's median)", -1.0, 1.0,
                                    value=default_threshold, step=0.01, format="%.3f")
        guidelines = st.text_area("Guidelines shown to annotators (Markdown; empty: the built-in ones)",
                                  value=dataset.guidelines, height=200)
        if st.form_submit_button("Save settings", type="primary"):
            try:
                set_annotation_settings(app.sessions, dataset.id, overlap=int(overlap), lease_minutes=int(lease),
                                        reveal_score_after_vote=reveal, guidelines=guidelines,
                                        uncertainty_score_set_id=order,
                                        uncertainty_threshold=float(threshold) if order is not None else None)
            except CftClipError as exc:
                show_error(exc)
            else:
                st.toast("Settings saved.")
                st.rerun()

with export_tab:
    with app.sessions() as session:
        table = export_table(session, dataset.id)
    st.caption("NewsTT layout: `label` is the gold label; `label_<name>` is each annotator's label; "
               "`gold_method` says how the gold was decided. With images: `python -m annotations export`.")
    st.dataframe(table.head(20), hide_index=True, width="stretch")
    csv, jsonl = st.columns(2)
    csv.download_button("Download CSV", table.to_csv(index=False), f"{dataset.name}-labels.csv", "text/csv")
    jsonl.download_button("Download JSONL", table.to_json(orient="records", lines=True, force_ascii=False),
                          f"{dataset.name}-labels.jsonl", "application/json")
