"""One entry point for one process, torchrun and Slurm srun; evaluation after training; heartbeats;
gradient checkpointing; the NaN, CUDA-absent and full-disk rules."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from cftclip_core import training
from cftclip_core.cli import main
from cftclip_core.distributed import Ranks, first_host, ranks_from_environment
from cftclip_core.errors import ConfigError, TrainingError
from cftclip_core.formats import read_table, write_table
from cftclip_core.heartbeat import read_heartbeat
from cftclip_core.models import load_model
from cftclip_core.synthetic import WorldConfig, generate_dataset
from cftclip_core.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A labelled synthetic set with train/val/test splits, and its train and val tables."""
    csv = generate_dataset(tmp_path_factory.mktemp("syn") / "data", 40, WorldConfig(image_size=64), seed=1)
    table = read_table(csv)
    return {
        "all": csv,
        "train": write_table([r for r in table.records if r.split == "train"], csv.parent / "train.csv"),
        "val": write_table([r for r in table.records if r.split == "val"], csv.parent / "val.csv"),
        "unlabelled": write_table([r.__class__(**{**r.__dict__, "label": None}) for r in table.records],
                                  csv.parent / "unlabelled.csv"),
    }


def train_cmd(data: dict[str, Path], model_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--train", str(data["train"]), "--val", str(data["val"]), "--out", str(out), "--model",
            str(model_dir), "--batch-size", "4", "--freeze-text-layers", "1", "--device", "cpu", "--precision",
            "fp32", "--max-steps", "3", "--val-every", "3", "--schedule", "constant", "--lr", "0.001", *extra]


def step_losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                     "MASTER_"))}
    return {**env, "HF_HUB_OFFLINE": "1", "CFTCLIP_INSTANCE": str(tmp_path / "instance"), "OMP_NUM_THREADS": "1",
            **extra}


# --- ranks from the environment ------------------------------------------------------------------------
def test_ranks_come_from_torchrun_then_slurm_then_default() -> None:
    assert ranks_from_environment({}) == Ranks()
    torchrun = ranks_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                                       "MASTER_PORT": "1234"})
    assert (torchrun.rank, torchrun.world_size, torchrun.local_rank, torchrun.master_addr, torchrun.master_port,
            torchrun.launcher) == (1, 2, 1, "h", 1234, "torchrun")
    slurm = ranks_from_environment({"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1",
                                    "SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "gpu7,gpu8"})
    assert (slurm.rank, slurm.world_size, slurm.local_rank, slurm.master_addr, slurm.master_port,
            slurm.launcher) == (3, 4, 1, "gpu7", 29500 + 77, "slurm")
    # An sbatch script itself (no srun step) is one process, whatever the job's task count.
    assert ranks_from_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "5"}) == Ranks()
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        ranks_from_environment({"RANK": "0", "WORLD_SIZE": "two"})


def test_first_host_of_a_slurm_nodelist() -> None:
    assert first_host("node5") == "node5" and first_host("a1,b2") == "a1" and first_host("") == "127.0.0.1"
    assert first_host("gpu[03-05,09]") == "gpu03"  # with or without scontrol on this machine


# --- the same run on one process, under torchrun and under an srun-like launch ----------------------------
def test_one_process_torchrun_and_slurm_ranks_train_the_same(data, tiny_model_dir: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    assert main(train_cmd(data, tiny_model_dir, single)) == 0

    run = tmp_path / "torchrun"
    subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "cftclip_core",
                    *train_cmd(data, tiny_model_dir, run)], cwd=REPO, env=child_env(tmp_path), check=True,
                   capture_output=True, timeout=300)
    assert step_losses(run) == pytest.approx(step_losses(single), rel=1e-4)
    assert json.loads((run / "config.json").read_text())["processes"] == 2
    assert json.loads((run / "metrics.json").read_text())["best_val_loss"] == pytest.approx(
        json.loads((single / "metrics.json").read_text())["best_val_loss"], rel=1e-4)

    # What srun gives each task: SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID.
    slurm = tmp_path / "slurm"
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "cftclip_core", *train_cmd(data, tiny_model_dir, slurm)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=child_env(tmp_path, SLURM_PROCID=str(r), SLURM_LOCALID=str(r),
                                            SLURM_STEP_NUM_TASKS="2", SLURM_JOB_ID="1",
                                            SLURM_STEP_NODELIST="127.0.0.1", MASTER_PORT=port))
             for r in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert step_losses(slurm) == pytest.approx(step_losses(single), rel=1e-4)
    assert json.loads((slurm / "config.json").read_text())["launcher"] == "slurm"


def test_global_batch_must_split_evenly_over_processes(data, tiny_model_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(model=str(tiny_model_dir), batch_size=5, device="cpu")
    with pytest.raises(ConfigError, match="batch_size=5 is the global batch .* multiple of 2"):
        train(config, read_table(data["train"]), read_table(data["val"]), tmp_path / "run",
              ranks=Ranks(rank=0, world_size=2))


# --- evaluation after training and the heartbeat ------------------------------------------------------
def test_eval_after_training_writes_scores_metrics_and_a_done_heartbeat(data, tiny_model_dir: Path,
                                                                        tmp_path: Path, capsys) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    assert main(train_cmd(data, tiny_model_dir, run, "--eval", str(data["all"]))) == 0
    assert "evaluation on" in capsys.readouterr().out
    scores = (run / "eval" / "scores.csv").read_text().splitlines()
    assert len(scores) == 1 + 40 and scores[0].startswith("id,split,label,similarity,truncated")
    report = json.loads((run / "eval" / "metrics.json").read_text())
    assert report["threshold"]["strategy"] == "val-median"
    n_val = sum(r.split == "val" for r in read_table(data["all"]).records)
    assert report["threshold"]["n_val"] == n_val and report["n"] == 40 - n_val
    assert set(report["metrics"]) >= {"f1", "macro_f1", "precision", "recall", "accuracy", "roc_auc",
                                      "average_precision", "spearman"}
    beat = read_heartbeat(run)
    assert beat is not None and beat["phase"] == "done" and beat["step"] == 3 and beat["pid"] == os.getpid()


def test_eval_threshold_from_the_training_validation_set_when_the_eval_table_has_none(
        data, tiny_model_dir: Path, tmp_path: Path) -> None:
    table = read_table(data["all"])
    no_val = write_table([r.__class__(**{**r.__dict__, "split": "test"}) for r in table.records],
                         data["all"].parent / "test-only.csv")
    run = tmp_path / "run"
    assert main(train_cmd(data, tiny_model_dir, run, "--eval", str(no_val))) == 0
    report = json.loads((run / "eval" / "metrics.json").read_text())
    assert report["n"] == 40 and report["threshold"]["n_val"] == len(read_table(data["val"]).records)


def test_eval_table_without_labels_is_refused_before_training(data, tiny_model_dir: Path, tmp_path: Path,
                                                              capsys) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    assert main(train_cmd(data, tiny_model_dir, run, "--eval", str(data["unlabelled"]))) == 2
    assert "has no labels" in capsys.readouterr().err and not (run / "log.jsonl").exists()


# --- gradient checkpointing, NaN, CUDA, full disk -------------------------------------------------------
def test_gradient_checkpointing_gives_the_same_steps(data, tiny_model_dir: Path, tmp_path: Path) -> None:
    assert main(train_cmd(data, tiny_model_dir, tmp_path / "plain")) == 0
    assert main(train_cmd(data, tiny_model_dir, tmp_path / "ckpt", "--gradient-checkpointing", "true")) == 0
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["gradient_checkpointing"] is True
    assert step_losses(tmp_path / "ckpt") == pytest.approx(step_losses(tmp_path / "plain"), rel=1e-5)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_weights(
        data, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = training.setup.build_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loss = real(*args, **kwargs)

        def forward(*inputs):  # noqa: ANN002, ANN202
            calls["n"] += 1
            value = loss(*inputs)
            return value * float("nan") if calls["n"] == 3 else value  # the third training step
        return type("Poisoned", (), {"__call__": staticmethod(forward), "learns_scale": loss.learns_scale,
                                     "uses_counterfactuals": loss.uses_counterfactuals})()

    monkeypatch.setattr(training.setup, "build_loss", poisoned)
    config = TrainConfig(model=str(tiny_model_dir), batch_size=4, max_steps=5, val_every_steps=100,
                         freeze_text_layers=1, precision="fp32", device="cpu")
    with pytest.raises(TrainingError, match=r"became nan at step 3; training stopped.*weights before this step"):
        train(config, read_table(data["train"]), read_table(data["val"]), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last" / "trainer_state.pt", weights_only=False)
    assert state["run_state"]["step"] == 2
    assert load_model(str(tmp_path / "run" / "last")).model is not None
    assert len(step_losses(tmp_path / "run")) == 2


def test_cuda_requested_without_a_gpu_is_a_clear_error(data, tiny_model_dir: Path, tmp_path: Path,
                                                       capsys) -> None:  # noqa: ANN001
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cmd = [a if a != "cpu" else "cuda" for a in train_cmd(data, tiny_model_dir, tmp_path / "run")]
    assert main(cmd) == 2
    assert "no usable CUDA GPU" in capsys.readouterr().err


def test_full_disk_while_saving_best_leaves_the_previous_best_intact(
        data, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = TrainConfig(model=str(tiny_model_dir), batch_size=4, max_steps=2, val_every_steps=1,
                         freeze_text_layers=0, precision="fp32", device="cpu", lr=1e-3, patience=5)
    real_save = training.CLIPModel.save_pretrained
    saves = {"n": 0}

    def failing_second_save(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        saves["n"] += 1
        if saves["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(training.CLIPModel, "save_pretrained", failing_second_save)
    monkeypatch.setattr(training.loop, "validation_loss", lambda *a, **k: 1.0 / (1 + saves["n"]))  # always improves
    with pytest.raises(OSError, match="No space left"):
        train(config, read_table(data["train"]), read_table(data["val"]), tmp_path / "run")
    assert load_model(str(tmp_path / "run" / "best")).model is not None  # the first best, whole
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".best")]


def test_heartbeat_keeps_beating_while_the_process_lives_and_stops_at_a_final_phase(tmp_path: Path) -> None:
    from cftclip_core.heartbeat import Heartbeat

    beat = Heartbeat(tmp_path, interval=0.05).start()
    first = read_heartbeat(tmp_path)
    assert first is not None and first["phase"] == "loading"
    deadline = 0
    while (read_heartbeat(tmp_path) or first)["time"] == first["time"] and deadline < 200:  # a long "load"
        deadline += 1
        threading.Event().wait(0.05)
    assert read_heartbeat(tmp_path)["time"] > first["time"]
    beat.beat(phase="done")
    assert beat._stopped.is_set() and read_heartbeat(tmp_path)["phase"] == "done"


def test_sigterm_to_the_whole_process_group_with_loader_workers_still_stops_cleanly(
        data, tiny_model_dir: Path, tmp_path: Path) -> None:
    """How a job is cancelled: SIGTERM to its process group, DataLoader workers included."""
    run = tmp_path / "run"
    cmd = train_cmd(data, tiny_model_dir, run, "--max-steps", "100000", "--max-epochs", "1000", "--num-workers", "1")
    proc = subprocess.Popen([sys.executable, "-m", "cftclip_core", *cmd],
                            cwd=REPO, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().startswith("step 1 loss")  # type: ignore[union-attr]
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143
    assert (run / "last" / "trainer_state.pt").is_file() and read_heartbeat(run)["phase"] == "stopped"
