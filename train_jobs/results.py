"""Import what a finished run left in its folder into the database, so that results pages read rows,
never files. A training run: the training summary (metrics.json), the evaluation metrics
(eval/metrics.json), the checkpoint path (best/, or last/ for a stopped run), and the per-item scores of
the evaluation dataset (eval/scores.csv) as a score set linked to the run. A scoring job
(``train_jobs.scoring``): its summary (score.json) and its scores (scores.csv) as a score set.

The score set and the run's results are written in one transaction: all of it or none; a failure is
recorded in ``results_error`` for the page to show (and a retry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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
from train_jobs.scoring import SCORE

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
    try:
        outcome = (_scoring_outcome if experiment.kind == SCORE.name else _training_outcome)(run, experiment)
        with write_session(factory) as session:
            current = session.get(TrainRun, run_id)
            if current is None or current.state != run.state:
                return current  # resumed (or deleted) while the files were read
            if outcome.add_scores is not None:
                outcome.add_scores(session)
            current.metrics = outcome.metrics if isinstance(outcome.metrics, dict) else None
            current.eval_metrics = outcome.eval_metrics if isinstance(outcome.eval_metrics, dict) else None
            current.checkpoint_path = str(outcome.checkpoint) if outcome.checkpoint is not None else None
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


@dataclass
class _Outcome:
    """What a finished run left, read from its folder before the one transaction that imports it."""

    metrics: Any
    eval_metrics: Any = None
    checkpoint: Path | None = None
    add_scores: Callable[[Session], ScoreSet] | None = None  # the score set, written in that transaction


def _training_outcome(run: TrainRun, experiment: Experiment) -> _Outcome:
    """A training (or proof) run: its summary, evaluation, checkpoint and the evaluation dataset's scores."""
    run_dir = Path(run.run_dir)
    checkpoint = next((run_dir / name for name in (runfiles.BEST, runfiles.LAST) if (run_dir / name).is_dir()), None)
    if run.state == states.CANCELLED and (run_dir / runfiles.LAST).is_dir():
        checkpoint = run_dir / runfiles.LAST  # the resumable one
    outcome = _Outcome(runfiles.read_json(run_dir / runfiles.METRICS), runfiles.read_json(run_dir / runfiles.EVAL_METRICS),
                       checkpoint)
    if experiment.eval_dataset_id is not None and run.state == states.SUCCEEDED:
        scores_file = run_dir / runfiles.EVAL_SCORES
        if not scores_file.is_file():
            raise DataError(f"The run finished but wrote no {runfiles.EVAL_SCORES}; see its log ({run.log_path}).")
        outcome.add_scores = lambda session: _add_scores(session, run, experiment, scores_file, checkpoint)
    return outcome


def _scoring_outcome(run: TrainRun, experiment: Experiment) -> _Outcome:
    """A scoring job: its summary, and its scores as a score set of the dataset it scored."""
    run_dir = Path(run.run_dir)
    summary = runfiles.read_json(run_dir / runfiles.SCORE_SUMMARY)
    outcome = _Outcome(summary)
    if run.state != states.SUCCEEDED:
        return outcome
    if not isinstance(summary, dict) or not (run_dir / runfiles.SCORES).is_file():
        raise DataError(f"The scoring job finished but wrote no {runfiles.SCORE_SUMMARY} and {runfiles.SCORES}; "
                        f"see its log ({run.log_path}).")
    frame = pd.read_csv(run_dir / runfiles.SCORES, dtype=str, keep_default_na=False)
    scores = {int(key): (float(similarity), truncated.strip().lower() in TRUE_TEXTS)
              for key, similarity, truncated in zip(frame["key"], frame["similarity"], frame["truncated"])}
    outcome.add_scores = lambda session: add_score_set(
        session, experiment.eval_dataset_id, summary["model_name"], summary["model_fingerprint"],
        summary["text_field"], scores, note=f"scoring job {run.id}", meaningless=bool(summary.get("tiny")),
        train_run_id=run.id)
    return outcome


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
