"""Create an experiment: one validated config run once per seed (default 0-4), as queued runs; delete one.

Everything is checked before anything is written: the config (errors name the field), the seeds, the
backend and its GPUs, the datasets (a training split, a validation split, labels on the evaluation
set). Then the datasets are exported from the database into the experiment's folder under the
instance folder (``runs/<name>-<id>/data``, labels = the gold label in force where there is one, else
the imported label), and the experiment and its runs are inserted in one transaction. If any step
fails, the folder is removed and nothing is left in the database.
"""

from __future__ import annotations

import errno
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import export_dataset, get_dataset
from annotations.models import BACKENDS, Experiment, Item, ScoreSet, TrainRun, utcnow
from annotations.review import gold_frame
from annotations.settings import Settings
from cftclip_core.errors import CftClipError, ConfigError
from cftclip_core.specs.counterfactuals import counterfactual_texts
from cftclip_core.specs.replication import resolve_threshold_from
from cftclip_core.specs.seeds import check_seeds
from cftclip_core.specs.training import LOSSES, TrainConfig
from train_jobs import commands, provenance, runfiles, states
from train_jobs.gpus import GpuInventory, discover_gpus

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
MAX_NAME_LENGTH = 200
TRAIN_SPLIT, VAL_SPLIT = "train", "val"
RUNS_DIR = "runs"


class ExperimentError(CftClipError):
    """An experiment cannot be created as asked (bad datasets, seeds, backend, GPUs, or no disk space)."""


@dataclass
class ExperimentRequest:
    """A training experiment. Datasets are ids in the database.

    Without ``val_dataset_id`` the training dataset is split by its ``split`` column (``train`` rows
    train, ``val`` rows validate); with it, each dataset gives its ``train`` / ``val`` rows if it has
    any, else all of them. ``eval_dataset_id`` (labelled) is scored by each run's best model and
    imported as a score set.
    """

    name: str
    config: dict[str, Any]  # TrainConfig fields; the seed comes from ``seeds``
    train_dataset_id: int
    val_dataset_id: int | None = None
    eval_dataset_id: int | None = None
    threshold: str = "val-median"  # for the evaluation: val-median, f1-optimal or a number
    threshold_from: str | None = None  # where it is chosen: train-val (the run's validation pairs, the original's)
    # or eval-val (the evaluation dataset's 'val' rows); None: train-val for val-median, eval-val for f1-optimal
    seeds: Sequence[int] = DEFAULT_SEEDS
    backend: str = "local"
    gpus_per_run: int = 0
    note: str = ""


@dataclass
class _Plan:
    """What will be inserted once the files are in place."""

    kind: str
    name: str
    config: dict[str, Any]
    options: dict[str, Any]
    backend: str
    gpus_per_run: int
    seeds: tuple[int, ...]
    folder: Path
    note: str
    datasets: dict[str, int | None] = field(default_factory=dict)
    label_snapshot: str | None = None


def create_experiment(
    factory: sessionmaker[Session],
    settings: Settings,
    request: ExperimentRequest,
    *,
    user_id: int | None = None,
    inventory: GpuInventory | None = None,
) -> Experiment:
    """Check ``request``, export its datasets and queue one run per seed (see module docstring)."""
    config = commands.validate_train_config(request.config)
    threshold = commands.check_threshold(request.threshold)
    threshold_from = (resolve_threshold_from(commands.threshold_value(threshold), request.threshold_from,
                                             replicate=bool(config.get("replicate_original")))
                      if request.eval_dataset_id is not None else None)
    plan = _plan("train", request.name, config, {"threshold": threshold, "threshold_from": threshold_from},
                 request.seeds, request.backend, request.gpus_per_run, request.note, settings, inventory)
    plan.datasets = {"train": request.train_dataset_id, "val": request.val_dataset_id, "eval": request.eval_dataset_id}
    with factory() as session:
        _check_unique_name(session, plan.name)
        labels = {dataset_id: _labels(session, dataset_id) for dataset_id in set(plan.datasets.values()) if dataset_id}
        tables = _check_datasets(session, request, config, labels)
        if "eval" in tables:
            _check_threshold_source(session, tables, threshold, threshold_from, labels)
    data_dir = plan.folder / "data"
    config_file = plan.folder / "config.json"

    def write_files() -> None:
        with factory() as session:
            rows = []
            for name, (dataset_id, split) in tables.items():
                path = data_dir / f"{name}.csv"
                export_dataset(session, dataset_id, path, settings, label_by_id=labels[dataset_id])
                _keep_split(path, split)
                rows += [(name, item_id, label) for item_id, label in _table_labels(path)]
        plan.label_snapshot = provenance.label_snapshot(rows)
        runfiles.write_json_atomic(config_file, config)

    def command(seed: int, run_dir: Path) -> list[str]:
        return commands.python_command(commands.TRAIN, commands.train_args(
            data_dir, config_file, seed, run_dir, has_eval="eval" in tables, threshold=threshold,
            pixel_cache=None if config.get("pixel_cache_dir") else settings.cache_dir / "pixels",
            threshold_from=threshold_from))

    return _create(factory, plan, write_files, command, user_id)


def create_proof_experiment(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    name: str,
    world: str = commands.PROOF_FIELDS["world"],
    arm: str = commands.PROOF_FIELDS["arm"],
    seeds: Sequence[int] = DEFAULT_SEEDS,
    backend: str = "local",
    gpus_per_run: int = 0,
    user_id: int | None = None,
    inventory: GpuInventory | None = None,
) -> Experiment:
    """The synthetic proof as an experiment (the one-click demo): one ``proof run`` per seed.

    Runs share ``instance/cache/proof`` (rendered worlds, stage-0 models), which the proof builds
    under a file lock.
    """
    config = commands.validate_proof_config({"world": world, "arm": arm})
    plan = _plan("proof", name, config, {}, seeds, backend, gpus_per_run, "", settings, inventory)
    with factory() as session:
        _check_unique_name(session, plan.name)
    cache = settings.cache_dir / "proof"

    def command(seed: int, run_dir: Path) -> list[str]:
        return commands.python_command(commands.PROOF, commands.proof_args(config, seed, run_dir, cache))

    return _create(factory, plan, lambda: None, command, user_id)


def list_experiments(session: Session) -> list[Experiment]:
    """Every experiment, newest first."""
    return list(session.scalars(select(Experiment).order_by(Experiment.created_at.desc(), Experiment.id.desc())))


def experiment_runs(session: Session, experiment_id: int) -> list[TrainRun]:
    """The runs of an experiment by seed (a relaunched seed after its earlier run)."""
    return list(session.scalars(select(TrainRun).where(TrainRun.experiment_id == experiment_id)
                                .order_by(TrainRun.seed, TrainRun.id)))


def delete_experiment(factory: sessionmaker[Session], experiment_id: int) -> str:
    """Delete an experiment whose runs have all ended: its runs, the score sets they produced (with their
    scores and triage verdicts) and its folder. Returns what was deleted, in words.

    Refused while a run is queued, starting, running or lost (its process may still write to the folder).
    """
    with write_session(factory) as session:
        experiment = session.get(Experiment, experiment_id, with_for_update=True)
        if experiment is None:
            raise ExperimentError(f"No experiment with id {experiment_id}; it may have been deleted already.")
        runs = experiment_runs(session, experiment_id)
        busy = [run for run in runs if run.state in (*states.ACTIVE, states.LOST)]
        if busy:
            raise ExperimentError(f"'{experiment.name}' still has {len(busy)} run(s) queued, running or lost; cancel "
                                  "them first (a cancel also settles a lost run), then delete it.")
        produced = select(ScoreSet.id).where(ScoreSet.train_run_id.in_([run.id for run in runs]))
        n_score_sets = session.scalar(select(func.count()).select_from(produced.subquery()))
        session.execute(delete(ScoreSet).where(ScoreSet.id.in_(produced)))  # scores and verdicts cascade
        session.execute(delete(Experiment).where(Experiment.id == experiment_id))  # its runs cascade
        name, folder = experiment.name, Path(experiment.folder)
    shutil.rmtree(folder, ignore_errors=True)
    said = f"Deleted '{name}': {len(runs)} run(s), {n_score_sets} score set(s) and the folder {folder}."
    if folder.exists():
        said += " Part of the folder could not be removed (permissions?); delete what is left by hand."
    return said


# --- checks --------------------------------------------------------------------------------------------
def _plan(kind: str, name: str, config: dict[str, Any], options: dict[str, Any], seeds: Sequence[int],
          backend: str, gpus_per_run: int, note: str, settings: Settings, inventory: GpuInventory | None) -> _Plan:
    name = (name or "").strip()
    if not name:
        raise ExperimentError("The experiment needs a name (e.g. 'cft-lr1e-4'); give it one.")
    if len(name) > MAX_NAME_LENGTH:
        raise ExperimentError(f"The experiment name is {len(name)} characters long; use at most {MAX_NAME_LENGTH}.")
    checked = check_seeds(seeds)
    _check_backend(backend, gpus_per_run, inventory)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60] or "experiment"
    folder = settings.instance_dir / RUNS_DIR / f"{slug}-{uuid.uuid4().hex[:8]}"
    return _Plan(kind, name, config, options, backend, gpus_per_run, checked, folder, note.strip())


def _check_backend(backend: str, gpus_per_run: int, inventory: GpuInventory | None) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is not known; choose one of {', '.join(BACKENDS)}.")
    if not isinstance(gpus_per_run, int) or isinstance(gpus_per_run, bool) or gpus_per_run < 0:
        raise ConfigError(f"gpus_per_run={gpus_per_run!r} is not valid: use 0 (CPU) or a positive number of GPUs.")
    if backend == "local" and gpus_per_run > 1:
        raise ConfigError(f"The local backend runs one process on one GPU; for {gpus_per_run} GPUs choose torchrun "
                          "(one machine) or slurm.")
    if backend == "slurm" or gpus_per_run == 0:
        return  # Slurm finds its own GPUs; CPU runs need none
    inventory = inventory or discover_gpus()
    if len(inventory.gpus) < gpus_per_run:
        raise ExperimentError(f"Each run asks for {gpus_per_run} GPU(s), but this machine has {len(inventory.gpus)}. "
                              f"{inventory.note} Choose fewer GPUs (0 runs on the CPU), or the slurm backend.")


def _check_unique_name(session: Session, name: str) -> None:
    if session.scalar(select(Experiment.id).where(Experiment.name == name)) is not None:
        raise ExperimentError(f"An experiment named '{name}' already exists; choose another name.")


def _labels(session: Session, dataset_id: int) -> dict[str, int | None]:
    """External id -> the label to export: the gold label in force (adjudicated, else the annotators'
    majority), else the label of the imported file, else None."""
    get_dataset(session, dataset_id)
    gold = gold_frame(session, dataset_id)
    gold_by_id = {row.external_id: row.gold for row in gold.itertuples(index=False) if not pd.isna(row.gold)}
    rows = session.execute(select(Item.external_id, Item.source_label).where(Item.dataset_id == dataset_id)).all()
    return {external_id: int(gold_by_id[external_id]) if external_id in gold_by_id else source
            for external_id, source in rows}


def _splits_of(session: Session, dataset_id: int) -> dict[str | None, int]:
    rows = session.execute(select(Item.split, Item.id).where(Item.dataset_id == dataset_id)).all()
    counts: dict[str | None, int] = {}
    for split, _ in rows:
        counts[split] = counts.get(split, 0) + 1
    return counts


def _check_datasets(session: Session, request: ExperimentRequest, config: dict[str, Any],
                    labels: Mapping[int, Mapping[str, int | None]]) -> dict[str, tuple[int, str | None]]:
    """table name -> (dataset id, the split it keeps or None for all rows), after checking each table."""
    train_id, val_id = request.train_dataset_id, request.val_dataset_id
    train_name = get_dataset(session, train_id).name
    train_splits = _splits_of(session, train_id)
    tables: dict[str, tuple[int, str | None]] = {}
    if val_id is None or val_id == train_id:
        for split in (TRAIN_SPLIT, VAL_SPLIT):
            if not train_splits.get(split):
                raise ExperimentError(
                    f"Dataset '{train_name}' has no items with split '{split}' (its splits: {_describe(train_splits)}). "
                    "Train on a dataset with train and val rows (e.g. one made by `python -m cftclip_core synthetic` "
                    f"and imported), or choose a separate validation dataset to train on all of '{train_name}'.")
        tables = {"train": (train_id, TRAIN_SPLIT), "val": (train_id, VAL_SPLIT)}
    else:
        val_splits = _splits_of(session, val_id)
        tables = {"train": (train_id, TRAIN_SPLIT if train_splits.get(TRAIN_SPLIT) else None),
                  "val": (val_id, VAL_SPLIT if val_splits.get(VAL_SPLIT) else None)}
    n_train = train_splits.get(TRAIN_SPLIT, 0) if tables["train"][1] else sum(train_splits.values())
    batch_size = config.get("batch_size", _default("batch_size"))
    if n_train < batch_size:
        raise ConfigError(f"batch_size={batch_size} is larger than the {n_train} training item(s) of "
                          f"'{train_name}'; lower batch_size or add data.")
    if _needs_counterfactuals(config) and not _has_counterfactuals(session, train_id):
        raise ExperimentError(
            f"Dataset '{train_name}' has no counterfactual texts, and the loss '{config.get('loss', 'cft')}' needs "
            f"them. Generate them ({counterfactual_command(config.get('model', _default('model')))}), import that "
            "table, or choose a loss without counterfactuals (clip or i2t); or use the Train page's quick run.")
    if request.eval_dataset_id is not None:
        eval_labels = labels[request.eval_dataset_id]
        if not any(value is not None for value in eval_labels.values()):
            eval_name = get_dataset(session, request.eval_dataset_id).name
            raise ExperimentError(
                f"Dataset '{eval_name}' has no labels to evaluate against (no imported label column, no votes, no "
                "gold decisions). Label it on the Annotate page or import it with a label column, or leave the "
                "evaluation dataset out.")
        tables["eval"] = (request.eval_dataset_id, None)
    return tables


def _check_threshold_source(session: Session, tables: Mapping[str, tuple[int, str | None]], threshold: str,
                            threshold_from: str | None, labels: Mapping[int, Mapping[str, int | None]]) -> None:
    """Refuse, before anything is queued, a threshold its source cannot give (the trainer would fail after
    hours of training)."""
    if threshold_from == "eval-val":
        eval_id = tables["eval"][0]
        if not _splits_of(session, eval_id).get(VAL_SPLIT):
            raise ExperimentError(
                f"Threshold from the evaluation dataset's 'val' rows, but '{get_dataset(session, eval_id).name}' has "
                "none. Take the threshold from the training run's validation pairs (train-val), or evaluate on a "
                "dataset with labelled 'val' rows.")
    if threshold_from == "train-val" and threshold == "f1-optimal":
        val_id, split = tables["val"]
        ids = session.scalars(select(Item.external_id).where(Item.dataset_id == val_id,
                                                             *([Item.split == split] if split else [])))
        if not any(labels[val_id].get(external_id) is not None for external_id in ids):
            raise ExperimentError(
                "The f1-optimal threshold needs labels, and the validation rows have none. Take it from the "
                "evaluation dataset's labelled 'val' rows (eval-val), or use the val-median threshold.")


def _describe(splits: Mapping[str | None, int]) -> str:
    return ", ".join(f"{name or '(none)'}: {count}" for name, count in splits.items()) or "no items"


def counterfactual_command(model: str) -> str:
    """The command that makes counterfactuals with the paper's recipe, its filter being the model to train."""
    return f"python -m cftclip_core counterfactual --data TABLE --out TABLE_CF --recipe paper --model {model}"


def _default(name: str) -> Any:
    return getattr(TrainConfig(), name)


def _needs_counterfactuals(config: Mapping[str, Any]) -> bool:
    return LOSSES[config.get("loss", _default("loss"))].uses_counterfactuals


def _has_counterfactuals(session: Session, dataset_id: int) -> bool:
    extras = session.scalars(select(Item.extra).where(Item.dataset_id == dataset_id).limit(50))
    return any(counterfactual_texts(extra or {}) for extra in extras)


# --- files and rows ------------------------------------------------------------------------------------
def _keep_split(path: Path, split: str | None) -> None:
    """Rewrite an exported CSV with only the rows of ``split`` (None keeps every row)."""
    if split is None:
        return
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame[frame["split"] == split].to_csv(path, index=False)


def _table_labels(path: Path) -> list[tuple[str, int | None]]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return [(row_id, int(label) if label != "" else None) for row_id, label in zip(frame["id"], frame["label"])]


def _create(factory: sessionmaker[Session], plan: _Plan, write_files: Callable[[], None],
            command: Callable[[int, Path], list[str]], user_id: int | None) -> Experiment:
    """Write the files, then insert the experiment and its runs in one transaction; undo the files on failure."""
    try:
        plan.folder.mkdir(parents=True)
        write_files()
        runfiles.write_json_atomic(plan.folder / "experiment.json", {
            "name": plan.name, "kind": plan.kind, "config": plan.config, "options": plan.options,
            "seeds": list(plan.seeds), "backend": plan.backend, "gpus_per_run": plan.gpus_per_run,
            "datasets": plan.datasets, "label_snapshot": plan.label_snapshot})
    except OSError as exc:
        shutil.rmtree(plan.folder, ignore_errors=True)
        hint = "Free disk space there" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "Check the folder's permissions"
        raise ExperimentError(f"Cannot write the experiment's files in {plan.folder}: {exc}. {hint} and try again; "
                              "nothing was created.") from None
    except BaseException:
        shutil.rmtree(plan.folder, ignore_errors=True)
        raise
    code, packages, digest = provenance.code_version(), provenance.package_versions(), commands.config_hash(plan.config)
    try:
        with write_session(factory) as session:
            _check_unique_name(session, plan.name)
            experiment = Experiment(
                name=plan.name, kind=plan.kind, config=plan.config, config_hash=digest, options=plan.options,
                backend=plan.backend, gpus_per_run=plan.gpus_per_run, train_dataset_id=plan.datasets.get("train"),
                val_dataset_id=plan.datasets.get("val"), eval_dataset_id=plan.datasets.get("eval"),
                folder=str(plan.folder), note=plan.note, created_by=user_id, created_at=utcnow())
            session.add(experiment)
            session.flush()
            for seed in plan.seeds:
                run_dir = plan.folder / f"seed-{seed}"
                session.add(TrainRun(
                    experiment_id=experiment.id, seed=seed, state="queued", reason="", command=command(seed, run_dir),
                    config={**plan.config, "seed": seed}, config_hash=digest, backend=plan.backend,
                    n_gpus=plan.gpus_per_run, gpus=[], run_dir=str(run_dir),
                    log_path=str(run_dir / runfiles.JOB_LOG), created_by=user_id, created_at=utcnow(),
                    label_snapshot=plan.label_snapshot, code_version=code, package_versions=packages,
                    results_error=""))
    except BaseException:
        shutil.rmtree(plan.folder, ignore_errors=True)
        raise
    return experiment

