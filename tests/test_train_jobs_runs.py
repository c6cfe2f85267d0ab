"""Real training jobs: the tiny model on the CPU, a few steps, launched as separate processes
(local, torchrun, and a real one-node Slurm when one answers; scripts/test-slurm.sh starts it).

Each test starts one or two real trainer processes; waits are bounded, never timed assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from annotations.db import make_engine, session_factory, upgrade
from annotations.importer import import_dataset
from annotations.models import ScoreSet, TrainRun
from annotations.settings import Settings
from annotations.users import create_user
from cftclip_core.errors import CftClipError
from cftclip_core.formats import read_table
from cftclip_core.synthetic import WorldConfig, generate_dataset
from train_jobs import procs, runfiles
from train_jobs.api import (
    ExperimentRequest,
    GpuInventory,
    JobSettings,
    can_resume,
    cancel_run,
    create_experiment,
    default_launchers,
    experiment_runs,
    log_tail,
    poll,
    resume_run,
)
from train_jobs.states import FINAL

pytestmark = pytest.mark.slow

CPU_ONLY = GpuInventory((), "none", "No GPU (test): CPU only.")
WAIT_S = 300.0  # generous: two shared cores


@pytest.fixture
def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """An instance (SQLite) with the synthetic set imported; yields (settings, factory, dataset id)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = Settings.for_instance(tmp_path / "instance", database_url=f"sqlite:///{tmp_path / 'studio.db'}").ensure()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = session_factory(engine)
    csv = generate_dataset(tmp_path / "syn", 24, WorldConfig(image_size=64), seed=0)
    dataset = import_dataset(factory, settings, read_table(csv), "syn").id
    yield settings, factory, dataset
    with factory() as session:  # no job outlives its test
        for run in session.query(TrainRun).all():
            if run.pid:
                procs.signal_group(run.pid, run.pid_started, signal.SIGKILL)
            if run.slurm_job_id and run.state not in FINAL:
                subprocess.run(["scancel", run.slurm_job_id], capture_output=True)
    engine.dispose()


def tiny_config(model_dir: Path, **changes) -> dict:  # noqa: ANN003
    return {"model": str(model_dir), "loss": "clip", "batch_size": 4, "max_steps": 2, "val_every_steps": 2,
            "freeze_text_layers": 1, "precision": "fp32", "device": "cpu", **changes}


LONG = {"max_steps": None, "max_epochs": 1000, "patience": 1000}  # runs until cancelled


def experiment(studio, name: str, config: dict, **changes):  # noqa: ANN001, ANN003, ANN201
    settings, factory, dataset = studio
    request = ExperimentRequest(name=name, config=config, train_dataset_id=dataset, seeds=(0,), **changes)
    made = create_experiment(factory, settings, request, inventory=CPU_ONLY)
    with factory() as session:
        return experiment_runs(session, made.id)[0]


def current(factory, run_id: int) -> TrainRun:  # noqa: ANN001
    with factory() as session:
        return session.get(TrainRun, run_id)


def wait_for(condition, what: str, log: Path | None = None):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f"; log:\n{log_tail(log)}" if log else ""))


def trained_a_step(run: TrainRun) -> bool:
    path = Path(run.run_dir) / "log.jsonl"
    return path.is_file() and '"loss"' in path.read_text()


def poll_until_final(studio, run: TrainRun, job_settings: JobSettings) -> TrainRun:  # noqa: ANN001
    settings, factory, _ = studio

    def done() -> TrainRun | None:
        poll(factory, settings, job_settings, inventory=lambda: CPU_ONLY)
        latest = current(factory, run.id)
        return latest if latest.state in FINAL else None

    return wait_for(done, f"run {run.id} to finish", Path(run.log_path))


def test_a_run_that_finishes_while_the_app_is_down_is_imported_at_the_next_start(
        studio, tiny_model_dir: Path) -> None:  # noqa: ANN001
    settings, factory, dataset = studio
    run = experiment(studio, "restart", tiny_config(tiny_model_dir), eval_dataset_id=dataset)
    poll(factory, settings, JobSettings(), inventory=lambda: CPU_ONLY)
    launched = current(factory, run.id)
    assert launched.state == "starting" and launched.pid and launched.host
    # "The app stops": nothing polls while the job runs; the job does not depend on this process.
    factory.kw["bind"].dispose()
    wait_for(lambda: runfiles.read_exit(Path(run.run_dir)), "the job's exit status", Path(run.log_path))
    assert json.loads((Path(run.run_dir) / "heartbeat.json").read_text())["phase"] == "done"
    # "The app starts again": a new engine, and the first poll settles everything.
    engine = make_engine(settings.database_url)
    restarted = session_factory(engine)
    report = poll(restarted, settings, JobSettings(), inventory=lambda: CPU_ONLY)
    finished = current(restarted, run.id)
    assert finished.state == "succeeded", finished.reason
    assert any("-> succeeded" in line for line in report.changes)
    assert finished.exit_code == 0 and finished.step == 2 and finished.phase == "done"
    assert finished.metrics["steps"] == 2 and finished.checkpoint_path == str(Path(run.run_dir) / "best")
    assert Path(finished.checkpoint_path, "config.json").is_file()
    assert finished.eval_metrics["threshold"]["strategy"] == "val-median"
    with restarted() as session:
        score_set = session.query(ScoreSet).filter(ScoreSet.train_run_id == run.id).one()
    assert score_set.n_items == 24 and score_set.dataset_id == dataset
    log = Path(finished.log_path).read_text()
    assert "best checkpoint" in log
    assert "Loading weights" not in log and "Writing model shards" not in log  # no progress bars in a log file
    engine.dispose()


def test_trainer_crashing_at_start_fails_the_run_with_its_message(studio, tmp_path: Path) -> None:  # noqa: ANN001
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    run = experiment(studio, "crash", tiny_config(broken))
    finished = poll_until_final(studio, run, JobSettings())
    assert finished.state == "failed" and finished.exit_code in (1, 2)
    assert "broken-model" in finished.reason, finished.reason


@pytest.mark.parametrize("backend", ["local", "torchrun"])
def test_cancel_stops_cleanly_keeps_the_last_checkpoint_and_a_second_cancel_sends_nothing(
        studio, tiny_model_dir: Path, backend: str) -> None:  # noqa: ANN001
    settings, factory, _ = studio
    alice = create_user(factory, "alice", "correct horse battery", "researcher")
    bob = create_user(factory, "bob", "correct horse battery", "researcher")
    run = experiment(studio, "cancel", tiny_config(tiny_model_dir, **LONG), backend=backend)
    job_settings = JobSettings()
    poll(factory, settings, job_settings, inventory=lambda: CPU_ONLY)
    wait_for(lambda: trained_a_step(run), "a training step", Path(run.log_path))
    launchers = default_launchers(job_settings)
    assert "asked to stop" in cancel_run(factory, run.id, alice.id, launchers).message
    assert "already being cancelled (asked by alice" in cancel_run(factory, run.id, bob.id, launchers).message
    finished = poll_until_final(studio, run, job_settings)
    assert finished.state == "cancelled", f"{finished.reason}\n{log_tail(finished.log_path)}"
    assert "last checkpoint" in finished.reason
    assert finished.checkpoint_path == str(Path(run.run_dir) / "last")
    assert Path(finished.checkpoint_path, "trainer_state.pt").is_file()
    assert finished.metrics["interrupted"] is True


def logged_steps(run: TrainRun) -> list[int]:
    path = Path(run.run_dir) / "log.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line)["step"] for line in lines if '"loss"' in line]


def test_a_cancelled_run_resumes_from_its_last_checkpoint(studio, tiny_model_dir: Path) -> None:  # noqa: ANN001
    settings, factory, _ = studio
    alice = create_user(factory, "alice", "correct horse battery", "researcher")
    run = experiment(studio, "resume", tiny_config(tiny_model_dir, **LONG))
    job_settings, launchers = JobSettings(), default_launchers(JobSettings())
    with pytest.raises(CftClipError, match="only a failed or cancelled run"):
        resume_run(factory, run.id, alice.id)
    poll(factory, settings, job_settings, inventory=lambda: CPU_ONLY)
    wait_for(lambda: trained_a_step(run), "a training step", Path(run.log_path))
    cancel_run(factory, run.id, alice.id, launchers)
    cancelled = poll_until_final(studio, run, job_settings)
    assert cancelled.state == "cancelled" and can_resume(cancelled)
    before = logged_steps(run)

    assert "queued again" in resume_run(factory, run.id, alice.id)
    queued = current(factory, run.id)
    assert queued.state == "queued" and queued.command[-1] == "--resume" and "resumed by alice" in queued.reason
    assert queued.exit_code is None and queued.cancel_requested_at is None and queued.checkpoint_path is None
    assert not (Path(run.run_dir) / runfiles.EXIT).exists()  # the stopped attempt's outcome cannot be re-read

    def resumed_steps() -> list[int] | None:
        poll(factory, settings, job_settings, inventory=lambda: CPU_ONLY)
        return logged_steps(run)[len(before):] or None

    after = wait_for(resumed_steps, "a step of the resumed run", Path(run.log_path))
    assert after[0] > 1 and after[0] <= before[-1] + 1  # it went on from the checkpoint, not from the start
    assert current(factory, run.id).state == "running"
    cancel_run(factory, run.id, alice.id, launchers)
    again = poll_until_final(studio, run, job_settings)
    assert again.state == "cancelled" and again.command.count("--resume") == 1


def test_sigkill_of_the_trainer_fails_the_run(studio, tiny_model_dir: Path) -> None:  # noqa: ANN001
    settings, factory, _ = studio
    run = experiment(studio, "oom", tiny_config(tiny_model_dir, **LONG))
    poll(factory, settings, JobSettings(), inventory=lambda: CPU_ONLY)
    wait_for(lambda: trained_a_step(run), "a training step", Path(run.log_path))
    trainer_pid = runfiles.read_heartbeat(Path(run.run_dir)).pid
    assert trainer_pid != current(factory, run.id).pid  # the trainer, not its wrapper
    os.kill(trainer_pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    finished = poll_until_final(studio, run, JobSettings())
    assert finished.state == "failed" and finished.exit_code == 137
    assert "killed with SIGKILL" in finished.reason


def test_a_full_disk_fails_the_run_and_says_so(studio, tiny_model_dir: Path) -> None:  # noqa: ANN001
    run = experiment(studio, "full", tiny_config(tiny_model_dir))
    Path(run.run_dir).mkdir(parents=True)
    (Path(run.run_dir) / "log.jsonl").symlink_to("/dev/full")  # every write to it: "No space left on device"
    finished = poll_until_final(studio, run, JobSettings())
    assert finished.state == "failed" and finished.exit_code == 1
    assert finished.reason.startswith("the disk is full") and "No space left on device" in finished.reason


# --- a real one-node Slurm ------------------------------------------------------------------------------
@pytest.fixture
def slurm() -> None:
    if shutil.which("sbatch") is None:
        pytest.skip("Slurm is not installed; as root, scripts/test-slurm.sh installs and starts a one-node cluster")
    answer = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if answer.returncode != 0 or not answer.stdout.strip().startswith(("idle", "mix", "alloc")):
        message = f"Slurm does not answer: {(answer.stderr or answer.stdout).strip()}"
        if os.environ.get("SLURM_CONF"):
            pytest.fail(message + f" (SLURM_CONF={os.environ['SLURM_CONF']})")
        pytest.skip(message)


def test_slurm_runs_a_job_to_the_end_and_scancel_cancels_one(studio, tiny_model_dir: Path, slurm) -> None:  # noqa: ANN001
    settings, factory, _ = studio
    short = experiment(studio, "slurm-short", tiny_config(tiny_model_dir), backend="slurm")
    long = experiment(studio, "slurm-long", tiny_config(tiny_model_dir, **LONG), backend="slurm")
    job_settings = JobSettings()
    poll(factory, settings, job_settings, inventory=lambda: CPU_ONLY)
    assert current(factory, short.id).slurm_job_id and current(factory, long.id).slurm_job_id
    assert "#SBATCH --ntasks=1" in (Path(short.run_dir) / "job.sbatch").read_text()
    done = poll_until_final(studio, short, job_settings)
    assert done.state == "succeeded", f"{done.reason}\n{log_tail(done.log_path)}"
    assert done.metrics["steps"] == 2 and done.host
    wait_for(lambda: trained_a_step(long), "a training step under Slurm", Path(long.log_path))
    assert "asked to stop" in cancel_run(factory, long.id, None, default_launchers(job_settings)).message
    cancelled = poll_until_final(studio, long, job_settings)
    assert cancelled.state == "cancelled", f"{cancelled.reason}\n{log_tail(cancelled.log_path)}"
    assert cancelled.checkpoint_path == str(Path(long.run_dir) / "last")
