"""Command line: ``python -m cftclip_core {score,eval,models,synthetic}``.

Runtime files go to the instance folder (``$CFTCLIP_INSTANCE`` or ``./instance``), the same one the
app uses, so the app and the command line share embedding caches, downloaded media and models.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cftclip_core import metrics, models, synthetic
from cftclip_core.embedding_cache import EmbeddingCache
from cftclip_core.errors import CftClipError, FetchError
from cftclip_core.fetch import fetch_many
from cftclip_core.formats import TEXT_FIELDS, Table, read_table
from cftclip_core.images import PixelCache
from cftclip_core.media_store import MediaStore
from cftclip_core.scoring import PRECISIONS, ScoreItem, ScoreOptions, score_pairs

log = logging.getLogger("cftclip_core")

SCORE_COLUMNS = ["id", "split", "label", "similarity", "truncated", "image_sha256", "model", "model_fingerprint",
                 "text_field"]


def instance_dir() -> Path:
    return Path(os.environ.get("CFTCLIP_INSTANCE", "instance")).resolve()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    try:
        return args.run(args)
    except CftClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cftclip_core", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    score = commands.add_parser("score", help="score every image/text pair of a table")
    score.add_argument("--data", required=True, type=Path, help="table file (.csv, .jsonl, .parquet)")
    score.add_argument("--model", default=models.DEFAULT_MODEL,
                       help=f"hub id, local model folder, or '{models.TINY_NAME}' (default: %(default)s)")
    score.add_argument("--text", choices=TEXT_FIELDS, default="summary", help="text field to score (default: summary)")
    score.add_argument("--out", required=True, type=Path, help="scores file to write (.csv)")
    score.add_argument("--batch-size", type=int, default=64)
    score.add_argument("--precision", choices=PRECISIONS, default="auto")
    score.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    score.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    score.add_argument("--skip-bad-rows", action="store_true", help="score the valid rows of a table with errors")
    score.add_argument("--trust-pickle", action="store_true",
                       help="allow reading a pickled DataFrame (runs code from the file: only for your own files)")
    score.add_argument("--allow-private-urls", action="store_true",
                       help="allow image URLs on private or loopback addresses")
    score.set_defaults(run=run_score)

    evaluate = commands.add_parser("eval", help="metrics of a scores file at a threshold")
    evaluate.add_argument("--scores", required=True, type=Path, help="scores file written by 'score'")
    evaluate.add_argument("--threshold", default="val-median",
                          help="val-median, f1-optimal, or a number (default: %(default)s)")
    evaluate.add_argument("--val", type=Path, default=None,
                          help="scores file for choosing the threshold (default: rows of --scores whose split is 'val')")
    evaluate.add_argument("--val-split", default="val")
    evaluate.add_argument("--test-split", default=None,
                          help="evaluate only rows of this split (default: every row not used for validation)")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    evaluate.set_defaults(run=run_eval)

    model_commands = commands.add_parser("models", help="model utilities").add_subparsers(required=True, metavar="ACTION")
    tiny = model_commands.add_parser("build-tiny", help="build the tiny offline model (random weights, reproducible)")
    tiny.add_argument("--out", required=True, type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=run_build_tiny)
    retrain = model_commands.add_parser("train-tokenizer",
                                        help="retrain the tiny model's tokenizer on the demo and synthetic texts")
    retrain.add_argument("--out", type=Path, default=models.TINY_TOKENIZER_DIR)
    retrain.set_defaults(run=run_train_tokenizer)
    info = model_commands.add_parser("info", help="load a model and print its fingerprint")
    info.add_argument("model")
    info.set_defaults(run=run_model_info)

    synth = commands.add_parser("synthetic", add_help=False,
                                help="generate a synthetic news set (see: synthetic --help)")
    synth.add_argument("synthetic_args", nargs=argparse.REMAINDER)
    synth.set_defaults(run=lambda args: synthetic.main(args.synthetic_args))
    return parser


def run_score(args: argparse.Namespace) -> int:
    table = read_table(args.data, skip_bad_rows=args.skip_bad_rows, allow_pickle=args.trust_pickle)
    for problem in table.skipped:
        print(f"skipped: {problem}", file=sys.stderr)
    root = instance_dir()
    images = resolve_images(table, MediaStore(root / "media"), allow_private=args.allow_private_urls)
    loaded = models.load_model(args.model, cache_dir=root / "models", device=args.device or _default_device())
    if loaded.is_tiny:
        print(f"note: '{loaded.name}' has random weights; its scores carry no meaning.", file=sys.stderr)
    items = [ScoreItem(r.id, images[r.id], r.text(args.text)) for r in table.records]
    cache = None if args.no_cache else EmbeddingCache(root / "cache" / "embeddings.sqlite")
    pixel_cache = None if args.no_cache else PixelCache(root / "cache" / "pixels", loaded.preprocess)
    options = ScoreOptions(batch_size=args.batch_size, precision=args.precision)
    with _ProgressBars() as bars:
        run = score_pairs(loaded, items, cache=cache, pixel_cache=pixel_cache, options=options, progress=bars.update)
    frame = pd.DataFrame({
        "id": run.keys,
        "split": [r.split for r in table.records],
        "label": pd.array([r.label for r in table.records], dtype="Int64"),
        "similarity": run.similarities,
        "truncated": run.truncated,
        "image_sha256": run.image_sha256,
        "model": loaded.name,
        "model_fingerprint": loaded.fingerprint,
        "text_field": args.text,
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"scored {len(frame)} pairs with {loaded.name} ({run.precision}); "
          f"{run.n_truncated} text(s) cut to {loaded.max_text_tokens} tokens; wrote {args.out}")
    return 0


def resolve_images(table: Table, store: MediaStore, *, allow_private: bool) -> dict[str, Path]:
    """Local path of every record's image; URLs are downloaded once into the media store."""
    urls = sorted({r.image for r in table.records if r.image_is_url})
    fetched: dict[str, Path] = {}
    if urls:
        with tqdm(total=len(urls), desc="downloading images", unit="img") as bar:
            report = fetch_many(urls, store, allow_private=allow_private,
                                progress=lambda done, total: bar.update(done - bar.n))
        if report.errors:
            lines = "\n".join(f"  - {error}" for error in list(report.errors.values())[:20])
            raise FetchError(f"{len(report.errors)} of {len(urls)} image URL(s) could not be downloaded; "
                             f"nothing was scored:\n{lines}")
        fetched = {url: media.path for url, media in report.stored.items()}
    return {r.id: fetched[r.image] if r.image_is_url else table.image_path(r) for r in table.records}


def run_eval(args: argparse.Namespace) -> int:
    scores = read_scores(args.scores)
    if args.val is not None:
        val, test = read_scores(args.val), scores
    else:
        is_val = scores["split"] == args.val_split
        val, test = scores[is_val], scores[~is_val]
    if args.test_split is not None:
        test = test[test["split"] == args.test_split]
    if test.empty:
        raise CftClipError("No rows to evaluate: check --test-split and the split column of the scores file.")
    if test["label"].isna().any():
        raise CftClipError(
            f"{int(test['label'].isna().sum())} evaluated row(s) have no label; label them or choose "
            "labelled rows with --test-split."
        )
    val_labels = None if val["label"].isna().any() else val["label"].to_numpy(dtype=int)
    threshold = metrics.choose_threshold(_threshold_arg(args.threshold), val["similarity"].to_numpy(float), val_labels)
    report = metrics.evaluate(test["similarity"].to_numpy(float), test["label"].to_numpy(dtype=int), threshold,
                              n_bootstrap=args.bootstrap, seed=args.seed)
    result = {"scores": str(args.scores), "n_validation": int(len(val)), **report.to_dict()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def read_scores(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CftClipError(f"No scores file at '{path}': write one with `python -m cftclip_core score`.")
    frame = pd.read_csv(path, dtype={"id": str, "split": str})
    missing = {"id", "similarity", "label", "split"} - set(frame.columns)
    if missing:
        raise CftClipError(f"'{path}' lacks column(s) {', '.join(sorted(missing))}; is it a scores file from 'score'?")
    frame["label"] = frame["label"].astype("Int64")
    return frame


def _threshold_arg(value: str) -> str | float:
    try:
        return float(value)
    except ValueError:
        return value


def run_build_tiny(args: argparse.Namespace) -> int:
    path = models.build_tiny_model(args.out, seed=args.seed)
    print(f"built {models.TINY_NAME} in {path} (fingerprint {models.directory_fingerprint(path)})")
    return 0


def run_train_tokenizer(args: argparse.Namespace) -> int:
    tokenizer = models.train_tokenizer(args.out)
    print(f"trained a {len(tokenizer)}-token CLIP tokenizer into {args.out}")
    return 0


def run_model_info(args: argparse.Namespace) -> int:
    loaded = models.load_model(args.model, cache_dir=instance_dir() / "models")
    print(json.dumps({"name": loaded.name, "fingerprint": loaded.fingerprint, "tiny": loaded.is_tiny,
                      "max_text_tokens": loaded.max_text_tokens,
                      "parameters": sum(p.numel() for p in loaded.model.parameters())}, indent=2))
    return 0


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _ProgressBars:
    """One tqdm bar per scoring stage."""

    def __enter__(self) -> "_ProgressBars":
        self.bars: dict[str, tqdm] = {}
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=f"embedding {stage}", unit=stage[:-1])
        bar.update(done - bar.n)

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()
