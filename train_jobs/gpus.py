"""Which GPUs this machine has and how full they are: NVML (the ``nvidia-ml-py`` package, when
installed) or else ``nvidia-smi``. Neither, or no GPU: jobs run on the CPU only, and the inventory
says so in words.

Indices are nvidia-smi's (PCI bus order); jobs get ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA numbers
the GPUs the same way. If the studio itself runs with ``CUDA_VISIBLE_DEVICES`` set to indices, only
those GPUs are offered.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = ["--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
                    "--format=csv,noheader,nounits"]
MIB = 1024 * 1024


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int
    memory_used_mib: int
    utilization_pct: int | None

    @property
    def memory_used_fraction(self) -> float:
        return self.memory_used_mib / self.memory_total_mib if self.memory_total_mib else 0.0


@dataclass(frozen=True)
class GpuInventory:
    gpus: tuple[Gpu, ...]
    source: str  # "nvml", "nvidia-smi" or "none"
    note: str  # what was found, in words (shown on the Train page)

    @property
    def cpu_only(self) -> bool:
        return not self.gpus

    def get(self, index: int) -> Gpu | None:
        return next((g for g in self.gpus if g.index == index), None)


def discover_gpus(nvidia_smi: str = "nvidia-smi") -> GpuInventory:
    """The GPUs of this machine, from NVML if available, else from ``nvidia-smi``."""
    tried: list[str] = []
    gpus = _from_nvml(tried)
    source = "nvml"
    if gpus is None:
        gpus, source = _from_nvidia_smi(nvidia_smi, tried), "nvidia-smi"
    if gpus:
        gpus = _visible(gpus, tried)
    if not gpus:
        return GpuInventory((), "none", f"No GPU found ({'; '.join(tried)}): jobs run on the CPU only, which is "
                                        "fine for the tiny demo model and far too slow for real training.")
    names = ", ".join(f"{g.index}: {g.name}" for g in gpus)
    return GpuInventory(tuple(gpus), source, f"{len(gpus)} GPU(s) found with {source}: {names}.")


def _from_nvml(tried: list[str]) -> list[Gpu] | None:
    try:
        import pynvml  # nvidia-ml-py, optional
    except ImportError:
        tried.append("no NVML Python package (nvidia-ml-py)")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        tried.append(f"NVML did not start: {exc}")
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: int | None = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                utilization = None
            gpus.append(Gpu(index, name.decode() if isinstance(name, bytes) else str(name),
                            int(memory.total // MIB), int(memory.used // MIB), utilization))
        return gpus
    except pynvml.NVMLError as exc:
        tried.append(f"NVML failed: {exc}")
        return None
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi(executable: str, tried: list[str]) -> list[Gpu]:
    path = shutil.which(executable)
    if path is None:
        tried.append(f"{executable} not found on PATH")
        return []
    try:
        done = subprocess.run([path, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        tried.append(f"{executable} did not answer: {exc}")
        return []
    if done.returncode != 0:
        tried.append(f"{executable} failed: {(done.stderr or done.stdout).strip()[:200]}")
        return []
    gpus = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            utilization = int(parts[4]) if parts[4].isdigit() else None
            gpus.append(Gpu(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3])), utilization))
        except ValueError:
            log.warning("Ignoring an nvidia-smi line I cannot read: %r", line)
    if not gpus:
        tried.append(f"{executable} lists no GPU")
    return gpus


def _visible(gpus: list[Gpu], tried: list[str]) -> list[Gpu]:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None or not all(part.strip().isdigit() for part in value.split(",") if part.strip()):
        return gpus  # unset, or UUIDs: offer everything
    allowed = {int(part) for part in value.split(",") if part.strip()}
    visible = [g for g in gpus if g.index in allowed]
    if not visible:
        tried.append(f"CUDA_VISIBLE_DEVICES={value!r} hides all {len(gpus)} GPU(s)")
    return visible
