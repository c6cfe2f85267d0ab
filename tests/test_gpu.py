"""What only a CUDA GPU exercises: bf16 autocast with activation checkpointing, the NCCL process group under
torchrun, and the CLIP filter at ViT-L/14 size (random weights, built from its config: too slow on a shared
CPU). Every test here is skipped without CUDA; run this file on a GPU machine:

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_gpu.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cftclip_core.cli import main
from cftclip_core.formats import read_table, write_table
from cftclip_core.synthetic import WorldConfig, generate_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run `python -m pytest tests/test_gpu.py` on a GPU machine)")
REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    csv = generate_dataset(tmp_path_factory.mktemp("syn") / "data", 48, WorldConfig(image_size=64), seed=2)
    table = read_table(csv)
    return {"all": csv,
            "train": write_table([r for r in table.records if r.split == "train"], csv.parent / "train.csv"),
            "val": write_table([r for r in table.records if r.split != "train"], csv.parent / "val.csv")}


@pytest.fixture(autouse=True)
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def train_cmd(data: dict[str, Path], model_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--train", str(data["train"]), "--val", str(data["val"]), "--out", str(out), "--model",
            str(model_dir), "--batch-size", "8", "--freeze-text-layers", "1", "--device", "cuda", "--max-steps", "4",
            "--val-every", "2", "--schedule", "constant", "--lr", "0.0005", "--seed", "3", *extra]


def step_losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_a_gpu_run_defaults_to_bf16_with_activation_checkpointing(data, tiny_model_dir: Path, tmp_path: Path) -> None:
    assert main(train_cmd(data, tiny_model_dir, tmp_path / "run")) == 0
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert (record["resolved_precision"], record["gradient_checkpointing"]) == (expected, True)
    assert record["device"].startswith("cuda")


def test_bf16_with_checkpointing_trains_close_to_fp32(data, tiny_model_dir: Path, tmp_path: Path) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    assert main(train_cmd(data, tiny_model_dir, tmp_path / "fp32", "--precision", "fp32",
                          "--gradient-checkpointing", "false")) == 0
    assert main(train_cmd(data, tiny_model_dir, tmp_path / "bf16", "--precision", "bf16",
                          "--gradient-checkpointing", "true")) == 0
    exact, fast = step_losses(tmp_path / "fp32"), step_losses(tmp_path / "bf16")
    assert len(fast) == len(exact) == 4 and all(map(torch.isfinite, torch.tensor(fast)))
    assert fast == pytest.approx(exact, rel=0.05)  # the same batches; bf16 rounding only
    metrics = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert metrics["best_val_loss"] == pytest.approx(
        json.loads((tmp_path / "fp32" / "metrics.json").read_text())["best_val_loss"], rel=0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data: dict[str, Path], model_dir: Path, out: Path, processes: int, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(HF_HUB_OFFLINE="1", CFTCLIP_INSTANCE=str(tmp_path / "instance"), OMP_NUM_THREADS="1")
    command = [str(TORCHRUN), "--standalone", f"--nproc_per_node={processes}", f"--master_port={_free_port()}",
               "-m", "cftclip_core", *train_cmd(data, model_dir, out, "--precision", "fp32",
                                                "--gradient-checkpointing", "false")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_torchrun_joins_an_nccl_process_group_and_trains_as_one_process(data, tiny_model_dir: Path,
                                                                        tmp_path: Path) -> None:
    assert main(train_cmd(data, tiny_model_dir, tmp_path / "alone", "--precision", "fp32",
                          "--gradient-checkpointing", "false")) == 0
    _torchrun(data, tiny_model_dir, tmp_path / "torchrun", 1, tmp_path)
    record = json.loads((tmp_path / "torchrun" / "config.json").read_text())
    assert (record["launcher"], record["process_group"], record["processes"]) == ("torchrun", "nccl", 1)
    assert step_losses(tmp_path / "torchrun") == pytest.approx(step_losses(tmp_path / "alone"), rel=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL across ranks needs 2 GPUs (one rank per GPU)")
def test_two_gpus_under_nccl_give_the_losses_of_one_process(data, tiny_model_dir: Path, tmp_path: Path) -> None:
    assert main(train_cmd(data, tiny_model_dir, tmp_path / "alone", "--precision", "fp32",
                          "--gradient-checkpointing", "false")) == 0
    _torchrun(data, tiny_model_dir, tmp_path / "two", 2, tmp_path)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["process_group"] == "nccl"
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "alone"), rel=1e-3)


def test_clip_filter_at_vit_l14_size(data) -> None:  # noqa: ANN001
    """The filter and the token window with a model of the paper's size (random weights: the decisions mean
    nothing, the shapes, the window and the device handling are what is checked)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from cftclip_core.counterfactuals import (
        ClipFilter,
        EntitySwapInfiller,
        KnownNamesTagger,
        TokenWindow,
        generate_counterfactuals,
    )
    from cftclip_core.images import PreprocessConfig
    from cftclip_core.models import TINY_TOKENIZER_DIR, LoadedModel
    from cftclip_core.synthetic import load_world

    tokenizer = CLIPTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=224, patch_size=14, projection_dim=768),
        projection_dim=768)
    torch.manual_seed(0)
    model = CLIPModel(config).to("cuda").eval()
    loaded = LoadedModel("vit-l14-random", "random", model, tokenizer, PreprocessConfig(), is_tiny=False)
    table = read_table(data["all"])
    scorer = ClipFilter(loaded, {r.image: table.image_path(r) for r in table.records})
    scores = scorer(table.records[0].image, [table.records[0].summary, "someone else entirely"])
    assert len(scores) == 2 and all(-1 <= s <= 1 for s in scores)
    names = load_world(table.base_dir).names
    results = generate_counterfactuals(table.records[:8], KnownNamesTagger(names), EntitySwapInfiller(names),
                                       scorer=scorer, window=TokenWindow.of(loaded), long_texts="drop")
    assert {r.status for r in results} <= {"ok", "filter_failed", "no_person"}
    for r in results:
        if r.status == "ok":
            assert r.counterfactual_similarity < r.original_similarity
