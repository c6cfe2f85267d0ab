"""Training jobs without the trainer: experiment checks, GPU discovery, the queue, the reconciler
(with stand-in processes), Slurm states one node cannot produce (stand-in commands), results import.

Real trainer runs (local, torchrun, Slurm) are in test_train_jobs_runs.py.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import types
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from annotations.db import write_session
from annotations.importer import import_dataset
from annotations.models import Experiment, Item, Score, ScoreSet, TrainRun, TriageDecision, utcnow
from annotations.review import set_gold
from annotations.users import create_user
from cftclip_core.errors import CftClipError, ConfigError
from cftclip_core.formats import read_table, write_table
from cftclip_core.synthetic import WorldConfig, generate_dataset
from train_jobs import procs, runfiles, states
from train_jobs.api import (
    ExperimentError, ExperimentRequest, JobSettings, cancel_run, create_experiment, create_proof_experiment,
    can_resume, delete_experiment, experiment_runs, import_results, poll, results_row, resume_run,
)
from train_jobs.gpus import Gpu, GpuInventory, discover_gpus
from train_jobs.launchers import BackendStatus, Launched, LaunchSpec
from train_jobs.reconcile import default_launchers, reconcile
from train_jobs.settings import SlurmSettings

CPU_ONLY = GpuInventory((), "none", "No GPU found (test): jobs run on the CPU only.")
TWO_GPUS = GpuInventory((Gpu(0, "Test GPU", 80_000, 70_000, 90), Gpu(1, "Test GPU", 80_000, 500, 0)), "nvidia-smi",
                        "2 GPU(s)")
CONFIG = {"model": "tiny-demo", "loss": "clip", "batch_size": 4, "max_steps": 2, "precision": "fp32",
          "freeze_text_layers": 1}


@pytest.fixture
def dataset(factory, instance, tmp_path: Path) -> int:  # noqa: ANN001
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


# --- experiments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "field"), [
    ({"lr": "fast"}, "lr="),
    ({"batch_size": 1}, "batch_size="),
    ({"loss": "triplet"}, "loss="),
    ({"batch_sise": 8}, "batch_sise"),
    ({"seed": 3}, "seed is set per run"),
    ({"batch_size": 64}, "batch_size=64 is larger than the 19 training item(s)"),
    ({"freeze_text_layers": 11}, "freeze_text_layers=11 is not valid: the model's text tower has only 2"),
])
def test_invalid_hyperparameters_are_refused_naming_the_field_before_anything_is_written(
        factory, instance, dataset: int, config: dict, field: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=field.replace("(", r"\(").replace(")", r"\)")):
        create_experiment(factory, instance, request(dataset, config={**CONFIG, **config}), inventory=CPU_ONLY)
    assert nothing_created(factory, instance)


@pytest.mark.parametrize(("changes", "message"), [
    ({"seeds": ()}, "at least one seed"),
    ({"seeds": (0, 0)}, "repeat a seed"),
    ({"seeds": (-1,)}, "integer from 0 to"),
    ({"seeds": (10**23,)}, "integer from 0 to"),  # raised OverflowError in the database before
    ({"backend": "kubernetes"}, "backend='kubernetes' is not known"),
    ({"backend": "local", "gpus_per_run": 2}, "choose torchrun"),
    ({"gpus_per_run": 1}, "this machine has 0.*CPU only"),
    ({"backend": "torchrun", "gpus_per_run": 4}, "asks for 4 GPU\\(s\\), but this machine has 2"),
    ({"threshold": "best"}, "threshold='best' is not valid"),
    ({"name": " "}, "needs a name"),
])
def test_bad_seeds_backends_and_absent_gpus_are_refused(factory, instance, dataset: int, changes: dict,
                                                        message: str) -> None:  # noqa: ANN001
    inventory = TWO_GPUS if changes.get("backend") == "torchrun" else CPU_ONLY
    with pytest.raises(CftClipError, match=message):
        create_experiment(factory, instance, request(dataset, **changes), inventory=inventory)
    assert nothing_created(factory, instance)


def test_evaluation_dataset_without_labels_is_refused(factory, instance, dataset: int, tmp_path: Path) -> None:  # noqa: ANN001
    table = read_table(generate_dataset(tmp_path / "unlabelled", 6, WorldConfig(image_size=64), seed=1))
    unlabelled = write_table([dataclasses.replace(r, label=None) for r in table.records],
                             tmp_path / "unlabelled" / "nolabels.csv")
    eval_id = import_dataset(factory, instance, read_table(unlabelled), "no-labels").id
    with pytest.raises(ExperimentError, match="'no-labels' has no labels to evaluate against"):
        create_experiment(factory, instance, request(dataset, eval_dataset_id=eval_id), inventory=CPU_ONLY)
    assert nothing_created(factory, instance)


def test_training_data_without_a_val_split_or_without_counterfactuals_is_refused(
        factory, instance, dataset: int, tmp_path: Path) -> None:  # noqa: ANN001
    table = read_table(generate_dataset(tmp_path / "flat", 8, WorldConfig(image_size=64), seed=2))
    flat = write_table([dataclasses.replace(r, split=None) for r in table.records], tmp_path / "flat" / "f.csv")
    flat_id = import_dataset(factory, instance, read_table(flat), "flat").id
    with pytest.raises(ExperimentError, match="'flat' has no items with split 'train'"):
        create_experiment(factory, instance, request(flat_id), inventory=CPU_ONLY)
    with pytest.raises(ExperimentError, match="no counterfactual texts, and the loss 'cft' needs them"):
        create_experiment(factory, instance, request(dataset, config={**CONFIG, "loss": "cft"}), inventory=CPU_ONLY)
    assert nothing_created(factory, instance)


def test_the_thresholds_source_is_checked_recorded_and_passed_to_the_run(
        factory, instance, dataset: int, tmp_path: Path) -> None:  # noqa: ANN001
    table = read_table(generate_dataset(tmp_path / "noval", 8, WorldConfig(image_size=64), seed=3))
    no_val = write_table([dataclasses.replace(r, split="test") for r in table.records], tmp_path / "noval" / "t.csv")
    no_val_id = import_dataset(factory, instance, read_table(no_val), "no-val").id
    with pytest.raises(ExperimentError, match="'no-val' has none. Take the threshold from the training run's"):
        create_experiment(factory, instance, request(dataset, eval_dataset_id=no_val_id, threshold_from="eval-val"),
                          inventory=CPU_ONLY)
    with pytest.raises(ConfigError, match="threshold_from='eval-val' contradicts replicate_original"):
        create_experiment(factory, instance, request(dataset, eval_dataset_id=no_val_id, threshold_from="eval-val",
                                                     config={**CONFIG, "replicate_original": True}),
                          inventory=CPU_ONLY)
    with pytest.raises(ExperimentError, match="'no-val' has none"):  # f1-optimal looks in eval-val by default
        create_experiment(factory, instance, request(dataset, eval_dataset_id=no_val_id, threshold="f1-optimal"),
                          inventory=CPU_ONLY)
    assert nothing_created(factory, instance)
    tuned = create_experiment(factory, instance, request(dataset, name="tuned", eval_dataset_id=no_val_id,
                                                         threshold="f1-optimal", threshold_from="train-val"),
                              inventory=CPU_ONLY)  # the synthetic training set's val rows are labelled
    median = create_experiment(factory, instance, request(dataset, name="median", eval_dataset_id=no_val_id),
                               inventory=CPU_ONLY)
    for experiment, expected in ((tuned, {"threshold": "f1-optimal", "threshold_from": "train-val"}),
                                 (median, {"threshold": "val-median", "threshold_from": "train-val"})):
        assert experiment.options == expected
        with factory() as session:
            [run] = experiment_runs(session, experiment.id)
        assert run.command[run.command.index("--threshold-from") + 1] == "train-val"


def test_a_full_disk_while_exporting_leaves_nothing_behind(factory, instance, dataset: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("train_jobs.experiments.export_dataset", full)
    with pytest.raises(ExperimentError, match="No space left on device. Free disk space there"):
        create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)
    assert nothing_created(factory, instance)


def test_experiment_exports_gold_labels_and_queues_one_run_per_seed_with_provenance(
        factory, instance, dataset: int) -> None:  # noqa: ANN001
    researcher = create_user(factory, "rita", "correct horse battery", "researcher")
    with factory() as session:
        item = session.scalars(select(Item).where(Item.dataset_id == dataset, Item.split == "test")).first()
    flipped = 1 - item.source_label
    set_gold(factory, item.id, flipped, "checked the photo", researcher.id)
    experiment = create_experiment(factory, instance, request(dataset, eval_dataset_id=dataset, seeds=(0, 1, 2)),
                                   user_id=researcher.id, inventory=CPU_ONLY)
    folder = Path(experiment.folder)
    assert folder.parent == instance.instance_dir / "runs"
    train, val, evaluation = (pd.read_csv(folder / "data" / f"{n}.csv", dtype=str, keep_default_na=False)
                              for n in ("train", "val", "eval"))
    assert (len(train), len(val), len(evaluation)) == (19, 3, 24)
    assert set(train["split"]) == {"train"} and set(val["split"]) == {"val"}
    assert evaluation.set_index("id").loc[item.external_id, "label"] == str(flipped)  # the gold label, not the file's
    assert json.loads((folder / "config.json").read_text()) == CONFIG
    with factory() as session:
        runs = experiment_runs(session, experiment.id)
    assert [r.seed for r in runs] == [0, 1, 2] and {r.state for r in runs} == {"queued"}
    assert {r.config_hash for r in runs} == {experiment.config_hash}
    assert [r.config["seed"] for r in runs] == [0, 1, 2]
    first = runs[0]
    assert first.command[:4] == ["python", "-m", "cftclip_core", "train"]
    assert first.command[first.command.index("--seed") + 1] == "0"
    assert first.command[first.command.index("--out") + 1] == first.run_dir == str(folder / "seed-0")
    assert first.command[first.command.index("--eval") + 1] == str(folder / "data" / "eval.csv")
    assert first.created_by == researcher.id and first.package_versions["torch"]
    assert first.code_version and len(first.label_snapshot) == 64
    # Another gold decision: the next experiment records a different label snapshot.
    set_gold(factory, item.id, 1 - flipped, "looked again", researcher.id)
    again = create_experiment(factory, instance, request(dataset, name="exp2", eval_dataset_id=dataset),
                              inventory=CPU_ONLY)
    with factory() as session:
        assert experiment_runs(session, again.id)[0].label_snapshot != first.label_snapshot
    with pytest.raises(ExperimentError, match="already exists"):
        create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)


def test_proof_experiment_runs_the_proof_command(factory, instance) -> None:  # noqa: ANN001
    experiment = create_proof_experiment(factory, instance, name="proof demo", seeds=(0, 1), inventory=CPU_ONLY)
    with factory() as session:
        runs = experiment_runs(session, experiment.id)
    assert runs[1].command == ["python", "-m", "cftclip_core.proof", "run", "--world", "many", "--arm", "cft",
                               "--seed", "1", "--out", runs[1].run_dir, "--cache",
                               str(instance.cache_dir / "proof")]
    with pytest.raises(ConfigError, match="proof option arm"):
        create_proof_experiment(factory, instance, name="bad", arm="cft; rm -rf /", inventory=CPU_ONLY)


def end_run(factory, run_id: int, state: str, exit_code: int = 143, host: str | None = None) -> TrainRun:  # noqa: ANN001
    with write_session(factory) as session:
        run = session.get(TrainRun, run_id)
        run.state, run.exit_code, run.host, run.finished_at = state, exit_code, host, utcnow()
        return run


def current_state(factory, run_id: int) -> str:  # noqa: ANN001
    with factory() as session:
        return session.get(TrainRun, run_id).state


def test_resume_is_refused_with_the_reason_and_changes_nothing(factory, instance, dataset: int) -> None:  # noqa: ANN001
    experiment = create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)
    with factory() as session:
        run = experiment_runs(session, experiment.id)[0]
    with pytest.raises(CftClipError, match="is queued; only a failed or cancelled run"):
        resume_run(factory, run.id, None)
    end_run(factory, run.id, "lost")
    with pytest.raises(CftClipError, match="Cancel it first"):
        resume_run(factory, run.id, None)
    run = end_run(factory, run.id, "cancelled")
    with pytest.raises(CftClipError, match="saved no resumable checkpoint"):
        resume_run(factory, run.id, None)
    last = Path(run.run_dir) / runfiles.LAST
    last.mkdir(parents=True)
    (last / "trainer_state.pt").write_bytes(b"saved")
    end_run(factory, run.id, "failed", exit_code=2)  # a NaN loss or a refused config
    with pytest.raises(CftClipError, match="would fail the same way"):
        resume_run(factory, run.id, None)
    end_run(factory, run.id, "cancelled", host="another-machine")
    with pytest.raises(CftClipError, match="ran on another-machine, not on this machine"):
        resume_run(factory, run.id, None)
    assert current_state(factory, run.id) == "cancelled" and not can_resume(current(factory, run.id))

    proof = create_proof_experiment(factory, instance, name="proof", seeds=(0,), inventory=CPU_ONLY)
    with factory() as session:
        proof_run = experiment_runs(session, proof.id)[0]
    Path(proof_run.run_dir, runfiles.LAST).mkdir(parents=True)  # the proof trains into its run folder too
    Path(proof_run.run_dir, runfiles.LAST, "trainer_state.pt").write_bytes(b"saved")
    proof_run = end_run(factory, proof_run.id, "cancelled")
    assert not can_resume(proof_run)
    with pytest.raises(CftClipError, match="synthetic-proof run"):
        resume_run(factory, proof_run.id, None)


def test_resume_sets_the_stopped_attempt_aside_and_queues_the_run_with_resume(
        factory, instance, dataset: int, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    experiment = create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)
    with factory() as session:
        run = experiment_runs(session, experiment.id)[0]
    run_dir = Path(run.run_dir)
    (run_dir / runfiles.LAST).mkdir(parents=True)
    (run_dir / runfiles.LAST / "trainer_state.pt").write_bytes(b"saved")
    outcomes = (runfiles.EXIT, runfiles.HEARTBEAT, runfiles.METRICS, runfiles.EVAL_METRICS)
    for name in outcomes:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}")
    Path(run.log_path).write_text("Traceback (most recent call last):\nRuntimeError: the stopped attempt's\n")
    run = end_run(factory, run.id, "cancelled", host=socket.gethostname())
    assert can_resume(run)

    def refused(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise RuntimeError("the database refused")
    with monkeypatch.context() as patch:
        patch.setattr("train_jobs.resume.states.move", refused)
        with pytest.raises(RuntimeError):
            resume_run(factory, run.id, None)
    assert current_state(factory, run.id) == "cancelled"
    assert all((run_dir / name).is_file() for name in outcomes)  # put back: nothing changed half-way

    assert "queued again" in resume_run(factory, run.id, None)
    resumed = current(factory, run.id)
    assert (resumed.state, resumed.exit_code, resumed.host, resumed.command[-1]) == ("queued", None, None, "--resume")
    assert "resumed by the command line" in resumed.reason
    assert not any((run_dir / name).exists() for name in outcomes)
    assert all((run_dir / "stopped-attempt" / name).is_file() for name in outcomes)
    assert (run_dir / runfiles.LAST / "trainer_state.pt").is_file()
    assert runfiles.last_error_line(run.log_path) == ""  # the stopped attempt's error is not the new one's
    with open(run.log_path, "a") as log:
        log.write("error: the new attempt's\n")
    assert runfiles.last_error_line(run.log_path) == "error: the new attempt's"


def current(factory, run_id: int) -> TrainRun:  # noqa: ANN001
    with factory() as session:
        return session.get(TrainRun, run_id)


# --- GPU discovery -------------------------------------------------------------------------------------
def fake_executable(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_gpus_from_nvidia_smi_and_cpu_only_when_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML package
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    none = discover_gpus()
    assert none.cpu_only and none.source == "none"
    assert "nvidia-smi not found" in none.note and "CPU only" in none.note
    fake_executable(tmp_path / "bin", "nvidia-smi", """\
        echo "0, NVIDIA H100 80GB HBM3, 81559, 70000, 97"
        echo "1, NVIDIA H100 80GB HBM3, 81559, 3, 0"
        """)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    found = discover_gpus()
    assert found.source == "nvidia-smi" and [g.index for g in found.gpus] == [0, 1]
    assert found.gpus[0].memory_used_mib == 70000 and found.gpus[1].utilization_pct == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [g.index for g in discover_gpus().gpus] == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "hides all 2 GPU(s)" in discover_gpus().note


def test_gpus_from_nvml_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    class NVMLError(Exception):
        pass

    memory = types.SimpleNamespace(total=80 * 1024**3, used=1024**3)
    fake = types.SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetName=lambda h: b"NVIDIA A100",
        nvmlDeviceGetMemoryInfo=lambda h: memory, nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=5))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    inventory = discover_gpus()
    assert inventory.source == "nvml"
    assert inventory.gpus == (Gpu(0, "NVIDIA A100", 81920, 1024, 5),)


# --- the queue -----------------------------------------------------------------------------------------
class RecordingLauncher:
    """Records launches instead of starting processes."""

    name = "local"

    def __init__(self) -> None:
        self.specs: list[LaunchSpec] = []

    def launch(self, spec: LaunchSpec) -> Launched:
        self.specs.append(spec)
        return Launched(["recorded"], host="here", pid=10**7 + len(self.specs), pid_started="0")

    def status(self, run: TrainRun) -> BackendStatus:
        return BackendStatus(alive=True, host=run.host)


def test_queue_respects_the_per_gpu_limit_skips_busy_gpus_and_fails_runs_needing_absent_ones(
        factory, instance, dataset: int) -> None:  # noqa: ANN001
    one_gpu = create_experiment(factory, instance, request(dataset, name="one-gpu", seeds=(0, 1), gpus_per_run=1),
                                inventory=TWO_GPUS)
    cpu = create_experiment(factory, instance, request(dataset, name="cpu", seeds=(0, 1)), inventory=TWO_GPUS)
    launcher = RecordingLauncher()
    settings = JobSettings(jobs_per_gpu=1, cpu_jobs=1, busy_memory_fraction=0.5)
    report = poll(factory, instance, settings, launcher_for=lambda backend: launcher, inventory=lambda: TWO_GPUS).schedule
    assert [spec.gpus for spec in launcher.specs] == [(1,), ()]  # GPU 0 is 86% full with other programs' memory
    assert launcher.specs[0].env["CFTCLIP_INSTANCE"] == str(instance.instance_dir)
    with factory() as session:
        gpu_runs, cpu_runs = experiment_runs(session, one_gpu.id), experiment_runs(session, cpu.id)
    assert [r.state for r in gpu_runs] == ["starting", "queued"] and gpu_runs[0].gpus == [1]
    assert gpu_runs[0].pid == 10**7 + 1 and gpu_runs[0].launched_at is not None
    assert "GPU 0: busy, 70,000 of 80,000 MiB used by other programs" in gpu_runs[1].reason
    assert "GPU 1: 1 of our run(s) (limit 1)" in gpu_runs[1].reason
    assert [r.state for r in cpu_runs] == ["starting", "queued"]
    assert "waiting for a CPU slot (1 CPU run(s) running, limit 1)" in cpu_runs[1].reason
    assert set(report.waiting) == {gpu_runs[1].id, cpu_runs[1].id}
    # The GPUs disappear (driver gone): a run needing one fails, with what was found.
    gone = GpuInventory((), "none", "No GPU found (nvidia-smi not found on PATH): jobs run on the CPU only.")
    report = poll(factory, instance, settings, launcher_for=lambda backend: launcher, inventory=lambda: gone,
                  now=utcnow()).schedule
    with factory() as session:
        waiting = session.get(TrainRun, gpu_runs[1].id)
    assert waiting.state == "failed" and "needs 1 GPU(s), but this machine has 0 now" in waiting.reason
    assert waiting.id in report.failed


# --- the reconciler, with stand-in jobs ---------------------------------------------------------------------
STANDIN = '''\
"""A stand-in job: writes a heartbeat in its --out folder, then sleeps; SIGTERM: saves last/, exits 143."""
import json, os, signal, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
os.makedirs(out, exist_ok=True)
def stop(*args):
    os.makedirs(os.path.join(out, "last"))
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
with open(os.path.join(out, "heartbeat.json"), "w") as f:
    json.dump({"time": time.time(), "pid": os.getpid(), "phase": "training", "step": 1, "total_steps": 9,
               "samples_per_s": 1.5}, f)
time.sleep(600)
'''


@pytest.fixture
def standin_runs(factory, instance, dataset: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """Two queued runs whose command is the stand-in job; every process group left is killed afterwards."""
    folder = tmp_path / "standin"
    folder.mkdir()
    (folder / "standin_job.py").write_text(STANDIN)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    experiment = create_experiment(factory, instance, request(dataset, seeds=(0, 1)), inventory=CPU_ONLY)
    with write_session(factory) as session:
        for run in experiment_runs(session, experiment.id):
            run.command = ["python", "-m", "standin_job", "--out", run.run_dir]
    yield experiment
    with factory() as session:
        for run in experiment_runs(session, experiment.id):
            if run.pid:
                procs.signal_group(run.pid, run.pid_started, signal.SIGKILL)


def wait_for(condition, what: str, timeout: float = 120.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def launched(factory, experiment_id: int) -> list[TrainRun]:  # noqa: ANN001
    with factory() as session:
        return experiment_runs(session, experiment_id)


def test_killed_job_is_lost_stale_heartbeat_is_lost_and_a_fresh_heartbeat_brings_it_back(
        factory, instance, standin_runs) -> None:  # noqa: ANN001
    settings = JobSettings(cpu_jobs=2, stale_after_s=60)
    poll(factory, instance, settings, inventory=lambda: CPU_ONLY)
    first, second = launched(factory, standin_runs.id)
    assert first.state == second.state == "starting" and first.pid and first.pid_started
    wait_for(lambda: runfiles.read_heartbeat(Path(first.run_dir)) and runfiles.read_heartbeat(Path(second.run_dir)),
             "the stand-ins' heartbeats")
    poll(factory, instance, settings, inventory=lambda: CPU_ONLY)
    first, second = launched(factory, standin_runs.id)
    assert first.state == "running" and (first.step, first.total_steps, first.phase) == (1, 9, "training")

    # SIGKILL to the whole group (wrapper included): no exit status is recorded -> lost.
    os.killpg(first.pid, signal.SIGKILL)
    wait_for(lambda: not procs.is_alive(first.pid, first.pid_started), "the killed job to end")
    # An hour later the second one, still alive, has not beaten since: lost, and the reason says it still exists.
    changes = reconcile(factory, settings, default_launchers(settings), now=utcnow() + timedelta(hours=1))
    first, second = launched(factory, standin_runs.id)
    assert first.state == "lost" and "ended without recording an exit status" in first.reason
    assert second.state == "lost" and "no heartbeat for" in second.reason and "still exists" in second.reason
    assert len(changes) == 2 and first.finished_at is not None
    # It beats again (it was only slow): running again.
    hb = json.loads((Path(second.run_dir) / "heartbeat.json").read_text())
    runfiles.write_json_atomic(Path(second.run_dir) / "heartbeat.json", {**hb, "time": time.time(), "step": 5})
    reconcile(factory, settings, default_launchers(settings))
    second = launched(factory, standin_runs.id)[1]
    assert second.state == "running" and second.step == 5 and second.reason == ""


def test_cancel_sends_one_sigterm_whoever_asks_and_the_clean_exit_is_cancelled(
        factory, instance, standin_runs) -> None:  # noqa: ANN001
    alice = create_user(factory, "alice", "correct horse battery", "researcher")
    bob = create_user(factory, "bob", "correct horse battery", "researcher")
    settings = JobSettings(cpu_jobs=1)
    launchers = default_launchers(settings)
    poll(factory, instance, settings, inventory=lambda: CPU_ONLY)
    started, queued = launched(factory, standin_runs.id)
    assert queued.state == "queued"
    assert cancel_run(factory, queued.id, bob.id, launchers).state == "cancelled"  # never started: at once
    wait_for(lambda: runfiles.read_heartbeat(Path(started.run_dir)), "the stand-in's heartbeat")
    first = cancel_run(factory, started.id, alice.id, launchers)
    second = cancel_run(factory, started.id, bob.id, launchers)
    assert "asked to stop (SIGTERM)" in first.message
    assert "already being cancelled (asked by alice" in second.message
    record = wait_for(lambda: runfiles.read_exit(Path(started.run_dir)), "the exit status")
    assert record.exit_code == 143 and record.cancel_seen
    poll(factory, instance, settings, inventory=lambda: CPU_ONLY)
    run = launched(factory, standin_runs.id)[0]
    assert run.state == "cancelled" and run.exit_code == 143 and run.cancel_requested_by == alice.id
    assert "the last checkpoint (RUN_DIR/last) is kept" in run.reason
    assert "already ended (cancelled)" in cancel_run(factory, run.id, bob.id, launchers).message


def test_a_reused_pid_is_never_taken_for_the_job_nor_signalled(factory, instance, standin_runs) -> None:  # noqa: ANN001
    with write_session(factory) as session:
        run = experiment_runs(session, standin_runs.id)[0]
        states.move(run, states.STARTING)
        run.pid, run.pid_started, run.host = os.getpid(), "1", socket.gethostname()  # this test, not the job
        run.launched_at = run.started_at = utcnow()
    settings = JobSettings()
    result = cancel_run(factory, run.id, None, default_launchers(settings))  # must not signal this process
    assert result.state == "cancelled" and "already gone" in result.message


def test_wrapper_records_the_exit_status_even_when_the_command_cannot_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "train_jobs.wrap", str(tmp_path), "--", "/no/such/program"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 127 and "cannot start '/no/such/program'" in done.stderr
    assert runfiles.read_exit(tmp_path).exit_code == 127


@pytest.mark.parametrize(("code", "cancelled", "state", "words"), [
    (0, False, "succeeded", ""),
    (143, True, "cancelled", "last checkpoint"),
    (143, False, "cancelled", "without a cancel from the studio"),
    (2, False, "failed", "refused its configuration or data"),
    (137, False, "failed", "SIGKILL"),
    (137, True, "cancelled", "grace period"),
    (1, False, "failed", "status 1"),
    (139, False, "failed", "SIGSEGV"),
])
def test_exit_statuses_map_to_states(code: int, cancelled: bool, state: str, words: str) -> None:
    outcome = states.outcome_of_exit(code, cancel_requested=cancelled)
    assert outcome.state == state and words in outcome.reason


# --- Slurm states one node cannot produce (stand-in commands) -------------------------------------------------
@pytest.mark.parametrize(("squeue", "scontrol", "state", "words"), [
    ("PENDING|(null)|Resources", "", "starting", "waiting in Slurm (pending: Resources)"),
    ("", "JobId=77 JobState=PREEMPTED Reason=None ExitCode=0:15 NodeList=gpu-3", "failed", "preempted"),
    ("", "JobId=77 JobState=NODE_FAIL Reason=NodeDown ExitCode=0:0 NodeList=gpu-3", "lost", "node failed"),
    ("", "JobId=77 JobState=OUT_OF_MEMORY Reason=None ExitCode=0:125 NodeList=gpu-3", "failed", "MEM_PER_GPU"),
])
def test_slurm_states_map_to_run_states(factory, instance, dataset: int, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, squeue: str, scontrol: str, state: str,
                                        words: str) -> None:  # noqa: ANN001
    bin_dir = tmp_path / "bin"
    fake_executable(bin_dir, "sbatch", 'echo "77;cluster"\n')
    fake_executable(bin_dir, "squeue", f'echo "{squeue}"\n')
    fake_executable(bin_dir, "scontrol", f'echo "{scontrol}"\n' if scontrol else
                    'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n')
    fake_executable(bin_dir, "sacct", 'echo "Slurm accounting storage is disabled" >&2; exit 1\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    experiment = create_experiment(factory, instance, request(dataset, backend="slurm", gpus_per_run=2),
                                   inventory=CPU_ONLY)
    settings = JobSettings(slurm=SlurmSettings(partition="gpu", account="lab", gpu_type="h100", time_limit="2:00:00",
                                               modules=("cuda/12.4",), setup=("source /opt/venv/bin/activate",)))
    poll(factory, instance, settings)
    run = launched(factory, experiment.id)[0]
    assert run.slurm_job_id == "77" and run.host is None
    script = (Path(run.run_dir) / "job.sbatch").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --ntasks=2",
                 "#SBATCH --gpus-per-task=h100:1", "#SBATCH --time=2:00:00", "module load cuda/12.4",
                 "source /opt/venv/bin/activate", "-m train_jobs.wrap", "srun --kill-on-bad-exit=1"):
        assert line in script
    poll(factory, instance, settings)
    run = launched(factory, experiment.id)[0]
    assert run.state == state and words in run.reason


# --- results -------------------------------------------------------------------------------------------
def finished_run(factory, instance, dataset: int) -> TrainRun:  # noqa: ANN001
    """A run marked succeeded whose folder holds what the trainer leaves (run folder contract)."""
    experiment = create_experiment(factory, instance, request(dataset, eval_dataset_id=dataset), inventory=CPU_ONLY)
    with write_session(factory) as session:
        run = experiment_runs(session, experiment.id)[0]
        for state in (states.STARTING, states.RUNNING, states.SUCCEEDED):
            states.move(run, state)
    run_dir = Path(run.run_dir)
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "best" / "cftclip_tiny.json").write_text("{}")
    (run_dir / "eval").mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"best_step": 2, "best_val_loss": 1.5, "steps": 2}))
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.1},
                                                               "metrics": {"f1": {"value": 0.5}}}))
    frame = pd.read_csv(Path(experiment.folder) / "data" / "eval.csv", dtype=str, keep_default_na=False)
    pd.DataFrame({"id": frame["id"], "split": frame["split"], "label": frame["label"],
                  "similarity": [0.01 * i for i in range(len(frame))], "truncated": False,
                  "model_fingerprint": "sha256:abc", "text_field": "summary"}).to_csv(run_dir / "eval" / "scores.csv",
                                                                                      index=False)
    return run


def test_results_of_a_finished_run_are_imported_with_its_scores_as_a_linked_score_set(
        factory, instance, dataset: int) -> None:  # noqa: ANN001
    run = import_results(factory, finished_run(factory, instance, dataset).id)
    assert run.results_error == "" and run.results_at is not None
    assert run.metrics["best_val_loss"] == 1.5 and run.eval_metrics["metrics"]["f1"]["value"] == 0.5
    assert run.checkpoint_path == str(Path(run.run_dir) / "best")
    assert results_row(run) == {"run": run.id, "seed": 0, "state": "succeeded", "steps": 2, "best_val_loss": 1.5,
                                "threshold": 0.1, "f1": 0.5, "checkpoint": run.checkpoint_path}
    with factory() as session:
        score_set = session.scalars(select(ScoreSet).where(ScoreSet.train_run_id == run.id)).one()
    assert (score_set.dataset_id, score_set.n_items, score_set.model_fingerprint) == (dataset, 24, "sha256:abc")
    assert score_set.model_name == "exp seed 0" and "no meaning" in score_set.note  # fine-tuned from the tiny model


def test_unreadable_results_are_recorded_and_leave_no_score_set(factory, instance, dataset: int) -> None:  # noqa: ANN001
    run = finished_run(factory, instance, dataset)
    scores = Path(run.run_dir) / "eval" / "scores.csv"
    scores.write_text(scores.read_text().replace("syn-000003", "someone-else"))
    run = import_results(factory, run.id)
    assert "'someone-else') are not items of the evaluation dataset" in run.results_error
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(ScoreSet)) == 0


def test_deleting_an_ended_experiment_removes_its_runs_score_sets_verdicts_and_folder(
        factory, instance, dataset: int) -> None:  # noqa: ANN001
    run = import_results(factory, finished_run(factory, instance, dataset).id)
    kept = create_experiment(factory, instance, request(dataset, name="kept"), inventory=CPU_ONLY)
    with write_session(factory) as session:
        score_set = session.scalars(select(ScoreSet).where(ScoreSet.train_run_id == run.id)).one()
        session.add(TriageDecision(item_id=session.scalars(select(Item.id)).first(), score_set_id=score_set.id,
                                   verdict="ambiguous", note="", decided_at=utcnow()))
        experiment = session.get(Experiment, run.experiment_id)
    folder = Path(experiment.folder)
    with pytest.raises(ExperimentError, match="'kept' still has 1 run\\(s\\) queued"):
        delete_experiment(factory, kept.id)

    said = delete_experiment(factory, experiment.id)
    assert said == f"Deleted 'exp': 1 run(s), 1 score set(s) and the folder {folder}."
    assert not folder.exists() and Path(kept.folder).is_dir()
    with factory() as session:
        assert [e.name for e in session.scalars(select(Experiment))] == ["kept"]
        assert session.scalar(select(func.count()).select_from(TrainRun)) == 1
        for table in (ScoreSet, Score, TriageDecision):
            assert session.scalar(select(func.count()).select_from(table)) == 0
    with pytest.raises(ExperimentError, match="deleted already"):
        delete_experiment(factory, experiment.id)


def test_a_run_cancelled_before_it_saved_anything_says_there_is_no_checkpoint(factory, instance, dataset: int) -> None:  # noqa: ANN001
    experiment = create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)
    with write_session(factory) as session:
        run = experiment_runs(session, experiment.id)[0]
        states.move(run, states.STARTING)
        run.cancel_requested_at = utcnow()
    Path(run.run_dir).mkdir()
    runfiles.write_exit(Path(run.run_dir), 143, cancel_seen=True)  # SIGTERM arrived while it was still importing
    reconcile(factory, JobSettings(), default_launchers(JobSettings()))
    run = launched(factory, experiment.id)[0]
    assert run.state == "cancelled" and "no checkpoint to resume from" in run.reason and run.exit_code == 143
