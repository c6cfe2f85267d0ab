"""What the Train page shows and reads, computed without Streamlit: experiment summaries, loss and
validation curves from a run's ``log.jsonl`` (thinned for drawing), the ETA, headline metrics, the
synthetic proof's comparison so far, and the launch form's text turned into typed config values.

Form text is typed by each ``TrainConfig`` field's annotation; text that does not parse is passed on
unchanged, so that ``TrainConfig``'s own check (through ``create_experiment``) names the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annotations.models import RUN_STATES, Experiment, Item, TrainRun
from cftclip_core.results import METRIC_COLUMNS
from cftclip_core.specs.counterfactuals import RECIPE_COLUMN, counterfactual_texts
from cftclip_core.specs.seeds import parse_seeds  # noqa: F401 - the form's seed parser, re-exported for pages
from cftclip_core.specs.training import TrainConfig, as_text, typed_values  # noqa: F401 - the form's, for pages
from train_jobs import states
from train_jobs.experiments import counterfactual_command, list_experiments  # noqa: F401 - the hint, for pages

TRAIN_LOG = "log.jsonl"  # the trainer's step and validation records (run folder contract)
CURVE_POINTS = 300  # points per chart, all runs together
RECENT_STEPS = 20  # step records the pace (and so the ETA) is averaged over
NOT_ON_FORM = ("seed", "pixel_cache_dir", "snapshot_steps")  # per run, set by the studio, or for the proof
PROOF_METRICS = ("roc_auc", "f1", "name_accuracy", "context_auc")
HEADLINE = (("f1", "F1"), ("roc_auc", "ROC-AUC"), ("name_accuracy", "name accuracy"))


# --- the launch form -----------------------------------------------------------------------------------
def form_defaults() -> dict[str, Any]:
    """Every ``TrainConfig`` field the form offers, with its default (the paper's values)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name not in NOT_ON_FORM}


def unique_name(session: Session, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... : the first name no experiment has yet."""
    taken = set(session.scalars(select(Experiment.name).where(Experiment.name.startswith(base, autoescape=True))))
    return next(name for name in (base if n == 1 else f"{base}-{n}" for n in range(1, len(taken) + 2))
                if name not in taken)


def counterfactuals_per_item(session: Session, dataset_id: int) -> int:
    """How many counterfactual texts the dataset's items carry (0: none, which the cft losses cannot train on)."""
    extras = session.scalars(select(Item.extra).where(Item.dataset_id == dataset_id).limit(50))
    return max((len(counterfactual_texts(extra or {})) for extra in extras), default=0)


def counterfactual_recipes(session: Session, dataset_id: int) -> list[str]:
    """The recipes (one line each, from the ``cf_recipe`` column) that made the dataset's counterfactuals,
    most items first; empty when it has none or they predate the column."""
    counts: dict[str, int] = {}
    for extra in session.scalars(select(Item.extra).where(Item.dataset_id == dataset_id)):
        recipe = (extra or {}).get(RECIPE_COLUMN)
        if recipe not in (None, ""):
            counts[str(recipe)] = counts.get(str(recipe), 0) + 1
    return sorted(counts, key=lambda recipe: -counts[recipe])


def experiment_rows(session: Session, train_id: int, val_id: int | None,
                    eval_id: int | None) -> dict[str, set[tuple[str, str]]]:
    """(image hash, summary) of the rows each set of an experiment uses, chosen as ``create_experiment`` does:
    the training dataset's 'train' rows (all rows of a separate training dataset without any), its 'val'
    rows or the validation dataset's, and every row of the evaluation dataset."""
    def rows(dataset_id: int, split: str | None) -> set[tuple[str, str]]:
        query = select(Item.media_sha256, Item.summary).where(Item.dataset_id == dataset_id)
        if split is not None:
            query = query.where(Item.split == split)
        return {(sha, summary) for sha, summary in session.execute(query)}

    def has(dataset_id: int, split: str) -> bool:
        return session.scalar(select(Item.id).where(Item.dataset_id == dataset_id, Item.split == split).limit(1)) \
            is not None

    same = val_id is None or val_id == train_id
    sets = {"training": rows(train_id, "train" if same or has(train_id, "train") else None),
            "validation": rows(train_id, "val") if same else rows(val_id, "val" if has(val_id, "val") else None)}
    if eval_id is not None:
        sets["evaluation"] = rows(eval_id, None)
    return sets


def split_overlaps(session: Session, train_id: int, val_id: int | None,
                   eval_id: int | None) -> list[tuple[str, str, int]]:
    """(set, other set, items both hold) for each pair of an experiment's sets that share items."""
    sets = experiment_rows(session, train_id, val_id, eval_id)
    names = list(sets)
    return [(a, b, len(sets[a] & sets[b])) for i, a in enumerate(names) for b in names[i + 1:]
            if sets[a] & sets[b]]


def own_checkpoints(session: Session) -> dict[str, str]:
    """Checkpoint folder -> label, for every succeeded training run that kept its best model, newest first."""
    rows = session.execute(
        select(TrainRun.checkpoint_path, TrainRun.seed, Experiment.name).join(Experiment)
        .where(Experiment.kind == "train", TrainRun.state == states.SUCCEEDED, TrainRun.checkpoint_path.is_not(None))
        .order_by(TrainRun.id.desc())).all()
    return {path: f"our run: {name}, seed {seed}" for path, seed, name in rows if Path(path).is_dir()}


def slurm_available() -> bool:
    """Whether this machine can submit to Slurm (``sbatch`` on the PATH); see docs/slurm.md."""
    return shutil.which("sbatch") is not None


# --- experiments ---------------------------------------------------------------------------------------
TRAINING_KINDS = ("train", "proof")  # what the Train and Seeds pages list (scoring jobs show on Articles)


def training_experiments(session: Session) -> list[Experiment]:
    """Every training and proof experiment, newest first."""
    return [e for e in list_experiments(session) if e.kind in TRAINING_KINDS]


def describe(experiment: Experiment) -> str:
    """What an experiment trains, in a few words."""
    config = experiment.config or {}
    if experiment.kind == "proof":
        return f"synthetic proof: {config.get('world')} world, {config.get('arm')}"
    return f"{config.get('loss', form_defaults()['loss'])} on {config.get('model', form_defaults()['model'])}"


def experiment_summaries(session: Session) -> pd.DataFrame:
    """One row per experiment, newest first: what it trains, where, and how many runs are in each state."""
    counts: dict[int, dict[str, int]] = {}
    for experiment_id, state, n in session.execute(
            select(TrainRun.experiment_id, TrainRun.state, func.count()).group_by(TrainRun.experiment_id,
                                                                                 TrainRun.state)):
        counts.setdefault(experiment_id, {})[state] = n
    rows = []
    for experiment in training_experiments(session):
        where = "CPU" if experiment.gpus_per_run == 0 else f"{experiment.gpus_per_run} GPU(s) per run"
        rows.append({"id": experiment.id, "name": experiment.name, "trains": describe(experiment),
                     "backend": f"{experiment.backend}, {where}", "created": experiment.created_at,
                     **{state: counts.get(experiment.id, {}).get(state, 0) for state in RUN_STATES}})
    return pd.DataFrame(rows, columns=["id", "name", "trains", "backend", "created", *RUN_STATES])


def proof_comparison(session: Session) -> pd.DataFrame:
    """For each synthetic-proof experiment with a finished seed: world, arm, seeds done, and the mean and
    standard deviation over seeds of each proof metric (``<metric>`` and ``<metric>_sd``)."""
    rows = session.execute(select(Experiment.id, Experiment.name, Experiment.config, TrainRun.metrics)
                           .join(TrainRun).where(Experiment.kind == "proof", TrainRun.state == states.SUCCEEDED,
                                                 TrainRun.metrics.is_not(None))
                           .order_by(Experiment.id)).all()
    columns = ["experiment", "world", "arm", "seeds", *(f"{m}{s}" for m in PROOF_METRICS for s in ("", "_sd"))]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame([{"id": i, "experiment": name, "world": config.get("world"), "arm": config.get("arm"),
                           **{m: _number(metrics.get(m)) for m in PROOF_METRICS}}
                          for i, name, config, metrics in rows])
    grouped = frame.groupby(["id", "experiment", "world", "arm"], sort=False)
    table = grouped[list(PROOF_METRICS)].agg(["mean", "std"])
    table.columns = [f"{metric}{'' if stat == 'mean' else '_sd'}" for metric, stat in table.columns]
    table["seeds"] = grouped.size()
    return table.reset_index()[columns]


def headline(run: TrainRun, measured: Mapping[str, Any] | None = None) -> str:
    """A finished run's main numbers in one line ('' before it has any): ``measured`` (its score set's metrics,
    ``comparison.run_metrics``), or a proof run's own metrics; else its best validation loss."""
    row = {**(measured or {}), **{k: v for k, v in (run.metrics or {}).items() if k in PROOF_METRICS}}
    parts = [f"{label} {row[key]:.3f}" for key, label in HEADLINE if _number(row.get(key)) is not None]
    best = _number((run.metrics or {}).get("best_val_loss"))
    if not parts and best is not None:
        parts.append(f"best validation loss {best:.3f}")
    return " · ".join(parts)


def finished_runs(runs: list[TrainRun], measured: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run with imported results: seed, state, steps, best validation loss, and (``measured``,
    from ``comparison.run_metrics``) threshold, items evaluated and metrics; the checkpoint last."""
    rows = []
    for run in runs:
        if run.results_at is None:
            continue
        summary, row = run.metrics or {}, measured.get(run.id, {})
        rows.append({"seed": run.seed, "state": run.state, "steps": summary.get("steps"),
                     "best_val_loss": summary.get("best_val_loss"), "threshold": row.get("threshold"),
                     "n_evaluated": row.get("n_evaluated"), **{m: row.get(m) for m in METRIC_COLUMNS},
                     "checkpoint": run.checkpoint_path})
    frame = pd.DataFrame(rows).dropna(axis=1, how="all")  # a metric no run has (no evaluation dataset)
    return frame.astype({c: float for c in METRIC_COLUMNS if c in frame.columns})


# --- progress and curves -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curves:
    loss: pd.DataFrame  # step, loss: the last record of each step (a resumed run logs some steps again)
    validation: pd.DataFrame  # step, val_loss
    seconds_per_step: float | None  # data + compute time per step, over the last RECENT_STEPS steps


def log_stamp(run_dir: str | Path) -> tuple[int, int] | None:
    """(modification time, size) of the run's log.jsonl: a cache key that changes when it grows."""
    try:
        stat = (Path(run_dir) / TRAIN_LOG).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def read_curves(run_dir: str | Path) -> Curves:
    """The run's curves from its log.jsonl; empty while there is none. A line being written is skipped."""
    steps: dict[int, tuple[float, float | None]] = {}
    validations: dict[int, float] = {}
    try:
        lines = (Path(run_dir) / TRAIN_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        step = _number(record.get("step")) if isinstance(record, dict) else None
        if step is None:
            continue
        if _number(record.get("loss")) is not None:
            timing = [_number(record.get(k)) for k in ("data_time", "step_time")]
            steps[int(step)] = (record["loss"], sum(timing) if None not in timing else None)
        elif _number(record.get("val_loss")) is not None:
            validations[int(step)] = record["val_loss"]
    ordered = sorted(steps.items())
    recent = [seconds for _, (_, seconds) in ordered[-RECENT_STEPS:] if seconds is not None]
    return Curves(pd.DataFrame([(s, loss) for s, (loss, _) in ordered], columns=["step", "loss"]),
                  pd.DataFrame(sorted(validations.items()), columns=["step", "val_loss"]),
                  float(np.mean(recent)) if recent else None)


def thin(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most ``max_points`` rows: consecutive rows averaged in equal groups (the curve's shape stays)."""
    if len(frame) <= max_points:
        return frame
    groups = np.arange(len(frame)) // math.ceil(len(frame) / max_points)
    return frame.groupby(groups).mean().reset_index(drop=True)


def experiment_curves(curves: Mapping[str, Curves], max_points: int = CURVE_POINTS) -> tuple[pd.DataFrame,
                                                                                              pd.DataFrame]:
    """Training and validation loss of every run (column ``run``: its label), at most ``max_points`` per chart."""
    per_run = max(10, max_points // max(1, len(curves)))

    def stacked(attribute: str, columns: list[str]) -> pd.DataFrame:
        parts = [thin(getattr(c, attribute), per_run).assign(run=label) for label, c in curves.items()
                 if not getattr(c, attribute).empty]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*columns, "run"])

    return stacked("loss", ["step", "loss"]), stacked("validation", ["step", "val_loss"])


def progress(run: TrainRun) -> float:
    """The share of the run's steps done, 0 to 1 (1 once it succeeded)."""
    if run.state == states.SUCCEEDED:
        return 1.0
    if not run.total_steps or run.step is None:
        return 0.0
    return min(1.0, max(0.0, run.step / run.total_steps))


def eta_seconds(run: TrainRun, seconds_per_step: float | None) -> float | None:
    """Seconds of training left at the recent pace (validation and the final evaluation add a little);
    None unless the run is training and its pace is known."""
    if run.state != states.RUNNING or run.phase != "training" or run.step is None or not run.total_steps:
        return None
    if seconds_per_step is None:
        batch = _number((run.config or {}).get("batch_size"))
        if not run.samples_per_s or batch is None:
            return None
        seconds_per_step = batch / run.samples_per_s
    return max(0, run.total_steps - run.step) * seconds_per_step


def samples_per_second(run: TrainRun, seconds_per_step: float | None) -> float | None:
    """The training speed smoothed over the last ``RECENT_STEPS`` steps (batch size / their mean data + compute
    time), not the last step's alone, which jumps with every slow batch; None while unknown."""
    batch = _number((run.config or {}).get("batch_size"))
    if not seconds_per_step or batch is None:
        return None
    return batch / seconds_per_step


def format_duration(seconds: float | None) -> str:
    """'45 s', '12 min', '3 h 05 min'; an en dash when unknown."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


# --- helpers -------------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    """A finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value
