"""What the train_jobs tests share: a small labelled synthetic dataset in the database, a training request
for it, and machines with and without GPUs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from annotations.importer import import_dataset
from annotations.models import Experiment, TrainRun
from cftclip_core.formats import read_table
from cftclip_core.synthetic import WorldConfig, generate_dataset
from train_jobs.api import ExperimentRequest
from train_jobs.gpus import Gpu, GpuInventory

CPU_ONLY = GpuInventory((), "none", "No GPU found (test): jobs run on the CPU only.")
TWO_GPUS = GpuInventory((Gpu(0, "Test GPU", 80_000, 70_000, 90), Gpu(1, "Test GPU", 80_000, 500, 0)), "nvidia-smi",
                        "2 GPU(s)")
CONFIG = {"model": "tiny-demo", "loss": "clip", "batch_size": 4, "max_steps": 2, "precision": "fp32",
          "freeze_text_layers": 1}


def make_dataset(factory, instance, tmp_path: Path) -> int:  # noqa: ANN001
    """The 24-item synthetic set (19 train, 3 val, 2 test; labelled) imported into the database."""
    csv = generate_dataset(tmp_path / "syn", 24, WorldConfig(image_size=64), seed=0)
    return import_dataset(factory, instance, read_table(csv), "syn").id


def request(dataset: int, **changes) -> ExperimentRequest:  # noqa: ANN003
    values = {"name": "exp", "config": dict(CONFIG), "train_dataset_id": dataset, "seeds": (0,)}
    return ExperimentRequest(**{**values, **changes})


def nothing_created(factory, instance) -> bool:  # noqa: ANN001
    with factory() as session:
        rows = session.scalar(select(func.count()).select_from(Experiment)) + session.scalar(
            select(func.count()).select_from(TrainRun))
    runs_dir = instance.instance_dir / "runs"
    return rows == 0 and (not runs_dir.exists() or not any(runs_dir.iterdir()))


