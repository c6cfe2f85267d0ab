"""Disagreement: where the model and the humans part ways, who agrees with whom, and a triage queue in which a
researcher records why each confident disagreement happened (feeding a hard-cases export)."""

import streamlit as st

from annotations import results as store
from cftclip_core import results
from cftclip_core.errors import CftClipError
from cftclip_core.wording import plural
from studio import charts
from studio.common import escape_markdown, media_path, plain_text, require_role, show_error, studio
from studio.exports import csv_button, selected, show_chart
from studio.results_view import clear_caches, reference_caption, results_header
from studio.tables import show_table

CELL = "disagreement_cell"
QUEUE_ROWS = 200

user = require_role("researcher", "admin")
app = studio()
st.title("Disagreement")

view = results_header("disagreement", subset="Items", threshold=True)
data, info, dataset, reference, threshold = view.data, view.score_set, view.dataset, view.reference, view.threshold
if threshold.value is None:
    st.warning(f"No threshold, so no prediction to compare: {threshold.note}.")
    st.stop()
frame = results.with_predictions(results.evaluated(data, info.id, view.subset), threshold.value)
st.caption(f"Threshold: {results.describe_threshold(threshold)}. " + reference_caption(frame, reference))


def link_to_article(item_id: int) -> None:
    st.page_link("pages/home.py", label="Open this article on the Articles page", icon=":material/open_in_new:",
                 query_params={"dataset": dataset.name, "item": str(item_id)})


def pick_cell() -> None:
    cell = selected("disagreement_confusion", "cell", "cell")
    if cell is not None:
        st.session_state[CELL] = cell


confusion_tab, annotators_tab, votes_tab, triage_tab = st.tabs(
    ["Confusion matrix", "Annotators", "Similarity and votes", "Triage queue"])

with confusion_tab:
    cells = results.confusion_cells(frame)
    if cells.empty:
        st.info("No labelled item to compare with the model yet: annotate items on the Annotate page, settle gold on "
                "the Review page, or compare with the imported file's label.")
    else:
        counts = results.confusion_counts(cells)
        show_chart(charts.confusion_chart(counts), counts, f"{dataset.name}-confusion", "disagreement_confusion",
                   on_select=pick_cell, selection="cell")
        cell = st.segmented_control("Items behind a cell", list(results.CELLS), key=CELL,
                                    format_func=lambda c: f"{c}: {results.CELLS[c]}")
        if cell is not None:
            behind = cells[cells["cell"] == cell][["item_id", "external_id", "title", "similarity", "prediction",
                                                   "reference", "reference_source", "n_votes", "share_yes"]]
            show_table(behind, hidden=["item_id"])
            csv_button(behind, f"{dataset.name}-{cell}", "disagreement_cell_items")

with annotators_tab:
    agreement = results.human_agreement(data, frame["item_id"]).merge(
        results.model_agreement_with_annotators(data, frame), on="annotator", how="outer")
    if agreement.empty:
        st.info("No annotator has labelled these items yet: annotators label them on the Annotate page.")
    else:
        show_chart(charts.annotator_chart(agreement), agreement, f"{dataset.name}-annotators",
                   "disagreement_annotators")
        show_table(agreement, labels={"n_reference": "Items (ref.)", "agreement_reference": "Agr. ref.",
                                      "kappa_reference": "Kappa ref."})
        st.caption("Against gold from a majority vote, each annotator is compared with the majority of the others.")

with votes_tab:
    voted = frame[frame["n_votes"] > 0].copy()
    if voted.empty:
        st.info("No votes on these items yet: the share of annotators saying 'shows an actor' appears once they vote.")
    else:
        voted["reference_name"] = voted["reference"].map(results.label_name)
        points = voted[["item_id", "external_id", "title", "similarity", "share_yes", "n_votes", "reference_name"]]
        show_chart(charts.points_chart(points, "similarity", "share_yes", threshold.value,
                                              "Similarity against the annotators' votes", "Similarity",
                                              "Share of annotators saying 'shows an actor'"),
                   points, f"{dataset.name}-similarity-votes", "disagreement_votes", on_select="rerun",
                   selection="item")
        picked = selected("disagreement_votes", "item", "item_id")
        if picked is not None:
            row = voted[voted["item_id"] == int(picked)].iloc[0]
            plain_text(row["title"], weight=600)
            link_to_article(int(picked))

with triage_tab:
    with app.sessions() as session:
        decisions = store.triage_decisions(session, info.id)
    queue = results.triage_queue(frame, threshold.value, decisions)
    controls = st.columns(2)
    margin = controls[0].number_input("At least this far from the threshold", 0.0, 2.0, 0.0, step=0.01,
                                      format="%.3f", key="triage_margin")
    undecided = controls[1].toggle("Only items without a verdict", key="triage_undecided")
    queue = queue[queue["margin"] >= margin]
    if undecided:
        queue = queue[queue["verdict"].isna()]
    if queue.empty:
        st.success("No model/human disagreement left here.")
    else:
        st.caption(f"{plural(len(queue), 'disagreement')}, the most confident first (farthest from the threshold).")
        show_table(queue.head(QUEUE_ROWS)[["external_id", "title", "similarity", "margin", "prediction", "reference",
                                           "share_yes", "verdict", "note"]])
        csv_button(queue.drop(columns=["media_sha256"]), f"{dataset.name}-triage-queue", "triage_queue")
        names = dict(zip(queue["item_id"], queue["external_id"] + ": " + queue["title"].str.slice(0, 80)))
        chosen = st.selectbox("Item to triage", list(names), format_func=names.get, key="triage_item")
        row = queue[queue["item_id"] == chosen].iloc[0]
        picture, text = st.columns([1, 2], gap="large")
        image = media_path(row["media_sha256"])
        if image.is_file():
            picture.image(str(image), width="stretch")
        with text:
            plain_text(row["title"], size="1.15rem", weight=600)
            plain_text(row["summary"])
            st.caption(f"Similarity {row['similarity']:.3f} (threshold {threshold.value:.3f}): the model says "
                       f"{row['prediction']}, the reference says {row['reference']} ({row['reference_source']}); "
                       f"{plural(int(row['n_votes']), 'vote')}, {row['n_yes']} saying yes.")
            link_to_article(int(chosen))
        with st.form(f"triage-{chosen}"):
            current = row["verdict"] if isinstance(row["verdict"], str) else None
            verdict = st.radio("Why do they disagree?", list(store.VERDICTS), format_func=store.VERDICTS.get,
                               horizontal=True, index=list(store.VERDICTS).index(current) if current else None)
            note = st.text_input("Note (optional)", value=row["note"] if isinstance(row["note"], str) else "")
            if st.form_submit_button("Save verdict", type="primary"):
                try:
                    if verdict is None:
                        raise results.ResultsError("Pick a verdict first: model wrong, humans wrong, ambiguous or "
                                                   "broken image.")
                    store.record_triage(app.sessions, int(chosen), info.id, verdict, note, user.id, threshold)
                except CftClipError as exc:
                    show_error(exc)
                else:
                    clear_caches()
                    st.toast(f"Verdict saved: {escape_markdown(store.VERDICTS[verdict])}.")
                    st.rerun()
    with app.sessions() as session:
        hard = store.hard_cases(session, dataset.id)
    st.caption(f"Hard cases: {plural(len(hard), 'triaged disagreement')} in this dataset, over all its score sets.")
    csv_button(hard, f"{dataset.name}-hard-cases", "triage_hard_cases", "Download the hard cases (CSV)")
