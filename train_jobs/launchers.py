"""Launchers: local process, torchrun, Slurm (``train_jobs.slurm``) behind one interface.

Every job runs as ``python -m train_jobs.wrap RUN_DIR -- COMMAND`` (see ``wrap``), with its output
appended to ``RUN_DIR/job.log``. Local jobs start in a new session, detached from the app: restarting
Streamlit does not stop them, and their process group can be signalled as one.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from annotations.models import TrainRun
from train_jobs import procs
from train_jobs.commands import split_command

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # jobs start here: `python -m cftclip_core` finds the packages


@dataclass(frozen=True)
class LaunchSpec:
    run_id: int
    command: list[str]  # the stored ``python -m MODULE ...`` command
    run_dir: Path
    log_path: Path
    gpus: tuple[int, ...] = ()  # local GPU indices given to the job; empty: CPU only
    n_gpus: int = 0  # GPUs to ask a scheduler for
    env: Mapping[str, str] = field(default_factory=dict)  # added to the job's environment


@dataclass(frozen=True)
class Launched:
    argv: list[str]  # what was executed (or submitted)
    host: str | None = None
    pid: int | None = None
    pid_started: str | None = None
    slurm_job_id: str | None = None


@dataclass(frozen=True)
class BackendStatus:
    """What the backend says about a launched job. ``alive`` None: it cannot tell from here."""

    alive: bool | None
    pending: bool = False  # waiting in a scheduler's queue: no heartbeat expected yet
    final_state: str | None = None  # a run state the scheduler reports for a job that ended
    exit_code: int | None = None
    reason: str = ""
    host: str | None = None


class Launcher(Protocol):
    name: str

    def launch(self, spec: LaunchSpec) -> Launched: ...

    def status(self, run: TrainRun) -> BackendStatus: ...

    def stop(self, run: TrainRun) -> bool:
        """Ask the job to stop (SIGTERM): it saves a resumable checkpoint and exits. True if a request was sent."""

    def kill(self, run: TrainRun) -> bool:
        """End the job now (SIGKILL). True if a signal was sent."""


def job_environment(extra: Mapping[str, str], gpus: tuple[int, ...] | None) -> dict[str, str]:
    """The app's environment plus the job's; ``gpus`` None leaves GPU visibility to a scheduler."""
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"  # the log shows progress as it happens
    if gpus is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the same numbering as nvidia-smi's
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)  # empty: no GPU at all
    return env


class LocalLauncher:
    """One process on this machine (the trainer uses at most one GPU this way)."""

    name = "local"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def job_argv(self, spec: LaunchSpec) -> list[str]:
        module, args = split_command(spec.command)
        return [self.python, "-m", module, *args]

    def launch(self, spec: LaunchSpec) -> Launched:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.python, "-m", "train_jobs.wrap", str(spec.run_dir), "--", *self.job_argv(spec)]
        with open(spec.log_path, "ab") as log_file:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=PROJECT_ROOT,
                                       env=job_environment(spec.env, spec.gpus))
        log.info("Run %d started as process %d: %s", spec.run_id, process.pid, " ".join(argv))
        return Launched(argv, host=socket.gethostname(), pid=process.pid, pid_started=procs.start_token(process.pid))

    def status(self, run: TrainRun) -> BackendStatus:
        if run.pid is None or run.host != socket.gethostname():
            return BackendStatus(alive=None, host=run.host)
        return BackendStatus(alive=procs.is_alive(run.pid, run.pid_started), host=run.host)

    def stop(self, run: TrainRun) -> bool:
        return self._signal(run, signal.SIGTERM)

    def kill(self, run: TrainRun) -> bool:
        return self._signal(run, signal.SIGKILL)

    def _signal(self, run: TrainRun, signum: int) -> bool:
        if run.pid is None or run.host != socket.gethostname():
            return False
        return procs.signal_group(run.pid, run.pid_started, signum)


class TorchrunLauncher(LocalLauncher):
    """One process per GPU on this machine through torchrun (one process on the CPU when given no GPU).

    torchrun forwards SIGTERM to its workers, and escalates to SIGKILL after its own grace period.
    """

    name = "torchrun"

    def job_argv(self, spec: LaunchSpec) -> list[str]:
        module, args = split_command(spec.command)
        return [self.python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={max(1, len(spec.gpus))}", "-m", module, *args]
