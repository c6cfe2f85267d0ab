"""Models: every score set of a dataset in one metrics table (like a paper's main table), and two of them
side by side with a paired bootstrap over the items both scored."""

import pandas as pd
import streamlit as st

from cftclip_core import results
from cftclip_core.errors import CftClipError
from cftclip_core.metrics import METRIC_NAMES
from studio import charts
from studio.common import require_role, show_error
from studio.exports import csv_button, show_chart
from studio.results_view import STRATEGY_HELP, pick_score_set, results_data, results_header, version_of
from studio.tables import show_table

N_BOOTSTRAP = 1000

require_role("researcher", "admin")
st.title("Models")


@st.cache_data(max_entries=16, show_spinner="Computing the metrics with bootstrap intervals...")
def metrics_for(dataset_id: int, reference: str, version: tuple[object, ...], strategy: str, subset: str) -> pd.DataFrame:
    del version  # part of the cache key only
    return results.metrics_table(results_data(dataset_id, reference), strategy, subset, N_BOOTSTRAP)


@st.cache_data(max_entries=16, show_spinner="Resampling the items...")
def comparison_for(dataset_id: int, reference: str, version: tuple[object, ...], a: int, b: int, strategy: str,
                   metric: str, subset: str) -> results.Comparison:
    del version
    return results.compare_score_sets(results_data(dataset_id, reference), a, b, strategy, metric, subset,
                                      N_BOOTSTRAP)


view = results_header("models", score_set=None, subset="Evaluate on", slots=1)
data, dataset, reference, subset = view.data, view.dataset, view.reference, view.subset
strategy = view.slots[0].selectbox("Threshold", results.STRATEGIES, key="models_strategy", help=STRATEGY_HELP)
evaluation = results.Evaluation(reference, strategy, subset)
version = version_of(dataset.id)
table = metrics_for(dataset.id, reference, version, strategy, subset)

st.subheader("All score sets")
st.caption(results.describe_evaluation(evaluation))
if (table["n_evaluated"] == 0).all():
    st.info("No labelled item to evaluate yet: annotate on the Annotate page, settle gold on the Review page, or "
            "compare with the imported file's label if it has one.")
if any(info.meaningless for info in data.score_sets):
    st.warning("Rows marked 'tiny model: meaningless' come from the tiny offline model with random weights.",
               icon=":material/warning:")
show_table(table, hidden=["score_set_id"], key="models_table")
csv_button(table, f"{dataset.name}-models", "models_table")
drawn = table.dropna(subset=["f1"])
if not drawn.empty:
    show_chart(charts.metrics_chart(drawn), drawn, f"{dataset.name}-models-f1", "models_f1")

st.subheader("Two score sets side by side")
if len(data.score_sets) < 2:
    st.info("Score the dataset with a second model (Articles page) to compare two side by side.")
    st.stop()
cols = st.columns(3)
a = pick_score_set(data, "models_a", "A", 0, container=cols[0])
b = pick_score_set(data, "models_b", "B", 1, container=cols[1])
metric = cols[2].selectbox("Metric", METRIC_NAMES, key="models_metric")
try:
    comparison = comparison_for(dataset.id, reference, version, a.id, b.id, strategy, metric, subset)
except CftClipError as exc:
    show_error(exc)
    st.stop()
result = comparison.result
cols = st.columns(4)
cols[0].metric(f"{metric} of A", charts.number(result.value_a))
cols[1].metric(f"{metric} of B", charts.number(result.value_b))
cols[2].metric("A - B", charts.number(result.difference),
               help=f"{result.confidence:.0%} interval over {result.n_resamples} paired resamples of the items")
cols[3].metric("p-value (two-sided)", charts.number(result.p_value))
st.caption(results.describe_evaluation(evaluation, comparison.n_items, f"A {charts.number(comparison.threshold_a)}, "
                                      f"B {charts.number(comparison.threshold_b)} ({strategy}, tuned per score set)")
           + f" Both score sets scored these items. {result.confidence:.0%} interval of A - B: "
             f"[{charts.number(result.ci_low)}, {charts.number(result.ci_high)}].")
summary = pd.DataFrame([{"metric": metric, "a": a.name, "b": b.name, "value_a": result.value_a,
                         "value_b": result.value_b, "difference": result.difference, "ci_low": result.ci_low,
                         "ci_high": result.ci_high, "p_value": result.p_value, "n_items": comparison.n_items,
                         "n_resamples": result.n_resamples, "threshold_a": comparison.threshold_a,
                         "threshold_b": comparison.threshold_b}])
csv_button(summary, f"{dataset.name}-comparison", "models_comparison", "Download this comparison (CSV)")
left, right = st.columns(2)
with left:
    show_chart(charts.difference_chart(comparison.differences, result.difference), comparison.differences,
               f"{dataset.name}-bootstrap", "models_bootstrap")
with right:
    points = comparison.points.assign(reference_name=comparison.points["reference"].astype(str))
    show_chart(charts.points_chart(points, "similarity_a", "similarity_b", None, "Similarity of each item",
                                   "Similarity, A", "Similarity, B", [f"A: {a.name}", f"B: {b.name}"]),
               points, f"{dataset.name}-a-vs-b", "models_points")
