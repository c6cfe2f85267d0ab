"""Resume a stopped training run from its last checkpoint: the same run, queued again with ``--resume``.

A training run stopped by a cancel or a scheduler (SIGTERM at a time limit or a preemption: it saves
``RUN_DIR/last`` with weights, optimiser, schedule, step and RNG states), or one that died later on
after such a stop, can go on. Resuming puts the run back in the queue with the same command plus
``--resume``; the trainer checks that the config is unchanged and continues from the saved step. A run
that failed on its own settings or data (exit status 2: a refused config, a NaN loss) would fail the
same way again and is not offered.

The outcome files of the stopped attempt (exit status, heartbeat, metrics, evaluation) are moved to
``RUN_DIR/stopped-attempt/`` so the reconciler cannot mistake them for the new attempt's (they are moved
back if the database refuses the change). The log is appended to, after a marker line from which the
new attempt's errors are read.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import Experiment, TrainRun, User, utcnow
from cftclip_core.errors import CftClipError
from train_jobs import commands, runfiles, states
from train_jobs.scoring import SCORE

RESUME_FLAG = "--resume"
TRAINER_STATE = "trainer_state.pt"  # inside last/: what the trainer needs to go on (the run folder contract)
STOPPED_ATTEMPT = "stopped-attempt"
OUTCOMES = (runfiles.EXIT, runfiles.HEARTBEAT, runfiles.METRICS, Path(runfiles.EVAL_METRICS).parent.name)
LOCAL_BACKENDS = ("local", "torchrun")


def can_resume(run: TrainRun) -> bool:
    """Whether the page should offer to resume ``run`` (``resume_run`` says why not, when asked)."""
    return _refusal(run) is None


def resume_run(factory: sessionmaker[Session], run_id: int, user_id: int | None) -> str:
    """Queue ``run_id`` again to continue from its last checkpoint; returns what happened, in words.

    Refused (``CftClipError``, nothing changed) for a run that is not failed or cancelled, a run that
    failed on its own settings or data, a proof run, a run with no resumable checkpoint, or a run
    launched on another machine.
    """
    moved: list[str] = []
    marked = False
    run_dir = log_path = Path()
    try:
        with write_session(factory) as session:
            run = session.get(TrainRun, run_id)
            if run is None:
                raise CftClipError(f"No training run with id {run_id}; it may have been deleted with its experiment.")
            # The experiment first, then the run: the order delete_experiment locks them in.
            session.get(Experiment, run.experiment_id, with_for_update=True)
            session.refresh(run, with_for_update=True)
            refusal = _refusal(run)
            if refusal:
                raise CftClipError(refusal)
            user = session.get(User, user_id) if user_id is not None else None
            who = user.username if user is not None else "the command line"
            stopped_at = f" (step {run.step})" if run.step else ""
            run_dir, log_path = Path(run.run_dir), Path(run.log_path)
            moved = _set_aside_outcomes(run_dir)
            _requeue(run, f"resumed by {who} from its last checkpoint{stopped_at}")
            session.flush()
            # Before the commit: once committed, a poll (of this or another app process) may launch it.
            _mark_log(log_path, f"resumed by {who} at {utcnow():%Y-%m-%d %H:%M:%S} UTC")
            marked = True
    except BaseException:
        if moved:  # the database refused the change: the stopped attempt's files go back where they were
            _put_back(run_dir, moved)
        if marked:
            _mark_log(log_path, "the resume above was not saved; the run was not resumed")
        raise
    return f"Run {run_id} (seed {run.seed}) is queued again; it continues from its last checkpoint{stopped_at}."


def _refusal(run: TrainRun) -> str | None:
    """Why ``run`` cannot be resumed, in words; None when it can."""
    if run.state not in states.RESUMABLE:
        hint = " Cancel it first (that settles a run whose process is gone)." if run.state == states.LOST else ""
        return f"Run {run.id} is {run.state}; only a failed or cancelled run can be resumed.{hint}"
    if run.state == states.FAILED and run.exit_code == states.EXIT_USER_ERROR:
        return (f"Run {run.id} failed on its own settings or data (a refused config or a NaN loss: see its log); "
                "resumed, it would fail the same way. Launch a new experiment with changed settings (e.g. a lower lr).")
    module = commands.split_command(run.command)[0]
    if module == SCORE.module:
        return (f"Run {run.id} is a scoring job: score the dataset again instead; the embeddings it computed are "
                "cached, so only the rest is computed.")
    if module != commands.TRAIN.module:
        return f"Run {run.id} is a synthetic-proof run; those are short and cannot be resumed: launch the proof again."
    if not (Path(run.run_dir) / runfiles.LAST / TRAINER_STATE).is_file():
        return (f"Run {run.id} saved no resumable checkpoint ({Path(run.run_dir) / runfiles.LAST} has no "
                f"{TRAINER_STATE}): it stopped before training began, or was killed without saving. Launch the seed "
                "again in a new experiment.")
    if run.backend in LOCAL_BACKENDS and run.host not in (None, socket.gethostname()):
        return (f"Run {run.id} ran on {run.host}, not on this machine, and its process there may still be alive; "
                "resume it from the app on that machine.")
    return None


def _requeue(run: TrainRun, reason: str) -> None:
    """Back to the queue with ``--resume``, with nothing left of the stopped attempt's process or results."""
    states.move(run, states.QUEUED, reason)
    if RESUME_FLAG not in run.command:
        run.command = [*run.command, RESUME_FLAG]
    for column in ("host", "pid", "pid_started", "slurm_job_id", "exit_code", "heartbeat_at", "phase", "launched_at",
                   "started_at", "finished_at", "cancel_requested_at", "cancel_requested_by", "metrics",
                   "eval_metrics", "checkpoint_path", "results_at"):
        setattr(run, column, None)
    run.gpus, run.results_error = [], ""


def _set_aside_outcomes(run_dir: Path) -> list[str]:
    """Move the stopped attempt's outcome files to ``stopped-attempt/`` (replacing an older one's)."""
    aside = run_dir / STOPPED_ATTEMPT
    shutil.rmtree(aside, ignore_errors=True)
    moved = [name for name in OUTCOMES if (run_dir / name).exists()]
    if moved:
        aside.mkdir()
    for name in moved:
        (run_dir / name).rename(aside / name)
    return moved


def _put_back(run_dir: Path, moved: list[str]) -> None:
    for name in moved:
        (run_dir / STOPPED_ATTEMPT / name).rename(run_dir / name)


def _mark_log(log_path: Path, words: str) -> None:
    """A marker line in the job's log: errors of the new attempt are read from after it."""
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n{runfiles.ATTEMPT_MARKER} {words}\n")
