"""Resume a stopped training run from its last checkpoint: the same run, queued again with ``--resume``.

A run stopped by a cancel, a scheduler's SIGTERM (time limit, preemption) or a NaN loss keeps
``RUN_DIR/last`` (weights, optimiser, schedule, step, RNG states). Resuming puts the run back in the
queue with the same command plus ``--resume``; the trainer checks that the config is unchanged and goes
on from the saved step. The outcome files of the stopped attempt (exit status, heartbeat, metrics,
evaluation) are removed first, so the reconciler cannot mistake them for the new attempt's; the log is
appended to, and the checkpoints stay.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import Experiment, TrainRun, User
from cftclip_core.errors import CftClipError
from train_jobs import runfiles, states

RESUME_FLAG = "--resume"
TRAINER_STATE = "trainer_state.pt"  # inside last/: what the trainer needs to go on (the run folder contract)
STALE_OUTCOMES = (runfiles.EXIT, runfiles.HEARTBEAT, runfiles.METRICS)


def can_resume(run: TrainRun) -> bool:
    """Whether ``run`` ended in a state that may be resumed and left a resumable checkpoint."""
    return run.state in states.RESUMABLE and resumable_checkpoint(run) is not None


def resumable_checkpoint(run: TrainRun) -> Path | None:
    state = Path(run.run_dir) / runfiles.LAST / TRAINER_STATE
    return state.parent if state.is_file() else None


def resume_run(factory: sessionmaker[Session], run_id: int, user_id: int | None) -> str:
    """Queue ``run_id`` again to continue from its last checkpoint; returns what happened, in words.

    Refused (``CftClipError``, nothing changed) for a run that is not failed or cancelled, a proof run,
    or a run that saved no resumable checkpoint.
    """
    with write_session(factory) as session:
        run = session.get(TrainRun, run_id, with_for_update=True)
        if run is None:
            raise CftClipError(f"No training run with id {run_id}; it may have been deleted with its experiment.")
        _check_resumable(session, run)
        checkpoint = resumable_checkpoint(run)
        _remove_stale_outcomes(Path(run.run_dir))
        who = session.get(User, user_id) if user_id is not None else None
        stopped_at = f" (step {run.step})" if run.step else ""
        states.move(run, states.QUEUED, f"resumed by {who.username if who else 'the command line'} from "
                                        f"{checkpoint}{stopped_at}")
        if RESUME_FLAG not in run.command:
            run.command = [*run.command, RESUME_FLAG]
        for column in ("pid", "pid_started", "slurm_job_id", "exit_code", "heartbeat_at", "phase", "launched_at",
                       "started_at", "finished_at", "cancel_requested_at", "cancel_requested_by", "metrics",
                       "eval_metrics", "checkpoint_path", "results_at"):
            setattr(run, column, None)
        run.gpus, run.results_error = [], ""
        return f"Run {run_id} (seed {run.seed}) is queued again; it continues from its last checkpoint{stopped_at}."


def _check_resumable(session: Session, run: TrainRun) -> None:
    if run.state not in states.RESUMABLE:
        hint = " Cancel it first if its process is gone." if run.state == states.LOST else ""
        raise CftClipError(f"Run {run.id} is {run.state}; only a failed or cancelled run can be resumed.{hint}")
    experiment = session.get(Experiment, run.experiment_id)
    if experiment is None or experiment.kind != "train":
        raise CftClipError(f"Run {run.id} is a synthetic-proof run; those are short and cannot be resumed: "
                           "launch the proof again.")
    if resumable_checkpoint(run) is None:
        raise CftClipError(f"Run {run.id} saved no resumable checkpoint ({Path(run.run_dir) / runfiles.LAST} "
                           f"has no {TRAINER_STATE}): it stopped before training began, or was killed without "
                           "saving. Launch the seed again in a new experiment.")


def _remove_stale_outcomes(run_dir: Path) -> None:
    for name in STALE_OUTCOMES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / Path(runfiles.EVAL_METRICS).parent, ignore_errors=True)
