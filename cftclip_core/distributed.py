"""Which process of a multi-process run this is, from torchrun's or Slurm's environment.

One entry point serves ``python -m cftclip_core train`` (one process), ``torchrun --nproc_per_node N``
(RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT set by torchrun) and Slurm's ``srun``
(SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID; the rendezvous address is the step's first node
and the port is derived from the job id unless MASTER_ADDR / MASTER_PORT are set).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from cftclip_core.errors import ConfigError

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    launcher: str = "single"  # single | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"The environment variable {name}={env[name]!r} is not an integer; unset it or fix the "
                          "launcher that sets it.") from None


def ranks_from_environment(env: Mapping[str, str] | None = None) -> Ranks:
    """The process's place in the run: torchrun's variables first, then an ``srun`` step's, else one process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        return Ranks(_int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
                     env.get("MASTER_ADDR", "127.0.0.1"), _int(env, "MASTER_PORT") if "MASTER_PORT" in env
                     else DEFAULT_PORT, "torchrun")
    # SLURM_STEP_NUM_TASKS exists inside an srun step only (not in the batch script itself).
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env and _int(env, "SLURM_STEP_NUM_TASKS") > 1:
        port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else (
            DEFAULT_PORT + _int(env, "SLURM_JOB_ID") % 10000 if "SLURM_JOB_ID" in env else DEFAULT_PORT)
        return Ranks(_int(env, "SLURM_PROCID"), _int(env, "SLURM_STEP_NUM_TASKS"), _int(env, "SLURM_LOCALID")
                     if "SLURM_LOCALID" in env else 0,
                     env.get("MASTER_ADDR") or first_host(env.get("SLURM_STEP_NODELIST")
                                                          or env.get("SLURM_JOB_NODELIST", "")),
                     port, "slurm")
    return Ranks()


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[03-05,09],cpu1`` (plain lists need no scontrol)."""
    if not nodelist:
        return "127.0.0.1"
    if "[" not in nodelist:
        return nodelist.split(",")[0]
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    match = re.match(r"([^\[,]+)\[(\d+)", nodelist)  # no scontrol: expand the first range by hand
    return f"{match.group(1)}{match.group(2)}" if match else nodelist


def device_for(ranks: Ranks, requested: str | None) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is wanted (or available and nothing was asked), else the CPU."""
    wants_cuda = requested is None and torch.cuda.is_available() or (requested or "").startswith("cuda")
    if wants_cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"device={requested!r} was requested but this machine has no usable CUDA GPU "
                              "(torch.cuda.is_available() is False); use device='cpu' or run on a GPU node.")
        if ranks.distributed or requested in (None, "cuda"):
            if ranks.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"Local rank {ranks.local_rank} has no GPU: only {torch.cuda.device_count()} "
                                  "visible; start at most that many processes per node.")
            return torch.device("cuda", ranks.local_rank)
        return torch.device(requested)
    return torch.device(requested or "cpu")


def init_process_group(ranks: Ranks, device: torch.device) -> None:
    """Join the run's process group (NCCL on GPUs, gloo on CPUs); nothing for a process started on its own (a
    launcher's single process joins a group of one, so a one-GPU torchrun exercises the same path as many)."""
    if (not ranks.distributed and ranks.launcher == "single") or (dist.is_available() and dist.is_initialized()):
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            init_method=f"tcp://{ranks.master_addr}:{ranks.master_port}", rank=ranks.rank,
                            world_size=ranks.world_size, timeout=timedelta(minutes=30))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
