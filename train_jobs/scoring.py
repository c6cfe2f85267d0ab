"""Scoring a dataset as a job: one model's similarity for every item, computed by
``python -m cftclip_core.score_job`` in a process of its own (this machine's CPU, one of its GPUs, or a
Slurm job) and imported as a score set when it ends (``train_jobs.results``).

A scoring job is an experiment of kind ``score`` with one run: the queue, the launchers, heartbeats,
cancel and the reconciler treat it like a training run. Its folder (``runs/score-...``) holds the pairs
table it reads (item id, image in the media store, text) and its run folder. The job caches embeddings as
it goes in the instance folder, so scoring again after a stop recomputes only what was not reached.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import dataset_items_frame, get_dataset
from annotations.models import Experiment, TrainRun, utcnow
from annotations.settings import Settings
from cftclip_core.errors import ConfigError, DataError
from cftclip_core.specs.models import TINY_NAME
from cftclip_core.specs.training import TEXT_FIELDS
from train_jobs import commands, provenance, runfiles, states
from train_jobs.gpus import GpuInventory, discover_gpus

SCORE = commands.JobKind("score", "cftclip_core.score_job")
RUNS_DIR = "runs"
PAIRS_FILE = "pairs.csv"
RECENT = timedelta(hours=1)  # ended jobs a dataset's page still shows


@dataclass(frozen=True)
class ScoreRequest:
    dataset_id: int
    model: str  # a hub id, a local model folder, or tiny-demo
    text_field: str = "summary"
    backend: str = "local"  # local (this machine) or slurm
    n_gpus: int = 0  # 0: the CPU; 1: one GPU (scoring runs one process)


@dataclass(frozen=True)
class ScoreJob:
    """A scoring job as a page shows it."""

    run_id: int
    state: str
    phase: str | None
    done: int | None  # pairs scored so far
    total: int | None
    model: str
    text_field: str
    reason: str
    results_error: str
    results_at: datetime | None
    summary: dict | None  # score.json once imported: n_items, n_truncated, precision, seconds...
    cancel_requested: bool

    @property
    def active(self) -> bool:
        return self.state in states.ACTIVE

    @property
    def imported(self) -> bool:
        """Its score set is in the database (it succeeded and its results were imported)."""
        return self.state == states.SUCCEEDED and self.results_at is not None and not self.results_error


def queue_scoring(factory: sessionmaker[Session], settings: Settings, request: ScoreRequest, *,
                  user_id: int | None = None, inventory: GpuInventory | None = None) -> TrainRun:
    """Check the request, write the pairs table, and queue the job (nothing is left behind on an error)."""
    model = request.model.strip()
    _check(request, model, inventory)
    with factory() as session:
        dataset = get_dataset(session, request.dataset_id)
        items = dataset_items_frame(session, request.dataset_id, settings)
    missing = items[items["media_path"].isna()]
    if not missing.empty:
        raise DataError(f"{len(missing)} image(s) of '{dataset.name}' are missing from the media store (e.g. item "
                        f"'{missing.iloc[0]['external_id']}'); import the dataset again to restore them.")
    if items.empty:
        raise DataError(f"'{dataset.name}' has no items to score.")
    folder = settings.instance_dir / RUNS_DIR / f"score-{uuid.uuid4().hex[:12]}"
    run_dir = folder / "job"
    config = {"model": model, "text_field": request.text_field}
    try:
        folder.mkdir(parents=True)
        pd.DataFrame({"key": items["item_id"].astype(str), "image": items["media_path"].astype(str),
                      "text": items[request.text_field]}).to_csv(folder / PAIRS_FILE, index=False)
        args = ["--pairs", str(folder / PAIRS_FILE), "--model", model, "--text-field", request.text_field,
                "--out", str(run_dir)]
        with write_session(factory) as session:
            experiment = Experiment(
                name=f"Scoring {dataset.name[:80]} with {model[-80:]} ({request.text_field}) {folder.name[-12:]}",
                kind=SCORE.name, config=config, config_hash=commands.config_hash(config), options={},
                backend=request.backend, gpus_per_run=request.n_gpus, eval_dataset_id=request.dataset_id,
                folder=str(folder), note="", created_by=user_id, created_at=utcnow())
            session.add(experiment)
            session.flush()
            run = TrainRun(experiment_id=experiment.id, seed=0, state=states.QUEUED, reason="",
                           command=commands.python_command(SCORE, args), config=config,
                           config_hash=experiment.config_hash, backend=request.backend, n_gpus=request.n_gpus,
                           gpus=[], run_dir=str(run_dir), log_path=str(run_dir / runfiles.JOB_LOG),
                           created_by=user_id, created_at=utcnow(), code_version=provenance.code_version(),
                           package_versions=provenance.package_versions(), results_error="")
            session.add(run)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    run_dir.mkdir(parents=True, exist_ok=True)
    return run


def score_jobs(session: Session, dataset_id: int, *, now: datetime | None = None) -> list[ScoreJob]:
    """The dataset's scoring jobs still at work or ended within the last hour, newest first."""
    since = (now or utcnow()) - RECENT
    rows = session.execute(
        select(TrainRun, Experiment.config).join(Experiment)
        .where(Experiment.kind == SCORE.name, Experiment.eval_dataset_id == dataset_id)
        .where(TrainRun.finished_at.is_(None) | (TrainRun.finished_at >= since))
        .order_by(TrainRun.id.desc())).all()
    return [ScoreJob(run.id, run.state, run.phase, run.step, run.total_steps, config.get("model", ""),
                     config.get("text_field", ""), run.reason, run.results_error, run.results_at, run.metrics,
                     run.cancel_requested_at is not None) for run, config in rows]


def _check(request: ScoreRequest, model: str, inventory: GpuInventory | None) -> None:
    if not model:
        raise ConfigError("Model: give a hub id (e.g. openai/clip-vit-large-patch14), a local model folder, or "
                          f"{TINY_NAME}.")
    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
        raise ConfigError(f"No model folder at '{model}': check the path, or give a hub id.")
    if request.text_field not in TEXT_FIELDS:
        raise ConfigError(f"text_field={request.text_field!r} is not valid: use {' or '.join(TEXT_FIELDS)}.")
    if request.backend not in ("local", "slurm"):
        raise ConfigError(f"A scoring job runs on this machine (local) or on Slurm, not on {request.backend!r}.")
    if request.n_gpus not in (0, 1):
        raise ConfigError(f"A scoring job uses the CPU (0 GPUs) or one GPU, not {request.n_gpus}.")
    if request.backend == "local" and request.n_gpus:
        inventory = inventory or discover_gpus()
        if inventory.cpu_only:
            raise ConfigError(f"This machine has no GPU to score on. {inventory.note} Score on the CPU instead.")
