"""The queue and the reconciler without the trainer: GPU discovery, GPU slots, stand-in processes (lost,
cancelled, reused pids), the job wrapper, exit statuses, and Slurm states one node cannot produce.

Experiments, resume and results are in test_train_jobs.py; real trainer runs in test_train_jobs_runs.py.
"""

from __future__ import annotations

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

import pytest

from annotations.db import write_session
from annotations.models import TrainRun, utcnow
from annotations.users import create_user
from tests.train_jobs_helpers import CPU_ONLY, TWO_GPUS, make_dataset, request
from train_jobs import procs, runfiles, states
from train_jobs.api import JobSettings, cancel_run, create_experiment, experiment_runs, poll
from train_jobs.gpus import Gpu, GpuInventory, discover_gpus
from train_jobs.launchers import BackendStatus, Launched, LaunchSpec
from train_jobs.reconcile import default_launchers, reconcile
from train_jobs.settings import SlurmSettings


@pytest.fixture
def dataset(factory, instance, tmp_path: Path) -> int:  # noqa: ANN001
    """The 24-item synthetic set (19 train, 3 val, 2 test; labelled) imported into the database."""
    return make_dataset(factory, instance, tmp_path)


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
