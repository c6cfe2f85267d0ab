"""Scoring as a job (``python -m cftclip_core.score_job``, the process the queue launches) on 1,000
thumbnail/text pairs with a ViT-L/14-shaped CLIP (random weights) on one CUDA device.

Measured, each with a fresh embedding cache unless said otherwise:
    in-process:  ``score_pairs`` over all pairs in this process, after loading the model here (what the
                 Articles page used to do inside Streamlit): the baseline
    job, cold:   the job from its start to its exit (interpreter, torch, model load and fingerprint, scoring,
                 files), sampling its heartbeat every 0.2 s (the progress the page shows)
    job, stopped and again: the job stopped with SIGTERM once its heartbeat says half the pairs are done,
                 then the same job started again: what the second run had to compute, and its time
    job, warm:   the job once more with everything cached

    python benchmarks/bench_score_job.py [--pairs 1000] [--out FILE]   # needs CUDA
    python benchmarks/bench_score_job.py --smoke                       # the tiny model on the CPU, 64 pairs

Prints JSON (times in seconds, the ratios to the in-process baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmark scripts

from bench_gpu import build_model  # noqa: E402
from bench_scoring import thumbnail_pairs  # noqa: E402

from cftclip_core import models  # noqa: E402
from cftclip_core.embedding_cache import EmbeddingCache  # noqa: E402
from cftclip_core.scoring import ScoreOptions, score_pairs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_job(pairs: Path, model: Path, out: Path, instance: Path, device: str, chunk: int, *,
            stop_at: int | None = None) -> dict:
    """One job process; heartbeat samples; SIGTERM once ``stop_at`` pairs are done."""
    argv = [sys.executable, "-m", "cftclip_core.score_job", "--pairs", str(pairs), "--model", str(model),
            "--text-field", "title", "--out", str(out), "--device", device, "--batch-size", "256",
            "--chunk-size", str(chunk)]
    env = {**os.environ, "CFTCLIP_INSTANCE": str(instance), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[tuple[float, str, int]] = []
    stopped = False
    while process.poll() is None:
        try:
            beat = json.loads((out / "heartbeat.json").read_text())
        except (OSError, ValueError):
            beat = None
        if beat and (not seen or seen[-1][1:] != (beat["phase"], beat.get("step") or 0)):
            seen.append((round(time.monotonic() - started, 2), beat["phase"], beat.get("step") or 0))
        if stop_at is not None and not stopped and beat and (beat.get("step") or 0) >= stop_at:
            process.send_signal(signal.SIGTERM)
            stopped = True
        time.sleep(0.2)
    output = process.stdout.read()
    return {"seconds": round(time.monotonic() - started, 2), "exit": process.returncode, "progress": seen,
            "last_line": output.strip().splitlines()[-1] if output.strip() else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    n = 64 if args.smoke else args.pairs
    work = Path(tempfile.mkdtemp(prefix="bench-score-job-"))
    model = build_model(work / "model", models.TINY_TOKENIZER_DIR, args.smoke)
    items = thumbnail_pairs(work / "thumbs", n)
    pairs = work / "pairs.csv"
    pd.DataFrame({"key": [i.key for i in items], "image": [str(i.image) for i in items],
                  "text": [i.text for i in items]}).to_csv(pairs, index=False)
    result: dict = {"pairs": n, "chunk_size": 16 if args.smoke else 256, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                    "model": "tiny-demo" if args.smoke else "ViT-L/14 sizes, random weights",
                    "python": platform.python_version(), "torch": torch.__version__}

    started = time.monotonic()
    loaded = models.load_model(str(model), device=device)
    load_s = time.monotonic() - started
    with EmbeddingCache(work / "baseline-cache.sqlite") as cache:
        started = time.monotonic()
        score_pairs(loaded, items, cache=cache, options=ScoreOptions(batch_size=256, decode_workers=8))
        if device == "cuda":
            torch.cuda.synchronize()
        score_s = time.monotonic() - started
    result["in_process"] = {"load_s": round(load_s, 2), "score_s": round(score_s, 2),
                            "total_s": round(load_s + score_s, 2)}
    del loaded
    if device == "cuda":
        torch.cuda.empty_cache()

    chunk = 16 if args.smoke else 256
    cold = run_job(pairs, model, work / "cold", work / "instance-cold", device, chunk)
    stopped = run_job(pairs, model, work / "stopped", work / "instance-resumed", device, chunk, stop_at=n // 2)
    with EmbeddingCache(work / "instance-resumed" / "cache" / "embeddings.sqlite") as cache:
        cached_after_stop = cache.count()
    again = run_job(pairs, model, work / "again", work / "instance-resumed", device, chunk)
    warm = run_job(pairs, model, work / "warm", work / "instance-resumed", device, chunk)
    baseline = result["in_process"]["total_s"]
    result.update({
        "job_cold": cold, "job_stopped_at_half": stopped,
        "embeddings_cached_when_stopped": cached_after_stop,
        "job_again_after_the_stop": again, "job_warm": warm,
        "ratio_job_cold_to_in_process": round(cold["seconds"] / baseline, 2),
        "ratio_job_again_to_job_cold": round(again["seconds"] / cold["seconds"], 2),
        "ratio_job_warm_to_job_cold": round(warm["seconds"] / cold["seconds"], 2),
        "scores_equal_cold_vs_resumed": bool((pd.read_csv(work / "cold" / "scores.csv")["similarity"]
                                              - pd.read_csv(work / "again" / "scores.csv")["similarity"])
                                             .abs().max() < 1e-3),
    })
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
