"""What the train_jobs tests share: a small labelled synthetic dataset in the database, a training request
for it, machines with and without GPUs, and an experiment of stand-in jobs that beat once and exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import import_dataset
from annotations.models import Experiment, TrainRun, utcnow
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




QUICK_JOB = '''
import json, os, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "heartbeat.json"), "w") as f:
    json.dump({"time": time.time(), "pid": os.getpid(), "phase": "training", "step": 1, "total_steps": 1}, f)
time.sleep(float(os.environ.get("QUICK_JOB_SECONDS", "0.5")))
'''


def queue_quick_runs(factory: sessionmaker[Session], root: Path, code: Path, monkeypatch: pytest.MonkeyPatch,
                     *, seconds: float = 0.5) -> int:
    """An experiment of two queued runs of the stand-in job ``quick_job`` (written to ``code``, which the jobs
    import through PYTHONPATH), one CPU slot so the second waits for the first; returns its id."""
    code.mkdir()
    (code / "quick_job.py").write_text(QUICK_JOB)
    monkeypatch.setenv("PYTHONPATH", str(code))  # the launcher's environment, which its jobs inherit
    monkeypatch.setenv("QUICK_JOB_SECONDS", str(seconds))
    monkeypatch.setenv("CFTCLIP_CPU_JOBS", "1")
    with write_session(factory) as session:
        experiment = Experiment(name="quick", kind="train", config={}, config_hash="0" * 64, backend="local",
                                gpus_per_run=0, folder=str(root), created_at=utcnow())
        session.add(experiment)
        session.flush()
        for seed in (0, 1):
            run_dir = root / f"seed-{seed}"
            session.add(TrainRun(experiment_id=experiment.id, seed=seed, state="queued", reason="",
                                 command=["python", "-m", "quick_job", "--out", str(run_dir)], config={},
                                 config_hash="0" * 64, backend="local", n_gpus=0, gpus=[], run_dir=str(run_dir),
                                 log_path=str(run_dir / "job.log"), created_at=utcnow(), results_error=""))
        return experiment.id
