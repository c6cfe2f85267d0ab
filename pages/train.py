"""Train: launch an experiment (one config run once per seed) or the synthetic-proof demo, and watch the
runs live. Jobs run as separate processes (``train_jobs``), never inside Streamlit: restarting the app
does not stop them, and the next poll catches up with whatever happened meanwhile."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd
import streamlit as st

from annotations.importer import list_datasets
from annotations.models import Experiment, TrainRun
from cftclip_core.errors import CftClipError, ConfigError
from cftclip_core.formats import TEXT_FIELDS
from cftclip_core.loss import LOSSES, build_loss
from cftclip_core.models import KNOWN_MODELS, tower_depths
from cftclip_core.scoring import PRECISIONS
from cftclip_core.training import SCHEDULES
from pages import charts
from pages.common import escape_markdown, require_role, show_error, studio
from studio import proof_demo
from train_jobs import api, views

log = logging.getLogger(__name__)

LIVE_SECONDS = 5  # the live view polls (reconciles and launches) this often
LOG_LINES = 60
CHOSEN = "train_experiment"  # the experiment shown in detail
LAUNCHED = "train_launched"  # (kind, message) left by the Launch button for the next run
RUN_ACTION = "train_run_action"  # the message of the last cancel, resume or delete
FITTED = "train_freezing_fitted"  # what fit_freezing_to_model changed, said under the model picker
FORM_OPEN = "train_form_open"  # the New experiment form starts open on a first visit (no experiment yet)
HYPERPARAMETERS = ("lr", "weight_decay", "batch_size", "max_epochs", "schedule", "warmup_steps", "val_every_steps",
                   "patience", "freeze_text_layers", "freeze_vision_layers", "grad_clip", "text_field", "max_steps")
COUNTERFACTUAL_OPTIONS = ("counterfactuals_per_text", "temperature")
ADVANCED = ("precision", "device", "num_workers", "gradient_checkpointing")
CHOICES = {"schedule": SCHEDULES, "text_field": TEXT_FIELDS, "precision": PRECISIONS}
WHERE = {"cpu": "This machine's CPU", "gpu": "GPUs of this machine", "slurm": "A Slurm cluster"}
OTHER_MODEL = "other"
BADGE_COLOURS = {"queued": "gray", "starting": "blue", "running": "blue", "succeeded": "green", "failed": "red",
                 "cancelled": "orange", "lost": "violet"}

user = require_role("researcher", "admin")
app = studio()
st.title("Train")
st.caption("Each seed of an experiment runs as its own process outside the app; closing the browser or restarting "
           "the app does not stop it. Without a browser open, `python -m train_jobs poll --watch 15` keeps the "
           "queue moving.")
DEFAULTS = views.form_defaults()


@st.cache_data(ttl=30, show_spinner=False)
def machine_gpus() -> api.GpuInventory:
    return api.discover_gpus()


@st.cache_data(max_entries=500, show_spinner=False)
def curves_of(run_dir: str, stamp: tuple[int, int] | None) -> views.Curves:
    del stamp  # part of the cache key only: the log's modification time and size
    return views.read_curves(run_dir)


try:
    job_settings = api.JobSettings.from_env()
except CftClipError as exc:
    show_error(exc)
    st.stop()
inventory = machine_gpus()
if inventory.cpu_only:
    st.info(f"**CPU only.** {escape_markdown(inventory.note)}", icon=":material/memory:")
else:
    st.caption(escape_markdown(inventory.note))


# --- launching -------------------------------------------------------------------------------------------
def field_input(name: str) -> None:
    key, default = f"train_cfg_{name}", DEFAULTS[name]
    if name in CHOICES:
        st.selectbox(name, CHOICES[name], index=list(CHOICES[name]).index(default), key=key,
                     help=f"TrainConfig.{name}; default {default}")
    else:
        st.text_input(name, views.as_text(default), key=key,
                      help=f"TrainConfig.{name}; default {views.as_text(default) or 'none'}"
                           + ("; empty: none" if default is None else ""))


def field_grid(names: tuple[str, ...], per_row: int = 4) -> None:
    for start in range(0, len(names), per_row):
        for column, name in zip(st.columns(per_row), names[start:start + per_row]):
            with column:
                field_input(name)


def fit_freezing_to_model() -> None:
    """On a change of base model: a freeze depth the model's towers cannot take (the paper's 11 of ViT-L's 12
    text layers, on the 2-layer tiny model) becomes 'all but the last layer' of that model, and says so."""
    model = st.session_state["train_model"]
    depths = tower_depths(model) if model != OTHER_MODEL else None
    fitted = []
    for name, depth in zip(("freeze_text_layers", "freeze_vision_layers"), depths or ()):
        key = f"train_cfg_{name}"
        text = str(st.session_state.get(key, "")).strip()
        if text.isdigit() and int(text) > depth:
            st.session_state[key] = str(depth - 1)
            fitted.append(f"{name} {text} -> {depth - 1}")
    st.session_state[FITTED] = f"{model} has {depths[0]} text and {depths[1]} vision layers: {', '.join(fitted)}." \
        if fitted else None


def chosen_model() -> str:
    model = st.session_state["train_model"]
    if model != OTHER_MODEL:
        return model
    other = st.session_state.get("train_model_other", "").strip()
    if not other:
        raise ConfigError("Base model: give a hub id (e.g. openai/clip-vit-base-patch32) or a local model folder.")
    return other


def where_to_run() -> tuple[str, int]:
    """(backend, GPUs per run) from the form."""
    where, gpus = st.session_state["train_where"], int(st.session_state.get("train_gpus", 0))
    if where == "cpu":
        return "local", 0
    if where == "gpu":
        return ("local" if gpus == 1 else "torchrun"), gpus
    return "slurm", gpus


def launch() -> None:
    """The Launch button: create the experiment (everything is checked first; nothing is made on an error)."""
    state = st.session_state
    try:
        config = views.config_from_texts({name: state[f"train_cfg_{name}"] for name in DEFAULTS
                                          if f"train_cfg_{name}" in state})
        threshold = state["train_threshold"]
        backend, gpus = where_to_run()
        request = api.ExperimentRequest(
            name=state["train_name"], config={**config, "model": chosen_model(), "loss": state["train_loss"]},
            train_dataset_id=state["train_dataset"], val_dataset_id=state["train_val"],
            eval_dataset_id=state["train_eval"],
            threshold=str(state["train_fixed_threshold"]) if threshold == "fixed" else threshold,
            seeds=views.parse_seeds(state["train_seeds"]), backend=backend, gpus_per_run=gpus,
            note=state["train_note"])
        experiment = api.create_experiment(app.sessions, app.settings, request, user_id=user.id)
    except CftClipError as exc:
        state[LAUNCHED] = ("error", exc)
        return
    state[CHOSEN] = experiment.id
    state[LAUNCHED] = ("ok", f"Experiment '{experiment.name}' created: {len(request.seeds)} run(s) queued.")
    with app.sessions() as session:
        state["train_name"] = views.unique_name(session, experiment.name)


def show_launch_outcome(key: str) -> None:
    kind, what = st.session_state.pop(key, (None, None))
    if kind == "error":
        show_error(what)
    elif kind == "ok":
        st.success(escape_markdown(what), icon=":material/rocket_launch:")


def where_inputs() -> None:
    options = ["cpu", *(["gpu"] if not inventory.cpu_only else []), *(["slurm"] if views.slurm_available() else [])]
    where = st.radio("Where to run", options, format_func=WHERE.get, horizontal=True, key="train_where")
    if where == "gpu":
        st.dataframe(pd.DataFrame([{"GPU": g.index, "name": g.name, "memory used (MiB)": g.memory_used_mib,
                                    "memory (MiB)": g.memory_total_mib, "busy (%)": g.utilization_pct}
                                   for g in inventory.gpus]), hide_index=True)
        st.number_input("GPUs per run", 1, len(inventory.gpus), 1, key="train_gpus",
                        help="The queue gives each run free GPUs of this machine (at most CFTCLIP_JOBS_PER_GPU "
                             "runs per GPU; GPUs that other programs fill are skipped). More than one: torchrun.")
    elif where == "slurm":
        st.number_input("GPUs per run", 0, 64, 1, key="train_gpus",
                        help="Each run is one Slurm job with this many GPUs (0: a CPU job). Partition, account, "
                             "time limit...: CFTCLIP_SLURM_* settings, see docs/slurm.md.")
    if "slurm" not in options:
        st.caption("A Slurm cluster is offered when `sbatch` is on the app's PATH (run the studio on a login node "
                   "with a shared filesystem); see docs/slurm.md for the settings.")


def dataset_inputs(datasets: dict[int, str]) -> int:
    ids = list(datasets)
    train_id = st.selectbox("Training dataset", ids, format_func=datasets.get, key="train_dataset",
                            help="Its 'train' rows train; its 'val' rows validate unless you choose a validation "
                                 "dataset.")
    left, right = st.columns(2)
    left.selectbox("Validation data", [None, *ids], key="train_val",
                   format_func=lambda i: "the training dataset's 'val' rows" if i is None else datasets[i])
    right.selectbox("Evaluation dataset (labelled)", [None, *ids], key="train_eval",
                    format_func=lambda i: "none" if i is None else datasets[i],
                    help="Scored by each run's best model; metrics use its gold labels (else imported labels).")
    left, right = st.columns(2)
    threshold = left.selectbox("Threshold for the evaluation", ["val-median", "f1-optimal", "fixed"],
                               key="train_threshold", help="val-median: the original code's label-free rule; "
                                                           "f1-optimal: tuned on the evaluation set's 'val' rows.")
    if threshold == "fixed":
        right.number_input("Fixed threshold", -1.0, 1.0, 0.2, step=0.01, key="train_fixed_threshold")
    if st.session_state["train_eval"] == train_id:
        st.caption("The evaluation dataset is the training dataset: its 'train' rows count in the metrics too, "
                   "which flatters the model. A held-out labelled set (e.g. NewsTT) gives honest numbers.")
    return train_id


def method_inputs(train_id: int, train_name: str, checkpoints: dict[str, str]) -> None:
    models = {**KNOWN_MODELS, **checkpoints, OTHER_MODEL: "another model: a hub id or a local folder"}
    model = st.selectbox("Base model", list(models), index=list(models).index(DEFAULTS["model"]),
                         format_func=lambda m: f"{m}: {models[m]}" if m in KNOWN_MODELS else models[m],
                         key="train_model", on_change=fit_freezing_to_model)
    if st.session_state.get(FITTED):
        st.caption(escape_markdown(f"Freezing fitted to the model: {st.session_state[FITTED]}"))
    if model == OTHER_MODEL:
        st.text_input("Hub id or local model folder", key="train_model_other")
    loss = st.radio("Method", list(LOSSES), index=list(LOSSES).index(DEFAULTS["loss"]), key="train_loss",
                    format_func=lambda name: f"{name}: {LOSSES[name]}")
    with app.sessions() as session:
        per_item = views.counterfactuals_per_item(session, train_id)
    if build_loss(loss).uses_counterfactuals and per_item == 0:
        st.warning(f"'{escape_markdown(train_name)}' has no counterfactual texts, and {loss} trains on them. Make "
                   "them with `python -m cftclip_core counterfactual --data TABLE --out TABLE_CF` and import that "
                   "table, or choose clip or i2t.")
    elif per_item:
        st.caption(f"'{escape_markdown(train_name)}' carries {per_item} counterfactual text(s) per item.")
    field_grid(COUNTERFACTUAL_OPTIONS)


def launch_section() -> None:
    with app.sessions() as session:
        datasets = {d.id: f"{d.name} ({d.item_count} items)" for d in list_datasets(session)}
        checkpoints = views.own_checkpoints(session)
        if "train_name" not in st.session_state:
            st.session_state["train_name"] = views.unique_name(session, "experiment")
    if not datasets:
        st.info("No dataset yet: import one on the Import page.")
        return
    st.text_input("Experiment name", key="train_name")
    train_id = dataset_inputs(datasets)
    method_inputs(train_id, datasets[train_id], checkpoints)
    st.markdown("**Hyperparameters** (the paper's, pre-filled)")
    field_grid(HYPERPARAMETERS)
    with st.expander("Precision, device, data loading"):
        field_grid(ADVANCED)
    left, right = st.columns([1, 3])
    left.text_input("Seeds", "0-4", key="train_seeds", help="e.g. 0-4 (the paper's) or 0,2,7: one run per seed.")
    right.text_input("Note (optional)", key="train_note")
    where_inputs()
    st.button("Launch", type="primary", icon=":material/rocket_launch:", key="train_launch", on_click=launch)
    show_launch_outcome(LAUNCHED)


def demo_section() -> None:
    proof_demo.render_demo(app, user.id, job_settings, chosen_key=CHOSEN)


# --- watching ------------------------------------------------------------------------------------------
def cancel(run_id: int) -> None:
    try:
        st.session_state[RUN_ACTION] = api.cancel_run(app.sessions, run_id, user.id).message
    except CftClipError as exc:
        st.session_state[RUN_ACTION] = str(exc)


def delete(experiment_id: int) -> None:
    try:
        st.session_state[RUN_ACTION] = api.delete_experiment(app.sessions, experiment_id)
    except CftClipError as exc:
        st.session_state[RUN_ACTION] = str(exc)
    else:
        st.session_state.pop(CHOSEN, None)
        charts.clear_caches()  # its score sets are gone from the results pages


def delete_control(experiment: Experiment, runs: list[TrainRun]) -> None:
    busy = any(run.state in (*api.ACTIVE, "lost") for run in runs)
    with st.popover("Delete experiment", icon=":material/delete:", disabled=busy,
                    help="Cancel its runs first." if busy else None):
        st.markdown(f"Deletes **{escape_markdown(experiment.name)}**: its {len(runs)} run(s), the score sets they "
                    f"produced (with their triage verdicts) and its folder `{experiment.folder}`, checkpoints "
                    "included. This cannot be undone.")
        st.button("Delete for good", type="primary", key=f"delete_{experiment.id}", on_click=delete,
                  args=(experiment.id,))


def resume(run_id: int) -> None:
    try:
        st.session_state[RUN_ACTION] = api.resume_run(app.sessions, run_id, user.id)
    except CftClipError as exc:
        st.session_state[RUN_ACTION] = str(exc)


def run_row(run: TrainRun, curves: views.Curves) -> None:
    which, steps, speed, eta, outcome, action = st.columns([1.2, 2.4, 1.4, 1, 3, 1], vertical_alignment="center")
    with which:
        st.markdown(f"**Seed {run.seed}**")
        st.badge(run.state, color=BADGE_COLOURS.get(run.state, "gray"))
    text = f"step {run.step or 0}/{run.total_steps}" if run.total_steps else "no step yet"
    steps.progress(views.progress(run), text=f"{text} · {run.phase}" if run.phase else text)
    speed.markdown(f"{run.samples_per_s:.1f} samples/s" if run.samples_per_s else "–")
    eta.markdown(f"ETA {views.format_duration(views.eta_seconds(run, curves.seconds_per_step))}")
    headline = views.headline(run)
    if headline:
        outcome.markdown(headline)
    for words in (run.reason, run.results_error and f"results not imported: {run.results_error}"):
        if words:
            outcome.caption(escape_markdown(words))
    if run.state in api.ACTIVE:
        action.button("Cancel", key=f"cancel_{run.id}", on_click=cancel, args=(run.id,),
                      disabled=run.cancel_requested_at is not None)
    elif api.can_resume(run):
        action.button("Resume", key=f"resume_{run.id}", on_click=resume, args=(run.id,),
                      help="Queue this run again; it continues from its last checkpoint.")


def curve_chart(frame: pd.DataFrame, value: str, title: str, points: bool) -> alt.Chart:
    return alt.Chart(frame, title=title).mark_line(point=points).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y(f"{value}:Q", title=value, scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title=None), tooltip=["run", "step", alt.Tooltip(f"{value}:Q", format=".4f")],
    ).properties(height=260)


def experiment_detail(experiment: Experiment, runs: list[TrainRun]) -> None:
    about = [views.describe(experiment), experiment.backend, f"config {experiment.config_hash[:12]}",
             f"folder {experiment.folder}", experiment.note]
    st.caption(escape_markdown(" · ".join(part for part in about if part)))
    delete_control(experiment, runs)
    curves = {run.id: curves_of(run.run_dir, views.log_stamp(run.run_dir)) for run in runs}
    for run in runs:
        run_row(run, curves[run.id])
    active = [run for run in runs if run.state in api.ACTIVE and run.cancel_requested_at is None]
    if len(active) > 1 and st.button(f"Cancel all {len(active)} active runs", key=f"cancel_all_{experiment.id}"):
        for run in active:
            cancel(run.id)
        st.rerun(scope="fragment")
    relaunched = len({run.seed for run in runs}) < len(runs)  # a seed run again: tell its runs apart
    labels = {run.id: f"seed {run.seed}" + (f" (run {run.id})" if relaunched else "") for run in runs}
    loss, validation = views.experiment_curves({labels[run.id]: curves[run.id] for run in runs})
    left, right = st.columns(2)
    if loss.empty:
        left.caption("No training loss logged yet.")
    else:
        left.altair_chart(curve_chart(loss, "loss", "Training loss", points=False), width="stretch")
    if not validation.empty:
        right.altair_chart(curve_chart(validation, "val_loss", "Validation loss", points=True), width="stretch")
    shown = st.selectbox("Log of", list(labels), format_func=labels.get, key=f"train_log_{experiment.id}")
    tail = "\n".join(api.log_tail(next(r for r in runs if r.id == shown).log_path).splitlines()[-LOG_LINES:])
    st.code(tail or "(nothing logged yet)", language=None, height=300)
    finished = [api.results_row(run) for run in runs if run.results_at is not None]
    if finished:
        st.markdown("**Results of the finished runs**")
        st.dataframe(pd.DataFrame(finished), hide_index=True)
    if any(run.eval_metrics for run in runs):
        st.page_link("pages/models.py", label="Compare these runs with other models on the Models page",
                     icon=":material/leaderboard:")


@st.fragment(run_every=LIVE_SECONDS)
def live_view() -> None:
    try:
        report = api.poll(app.sessions, app.settings, job_settings)
    except Exception as exc:  # noqa: BLE001 - a failed poll must not take the page down; it retries
        log.exception("Polling the training jobs failed")
        st.error(escape_markdown(f"Could not check the training jobs ({exc}); retrying in {LIVE_SECONDS} s."))
    else:
        for run_id, why in report.schedule.failed.items():
            st.error(escape_markdown(f"Run {run_id} could not start: {why}"))
    message = st.session_state.pop(RUN_ACTION, None)  # of the last cancel, resume or delete
    if message:
        st.info(escape_markdown(message), icon=":material/info:")
    with app.sessions() as session:
        summary = views.experiment_summaries(session)
        proof = views.proof_comparison(session)
    if summary.empty:
        st.info("No experiment yet: launch one above, or the synthetic proof demo.")
        return
    st.dataframe(summary, hide_index=True, column_config={"id": None, "created": st.column_config.DatetimeColumn(
        "created", format="YYYY-MM-DD HH:mm")})
    if not proof.empty:
        st.markdown("**Synthetic proof so far** (mean and standard deviation over the finished seeds)")
        st.dataframe(proof, hide_index=True, column_config={
            column: st.column_config.NumberColumn(column, format="%.3f") for column in proof.columns[4:]})
    names = dict(zip(summary["id"], summary["name"]))
    if st.session_state.get(CHOSEN) not in names:
        st.session_state[CHOSEN] = int(summary["id"].iloc[0])
    chosen = st.selectbox("Experiment", list(names), format_func=names.get, key=CHOSEN)
    with app.sessions() as session:
        experiment = session.get(Experiment, chosen)
        runs = api.experiment_runs(session, chosen)
    experiment_detail(experiment, runs)


if FORM_OPEN not in st.session_state:  # decided once per visit, so that the form never folds away under the user
    with app.sessions() as session:
        st.session_state[FORM_OPEN] = not api.list_experiments(session)
with st.expander("New experiment", icon=":material/add:", expanded=st.session_state[FORM_OPEN]):
    launch_section()
with st.expander("Demo: the synthetic proof, in one click", icon=":material/science:"):
    demo_section()
st.subheader("Experiments")
live_view()
