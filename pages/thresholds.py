"""Thresholds: for one score set, how the threshold trades precision for recall, where each strategy puts it,
and how the model's agreement with the reference compares with the annotators' own (the human ceiling)."""

import pandas as pd
import streamlit as st

from cftclip_core import results
from cftclip_core.metrics import compute_metrics
from cftclip_core.wording import plural
from studio import charts
from studio.common import require_role
from studio.exports import csv_button, show_chart
from studio.results_view import OWN_THRESHOLD, reference_caption, results_header
from studio.tables import show_table

require_role("researcher", "admin")
st.title("Thresholds")

view = results_header("thresholds", subset="Evaluate on")
data, info, dataset, reference = view.data, view.score_set, view.dataset, view.reference

frame = results.evaluated(data, info.id, view.subset)
strategies = {name: results.choose_threshold(data, info.id, name) for name in results.STRATEGIES}
scored = data.items[info.column].dropna()
low, high = round(float(scored.min()), 3) - 0.001, round(float(scored.max()), 3) + 0.001
start = strategies["val-median"].value
mine = st.slider("Your threshold", low, high, value=start if start is not None else (low + high) / 2, step=0.001,
                 format="%.3f", key=f"thresholds_slider_{info.id}")  # one per score set: their scales differ
thresholds = {name: choice.value for name, choice in strategies.items() if choice.value is not None}
thresholds[OWN_THRESHOLD] = float(mine)
for name, choice in strategies.items():
    if choice.note:
        st.caption(f"{choice.note}." if choice.note.startswith(name) else f"{name}: {choice.note}.")

scores, labels = results.labelled(frame)
st.caption(reference_caption(frame, reference))
if labels.size == 0:
    st.info("No labels yet for these items: annotate them on the Annotate page, settle gold labels on the Review "
            "page, or compare with the imported file's label if it has one. Meanwhile, the scores alone:")
elif labels.min() == labels.max():
    st.warning(f"All {labels.size} labelled items are {labels[0]}: precision, recall, ROC and kappa need both classes. "
               "Label items of the other class (or pick another subset), then come back. Meanwhile, the scores alone:")
if labels.size == 0 or labels.min() == labels.max():
    hist = results.similarity_histogram(frame)
    show_chart(charts.histogram_chart(hist, thresholds), hist, f"{dataset.name}-similarity", "thresholds_hist")
    st.stop()

table = results.metrics_at(scores, labels, thresholds)
at_mine = table.iloc[-1]
overall = compute_metrics(scores, labels, float(mine))
cols = st.columns(6)
cols[0].metric("F1", charts.number(at_mine["f1"]), help="At your threshold.")
cols[1].metric("Precision", charts.number(at_mine["precision"]), help="At your threshold.")
cols[2].metric("Recall", charts.number(at_mine["recall"]), help="At your threshold.")
cols[3].metric("Kappa", charts.number(at_mine["kappa"]), help="Cohen's kappa with the reference, at your threshold.")
cols[4].metric("ROC-AUC", charts.number(overall.roc_auc), help="Does not depend on the threshold.")
cols[5].metric("AP", charts.number(overall.average_precision), help="Average precision; does not depend on the "
                                                                   "threshold.")
st.caption(results.describe_evaluation(results.Evaluation(reference, "your own", view.subset), labels.size,
                                       f"{mine:.3f} (your own, on the slider)")
           + f" {plural(int(labels.sum()), 'of them is', 'of them are')} 1.")
show_table(table, key="thresholds_table", labels={"threshold_name": "Strategy"})
csv_button(table, f"{dataset.name}-threshold-metrics", "thresholds_table")

curves = results.threshold_curves(scores, labels)
marks = table.assign(tpr=table["tp"] / (table["tp"] + table["fn"]), fpr=table["fp"] / (table["fp"] + table["tn"]))
left, right = st.columns(2)
with left:
    hist = results.similarity_histogram(frame)
    show_chart(charts.histogram_chart(hist, thresholds), hist, f"{dataset.name}-similarity", "thresholds_hist")
    show_chart(charts.curve_chart(curves, marks, "fpr", "tpr", "ROC curve"), curves, f"{dataset.name}-roc",
               "thresholds_roc")
with right:
    show_chart(charts.sweep_chart(curves, thresholds), curves, f"{dataset.name}-sweep", "thresholds_sweep")
    pr = curves[curves["tp"] + curves["fp"] > 0]  # precision is undefined where nothing is predicted 1
    show_chart(charts.curve_chart(pr, marks, "recall", "precision", "Precision-recall curve"), pr,
               f"{dataset.name}-pr", "thresholds_pr")

st.subheader("Human ceiling")
humans = results.human_agreement(data, frame["item_id"])
if humans.empty:
    st.info("No annotator's vote can be compared with the reference yet: the human ceiling needs votes on these "
            "items (with gold from a majority, at least two other annotators per item).")
ceiling = results.human_ceiling(humans)
lines = pd.DataFrame({"who": [f"annotator {name}" for name in humans["annotator"]], "kappa": humans["kappa_reference"]})
if not pd.isna(ceiling):
    lines = pd.concat([lines, pd.DataFrame({"who": ["mean of the annotators"], "kappa": [ceiling]})], ignore_index=True)
show_chart(charts.agreement_chart(curves, lines.dropna(), thresholds), curves[["threshold", "kappa", "accuracy"]],
           f"{dataset.name}-agreement", "thresholds_agreement")
best = curves.loc[curves["kappa"].idxmax()] if curves["kappa"].notna().any() else None
st.caption(f"Mean annotator kappa with the reference: {charts.number(ceiling)}; the model's best: "
           f"{charts.number(best['kappa'] if best is not None else None)}"
           + (f" at threshold {best['threshold']:.3f}." if best is not None else ".")
           + " Annotators are compared on the items they labelled; where gold is a majority vote, with the majority "
           "of the other annotators, so that nobody agrees with their own vote.")
show_table(humans)
csv_button(humans, f"{dataset.name}-human-ceiling", "thresholds_humans")
