"""GPU speed at the paper's scale: a ViT-L/14-shaped CLIP (random weights) on one CUDA device.

(a) scoring: ``score_pairs`` (batches of 256, decoding in worker threads) in bf16 and fp32, against the
    original evaluation loop (one processor call and one fp32 CLIPModel forward per pair, as in
    ``bench_scoring.NaiveScorer``), on 640x480 JPEG thumbnails; pairs/s and the ratio.
(b) training: ``train()`` with the paper's settings (global batch 128, CFT loss with one counterfactual
    per pair, AdamW, text layers 0-10 frozen) in bf16 autocast with gradient checkpointing (the CUDA
    default), bf16 without checkpointing, and fp32, against the original style
    (``bench_training.baseline``: per-item float32 tensor files, 77-token padding, fp32); pairs/s =
    batch / (data wait + step time), median over the timed steps, and peak GPU memory per arm.
    Ours runs seed 0 first (cold pixel cache, not timed as a result), then the timed arms on seed 1
    with the cache warm, as later seeds of an experiment do.
Weights are random (speed does not depend on their values); the tokenizer is the shipped tiny one,
so the text embedding table is smaller than CLIP's (a lookup: no effect on speed worth naming).

    python benchmarks/bench_gpu.py [--out FILE]     # needs CUDA
    python benchmarks/bench_gpu.py --smoke          # tiny model on the CPU: checks the code paths only
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmark scripts

from bench_scoring import NaiveScorer, thumbnail_pairs  # noqa: E402
from bench_training import baseline, ours  # noqa: E402

from cftclip_core import models  # noqa: E402
from cftclip_core.scoring import ScoreOptions, score_pairs  # noqa: E402
from cftclip_core.synthetic import WorldConfig, generate_dataset  # noqa: E402

BATCH, FROZEN_TEXT_LAYERS = 128, 11  # the paper's
WARMUP, STEPS = 3, 10


def l14_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    """openai/clip-vit-large-patch14 sizes; vocabulary and special ids from the given tokenizer."""
    return CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        vision_config=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=224, patch_size=14, projection_dim=768,
        ),
        projection_dim=768,
    )


def build_model(out_dir: Path, tokenizer_dir: Path, smoke: bool) -> Path:
    if smoke:
        return models.build_tiny_model(out_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    CLIPModel(l14_config(tokenizer)).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessorPil().save_pretrained(out_dir)
    return out_dir


def synced(device: str, fn):  # noqa: ANN001, ANN202 - a tiny timing helper
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def bench_scoring(work: Path, model_dir: Path, device: str, pairs: int, naive_pairs: int) -> dict:
    items = thumbnail_pairs(work / "thumbs", pairs + 8)
    warmup, items = items[:8], items[8:]
    loaded = models.load_model(str(model_dir), device=device)
    naive = NaiveScorer(model_dir, device=device)
    result: dict = {"pairs": pairs, "images": "640x480 JPEG q90", "batch_size": 256}
    naive.score(warmup)
    reference, naive_s = synced(device, lambda: naive.score(items[:naive_pairs]))
    result["naive_fp32"] = {"pairs": naive_pairs, "seconds": round(naive_s, 2),
                            "pairs_per_s": round(naive_pairs / naive_s, 1)}
    for precision in ("bf16", "fp32"):
        options = ScoreOptions(precision=precision, batch_size=256, decode_workers=8)
        score_pairs(loaded, warmup, options=options)
        run, seconds = synced(device, lambda: score_pairs(loaded, items, options=options))
        rate = pairs / seconds
        result[f"ours_{precision}"] = {
            "seconds": round(seconds, 2), "pairs_per_s": round(rate, 1),
            "speedup_vs_naive": round(rate / result["naive_fp32"]["pairs_per_s"], 1),
            "max_abs_diff_vs_naive_fp32": float(np.max(np.abs(run.similarities[:naive_pairs] - reference))),
        }
    return result  # the models go with this frame; main empties the CUDA cache before training


def bench_training(work: Path, model_dir: Path, device: str, smoke: bool) -> dict:
    batch = 8 if smoke else BATCH
    frozen = 1 if smoke else FROZEN_TEXT_LAYERS
    warmup, steps = (1, 2) if smoke else (WARMUP, STEPS)
    csv = generate_dataset(work / "train-data", batch * (warmup + steps) + batch, WorldConfig(image_size=256),
                           split_fractions=[1 - 1 / (warmup + steps + 1), 1 / (warmup + steps + 1), 0.0], seed=0)
    cache = work / "pixel-cache"
    workers = 0 if smoke else 8

    def arm(**kwargs) -> dict:  # noqa: ANN003
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return ours(model_dir, csv, batch, frozen, warmup, steps, Path(tempfile.mkdtemp(dir=work)), cache=cache,
                    device=device, workers=workers, **kwargs)

    cold = arm(precision="bf16", seed=0, checkpointing=True)
    arms = {
        "ours_bf16_checkpointing": arm(precision="bf16", seed=1, checkpointing=True),
        "ours_bf16": arm(precision="bf16", seed=1, checkpointing=False),
        "ours_fp32": arm(precision="fp32", seed=1, checkpointing=False),
    }
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = baseline(model_dir, csv, batch, frozen, warmup, steps, Path(tempfile.mkdtemp(dir=work)), device=device)
    for result in arms.values():
        result["speedup_vs_baseline"] = round(result["pairs_per_s"] / base["pairs_per_s"], 2)
    return {"global_batch": batch, "frozen_text_layers": frozen, "warmup_steps": warmup, "timed_steps": steps,
            "baseline_fp32": base, "ours_bf16_checkpointing_seed0_cold_cache": cold, **arms}


def machine(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "device": device, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, multiprocessors=props.multi_processor_count)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the code paths only")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke to check the code paths on the CPU")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        tiny = models.build_tiny_model(work / "tiny")
        model_dir = build_model(work / ("tiny-model" if args.smoke else "clip-l14-random"), tiny, args.smoke)
        started = time.perf_counter()
        scoring = bench_scoring(work, model_dir, device, 16 if args.smoke else 1024, 8 if args.smoke else 128)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        training = bench_training(work, model_dir, device, args.smoke)
        seconds = time.perf_counter() - started
    report = {
        "benchmark": "GPU: ViT-L/14-shaped CLIP, random weights: scoring and training vs the original code's style",
        "date": datetime.date.today().isoformat(),
        "smoke": args.smoke,
        "scoring": scoring,
        "training": training,
        "seconds": round(seconds, 1),
        "machine": machine(device),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
