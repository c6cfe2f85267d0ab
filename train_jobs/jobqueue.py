"""The queue: hand queued runs to their backend while there is room.

Local and torchrun runs get GPUs of this machine, at most ``jobs_per_gpu`` of our runs per GPU and
never a GPU that other programs keep busy; runs without a GPU share ``cpu_jobs`` slots. Slurm runs are
submitted at once (Slurm queues them). Placement happens in one write transaction (serialised across
app processes), launching after it; a run whose launch fails is marked failed with the reason.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import TrainRun, utcnow
from annotations.settings import Settings
from cftclip_core.errors import CftClipError
from cftclip_core.instance import INSTANCE_ENV
from train_jobs import states
from train_jobs.gpus import GpuInventory, discover_gpus
from train_jobs.launchers import Launcher, LaunchSpec
from train_jobs.settings import JobSettings

log = logging.getLogger(__name__)

_QUEUE_LOCK_KEY = 0x0CF7C12  # PostgreSQL advisory lock serialising placement across app processes

LauncherFor = Callable[[str], Launcher]


@dataclass
class ScheduleReport:
    launched: list[int] = field(default_factory=list)
    waiting: dict[int, str] = field(default_factory=dict)  # run id -> why it waits
    failed: dict[int, str] = field(default_factory=dict)  # run id -> why it could not start


def schedule(factory: sessionmaker[Session], settings: Settings, job_settings: JobSettings, launcher_for: LauncherFor,
             inventory: Callable[[], GpuInventory] = discover_gpus) -> ScheduleReport:
    """Place and launch the queued runs that fit; the others keep waiting, with the reason recorded."""
    report = ScheduleReport()
    host = socket.gethostname()
    with factory() as session:  # a read first: most polls find nothing queued and take no write lock
        waiting = session.execute(select(TrainRun.n_gpus, TrainRun.backend).where(TrainRun.state == states.QUEUED)).all()
    if not waiting:
        return report
    # GPUs are discovered (a subprocess) before the write lock is taken, and only when a queued run needs them.
    gpus_now = inventory() if any(n and backend != "slurm" for n, backend in waiting) else None
    with write_session(factory) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _QUEUE_LOCK_KEY})
        queued = list(session.scalars(select(TrainRun).where(TrainRun.state == states.QUEUED).order_by(TrainRun.id)))
        if not queued:
            return report
        slots = _Slots(session, host, job_settings, gpus_now)
        claimed = []
        for run in queued:
            if run.backend == "slurm":
                gpus: tuple[int, ...] | None = ()
            else:
                gpus, why = slots.take(run.n_gpus)
                if gpus is None:
                    if why.startswith("needs"):
                        states.move(run, states.FAILED, why)
                        report.failed[run.id] = why
                    else:
                        run.reason = why
                        report.waiting[run.id] = why
                    continue
            states.move(run, states.STARTING)
            run.gpus, run.launched_at = list(gpus), utcnow()
            run.host = None if run.backend == "slurm" else host
            claimed.append(run)
    for run in claimed:
        _launch(factory, settings, run, launcher_for(run.backend), report)
    return report


class _Slots:
    """Room left on this machine: our active runs per GPU and on the CPU."""

    def __init__(self, session: Session, host: str, job_settings: JobSettings, inventory: GpuInventory | None) -> None:
        self.settings = job_settings
        self.inventory = inventory
        active = session.scalars(select(TrainRun).where(TrainRun.state.in_(states.LAUNCHED),
                                                        TrainRun.backend != "slurm", TrainRun.host == host))
        self.per_gpu: dict[int, int] = {}
        self.cpu = 0
        for run in active:
            for gpu in run.gpus or []:
                self.per_gpu[gpu] = self.per_gpu.get(gpu, 0) + 1
            if not run.gpus:
                self.cpu += 1

    def take(self, n_gpus: int) -> tuple[tuple[int, ...] | None, str]:
        """GPU indices for a run (empty for CPU), or None and why not ('needs ...' when it never can)."""
        if n_gpus == 0:
            if self.cpu >= self.settings.cpu_jobs:
                return None, f"waiting for a CPU slot ({self.cpu} CPU run(s) running, limit {self.settings.cpu_jobs})"
            self.cpu += 1
            return (), ""
        if self.inventory is None:  # a GPU run queued after the inventory was skipped: next poll
            return None, "waiting for the next poll to look for GPUs"
        if len(self.inventory.gpus) < n_gpus:
            return None, (f"needs {n_gpus} GPU(s), but this machine has {len(self.inventory.gpus)} now. "
                          f"{self.inventory.note}")
        free, notes = [], []
        for gpu in self.inventory.gpus:
            ours = self.per_gpu.get(gpu.index, 0)
            if ours >= self.settings.jobs_per_gpu:
                notes.append(f"GPU {gpu.index}: {ours} of our run(s) (limit {self.settings.jobs_per_gpu})")
            elif ours == 0 and gpu.memory_used_fraction >= self.settings.busy_memory_fraction:
                notes.append(f"GPU {gpu.index}: busy, {gpu.memory_used_mib:,} of {gpu.memory_total_mib:,} MiB used by "
                             "other programs")
            else:
                free.append((ours, gpu.index))
        if len(free) < n_gpus:
            return None, f"waiting for {n_gpus} free GPU(s): " + "; ".join(notes)
        chosen = tuple(sorted(index for _, index in sorted(free)[:n_gpus]))
        for index in chosen:
            self.per_gpu[index] = self.per_gpu.get(index, 0) + 1
        return chosen, ""


def _launch(factory: sessionmaker[Session], settings: Settings, run: TrainRun, launcher: Launcher,
            report: ScheduleReport) -> None:
    spec = LaunchSpec(run_id=run.id, command=list(run.command), run_dir=Path(run.run_dir), log_path=Path(run.log_path),
                      gpus=tuple(run.gpus), n_gpus=run.n_gpus, env={INSTANCE_ENV: str(settings.instance_dir)})
    try:
        launched = launcher.launch(spec)
    except (OSError, CftClipError) as exc:
        why = f"could not be started: {exc}"
        with write_session(factory) as session:
            current = session.get(TrainRun, run.id)
            if current is not None and current.state == states.STARTING:
                states.move(current, states.FAILED, why)
        report.failed[run.id] = why
        log.warning("Run %d %s", run.id, why)
        return
    with write_session(factory) as session:
        current = session.get(TrainRun, run.id)
        if current is None:
            return
        current.pid, current.pid_started, current.slurm_job_id = launched.pid, launched.pid_started, launched.slurm_job_id
        current.host = launched.host or current.host
        if launched.pid is not None:
            current.started_at = utcnow()
        cancelled_meanwhile = current.cancel_requested_at is not None
    report.launched.append(run.id)
    if cancelled_meanwhile:  # a cancel came while it was being launched: stop it now
        launcher.stop(current)
