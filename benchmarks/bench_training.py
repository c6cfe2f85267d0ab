"""Training throughput (pairs/s) and peak memory: cftclip_core.training vs a loop in the original style.

Both train with the paper's CFT loss (one counterfactual per pair, temperature 0.05), AdamW, the same
global batch and frozen layers, on synthetic pairs rendered at 448x448 (decoding costs something):
    baseline: the original code's data path: pixel values preprocessed once to one float32
              3x224x224 tensor file per item (``{id}.pt``, not timed, as its separate script did),
              torch.load per item, texts padded to 77 tokens, fp32 forward and backward;
    ours:     ``train()`` as the command line runs it: uint8 pixel cache, texts padded to the batch's
              longest, precision "auto" (bf16 autocast where the CPU multiplies bf16), and fp32 too.
Pairs/s = global batch / (data wait + step time), median over the timed steps (after warm-up steps).
Each arm runs in its own process, so its peak resident memory (ru_maxrss) is its own.
The pixel cache across seeds: ours runs seed 0 (cold cache: it decodes and resizes every image), then
seed 1 in fp32 and "auto" sharing that cache folder (nothing decoded: the like-for-like comparison with
the baseline, whose preprocessing ran beforehand); the data wait per step shows the cache's effect.

Run from the repository root (prints one JSON object):

    .venv/bin/python benchmarks/bench_training.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmark scripts

from bench_scoring import build_b32  # noqa: E402

from cftclip_core import models  # noqa: E402
from cftclip_core.formats import read_table  # noqa: E402
from cftclip_core.loss import build_loss  # noqa: E402
from cftclip_core.synthetic import WorldConfig, generate_dataset  # noqa: E402
from cftclip_core.training import TrainConfig, swap_counterfactuals, train, world_names  # noqa: E402

SETTINGS = {  # model: (global batch, frozen text layers, warm-up steps, timed steps)
    "tiny": (32, 1, 2, 12),
    "vit-b32": (16, 11, 1, 4),
}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry the parent's
    high-water mark across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(model_dir: Path, csv: Path, batch: int, frozen: int, warmup: int, steps: int, work: Path,
             device: str = "cpu") -> dict:
    """The original style: per-item float32 tensor files, max-length padding, fp32."""
    table = read_table(csv)
    records = [r for r in table.records if r.split == "train"]
    processor = CLIPImageProcessorPil.from_pretrained(model_dir)
    tensors = work / "pixel_values"
    tensors.mkdir(exist_ok=True)
    for r in records:  # the original's separate preprocessing script
        from PIL import Image

        with Image.open(table.image_path(r)) as img:
            torch.save(processor(images=img.convert("RGB"), return_tensors="pt")["pixel_values"][0],
                       tensors / f"{r.id}.pt")
    tokenizer = CLIPTokenizer.from_pretrained(model_dir)
    cfs = swap_counterfactuals(records, world_names(table), text_field="summary", per_text=1, seed=0)
    model = CLIPModel.from_pretrained(model_dir).to(device).train()
    for name, p in model.named_parameters():
        frozen_layer = name.startswith("text_model.embeddings") or any(
            name.startswith(f"text_model.encoder.layers.{i}.") for i in range(frozen))
        p.requires_grad_(not frozen_layer and name != "logit_scale")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = build_loss("cft")
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(0)).tolist()
    times = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        idx = [order[(step * batch + k) % len(order)] for k in range(batch)]
        pixels = torch.stack([torch.load(tensors / f"{records[i].id}.pt") for i in idx]).to(device)
        text = tokenizer([records[i].summary for i in idx], padding="max_length", max_length=77,
                         truncation=True, return_tensors="pt")
        cf = tokenizer([cfs[i][0] for i in idx], padding="max_length", max_length=77, truncation=True,
                       return_tensors="pt")
        image_f = model.get_image_features(pixel_values=pixels).pooler_output
        text_f = model.get_text_features(**text.to(device)).pooler_output
        cf_f = model.get_text_features(**cf.to(device)).pooler_output
        loss = loss_fn(image_f, text_f, cf_f, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device != "cpu":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return {"pairs_per_s": batch / statistics.median(times), "peak_rss_mib": peak_rss_mib(), **gpu_memory(device)}


def ours(model_dir: Path, csv: Path, batch: int, frozen: int, warmup: int, steps: int, work: Path,
         precision: str, seed: int = 0, cache: Path | None = None, device: str = "cpu",
         checkpointing: bool | None = None, workers: int = 0) -> dict:
    table = read_table(csv)
    train_t = type(table)([r for r in table.records if r.split == "train"], table.base_dir, table.source)
    val_t = type(table)([r for r in table.records if r.split == "val"], table.base_dir, table.source)
    config = TrainConfig(model=str(model_dir), batch_size=batch, freeze_text_layers=frozen, precision=precision,
                         device=device, max_steps=warmup + steps, val_every_steps=10_000, seed=seed,
                         pixel_cache_dir=str(cache or work / "pixel-cache"), gradient_checkpointing=checkpointing,
                         num_workers=workers)
    records: list[dict] = []
    train(config, train_t, val_t, work / f"run-{precision}-{seed}", log=records.append)
    timed = [r for r in records if "loss" in r][warmup:]
    return {"pairs_per_s": batch / statistics.median(r["data_time"] + r["step_time"] for r in timed),
            "data_time_per_step_s": statistics.mean(r["data_time"] for r in timed),
            "first_step_data_time_s": next(r for r in records if "loss" in r)["data_time"],
            "peak_rss_mib": peak_rss_mib(), **gpu_memory(device)}


def gpu_memory(device: str) -> dict:
    """Peak GPU memory since the last reset (then reset), for a CUDA device."""
    if not device.startswith("cuda"):
        return {}
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"peak_gpu_gib": round(peak, 2)}


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    batch, frozen, warmup, steps = SETTINGS[args.model]
    if args.quick:
        warmup, steps = 1, 2
    work = Path(args.work)
    model_dir = work / args.model
    if args.arm == "baseline":
        result = baseline(model_dir, Path(args.csv), batch, frozen, warmup, steps, Path(tempfile.mkdtemp(dir=work)))
    else:
        cache = Path(args.cache) if args.cache else None
        result = ours(model_dir, Path(args.csv), batch, frozen, warmup, steps, Path(tempfile.mkdtemp(dir=work)),
                      args.precision, args.seed, cache)
    print(json.dumps(result))


def run_worker(*extra: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *extra], check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and items (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arm", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--csv", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        n_items = 80 if args.quick else 200
        csv = generate_dataset(work / "data", n_items, WorldConfig(image_size=448), seed=0)
        models.build_tiny_model(work / "tiny")
        build_b32(work / "vit-b32", work / "tiny")
        common = ["--csv", str(csv), "--work", str(work), "--threads", str(args.threads)] + (
            ["--quick"] if args.quick else [])
        results: dict = {}
        for model in SETTINGS:
            base = run_worker("--arm", "baseline", "--model", model, *common)
            cache = ["--cache", str(work / f"pixel-cache-{model}")]  # shared by the seeds of one model
            arms = {
                "baseline_fp32": base,
                "ours_auto_seed0_cold_cache": run_worker("--arm", "ours", "--model", model, "--precision", "auto",
                                                         "--seed", "0", *cache, *common),
                "ours_auto_seed1_warm_cache": run_worker("--arm", "ours", "--model", model, "--precision", "auto",
                                                         "--seed", "1", *cache, *common),
                "ours_fp32_seed1_warm_cache": run_worker("--arm", "ours", "--model", model, "--precision", "fp32",
                                                         "--seed", "1", *cache, *common),
            }
            for name, arm in arms.items():
                if name != "baseline_fp32":
                    arm["speedup_vs_baseline"] = arm["pairs_per_s"] / base["pairs_per_s"]
            results[model] = {"global_batch": SETTINGS[model][0], "frozen_text_layers": SETTINGS[model][1], **arms}
    print(json.dumps({
        "benchmark": "training",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__, "transformers": transformers.__version__,
                    "bf16_autocast": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())},
        "quick": args.quick,
        "items_rendered": n_items,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
