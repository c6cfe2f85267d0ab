"""A scoring job: every pair of a pairs table scored with one model, in a process of its own.

``python -m cftclip_core.score_job --pairs PAIRS.csv --model NAME --text-field summary --out RUN_DIR``

``PAIRS.csv`` has the columns ``key`` (the caller's id of the pair), ``image`` (a path) and ``text``. The job
follows the run folder contract of the studio's queue: ``heartbeat.json`` while it lives (phase ``loading``,
then ``scoring`` with ``step``/``total_steps`` = pairs scored / pairs), and when done ``scores.csv`` (key,
similarity, truncated) and ``score.json`` (model, fingerprint, text field, counts, precision, seconds).
Pairs are scored in chunks, and the embedding cache of the instance folder is written after each chunk, so
a job stopped half way (SIGTERM: it finishes its chunk and exits with status 143; a crash; a lost node) and
queued again recomputes only what it had not reached. Exit status 2: a model or pairs table it cannot use.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

import pandas as pd

from cftclip_core.errors import CftClipError, DataError
from cftclip_core.formats import TEXT_FIELDS
from cftclip_core.heartbeat import Heartbeat
from cftclip_core.instance import instance_dir

log = logging.getLogger(__name__)

SCORES_FILE = "scores.csv"
SUMMARY_FILE = "score.json"
PAIR_COLUMNS = ("key", "image", "text")
EXIT_USER_ERROR = 2
EXIT_TERMINATED = 143  # stopped by SIGTERM after its current chunk (128 + 15)


def read_pairs(path: Path) -> pd.DataFrame:
    """The pairs table, checked: the columns, no empty key or image, keys unique."""
    try:
        pairs = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read the pairs table {path}: {exc}") from None
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise DataError(f"The pairs table {path} lacks column(s) {', '.join(missing)}; it needs key, image, text.")
    if pairs.empty:
        raise DataError(f"The pairs table {path} has no rows: there is nothing to score.")
    if (pairs["key"] == "").any() or (pairs["image"] == "").any() or pairs["key"].duplicated().any():
        raise DataError(f"The pairs table {path} has an empty or repeated key, or an empty image path.")
    absent = [p for p in pairs["image"] if not Path(p).is_file()]
    if absent:
        raise DataError(f"{len(absent)} image(s) of the pairs table are missing (e.g. {absent[0]}); import the "
                        "dataset again to restore them.")
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    out = args.out
    heartbeat = Heartbeat(out).start()
    stop = _StopFlag()
    try:
        summary = score(args, heartbeat, stop)
    except CftClipError as exc:
        heartbeat.beat(phase="failed")
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except BaseException:
        heartbeat.beat(phase="failed")
        raise
    if summary is None:
        heartbeat.beat(phase="stopped")
        print("stopped by SIGTERM; the embeddings computed so far are cached", flush=True)
        return EXIT_TERMINATED
    heartbeat.beat(phase="done")
    print(f"scored {summary['n_items']} pairs with {summary['model_name']} ({summary['precision']}) in "
          f"{summary['seconds']:.1f} s; {summary['n_truncated']} text(s) cut to the model's window", flush=True)
    return 0


def score(args: argparse.Namespace, heartbeat: Heartbeat, stop: _StopFlag) -> dict | None:
    """Score the pairs chunk by chunk; the summary, or None when stopped (SIGTERM) before the end."""
    from cftclip_core.embedding_cache import EmbeddingCache  # torch and transformers load from here on
    from cftclip_core.images import PixelCache
    from cftclip_core.models import load_model, quiet_progress_bars_off_terminal
    from cftclip_core.scoring import ScoreItem, ScoreOptions, score_pairs

    started = time.monotonic()
    pairs = read_pairs(args.pairs)
    heartbeat.beat(phase="loading", step=0, total_steps=len(pairs))
    quiet_progress_bars_off_terminal()
    root = instance_dir()
    loaded = load_model(args.model, cache_dir=root / "models", device=args.device or _default_device())
    if loaded.is_tiny:
        print(f"note: '{loaded.name}' has random weights; its scores carry no meaning.", flush=True)
    options = ScoreOptions(batch_size=args.batch_size, precision=args.precision)
    items = [ScoreItem(key, Path(image), text) for key, image, text in pairs[list(PAIR_COLUMNS)].itertuples(index=False)]
    chunks: list[pd.DataFrame] = []
    precision = options.precision
    with EmbeddingCache(root / "cache" / "embeddings.sqlite") as cache:
        pixels = PixelCache(root / "cache" / "pixels", loaded.preprocess)
        heartbeat.beat(phase="scoring", step=0, total_steps=len(items), force=True)
        for start in range(0, len(items), args.chunk_size):
            if stop.requested:
                return None
            run = score_pairs(loaded, items[start:start + args.chunk_size], cache=cache, pixel_cache=pixels,
                              options=options)  # caches this chunk's embeddings before returning
            precision = run.precision
            chunks.append(pd.DataFrame({"key": run.keys, "similarity": run.similarities, "truncated": run.truncated}))
            done = start + len(run.keys)
            heartbeat.beat(step=done, samples_per_s=done / max(time.monotonic() - started, 1e-9))
            log.info("scored %d/%d pairs", done, len(items))
    scores = pd.concat(chunks, ignore_index=True)
    summary = {"model_name": loaded.name, "model_fingerprint": loaded.fingerprint, "tiny": loaded.is_tiny,
               "text_field": args.text_field, "n_items": len(scores), "n_truncated": int(scores["truncated"].sum()),
               "precision": precision, "seconds": time.monotonic() - started}
    _write_atomic(args.out / SCORES_FILE, scores.to_csv(index=False))
    _write_atomic(args.out / SUMMARY_FILE, json.dumps(summary))  # last: its presence says the scores are complete
    return summary


def _write_atomic(path: Path, text: str) -> None:
    """Readers see the whole file or none of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cftclip_core.score_job",
        description="Score every image-text pair of a pairs table with one model: the job the app's "
                    "scoring queue starts, writing a run folder.")
    parser.add_argument("--pairs", required=True, type=Path, help="CSV with key, image, text")
    parser.add_argument("--model", required=True, help="hub id, local model folder, or tiny-demo")
    parser.add_argument("--text-field", choices=TEXT_FIELDS, required=True, help="which text the pairs carry")
    parser.add_argument("--out", required=True, type=Path, help="run folder: heartbeat, scores.csv, score.json")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=256, help="pairs scored (and cached) between heartbeats")
    parser.add_argument("--precision", default="fp32", help="fp32 (the default, as for evaluation), bf16, or auto")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


class _StopFlag:
    """Set by SIGTERM (a cancel, a scheduler's time limit): the job stops after its current chunk."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum: int, frame: object) -> None:
        self.requested = True


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
