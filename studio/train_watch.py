"""The Train page's live view: every experiment with its runs' states, the chosen one's runs (progress,
speed, ETA, results, Cancel and Resume), loss curves and log; refreshed every few seconds. The queue itself
moves by the instance's poller; this view reads, and says who polls."""

from __future__ import annotations

import streamlit as st

from annotations.models import Experiment, TrainRun, User
from cftclip_core import results
from cftclip_core.errors import CftClipError
from studio import charts
from studio.common import escape_markdown
from studio.instance import Studio
from studio.results_view import clear_caches
from studio.tables import show_table
from studio.train_form import CHOSEN
from train_jobs import api

LIVE_SECONDS = 5  # the view reads the runs this often
LOG_LINES = 60
RUN_ACTION = "train_run_action"  # the message of the last cancel, resume or delete
BADGE_COLOURS = {"queued": "gray", "starting": "blue", "running": "blue", "succeeded": "green", "failed": "red",
                 "cancelled": "orange", "lost": "violet"}


@st.fragment(run_every=LIVE_SECONDS)
def live_view(app: Studio, user: User) -> None:
    poller_state(app)
    message = st.session_state.pop(RUN_ACTION, None)  # of the last cancel, resume or delete
    if message:
        st.info(escape_markdown(message), icon=":material/info:")
    with app.sessions() as session:
        summary = api.experiment_summaries(session)
        proof = api.proof_comparison(session)
    if summary.empty:
        st.info("No experiment yet: launch one above, or the synthetic proof demo.")
        return
    show_table(summary, hidden=["id"])
    if not proof.empty:
        st.markdown("**Synthetic proof so far** (mean and standard deviation over the finished seeds)")
        show_table(proof)
    names = dict(zip(summary["id"], summary["name"]))
    if st.session_state.get(CHOSEN) not in names:
        st.session_state[CHOSEN] = int(summary["id"].iloc[0])
    chosen = st.selectbox("Experiment", list(names), format_func=names.get, key=CHOSEN)
    with app.sessions() as session:
        experiment = session.get(Experiment, chosen)
        runs = api.experiment_runs(session, chosen)
    experiment_detail(app, user, experiment, runs)


def poller_state(app: Studio) -> None:
    """Who moves the queue, or a warning that nobody does."""
    poller = api.alive_poller(app.settings)
    if poller is None:
        st.warning("No poller is running for this instance, so queued runs wait and ended ones are not settled. "
                   "Restart the app, or run `python -m train_jobs poll --watch 15` beside it.", icon=":material/pause:")
        return
    st.caption(escape_markdown(f"Queue polled by {poller.describe()}."))
    if poller.error:
        st.warning(escape_markdown(f"The queue poller's last poll failed: {poller.error}. It tries again every "
                                   f"{poller.interval_s:g} s."), icon=":material/error:")


@st.cache_data(max_entries=500, show_spinner=False)
def curves_of(run_dir: str, stamp: tuple[int, int] | None) -> api.Curves:
    del stamp  # part of the cache key only: the log's modification time and size
    return api.read_curves(run_dir)


def experiment_detail(app: Studio, user: User, experiment: Experiment, runs: list[TrainRun]) -> None:
    about = [api.describe(experiment), experiment.backend, f"config {experiment.config_hash[:12]}",
             f"folder {experiment.folder}", experiment.note]
    st.caption(escape_markdown(" · ".join(part for part in about if part)))
    delete_control(app, experiment, runs)
    curves = {run.id: curves_of(run.run_dir, api.log_stamp(run.run_dir)) for run in runs}
    with app.sessions() as session:
        measured = api.run_metrics(session, [run for run in runs if run.results_at is not None],
                                   imported_without_gold=True)
    for run in runs:
        run_row(app, user, run, curves[run.id], measured.get(run.id))
    active = [run for run in runs if run.state in api.ACTIVE and run.cancel_requested_at is None]
    if len(active) > 1 and st.button(f"Cancel all {len(active)} active runs", key=f"cancel_all_{experiment.id}"):
        for run in active:
            cancel(app, user, run.id)
        st.rerun(scope="fragment")
    relaunched = len({run.seed for run in runs}) < len(runs)  # a seed run again: tell its runs apart
    labels = {run.id: f"seed {run.seed}" + (f" (run {run.id})" if relaunched else "") for run in runs}
    loss, validation = api.experiment_curves({labels[run.id]: curves[run.id] for run in runs})
    left, right = st.columns(2)
    if loss.empty:
        left.caption("No training loss logged yet.")
    else:
        left.altair_chart(charts.loss_curve_chart(loss, "loss", "Training loss", points=False), width="stretch")
    if not validation.empty:
        right.altair_chart(charts.loss_curve_chart(validation, "val_loss", "Validation loss", points=True),
                           width="stretch")
    shown = st.selectbox("Log of", list(labels), format_func=labels.get, key=f"train_log_{experiment.id}")
    tail = "\n".join(api.log_tail(next(r for r in runs if r.id == shown).log_path).splitlines()[-LOG_LINES:])
    st.code(tail or "(nothing logged yet)", language=None, height=300)
    finished = api.finished_runs(runs, measured)
    if not finished.empty:
        st.markdown("**Results of the finished runs**")
        for reference in sorted({row["reference"] for row in measured.values()}):
            st.caption(results.describe_evaluation(results.Evaluation(reference)) + " As on the Models and Seeds "
                       "pages with this choice; choose another reference, threshold or item set there.")
        show_table(finished)
    if any(run.eval_metrics for run in runs):
        st.page_link("pages/models.py", label="Compare these runs with other models on the Models page",
                     icon=":material/leaderboard:")


def run_row(app: Studio, user: User, run: TrainRun, curves: api.Curves, measured: dict | None) -> None:
    which, steps, speed, eta, outcome, action = st.columns([1.2, 2.4, 1.4, 1, 3, 1], vertical_alignment="center")
    with which:
        st.markdown(f"**Seed {run.seed}**")
        st.badge(run.state, color=BADGE_COLOURS.get(run.state, "gray"))
    text = f"step {run.step or 0}/{run.total_steps}" if run.total_steps else "no step yet"
    steps.progress(api.progress(run), text=f"{text} · {run.phase}" if run.phase else text)
    rate = api.samples_per_second(run, curves.seconds_per_step)
    speed.markdown(f"{rate:.1f} samples/s" if rate else "–")
    if rate:
        speed.caption(f"mean of the last {api.RECENT_STEPS} steps")
    eta.markdown(f"ETA {api.format_duration(api.eta_seconds(run, curves.seconds_per_step))}")
    headline = api.headline(run, measured)
    if headline:
        outcome.markdown(headline)
    for words in (run.reason, run.results_error and f"results not imported: {run.results_error}"):
        if words:
            outcome.caption(escape_markdown(words))
    if run.state in api.ACTIVE:
        action.button("Cancel", key=f"cancel_{run.id}", on_click=cancel, args=(app, user, run.id),
                      disabled=run.cancel_requested_at is not None)
    elif api.can_resume(run):
        action.button("Resume", key=f"resume_{run.id}", on_click=resume, args=(app, user, run.id),
                      help="Queue this run again; it continues from its last checkpoint.")


def delete_control(app: Studio, experiment: Experiment, runs: list[TrainRun]) -> None:
    busy = any(run.state in (*api.ACTIVE, "lost") for run in runs)
    with st.popover("Delete experiment", icon=":material/delete:", disabled=busy,
                    help="Cancel its runs first." if busy else None):
        st.markdown(f"Deletes **{escape_markdown(experiment.name)}**: its {len(runs)} run(s), the score sets they "
                    f"produced (with their triage verdicts) and its folder `{experiment.folder}`, checkpoints "
                    "included. This cannot be undone.")
        st.button("Delete for good", type="primary", key=f"delete_{experiment.id}", on_click=delete,
                  args=(app, experiment.id))


def cancel(app: Studio, user: User, run_id: int) -> None:
    try:
        st.session_state[RUN_ACTION] = api.cancel_run(app.sessions, run_id, user.id).message
    except CftClipError as exc:
        st.session_state[RUN_ACTION] = str(exc)


def resume(app: Studio, user: User, run_id: int) -> None:
    try:
        st.session_state[RUN_ACTION] = api.resume_run(app.sessions, run_id, user.id)
    except CftClipError as exc:
        st.session_state[RUN_ACTION] = str(exc)
    else:
        api.request_poll(app.settings)


def delete(app: Studio, experiment_id: int) -> None:
    try:
        st.session_state[RUN_ACTION] = api.delete_experiment(app.sessions, experiment_id)
    except CftClipError as exc:
        st.session_state[RUN_ACTION] = str(exc)
    else:
        st.session_state.pop(CHOSEN, None)
        clear_caches()  # its score sets are gone from the results pages
