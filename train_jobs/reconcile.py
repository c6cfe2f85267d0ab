"""Bring the database in line with reality, cancel runs, and ``poll`` (reconcile, then launch).

The reconciler runs on every poll of the instance's poller (``train_jobs.poller``) and before a listing. For each launched run it reads the run folder
(exit.json from the wrapper, heartbeat.json from the job) and asks the backend (is the process alive,
what does Slurm say). A run that ended while the app was down gets its exit status and results; a
run whose process is gone without an exit status, or whose heartbeat is stale, is marked lost; a
cancelled run still alive after ``kill_after_s`` is killed. Files and processes are inspected
outside any transaction; each change is then written in a short transaction that first checks the
run is still in the state that was observed (another app process may have been quicker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import TrainRun, User, utcnow
from annotations.settings import Settings
from cftclip_core.errors import CftClipError
from train_jobs import runfiles, states
from train_jobs.gpus import GpuInventory, discover_gpus
from train_jobs.jobqueue import LauncherFor, ScheduleReport, schedule
from train_jobs.launchers import BackendStatus, Launcher, LocalLauncher, TorchrunLauncher
from train_jobs.locks import poll_lock
from train_jobs.results import import_results
from train_jobs.settings import JobSettings
from train_jobs.slurm import SlurmLauncher

log = logging.getLogger(__name__)


def default_launchers(job_settings: JobSettings) -> LauncherFor:
    launchers: dict[str, Launcher] = {"local": LocalLauncher(), "torchrun": TorchrunLauncher(),
                                      "slurm": SlurmLauncher(job_settings.slurm)}
    return launchers.__getitem__


@dataclass
class _Observation:
    """What a run's folder and backend say now; ``state`` None: no state change."""

    state: str | None = None
    reason: str = ""
    exit_code: int | None = None
    heartbeat: runfiles.Heartbeat | None = None
    host: str | None = None
    running_now: bool = False  # the backend says it runs (Slurm left the queue)


def reconcile(factory: sessionmaker[Session], job_settings: JobSettings, launcher_for: LauncherFor,
              *, now: datetime | None = None) -> list[str]:
    """Update every launched or lost run from its files and backend; one line per state change."""
    now = now or utcnow()
    with factory() as session:
        runs = list(session.scalars(select(TrainRun).where(or_(
            TrainRun.state.in_(states.LAUNCHED), TrainRun.state == states.LOST,
            TrainRun.state.in_(states.FINAL) & TrainRun.results_at.is_(None))).order_by(TrainRun.id)))
    changes = []
    for run in runs:
        if run.state in states.FINAL:
            if run.finished_at is None or now - run.finished_at > timedelta(seconds=job_settings.launch_grace_s):
                import_results(factory, run.id)  # its importer stopped half way (the app was restarted)
            continue
        observed = _observe(run, job_settings, launcher_for(run.backend), now)
        change = _apply(factory, run, observed)
        if change:
            changes.append(change)
    return changes


def _observe(run: TrainRun, job_settings: JobSettings, launcher: Launcher, now: datetime) -> _Observation:
    run_dir = Path(run.run_dir)
    heartbeat = runfiles.read_heartbeat(run_dir)
    ended = _from_exit_file(run, heartbeat)
    if ended is not None:
        return ended
    if run.state == states.LOST and run.cancel_requested_at is None:  # only new evidence changes it
        if heartbeat is not None and not _older(_ts(heartbeat.time), now, job_settings.stale_after_s):
            return _Observation(states.RUNNING, "", heartbeat=heartbeat)
        return _Observation(heartbeat=heartbeat)
    if run.pid is None and run.slurm_job_id is None:  # claimed, but the launch was never recorded
        if run.state == states.STARTING and _older(run.launched_at, now, job_settings.launch_grace_s):
            return _Observation(states.LOST, "the app stopped while launching it; launch it again")
        return _Observation(heartbeat=heartbeat)
    status = launcher.status(run)
    if status.alive is False:
        ended = _from_exit_file(run, runfiles.read_heartbeat(run_dir))  # it may have ended since the first look
        return ended or _gone(run, status, heartbeat)
    if run.cancel_requested_at is not None and _older(run.cancel_requested_at, now, job_settings.kill_after_s):
        if launcher.kill(run):
            log.warning("Run %d did not stop within %.0f s of its cancel; killed", run.id, job_settings.kill_after_s)
    if run.state == states.LOST:
        return _Observation(heartbeat=heartbeat)
    observation = _Observation(heartbeat=heartbeat, host=status.host, running_now=not status.pending and
                               status.alive is True)
    if not status.pending and run.state == states.STARTING and (heartbeat is not None or observation.running_now):
        observation.state = states.RUNNING
    last_sign = max(_ts(heartbeat.time) if heartbeat else None, run.started_at, key=lambda t: t or _EPOCH)
    if not status.pending and last_sign is not None and _older(last_sign, now, job_settings.stale_after_s):
        alive = " Its process still exists: it may hang; cancel it to free its GPU." if status.alive else ""
        seconds = int((now - last_sign).total_seconds())
        return _Observation(states.LOST, f"no heartbeat for {seconds} s (the job writes one at least every 10 s)."
                                         f"{alive}", heartbeat=heartbeat)
    if status.pending and status.reason and run.reason != status.reason:
        observation.reason = status.reason
    return observation


def _from_exit_file(run: TrainRun, heartbeat: runfiles.Heartbeat | None) -> _Observation | None:
    record = runfiles.read_exit(Path(run.run_dir))
    if record is None:
        return None
    code = record.exit_code
    if code != states.EXIT_OK and heartbeat is not None and heartbeat.phase == "stopped":
        code = states.EXIT_TERMINATED  # a clean stop seen through a launcher (torchrun) that exits its own way
    outcome = states.outcome_of_exit(code, cancel_requested=run.cancel_requested_at is not None)
    reason = outcome.reason
    if outcome.state == states.CANCELLED and not (Path(run.run_dir) / runfiles.LAST).is_dir():
        reason = "cancelled before training saved anything (no checkpoint to resume from)"
    if outcome.state == states.FAILED:
        detail = runfiles.last_error_line(run.log_path)
        disk = any(marker in detail for marker in runfiles.DISK_FULL_MARKERS)
        reason = ("the disk is full: free space in the instance folder, then launch it again"
                  if disk else reason) + (f" | {detail}" if detail else "")
    return _Observation(outcome.state, reason, exit_code=record.exit_code, heartbeat=heartbeat)


def _gone(run: TrainRun, status: BackendStatus, heartbeat: runfiles.Heartbeat | None) -> _Observation:
    """A run whose process or Slurm job no longer exists, and which left no exit status."""
    cancelled = run.cancel_requested_at is not None
    if status.final_state is not None:
        state = states.CANCELLED if cancelled and status.final_state != states.SUCCEEDED else status.final_state
        if state == states.SUCCEEDED:  # Slurm says completed, yet the wrapper recorded nothing
            state = states.LOST
            return _Observation(state, "Slurm reports the job completed, but it recorded no exit status in its run "
                                       "folder (is the folder shared with the compute nodes?)",
                                exit_code=status.exit_code, heartbeat=heartbeat)
        return _Observation(state, status.reason, exit_code=status.exit_code, heartbeat=heartbeat)
    if cancelled:
        return _Observation(states.CANCELLED, "cancelled: its process ended without a clean stop (killed); no "
                                              "resumable checkpoint", heartbeat=heartbeat)
    if run.state == states.LOST:
        return _Observation(heartbeat=heartbeat)
    why = status.reason or "its process ended without recording an exit status (killed with SIGKILL together with " \
                           "its wrapper, or the machine restarted)"
    return _Observation(states.LOST, why, heartbeat=heartbeat)


def _apply(factory: sessionmaker[Session], seen: TrainRun, observed: _Observation) -> str | None:
    """Write ``observed`` if the run is still as it was seen; then import the results of a finished run.

    Nothing new (the usual poll of a quiet run): no transaction at all.
    """
    updates = _updates(seen, observed)
    if not updates and observed.state is None:
        return None
    with write_session(factory) as session:
        run = session.get(TrainRun, seen.id)
        if run is None or run.state != seen.state:
            return None
        for name, value in updates.items():
            setattr(run, name, value)
        if observed.state is None:
            return None
        old = run.state
        states.move(run, observed.state, observed.reason)
    if observed.state in states.FINAL:
        import_results(factory, seen.id)
    return f"run {seen.id} (seed {seen.seed}): {old} -> {observed.state}" + (
        f" ({observed.reason})" if observed.reason else "")


def _updates(seen: TrainRun, observed: _Observation) -> dict[str, object]:
    """The columns ``observed`` changes (besides the state)."""
    values: dict[str, object] = {}
    heartbeat = observed.heartbeat
    if heartbeat is not None:
        values.update(heartbeat_at=_ts(heartbeat.time), phase=heartbeat.phase, step=heartbeat.step,
                      total_steps=heartbeat.total_steps, samples_per_s=heartbeat.samples_per_s)
    if observed.host:
        values["host"] = observed.host
    if observed.running_now and seen.started_at is None:
        values["started_at"] = utcnow()
    if observed.exit_code is not None:
        values["exit_code"] = observed.exit_code
    if observed.state is None and observed.reason:
        values["reason"] = observed.reason
    return {name: value for name, value in values.items() if getattr(seen, name) != value}


# --- cancel --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CancelResult:
    run_id: int
    state: str
    message: str  # what happened, in words, for the page


def cancel_run(factory: sessionmaker[Session], run_id: int, user_id: int | None,
               launcher_for: LauncherFor | None = None) -> CancelResult:
    """Cancel a run: a queued one at once; a launched one by SIGTERM to its process group (Slurm: scancel).

    The job saves a resumable checkpoint and exits (status 143: cancelled); the reconciler kills it if
    it is still alive ``kill_after_s`` later. A second cancel of the same run sends nothing and says
    who asked first.
    """
    with write_session(factory) as session:
        run = session.get(TrainRun, run_id, with_for_update=True)
        if run is None:
            raise CftClipError(f"No training run with id {run_id}; it may have been deleted with its experiment.")
        if run.state in states.FINAL:
            return CancelResult(run_id, run.state, f"Run {run_id} has already ended ({run.state}); nothing to cancel.")
        if run.cancel_requested_at is not None:
            who = session.get(User, run.cancel_requested_by) if run.cancel_requested_by else None
            when = run.cancel_requested_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            return CancelResult(run_id, run.state, f"Run {run_id} is already being cancelled (asked by "
                                                   f"{who.username if who else 'someone'} at {when}); it stops after "
                                                   "saving a checkpoint.")
        run.cancel_requested_at, run.cancel_requested_by = utcnow(), user_id
        if run.state == states.QUEUED:
            states.move(run, states.CANCELLED, "cancelled before it started")
            return CancelResult(run_id, run.state, f"Run {run_id} was cancelled before it started.")
        seen = run  # its values stay readable after the session (expire_on_commit=False)
    launcher = (launcher_for or default_launchers(JobSettings.from_env()))(seen.backend)
    if launcher.stop(seen):
        return CancelResult(run_id, seen.state, f"Run {run_id} was asked to stop (SIGTERM); it saves a checkpoint "
                                                "and ends as cancelled.")
    if seen.state == states.LOST or launcher.status(seen).alive is False:
        _apply(factory, seen, _Observation(states.CANCELLED, "cancelled; its process was already gone"))
        return CancelResult(run_id, states.CANCELLED, f"Run {run_id} was cancelled (its process was already gone).")
    return CancelResult(run_id, seen.state, f"Run {run_id} will be stopped as soon as its process is known "
                                            "(it is being launched, or runs on another machine).")


# --- polling ---------------------------------------------------------------------------------------------
@dataclass
class PollReport:
    changes: list[str] = field(default_factory=list)
    schedule: ScheduleReport = field(default_factory=ScheduleReport)


def poll(factory: sessionmaker[Session], settings: Settings, job_settings: JobSettings | None = None, *,
         launcher_for: LauncherFor | None = None, inventory: Callable[[], GpuInventory] = discover_gpus,
         now: datetime | None = None) -> PollReport:
    """Reconcile every run, then launch the queued runs that fit: what the instance's poller
    (``train_jobs.poller``) does every few seconds. Polls of one instance never overlap (``locks.poll_lock``)."""
    job_settings = job_settings or JobSettings.from_env()
    launcher_for = launcher_for or default_launchers(job_settings)
    with poll_lock(settings):
        changes = reconcile(factory, job_settings, launcher_for, now=now)
        return PollReport(changes, schedule(factory, settings, job_settings, launcher_for, inventory))


def refresh(factory: sessionmaker[Session], settings: Settings, job_settings: JobSettings | None = None) -> list[str]:
    """Reconcile every run (no launch): what a listing does first, so that it never shows a stale state."""
    job_settings = job_settings or JobSettings.from_env()
    with poll_lock(settings):
        return reconcile(factory, job_settings, default_launchers(job_settings))


# --- helpers -------------------------------------------------------------------------------------------
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(unix_seconds: float) -> datetime:
    return datetime.fromtimestamp(unix_seconds, tz=UTC)


def _older(moment: datetime | None, now: datetime, seconds: float) -> bool:
    return moment is not None and (now - moment).total_seconds() > seconds

