"""Seeds: each experiment's runs (one per seed) as dots with their mean and 95% t-interval, and two
experiments compared with a paired test over the seeds both finished. Reads imported results only."""

import streamlit as st

from cftclip_core import results
from cftclip_core.errors import CftClipError
from studio import charts
from studio.common import require_role, show_error, studio
from studio.exports import csv_button, show_chart
from studio.results_view import pick_evaluation
from studio.tables import show_table
from train_jobs import api

require_role("researcher", "admin")
st.title("Seeds")
st.caption("The paper reports every model over five seeds (0-4): a difference between two configurations counts "
           "when it holds across seeds, not on one lucky run.")

with studio().sessions() as session:
    experiments = {e.id: e.name for e in api.training_experiments(session)}
    finished = api.finished_experiments(session, list(experiments))
if not experiments:
    st.info("No experiment yet. Launch one on the Train page; its one-click synthetic demo brings in a real "
            "comparison on a CPU in minutes.")
    st.stop()
chosen = st.multiselect("Experiments", list(experiments), default=finished[:6], format_func=experiments.get,
                        key="seeds_experiments", help="Preselected: up to six experiments whose runs have all ended.")
evaluation = pick_evaluation("seeds")
with studio().sessions() as session:
    per_seed = api.seed_metrics(session, chosen, evaluation)
if per_seed.empty:
    st.info("None of these experiments has a finished run with evaluation scores yet. Runs report here when they "
            "succeed on a labelled evaluation dataset; watch them on the Train page.")
    st.stop()
st.caption(results.describe_evaluation(evaluation) + " Each run's metrics come from the scores it imported, as on "
           "the Models page.")
metric = st.selectbox("Metric", api.metric_names(per_seed), key="seeds_metric")
summary = api.seed_summary(per_seed)
summary = summary[summary["metric"] == metric]
if (summary["n"] < 2).any():
    st.warning("Some experiments have a single finished seed, so no spread or interval can be given; run seeds 0-4.",
               icon=":material/warning:")
show_chart(charts.seeds_chart(per_seed, summary, metric), per_seed, f"seeds-{metric}", "seeds_chart")
show_table(summary, hidden=["experiment_id"])
csv_button(summary, f"seeds-{metric}-summary", "seeds_summary")
with st.expander("Every finished run"):
    show_table(per_seed, hidden=["experiment_id", "run", "score_set_id"])
    csv_button(per_seed, "seeds-runs", "seeds_runs")

st.subheader("Two experiments, seed by seed")
with_runs = list(dict.fromkeys(per_seed["experiment_id"]))
if len(with_runs) < 2:
    st.info("Pick two experiments with finished runs to compare them seed by seed.")
    st.stop()
cols = st.columns(2)
a = cols[0].selectbox("A", with_runs, index=0, format_func=experiments.get, key="seeds_a")
b = cols[1].selectbox("B", with_runs, index=1, format_func=experiments.get, key="seeds_b")
try:
    result = api.paired_comparison(per_seed, a, b, metric)
except CftClipError as exc:
    show_error(exc)
    st.stop()
cols = st.columns(4)
cols[0].metric(f"{metric} of A (mean)", charts.number(result["mean_a"]))
cols[1].metric(f"{metric} of B (mean)", charts.number(result["mean_b"]))
cols[2].metric("A - B", charts.number(result["mean_diff"]),
               help="95% t-interval of the per-seed differences: "
                    f"[{charts.number(result['ci_low'])}, {charts.number(result['ci_high'])}]")
cols[3].metric("p-value (paired t-test)", charts.number(result["p_value"]))
st.caption(f"Seeds {', '.join(map(str, result['seeds']))}: A better on {result['wins_a']}, B better on "
           f"{result['wins_b']}, ties {result['ties']}.")
