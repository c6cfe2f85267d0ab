"""Import what a finished run left in its folder into the database, so that results pages read rows,
never files: the training summary (metrics.json), the evaluation metrics (eval/metrics.json), the
checkpoint path (best/, or last/ for a stopped run), and the per-item scores of the evaluation
dataset (eval/scores.csv) as a score set linked to the run.

The score set and the run's results are written in one transaction: all of it or none; a failure is
recorded in ``results_error`` for the page to show (and a retry).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import Experiment, Item, ScoreSet, TrainRun, utcnow
from annotations.score_sets import add_score_set
from cftclip_core.errors import CftClipError, DataError
from train_jobs import runfiles, states

log = logging.getLogger(__name__)

TINY_MARKER = "cftclip_tiny.json"  # in a checkpoint fine-tuned from the tiny offline model
TRUE_TEXTS = ("true", "1", "yes")


def import_results(factory: sessionmaker[Session], run_id: int) -> TrainRun | None:
    """Import the results of a finished run (see module docstring); returns the updated run (None if deleted).

    Errors do not raise: they are recorded in ``results_error`` for the page to show (and a retry). A run
    that is no longer finished (resumed meanwhile) is left alone: its next end brings its own results.
    """
    with factory() as session:
        run = session.get(TrainRun, run_id)
        if run is None:
            raise DataError(f"No training run with id {run_id}; it may have been deleted with its experiment.")
        experiment = session.get(Experiment, run.experiment_id)
    if run.state not in states.FINAL:
        return run
    run_dir = Path(run.run_dir)
    try:
        metrics = runfiles.read_json(run_dir / runfiles.METRICS)
        eval_metrics = runfiles.read_json(run_dir / runfiles.EVAL_METRICS)
        checkpoint = next((run_dir / name for name in (runfiles.BEST, runfiles.LAST) if (run_dir / name).is_dir()),
                          None)
        if run.state == states.CANCELLED and (run_dir / runfiles.LAST).is_dir():
            checkpoint = run_dir / runfiles.LAST  # the resumable one
        scores_file = run_dir / runfiles.EVAL_SCORES
        wants_scores = experiment.eval_dataset_id is not None and run.state == states.SUCCEEDED
        if wants_scores and not scores_file.is_file():
            raise DataError(f"The run finished but wrote no {runfiles.EVAL_SCORES}; see its log ({run.log_path}).")
        with write_session(factory) as session:
            current = session.get(TrainRun, run_id)
            if current is None or current.state != run.state:
                return current  # resumed (or deleted) while the files were read
            if wants_scores:
                _add_scores(session, run, experiment, scores_file, checkpoint)
            current.metrics = metrics if isinstance(metrics, dict) else None
            current.eval_metrics = eval_metrics if isinstance(eval_metrics, dict) else None
            current.checkpoint_path = str(checkpoint) if checkpoint is not None else None
            current.results_at, current.results_error = utcnow(), ""
    except (CftClipError, OSError, ValueError, KeyError) as exc:
        why = str(exc) if isinstance(exc, CftClipError) else f"{type(exc).__name__}: {exc}"
        log.warning("Results of run %d not imported: %s", run_id, why)
        with write_session(factory) as session:
            current = session.get(TrainRun, run_id)
            if current is None or current.state != run.state:
                return current
            current.results_error = why
            current.results_at = utcnow()
    with factory() as session:
        return session.get(TrainRun, run_id)


def _add_scores(session: Session, run: TrainRun, experiment: Experiment, path: Path,
                checkpoint: Path | None) -> ScoreSet:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"id", "similarity", "truncated"} - set(frame.columns)
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(sorted(missing))}; it does not follow the run folder "
                        "contract.")
    item_ids = dict(session.execute(select(Item.external_id, Item.id)
                                    .where(Item.dataset_id == experiment.eval_dataset_id)).all())
    unknown = [i for i in frame["id"] if i not in item_ids]
    if unknown:
        raise DataError(f"{len(unknown)} id(s) of {path} (e.g. {unknown[0]!r}) are not items of the evaluation "
                        "dataset; was it changed after the run started?")
    scores = {item_ids[i]: (float(s), t.strip().lower() in TRUE_TEXTS)
              for i, s, t in zip(frame["id"], frame["similarity"], frame["truncated"])}
    fingerprint = _first(frame, "model_fingerprint") or f"train-run-{run.id}"
    text_field = _first(frame, "text_field") or str(run.config.get("text_field", "summary"))
    tiny = checkpoint is not None and (checkpoint / TINY_MARKER).is_file()
    return add_score_set(session, experiment.eval_dataset_id, f"{experiment.name} seed {run.seed}", fingerprint,
                         text_field, scores, note=f"training run {run.id}", meaningless=tiny, train_run_id=run.id)


def _first(frame: pd.DataFrame, column: str) -> str:
    return str(frame[column].iloc[0]) if column in frame.columns and len(frame) else ""


def results_row(run: TrainRun) -> dict[str, Any]:
    """A run's imported results flattened for a table: seed, state, steps, best validation loss, the
    evaluation threshold and each evaluation metric's value (confidence intervals left out)."""
    metrics = run.metrics or {}
    evaluation = run.eval_metrics or {}
    row: dict[str, Any] = {"run": run.id, "seed": run.seed, "state": run.state, "steps": metrics.get("steps"),
                           "best_val_loss": metrics.get("best_val_loss"),
                           "threshold": _value(evaluation.get("threshold"))}
    for name, value in (evaluation.get("metrics") or {}).items():
        value = _value(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[name] = value
    row["checkpoint"] = run.checkpoint_path
    return row


def _value(entry: Any) -> Any:
    """``{"value": x, ...}`` (a metric with its interval, a threshold with its strategy) -> x."""
    return entry.get("value") if isinstance(entry, dict) else entry
