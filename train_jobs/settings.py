"""How jobs are run: limits, timeouts, and where a Slurm cluster's settings go (see docs/slurm.md).

Read from the environment (``JobSettings.from_env``) so the app, the command line and a cron job
agree; tests build them directly.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from cftclip_core.errors import ConfigError


@dataclass(frozen=True)
class SlurmSettings:
    """What an sbatch script needs on a given cluster. Empty values are left out of the script."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    time_limit: str = ""  # sbatch --time, e.g. 12:00:00
    cpus_per_task: int = 0
    mem_per_gpu: str = ""  # e.g. 64G
    gpu_type: str = ""  # e.g. a100: asks for --gpus-per-task=a100:1
    modules: tuple[str, ...] = ()  # `module load` lines, e.g. ("cuda/12.4",)
    setup: tuple[str, ...] = ()  # shell lines run before the job, e.g. ("source /home/me/studio/.venv/bin/activate",)
    python: str = sys.executable  # the interpreter on the compute nodes
    extra: tuple[str, ...] = ()  # further #SBATCH options, e.g. ("--constraint=h100",)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlurmSettings:
        def text(name: str) -> str:
            return env.get(f"CFTCLIP_SLURM_{name}", "").strip()

        def lines(name: str, sep: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in text(name).split(sep) if part.strip())

        cpus = text("CPUS_PER_TASK") or "0"
        if not cpus.isdigit():
            raise ConfigError(f"CFTCLIP_SLURM_CPUS_PER_TASK={cpus!r} is not a whole number; set e.g. 8, or unset it.")
        return cls(partition=text("PARTITION"), account=text("ACCOUNT"), qos=text("QOS"), time_limit=text("TIME"),
                   cpus_per_task=int(cpus), mem_per_gpu=text("MEM_PER_GPU"), gpu_type=text("GPU_TYPE"),
                   modules=lines("MODULES", ","), setup=lines("SETUP", ";"), python=text("PYTHON") or sys.executable,
                   extra=tuple(shlex.split(text("EXTRA"))))


@dataclass(frozen=True)
class JobSettings:
    jobs_per_gpu: int = 1  # concurrent local jobs on one GPU
    cpu_jobs: int = 1  # concurrent local jobs without a GPU
    busy_memory_fraction: float = 0.5  # a GPU whose memory is this full with none of our jobs on it is busy
    stale_after_s: float = 120.0  # no heartbeat for this long: the run is lost (the trainer beats every <= 10 s)
    launch_grace_s: float = 60.0  # a run claimed for launch but without a process after this is lost
    kill_after_s: float = 60.0  # after a cancel, SIGKILL a process group still alive after this long
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> JobSettings:
        env = os.environ if env is None else env
        values = {}
        for name, kind in (("jobs_per_gpu", int), ("cpu_jobs", int), ("busy_memory_fraction", float),
                           ("stale_after_s", float), ("launch_grace_s", float), ("kill_after_s", float)):
            variable = f"CFTCLIP_{name.upper()}"
            raw = env.get(variable, "").strip()
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{variable}={raw!r} is not a {kind.__name__}; fix or unset it.") from None
        settings = cls(**values, slurm=SlurmSettings.from_env(env))
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.jobs_per_gpu < 1 or self.cpu_jobs < 1:
            raise ConfigError("jobs_per_gpu and cpu_jobs must be at least 1 (CFTCLIP_JOBS_PER_GPU, CFTCLIP_CPU_JOBS).")
        if not 0 < self.busy_memory_fraction <= 1:
            raise ConfigError("busy_memory_fraction must be in (0, 1] (CFTCLIP_BUSY_MEMORY_FRACTION), e.g. 0.5.")
        if min(self.stale_after_s, self.launch_grace_s, self.kill_after_s) <= 0:
            raise ConfigError("stale_after_s, launch_grace_s and kill_after_s must be positive numbers of seconds.")
