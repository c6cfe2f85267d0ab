"""Command line: ``python -m cftclip_core {score,eval,models,synthetic,counterfactual,convert,train}`` (counterfactual
and convert: ``cftclip_core.data_commands``).

Runtime files go to the instance folder (``$CFTCLIP_INSTANCE`` or ``./instance``), the same one the
app uses, so the app and the command line share embedding caches, downloaded media and models.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cftclip_core import models, synthetic
from cftclip_core.data_commands import (
    add_convert_parser,
    add_counterfactual_parser,
    add_layout_arguments,
    read_layout_table,
)
from cftclip_core.distributed import ranks_from_environment, shutdown
from cftclip_core.embedding_cache import EmbeddingCache
from cftclip_core.errors import CftClipError, ConfigError, DataError
from cftclip_core.evaluation import (
    check_evaluable,
    check_threshold_source,
    evaluate_checkpoint,
    evaluate_scores,
    read_scores,
    score_records,
)
from cftclip_core.formats import TEXT_FIELDS, Table, problems_message, read_table
from cftclip_core.heartbeat import Heartbeat
from cftclip_core.images import PixelCache
from cftclip_core.instance import instance_dir
from cftclip_core.media_store import MediaStore
from cftclip_core.scoring import PRECISIONS, ScoreOptions
from cftclip_core.specs.replication import REPLICATE_ORIGINAL, THRESHOLD_SOURCES, resolve_threshold_from
from cftclip_core.specs.training import FIELD_CHOICES, TrainConfig, as_text, field_help
from cftclip_core.table_images import check_table_images
from cftclip_core.training import train

log = logging.getLogger("cftclip_core")

EXIT_TERMINATED = 143  # 'train' stopped by SIGTERM (128 + 15) after saving a resumable checkpoint
TRAIN_FLAG_ALIASES = {"val_every_steps": ["--val-every"]}  # short names besides --val-every-steps



def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    models.quiet_progress_bars_off_terminal()
    try:
        return args.run(args)
    except CftClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cftclip_core",
        description="Score, evaluate and fine-tune CLIP models, and make their datasets, in the instance folder "
                    "the app uses ($CFTCLIP_INSTANCE or ./instance).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    score = commands.add_parser("score", help="score every image/text pair of a table")
    score.add_argument("--data", required=True, type=Path, help="table file (.csv, .jsonl, .parquet)")
    score.add_argument("--model", default=models.DEFAULT_MODEL,
                       help=f"hub id, local model folder, or '{models.TINY_NAME}' (default: %(default)s)")
    score.add_argument("--text", choices=TEXT_FIELDS, default="summary", help="text field to score (default: summary)")
    score.add_argument("--out", required=True, type=Path, help="scores file to write (.csv)")
    score.add_argument("--batch-size", type=int, default=64)
    score.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="fp32 (default), bf16, or auto (bf16 where the device supports it)")
    score.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    score.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    score.add_argument("--skip-bad-rows", action="store_true",
                       help="score the valid rows of a table with errors (bad values or unusable images)")
    score.add_argument("--trust-pickle", action="store_true",
                       help="allow reading a pickled DataFrame (runs code from the file: only for your own files)")
    score.add_argument("--allow-private-urls", action="store_true",
                       help="allow image URLs on private or loopback addresses")
    add_layout_arguments(score)
    score.set_defaults(run=run_score)

    evaluate = commands.add_parser("eval", help="metrics of a scores file at a threshold")
    evaluate.add_argument("--scores", required=True, type=Path, help="scores file written by 'score'")
    evaluate.add_argument("--threshold", default="val-median",
                          help="val-median, f1-optimal, or a number (default: %(default)s)")
    evaluate.add_argument("--val", type=Path, default=None,
                          help="scores of the training run's validation pairs, for choosing the threshold "
                               "(--threshold-from train-val)")
    evaluate.add_argument("--threshold-from", choices=THRESHOLD_SOURCES, default=None,
                          help="where the threshold is chosen: train-val (the scores in --val: the training run's "
                               "validation pairs, as the original code) or eval-val (the rows of --scores whose split "
                               "is --val-split) (default: train-val with --val, else eval-val)")
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

    synth = commands.add_parser("synthetic", help="generate a synthetic news set",
                                description="Generate a synthetic news-thumbnail dataset (people in contexts).")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--items", type=int, default=2000, help="number of images to render")
    synth.add_argument("--people", type=int, default=16)
    synth.add_argument("--backgrounds", type=int, default=8)
    synth.add_argument("--objects", type=int, default=4)
    synth.add_argument("--colours", type=int, default=4)
    synth.add_argument("--contexts", type=int, default=None, help="e.g. 6 for the few-contexts world")
    synth.add_argument("--size", type=int, default=64, help="image side in pixels")
    synth.add_argument("--noise", type=float, default=0.03)
    synth.add_argument("--world-seed", type=int, default=0)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--splits", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
    synth.add_argument("--negatives", type=float, default=0.5, help="fraction of rows with another person's name")
    synth.add_argument("--pairs", action="store_true", help="each image twice: positive and negative text")
    synth.add_argument("--anonymous", action="store_true", help='"A person ..." texts, no labels')
    synth.add_argument("--overwrite", action="store_true")
    synth.set_defaults(run=run_synthetic)

    add_counterfactual_parser(commands)
    add_convert_parser(commands)

    trainer = commands.add_parser(
        "train", help="fine-tune a CLIP model (the paper's CFT loss by default)",
        description="Every training setting is a flag; --config JSON sets several, flags override it. "
                    f"On SIGTERM the run saves RUN/last and exits with status {EXIT_TERMINATED}; --resume continues it.")
    trainer.add_argument("--train", required=True, type=Path, help="training table")
    trainer.add_argument("--val", type=Path, default=None,
                         help="validation table (default: the --train table's rows whose split is 'val'; its 'train' "
                              "rows train)")
    trainer.add_argument("--out", required=True, type=Path, help="run folder (best/, last/, log.jsonl, metrics.json)")
    trainer.add_argument("--config", type=Path, default=None, help="JSON object of training settings (the flags' names with underscores)")
    trainer.add_argument("--resume", action="store_true", help="continue the run stopped in --out (from last/)")
    trainer.add_argument("--eval", type=Path, default=None,
                         help="labelled table to score with the best model after training (writes RUN/eval/)")
    trainer.add_argument("--threshold", default="val-median",
                         help="threshold for --eval: val-median, f1-optimal or a number (default: val-median)")
    trainer.add_argument("--threshold-from", choices=THRESHOLD_SOURCES, default=None,
                         help="where --eval's threshold is chosen: train-val (the --val pairs, as the original code) "
                              "or eval-val (the eval table's 'val' rows) (default: train-val for val-median, "
                              "eval-val for f1-optimal)")
    trainer.add_argument("--eval-precision", choices=PRECISIONS, default=None,
                         help="precision of --eval's scoring (default: fp32)")
    for f in dataclasses.fields(TrainConfig):
        flags = [f"--{f.name.replace('_', '-')}", *TRAIN_FLAG_ALIASES.get(f.name, [])]
        options = {"choices": FIELD_CHOICES[f.name]} if f.name in FIELD_CHOICES else {"metavar": f.name.upper()}
        if str(f.type).startswith("bool"):
            options.update(nargs="?", const="true")  # --flag alone: true
        trainer.add_argument(*flags, dest=f"cfg_{f.name}", default=argparse.SUPPRESS,
                             help=field_help(f.name)
                             + (f"; {REPLICATE_ORIGINAL.flag} alone: the released code's choices "
                                f"({', '.join(f'{k}={as_text(v)}' for k, v in REPLICATE_ORIGINAL.train.items())}, "
                                f"threshold from {REPLICATE_ORIGINAL.threshold_from}, fp32 scoring)"
                                if f.name == "replicate_original" else ""), **options)
    trainer.set_defaults(run=run_train)
    return parser


def run_score(args: argparse.Namespace) -> int:
    table = read_layout_table(args, skip_bad_rows=args.skip_bad_rows)
    for problem in table.skipped:
        print(f"skipped: {problem}", file=sys.stderr)
    root = instance_dir()
    # Every image is checked (decoded, URLs downloaded) before the model is even loaded.
    with _ProgressBars() as bars:
        check = check_table_images(table, MediaStore(root / "media"), allow_private=args.allow_private_urls,
                                   progress=bars.update)
    records = table.records
    if check.problems:
        lines = check.problem_lines()
        if not args.skip_bad_rows or len(check.bad_ids) == len(records):
            fix = "Fix them" + ("" if args.skip_bad_rows else ", or skip those rows explicitly (--skip-bad-rows)")
            raise DataError(problems_message(
                f"{args.data} has {len(lines)} image problem(s); nothing was scored. {fix}.", lines))
        for line in lines:
            print(f"skipped: {line}", file=sys.stderr)
        records = [r for r in records if r.id not in check.bad_ids]
    loaded = models.load_model(args.model, cache_dir=root / "models", device=args.device or _default_device())
    if loaded.is_tiny:
        print(f"note: '{loaded.name}' has random weights; its scores carry no meaning.", file=sys.stderr)
    cache = None if args.no_cache else EmbeddingCache(root / "cache" / "embeddings.sqlite")
    pixel_cache = None if args.no_cache else PixelCache(root / "cache" / "pixels", loaded.preprocess)
    options = ScoreOptions(batch_size=args.batch_size, precision=args.precision)
    with _ProgressBars() as bars:
        frame, run = score_records(
            loaded, records, [check.ok[r.id].path for r in records], args.text, cache=cache,
            pixel_cache=pixel_cache, options=options,
            progress=lambda stage, done, total: bars.update(f"embedding {stage}", done, total))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"scored {len(frame)} pairs with {loaded.name} ({run.precision}); "
          f"{run.n_truncated} text(s) cut to {loaded.max_text_tokens} tokens; wrote {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    threshold = _threshold_arg(args.threshold)
    source = args.threshold_from or ("train-val" if args.val is not None else "eval-val")
    if source == "train-val" and args.val is None:
        raise ConfigError("--threshold-from train-val takes the threshold from the training run's validation pairs: "
                          "give their scores with --val FILE (score them with 'score').")
    if source == "eval-val" and args.val is not None:
        raise ConfigError("--val gives the training run's validation scores, but --threshold-from eval-val takes the "
                          "threshold from the rows of --scores; drop one of them.")
    scores = read_scores(args.scores)
    result = evaluate_scores(scores, threshold, val=read_scores(args.val) if args.val is not None else None,
                             val_split=args.val_split, test_split=args.test_split, n_bootstrap=args.bootstrap,
                             seed=args.seed, source=str(args.scores),
                             threshold_from=source if isinstance(threshold, str) else None)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


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


def run_synthetic(args: argparse.Namespace) -> int:
    world = synthetic.WorldConfig(n_people=args.people, n_backgrounds=args.backgrounds, n_objects=args.objects,
                                  n_colours=args.colours, n_contexts=args.contexts, image_size=args.size,
                                  noise_std=args.noise, seed=args.world_seed)
    with tqdm(total=args.items, unit="img") as bar:
        path = synthetic.generate_dataset(args.out_dir, args.items, world, split_fractions=args.splits,
                                          negative_fraction=args.negatives, pairs=args.pairs,
                                          anonymous=args.anonymous, seed=args.seed, overwrite=args.overwrite,
                                          progress=lambda done, _total: bar.update(done - bar.n))
    print(f"Table: {path}")
    return 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: defaults, then --config JSON, then flags; validated, errors naming the field."""
    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            loaded = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"Cannot read --config '{args.config}' as JSON ({exc}); give a JSON object of "
                              "training fields.") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config '{args.config}' holds {type(loaded).__name__}, not a JSON object of fields.")
        values.update(loaded)
    flags = {name: getattr(args, f"cfg_{name}") for name in TrainConfig.field_names() if hasattr(args, f"cfg_{name}")}
    return TrainConfig.from_texts(flags, base=values)


def run_train(args: argparse.Namespace) -> int:
    config = train_config(args)
    ranks = ranks_from_environment()
    train_table, val_table = _train_and_val(args.train, args.val)
    eval_table = read_table(args.eval) if args.eval is not None else None
    threshold = _threshold_arg(args.threshold)
    threshold_from = resolve_threshold_from(threshold, args.threshold_from, replicate=config.replicate_original)
    eval_precision = args.eval_precision or REPLICATE_ORIGINAL.scoring_precision or "fp32"
    if config.replicate_original and eval_precision != REPLICATE_ORIGINAL.scoring_precision:
        raise ConfigError(f"--eval-precision {eval_precision} contradicts {REPLICATE_ORIGINAL.label}, which scores in "
                          f"{REPLICATE_ORIGINAL.scoring_precision}; leave it out or drop the preset.")
    if eval_table is not None:
        check_evaluable(eval_table, str(args.eval))
        check_threshold_source(eval_table, threshold, threshold_from, val_table)
    beat = Heartbeat(args.out, enabled=ranks.is_main).start()  # alive while loading, training and evaluating
    stop_requested = threading.Event()
    handles_signal = threading.current_thread() is threading.main_thread()  # only there can Python set handlers
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.set()) if handles_signal else None
    try:
        result = train(config, train_table, val_table, args.out, stop=stop_requested.is_set, resume=args.resume,
                       log=_print_record, ranks=ranks, heartbeat=beat)
        if ranks.is_main:
            print(_data_line(result.data), flush=True)
        if result.interrupted:
            print(f"stopped by SIGTERM at step {result.steps}; resume with the same command plus --resume "
                  f"(checkpoint {result.last_dir})", flush=True)
            return EXIT_TERMINATED
        if eval_table is not None and ranks.is_main:
            beat.beat(phase="evaluating")
            report = evaluate_checkpoint(result.best_dir, eval_table, Path(args.out) / "eval",
                                         text_field=config.text_field, threshold=threshold,
                                         threshold_from=threshold_from, val_table=val_table, device=config.device,
                                         precision=eval_precision, seed=config.seed)
            f1 = report["metrics"]["f1"]["value"]
            where = f" from {threshold_from}" if threshold_from else ""
            print(f"evaluation on {args.eval}: F1 {f1 if f1 is None else round(f1, 4)} at threshold "
                  f"{report['threshold']['value']:.4f} ({report['threshold']['strategy']}{where}, {eval_precision}); "
                  f"wrote {Path(args.out) / 'eval'}", flush=True)
    except BaseException:
        beat.beat(phase="failed")
        raise
    finally:
        if handles_signal:
            signal.signal(signal.SIGTERM, previous)
        shutdown()
    beat.beat(phase="done")
    if ranks.is_main:
        print(json.dumps({"steps": result.steps, "best_val_loss": result.best_val_loss,
                          "stopped_early": result.stopped_early}), flush=True)
        print(f"best checkpoint: {result.best_dir}", flush=True)
    return 0


def _train_and_val(train_path: Path, val_path: Path | None) -> tuple[Table, Table]:
    """The training and validation tables: two files, or one file's 'train' and 'val' rows."""
    table = read_table(train_path)
    if val_path is not None:
        return table, read_table(val_path)
    parts = {split: [r for r in table.records if r.split == split] for split in ("train", "val")}
    empty = [split for split, records in parts.items() if not records]
    if empty:
        raise DataError(f"{train_path} has no rows with split {' or '.join(repr(s) for s in empty)}; give --val FILE, "
                        "or mark the rows (python -m cftclip_core convert ... --val-fraction 0.05).")
    return (dataclasses.replace(table, records=parts["train"]), dataclasses.replace(table, records=parts["val"]))


def _data_line(data: dict[str, Any]) -> str:
    """What trained, in one line: items used, left out and why, texts cut to the window."""
    parts = []
    for name in ("train", "val"):
        report = data.get(name) or {}
        dropped = ", ".join(f"{reason} {n}" for reason, n in report.get("dropped", {}).items())
        parts.append(f"{name} {report.get('used')} of {report.get('items')} items"
                     + (f" (left out: {dropped})" if dropped else "")
                     + (f", {report['truncated']} cut to the token window" if report.get("truncated") else ""))
    subset = (data.get("train") or {}).get("subset", "")
    return "data: " + "; ".join(parts) + (f"; item subset {subset}" if subset else "")


def _print_record(record: dict[str, Any]) -> None:
    if "loss" in record:
        print(f"step {record['step']} loss {record['loss']:.4f} lr {record['lr']:.3g} "
              f"{record['samples_per_s']:.1f} samples/s", flush=True)
    else:
        print(f"step {record['step']} validation loss {record['val_loss']:.4f}"
              f"{' (best)' if record['improved'] else ''}", flush=True)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _ProgressBars:
    """One tqdm bar per scoring stage."""

    def __enter__(self) -> _ProgressBars:
        self.bars: dict[str, tqdm] = {}
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=stage.split()[-1].rstrip("s"))
        bar.update(done - bar.n)

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()
