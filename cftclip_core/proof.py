"""The synthetic proof: does counterfactual (name-swap) fine-tuning teach a CLIP people's names where
plain contrastive fine-tuning does not?

Two synthetic worlds (``cftclip_core.synthetic``), with the same 16 people:

* ``many``: 128 contexts (8 backgrounds x 4 objects x 4 colours), each named in the caption. A random
  batch of 64 rarely holds two items of one context, so plain contrastive training can match images
  to texts by context alone, as with real news.
* ``few``: 6 contexts. Random batches are full of same-context negatives that differ by name.

Every arm of a seed starts from the same stage-0 model: a tiny CLIP pre-trained with the plain CLIP
loss on captions whose name is replaced by "a person" (like CLIP on news, it knows contexts, not these
people). Stage 1 trains every arm for the same steps on the same batches:

  zero-shot  the stage-0 model, not trained further
  clip       plain symmetric CLIP loss, learned scale
  cft        the paper's loss: image-to-text at a fixed temperature, M entity-swap counterfactuals per text
  i2t        the same image-to-text loss without counterfactuals (separates counterfactuals from loss form)
  cftsym     cft plus a text-to-image term, learned scale

Evaluation on held-out test images, each with its caption (label 1) and the same caption naming
another person (label 0): ROC-AUC; F1 at the threshold that maximises F1 on the validation pairs;
16-way name accuracy (the caption with every person's name, highest similarity wins); and context
AUC (the anonymous caption with the image's context versus another context), which shows whether a
model matches contexts.

Commands (``python -m cftclip_core.proof ...``):

  all --out DIR [--seeds 0-4] [--worlds many,few] [--arms zero-shot,clip,cft,i2t,cftsym] [--jobs N]
      [--cache CACHE] [SETTINGS]
      Renders each world once, then runs every (world, arm, seed) as its own ``run`` process, N at a
      time, in DIR/runs/WORLD/ARM/seed-S (output in its run.log); runs already finished there are kept.
      Then writes DIR/results.csv and DIR/table.md. Exit 0, or 1 when a run failed.
  run --world W --arm A --seed S --out RUN_DIR --cache CACHE [SETTINGS]
      One run; the app's jobs page launches exactly this. Exit 0 done; 2 a user error (message on
      stderr, nothing trained); 143 stopped by SIGTERM (start it again to rerun: the cached stage 0 is
      reused); 1 anything else. A RUN_DIR that holds a finished run is refused.
  table DIR
      Re-aggregates the finished runs under DIR into DIR/results.csv and DIR/table.md.

SETTINGS, the same flags for ``all`` and ``run`` (defaults reproduce the reference prototype):
  --train-items 3000 --val-items 400 --test-items 800   images per world (one render shared by all seeds)
  --image-size 64 --text-field title
  --stage0-steps 400 --stage0-lr 0.001                  stage 0 (clip loss, anonymous captions)
  --steps 300 --lr 0.0003                               stage 1, every trained arm
  --batch-size 64 --warmup-steps 30 --weight-decay 0.05 --grad-clip 1.0   both stages
  --swaps 3 --temperature 0.05    counterfactuals per text (cft, cftsym); fixed temperature (cft, i2t)
  --device cpu

CACHE (default DIR/cache for ``all``) holds the rendered worlds, the pixel cache and the stage-0
models, each in a folder named by a hash of everything it depends on and built under a file lock, so
parallel runs share them without racing.

RUN_DIR follows the training run-folder contract where it applies: heartbeat.json; for trained arms
the trainer's config.json, log.jsonl and best/ (the checkpoint with the lowest validation loss, as
the trainer keeps it; that is the one evaluated); eval/scores.csv (the scores file of the validation
and test pairs, columns id, split, label, similarity, truncated, ...); eval/metrics.json (test metrics
at the validation-tuned threshold with bootstrap intervals, plus name_accuracy and context_auc);
proof.json (world, arm, seed, settings); and, written last, metrics.json: the trainer's summary plus
world, arm, seed, settings, stage0_model, roc_auc, f1, name_accuracy, context_auc, threshold,
n_test_images and seconds per phase.

Each run process uses one CPU thread; results depend only on the settings and seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from cftclip_core import metrics
from cftclip_core.cli import EXIT_TERMINATED
from cftclip_core.errors import CftClipError, ConfigError, DataError
from cftclip_core.evaluation import evaluate_scores, score_table, write_json
from cftclip_core.formats import TEXT_FIELDS, Record, Table, read_table
from cftclip_core.heartbeat import Heartbeat
from cftclip_core.images import PixelCache, PreprocessConfig
from cftclip_core.models import TINY_TOKENIZER_DIR, LoadedModel, load_model, quiet_progress_bars_off_terminal
from cftclip_core.scoring import ScoreItem, ScoreOptions, score_pairs
from cftclip_core.synthetic import Context, World, WorldConfig, anonymize, generate_dataset, load_world, swap_name
from cftclip_core.training import TrainConfig, train

logger = logging.getLogger(__name__)

PROOF_VERSION = 1  # bump when rendering, the model or stage 0 change, so old cache entries are not reused
DATA_SEED = 0  # one render per world, shared by every seed (seeds vary initialisation and batch order)
CONTEXT_NEGATIVE_SEED = 0  # which other context each test image gets in the context AUC


@dataclass(frozen=True)
class WorldSpec:
    config: WorldConfig
    description: str


WORLDS: dict[str, WorldSpec] = {
    "many": WorldSpec(WorldConfig(), "128 contexts: random batch negatives almost never share the context"),
    "few": WorldSpec(WorldConfig(n_contexts=6), "6 contexts: random batch negatives often share the context"),
}
ARMS: dict[str, str | None] = {  # arm -> stage-1 loss (None: not trained)
    "zero-shot": None, "clip": "clip", "cft": "cft", "i2t": "i2t", "cftsym": "cftsym",
}
BASELINE_ARM = "clip"
REPORTED = (("roc_auc", "ROC-AUC"), ("f1", "F1 (val threshold)"), ("name_accuracy", "name accuracy"),
            ("context_auc", "context AUC"))


@dataclass(frozen=True)
class ProofSettings:
    """Everything besides world, arm and seed that a run's result depends on (and ``device``)."""

    train_items: int = 3000
    val_items: int = 400
    test_items: int = 800
    image_size: int = 64
    text_field: str = "title"
    stage0_steps: int = 400
    stage0_lr: float = 1e-3
    steps: int = 300
    lr: float = 3e-4
    batch_size: int = 64
    warmup_steps: int = 30
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    swaps: int = 3
    temperature: float = 0.05
    device: str = "cpu"

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the flag of the first invalid value."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"--{_flag(name)}={getattr(self, name)!r} is not valid: {why}.")

        for name in ("train_items", "stage0_steps", "steps", "batch_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "use a positive integer")
        for name in ("val_items", "test_items"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 2:
                raise bad(name, "use at least 2 images")
        if self.train_items < self.batch_size:
            raise bad("train_items", f"it must be at least --batch-size ({self.batch_size})")
        if not _is_int(self.image_size) or not 32 <= self.image_size <= 1024 or self.image_size % 8:
            raise bad("image_size", "use a multiple of 8 from 32 to 1024 (the model's patches are 8 pixels)")
        if self.text_field not in TEXT_FIELDS:
            raise bad("text_field", f"choose one of {', '.join(TEXT_FIELDS)}")
        for name in ("stage0_lr", "lr", "grad_clip", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise bad(name, "use a positive number")
        if not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            raise bad("weight_decay", "use 0 or a positive number")
        if not _is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise bad("warmup_steps", "use 0 or a positive integer")
        most = min(spec.config.n_people for spec in WORLDS.values()) - 1
        if not _is_int(self.swaps) or not 1 <= self.swaps <= most:
            raise bad("swaps", f"use 1 to {most} (each counterfactual names a different other person)")
        if not self.device:
            raise bad("device", "use cpu, cuda or cuda:N")

    def to_args(self) -> list[str]:
        """The flags that give these settings (those that differ from the defaults)."""
        default = ProofSettings()
        return [part for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(default, f.name)
                for part in (f"--{_flag(f.name)}", str(getattr(self, f.name)))]

    def result_key(self) -> dict[str, Any]:
        """The settings results depend on (all but the device), for comparing runs."""
        values = dataclasses.asdict(self)
        del values["device"]
        return values


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(field_name: str) -> str:
    return field_name.replace("_", "-")


def check_choice(kind: str, value: str, known: Sequence[str]) -> str:
    if value not in known:
        raise ConfigError(f"Unknown {kind} '{value}': choose one of {', '.join(known)}.")
    return value


def parse_list(kind: str, text: str, known: Sequence[str]) -> list[str]:
    """A comma-separated list of known names, in the order given, without repeats."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"No {kind} given; name one or more of {', '.join(known)}, separated by commas.")
    return list(dict.fromkeys(check_choice(kind, name, known) for name in names))


def parse_seeds(text: str) -> list[int]:
    """Seeds such as ``0-4``, ``0,2,3`` or ``0-2,7``, in the order given, without repeats."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise ConfigError(f"--seeds '{text}' is not valid: give non-negative integers and ranges such as "
                              "0-4 or 0,2,3 (a range runs upwards).")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        seeds.extend(range(first, last + 1))
    return list(dict.fromkeys(seeds))


def format_seeds(seeds: Sequence[int]) -> str:
    ordered = sorted(seeds)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))


# --- cache: rendered worlds and stage-0 models ------------------------------------------------------
def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _locked(target: Path) -> FileLock:
    """The lock of a cache entry: one process builds it, the others wait and then reuse it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target.with_name(target.name + ".lock")))


def world_config(world: str, settings: ProofSettings) -> WorldConfig:
    return dataclasses.replace(WORLDS[world].config, image_size=settings.image_size)


def prepare_world(cache: Path, world: str, settings: ProofSettings) -> Path:
    """Render ``world`` once into the cache (pairs: each image with its positive and negative caption)."""
    config = world_config(world, settings)
    counts = (settings.train_items, settings.val_items, settings.test_items)
    target = cache / f"world-{world}-{_key({'version': PROOF_VERSION, 'world': dataclasses.asdict(config), 'items': counts})}"
    with _locked(target):
        if not (target / "data.csv").is_file():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            total = sum(counts)
            logger.info("Rendering the %s world: %d images into %s", world, total, target)
            generate_dataset(partial, total, config, split_fractions=[c / total for c in counts], pairs=True,
                             seed=DATA_SEED)
            os.replace(partial, target)
    return target


@dataclass(frozen=True)
class WorldData:
    """A rendered world's tables: ``rows`` holds each image twice (its caption and another person's)."""

    world: World
    rows: Table

    @classmethod
    def load(cls, folder: Path) -> WorldData:
        return cls(load_world(folder), read_table(folder / "data.csv"))

    def _table(self, records: list[Record]) -> Table:
        return Table(records, self.rows.base_dir, self.rows.source)

    def pairs(self, *splits: str) -> Table:
        return self._table([r for r in self.rows.records if r.split in splits])

    def positives(self, split: str) -> Table:
        return self._table([r for r in self.rows.records if r.split == split and r.label == 1])

    def anonymous(self, split: str) -> Table:
        """The positives with the name replaced by "a person" (stage 0 learns contexts, not people)."""
        return self._table([
            dataclasses.replace(r, title=anonymize(r.title, _named(r)), summary=anonymize(r.summary, _named(r)),
                                label=None)
            for r in self.positives(split).records
        ])


def _named(record: Record) -> str:
    return str(record.extra["named_person"])


def proof_model_config(tokenizer: CLIPTokenizer, image_size: int) -> CLIPConfig:
    """The prototype's tiny CLIP (about 0.6M parameters): a 2-layer text and a 3-layer vision tower."""
    return CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=32, projection_dim=64,
            # pad, eos and unk share one id in the trained tokenizer; pooling reads the first eos position
            # only when eos_token_id is that id.
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        vision_config=dict(
            hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=3,
            image_size=image_size, patch_size=8, projection_dim=64,
        ),
        projection_dim=64,
    )


def initial_model(settings: ProofSettings, seed: int) -> LoadedModel:
    """A freshly initialised tiny CLIP with the product's shipped tokenizer (which knows every world word)."""
    tokenizer = CLIPTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    torch.manual_seed(seed)
    model = CLIPModel(proof_model_config(tokenizer, settings.image_size)).to(settings.device)
    size = settings.image_size
    return LoadedModel(name="proof-initial", fingerprint=f"proof-initial-v{PROOF_VERSION}-seed{seed}", model=model,
                       tokenizer=tokenizer, preprocess=PreprocessConfig(size=size, crop=size), is_tiny=False)


def train_config(settings: ProofSettings, cache: Path, *, loss: str, seed: int, stage0: bool,
                 model: str) -> TrainConfig:
    """Stage 0 or stage 1 for the trainer: every layer trains; validation at each epoch end never stops
    the run early, so every arm takes the same steps; the best validation loss is kept."""
    steps = settings.stage0_steps if stage0 else settings.steps
    return TrainConfig(
        model=model, loss=loss, temperature=settings.temperature, lr=settings.stage0_lr if stage0 else settings.lr,
        weight_decay=settings.weight_decay, batch_size=settings.batch_size, max_epochs=steps, schedule="cosine",
        warmup_steps=settings.warmup_steps, val_every_steps=steps, patience=steps,
        freeze_text_layers=0, freeze_vision_layers=0, counterfactuals_per_text=settings.swaps, seed=seed,
        precision="fp32", grad_clip=settings.grad_clip, text_field=settings.text_field, max_steps=steps,
        device=settings.device, pixel_cache_dir=str(cache / "pixels"),
    )


class RunStopped(Exception):
    """The run was asked to stop (SIGTERM) and did."""


def ensure_stage0(cache: Path, world: str, data: WorldData, settings: ProofSettings, seed: int, *,
                  stop: Callable[[], bool] = lambda: False, beat: Heartbeat | None = None) -> Path:
    """The stage-0 model of (world, seed), trained on first use and then shared by every arm."""
    fields = ("image_size", "text_field", "stage0_steps", "stage0_lr", "batch_size", "warmup_steps",
              "weight_decay", "grad_clip")
    payload = {"version": PROOF_VERSION, "data": data.rows.base_dir.name, "seed": seed,
               **{name: getattr(settings, name) for name in fields}}
    target = cache / f"stage0-{world}-seed{seed}-{_key(payload)}"
    with _locked(target):
        if (target / "config.json").is_file():
            return target
        work = target.with_name(target.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        logger.info("Stage 0 for %s, seed %d: %d steps on anonymous captions", world, seed, settings.stage0_steps)
        config = train_config(settings, cache, loss="clip", seed=seed, stage0=True, model="proof-initial")
        result = train(config, data.anonymous("train"), data.anonymous("val"), work,
                       model=initial_model(settings, seed), stop=stop, heartbeat=beat)
        if result.interrupted:
            shutil.rmtree(work, ignore_errors=True)
            raise RunStopped()
        for name in ("config.json", "log.jsonl", "metrics.json"):  # the trainer's record, beside the model
            os.replace(work / name, result.best_dir / f"stage0-{name}")
        os.replace(result.best_dir, target)
        shutil.rmtree(work, ignore_errors=True)
    return target


# --- evaluation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    scores: pd.DataFrame  # the scores file of the validation and test pairs
    report: dict[str, Any]  # evaluation.evaluate_scores: test metrics at the validation-tuned threshold
    name_accuracy: float
    context_auc: float

    def summary(self) -> dict[str, Any]:
        values = self.report["metrics"]
        return {"roc_auc": values["roc_auc"]["value"], "f1": values["f1"]["value"],
                "name_accuracy": self.name_accuracy, "context_auc": self.context_auc,
                "threshold": self.report["threshold"]["value"], "n_test_images": self.report["n"] // 2}


def _other_context_caption(text: str, record: Record, other: Context) -> str:
    """``text`` (an anonymous caption of ``record``) describing the context ``other`` instead."""
    e = record.extra
    swapped = text.replace(f"{e['colour']} {e['object']}", f"{other.colour} {other.object}")
    swapped = swapped.replace(f"the {e['background']}", f"the {other.background}")
    if swapped == text:
        raise DataError(f"The caption of item '{record.id}' does not name its context as the synthetic world "
                        "writes it; regenerate the dataset with this version.")
    return swapped


def evaluate_model(loaded: LoadedModel, data: WorldData, settings: ProofSettings, cache: Path) -> Evaluation:
    """Score the validation and test pairs, tune the threshold on validation, and measure the test set;
    then the 16-way name choice and the context AUC on the test images."""
    field_name = settings.text_field
    scoring = {"pixel_cache": PixelCache(cache / "pixels", loaded.preprocess),
               "options": ScoreOptions(batch_size=256, precision="fp32", decode_workers=1)}
    scores, _ = score_table(loaded, data.pairs("val", "test"), field_name, **scoring)
    report = evaluate_scores(scores, "f1-optimal", test_split="test", n_bootstrap=1000, source="eval/scores.csv")

    def similarities(items: list[ScoreItem]) -> np.ndarray:
        return score_pairs(loaded, items, **scoring).similarities.astype(np.float64)

    positives = data.positives("test").records
    names = data.world.names
    name_items = [ScoreItem(f"{r.id}:{k}", data.rows.image_path(r), swap_name(r.text(field_name), _named(r), name))
                  for r in positives for k, name in enumerate(names)]
    chosen = similarities(name_items).reshape(len(positives), len(names)).argmax(axis=1)
    name_accuracy = float(np.mean([names[k] == r.extra["person"] for k, r in zip(chosen, positives)]))

    rng = np.random.default_rng(CONTEXT_NEGATIVE_SEED)
    contexts = data.world.contexts
    context_items = []
    for r in positives:
        text = anonymize(r.text(field_name), _named(r))
        own = contexts.index(Context(r.extra["background"], r.extra["object"], r.extra["colour"]))
        other = contexts[(own + 1 + int(rng.integers(len(contexts) - 1))) % len(contexts)]
        path = data.rows.image_path(r)
        context_items += [ScoreItem(f"{r.id}:own", path, text),
                          ScoreItem(f"{r.id}:other", path, _other_context_caption(text, r, other))]
    context_auc = metrics.compute_metrics(similarities(context_items), [1, 0] * len(positives), 0.0).roc_auc
    return Evaluation(scores, report, name_accuracy, context_auc)


# --- one run ---------------------------------------------------------------------------------------
def run_dir_for(out: Path, world: str, arm: str, seed: int) -> Path:
    return out / "runs" / world / arm / f"seed-{seed}"


def finished_metrics(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's metrics.json, or None."""
    try:
        result = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) and {"world", "arm", "seed", "roc_auc"} <= set(result) else None


def run_one(world: str, arm: str, seed: int, run_dir: Path, cache: Path, settings: ProofSettings, *,
            stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Stage 0 (cached), stage 1 for ``arm`` and the evaluation, in ``run_dir``; returns metrics.json."""
    check_choice("world", world, list(WORLDS))
    check_choice("arm", arm, list(ARMS))
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"--seed {seed!r} is not valid; use a non-negative integer.")
    settings.validate()
    if finished_metrics(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds a finished run; choose another --out folder or delete it.")
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = cache.resolve()
    loss = ARMS[arm]
    write_json(run_dir / "proof.json", {"world": world, "world_description": WORLDS[world].description,
                                        "arm": arm, "loss": loss, "seed": seed,
                                        "settings": dataclasses.asdict(settings), "cache": str(cache)})
    beat = Heartbeat(run_dir).start()  # rewritten every few seconds until done, stopped or failed
    seconds: dict[str, float] = {}
    try:
        started = time.perf_counter()
        data = WorldData.load(prepare_world(cache, world, settings))
        seconds["data"] = time.perf_counter() - started

        started = time.perf_counter()
        stage0 = ensure_stage0(cache, world, data, settings, seed, stop=stop, beat=beat)
        seconds["stage0"] = time.perf_counter() - started
        loaded = load_model(str(stage0), device=settings.device)
        summary: dict[str, Any] = {"steps": 0}
        if loss is not None:
            if stop():
                raise RunStopped()
            started = time.perf_counter()
            config = train_config(settings, cache, loss=loss, seed=seed, stage0=False, model=str(stage0))
            result = train(config, data.positives("train"), data.positives("val"), run_dir, model=loaded,
                           stop=stop, heartbeat=beat)
            if result.interrupted:
                raise RunStopped()
            seconds["train"] = time.perf_counter() - started
            summary = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
            loaded = load_model(str(result.best_dir), device=settings.device)

        beat.beat(phase="evaluating")
        started = time.perf_counter()
        evaluation = evaluate_model(loaded, data, settings, cache)
        seconds["eval"] = time.perf_counter() - started
        (run_dir / "eval").mkdir(exist_ok=True)
        evaluation.scores.to_csv(run_dir / "eval" / "scores.csv", index=False)
        write_json(run_dir / "eval" / "metrics.json", {**evaluation.report, "name_accuracy": evaluation.name_accuracy,
                                                       "context_auc": evaluation.context_auc})
        result_metrics = {**summary, "world": world, "arm": arm, "seed": seed,
                          "settings": dataclasses.asdict(settings), "stage0_model": str(stage0),
                          **evaluation.summary(), "seconds": {k: round(v, 2) for k, v in seconds.items()}}
        write_json(run_dir / "metrics.json", result_metrics)  # last: marks the run finished
    except RunStopped:
        beat.beat(phase="stopped")
        raise
    except BaseException:
        beat.beat(phase="failed")
        raise
    beat.beat(phase="done")
    logger.info("%s %s seed %d: ROC-AUC %.3f, F1 %.3f, name accuracy %.3f, context AUC %.3f", world, arm, seed,
                result_metrics["roc_auc"], result_metrics["f1"], result_metrics["name_accuracy"],
                result_metrics["context_auc"])
    return result_metrics


# --- all runs --------------------------------------------------------------------------------------
def run_all(out: Path, worlds: Sequence[str], arms: Sequence[str], seeds: Sequence[int], settings: ProofSettings,
            *, jobs: int = 1, cache: Path | None = None) -> list[str]:
    """Every (world, arm, seed) as its own ``run`` process; returns the runs that failed."""
    if not _is_int(jobs) or jobs < 1:
        raise ConfigError(f"--jobs {jobs!r} is not valid; use a positive number of parallel runs.")
    settings.validate()
    out = out.resolve()
    cache = (cache or out / "cache").resolve()
    for world in worlds:
        prepare_world(cache, world, settings)
    todo = []
    for world in worlds:  # seeds innermost: parallel runs train different stage-0 models
        for arm in arms:
            for seed in seeds:
                if finished_metrics(run_dir_for(out, world, arm, seed)) is None:
                    todo.append((world, arm, seed))
    logger.info("%d runs to do, %d already finished; %d at a time",
                len(todo), len(worlds) * len(arms) * len(seeds) - len(todo), jobs)
    started = time.perf_counter()
    failed: list[str] = []
    done = 0
    done_lock = threading.Lock()

    def launch(world: str, arm: str, seed: int) -> None:
        nonlocal done
        run_dir = run_dir_for(out, world, arm, seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "cftclip_core.proof", "run", "--world", world, "--arm", arm,
                   "--seed", str(seed), "--out", str(run_dir), "--cache", str(cache), *settings.to_args()]
        package_root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        run_started = time.perf_counter()
        with (run_dir / "run.log").open("w", encoding="utf-8") as log_file:
            code = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, env=env).returncode
        result = finished_metrics(run_dir)
        with done_lock:
            done += 1
            label = f"[{done}/{len(todo)}] {world} {arm} seed {seed}"
            if code != 0 or result is None:
                failed.append(f"{world} {arm} seed {seed} (exit {code}; see {run_dir / 'run.log'})")
                logger.error("%s failed with exit status %d; see %s", label, code, run_dir / "run.log")
            else:
                logger.info("%s: ROC-AUC %.3f, name accuracy %.3f (%.0f s; %.0f s in all)", label,
                            result["roc_auc"], result["name_accuracy"], time.perf_counter() - run_started,
                            time.perf_counter() - started)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(launch, *run) for run in todo]:
            future.result()
    write_results(out)
    return failed


# --- aggregation -----------------------------------------------------------------------------------
def collect_results(root: Path) -> pd.DataFrame:
    """One row per finished run under ``root`` (world, arm, seed, the metrics, its folder)."""
    rows, settings_seen, where = [], {}, {}
    for path in sorted(root.rglob("metrics.json")):
        result = finished_metrics(path.parent)
        if result is None:
            continue
        key = (result["world"], result["arm"], result["seed"])
        if key in where:
            raise DataError(f"Two finished runs of {key[0]} {key[1]} seed {key[2]}: {where[key]} and {path.parent}; "
                            "keep one of them.")
        where[key] = path.parent
        settings = ProofSettings(**result["settings"]).result_key()
        settings_seen.setdefault(json.dumps(settings, sort_keys=True), path.parent)
        rows.append({"world": key[0], "arm": key[1], "seed": key[2],
                     **{name: result[name] for name, _ in REPORTED}, "threshold": result["threshold"],
                     "steps": result.get("steps", 0), "run_dir": str(path.parent.relative_to(root))})
    if not rows:
        raise DataError(f"No finished proof runs under {root}; run `python -m cftclip_core.proof all --out {root}` "
                        "first.")
    if len(settings_seen) > 1:
        folders = ", ".join(str(p) for p in settings_seen.values())
        raise DataError(f"The runs under {root} used different settings (e.g. {folders}); aggregate runs of one "
                        "setting only (move the others away).")
    frame = pd.DataFrame(rows)
    frame["world"] = pd.Categorical(frame["world"], [w for w in WORLDS if w in set(frame["world"])])
    frame["arm"] = pd.Categorical(frame["arm"], [a for a in ARMS if a in set(frame["arm"])])
    return frame.sort_values(["world", "arm", "seed"]).reset_index(drop=True)


@dataclass(frozen=True)
class Comparison:
    world: str
    arm: str
    baseline: str
    tests: dict[str, metrics.PairedSeedTest]  # metric -> paired test over the seeds both arms have


def comparisons(frame: pd.DataFrame) -> list[Comparison]:
    """Each arm against plain CLIP (and cft against i2t), per world, paired by seed."""
    result = []
    for world in frame["world"].cat.categories:
        in_world = frame[frame["world"] == world]
        arms = set(in_world["arm"])
        pairs = [(arm, BASELINE_ARM) for arm in ARMS if arm in arms and arm not in (BASELINE_ARM, "zero-shot")]
        if {"cft", "i2t"} <= arms:
            pairs.append(("cft", "i2t"))
        for arm, baseline in pairs:
            if baseline not in arms:
                continue
            a = in_world[in_world["arm"] == arm].set_index("seed")
            b = in_world[in_world["arm"] == baseline].set_index("seed")
            seeds = sorted(set(a.index) & set(b.index))
            if not seeds:
                continue
            tests = {name: metrics.paired_seed_test(a.loc[seeds, name].to_numpy(float), b.loc[seeds, name].to_numpy(float))
                     for name, _ in REPORTED}
            result.append(Comparison(str(world), arm, baseline, tests))
    return result


def _mean_std(values: pd.Series) -> str:
    summary = metrics.aggregate_seeds(values.to_numpy(float))
    return f"{summary.mean:.3f}" if math.isnan(summary.std) else f"{summary.mean:.3f} ± {summary.std:.3f}"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2g}"


def rerun_command(frame: pd.DataFrame, settings: ProofSettings) -> str:
    worlds = ",".join(map(str, frame["world"].cat.categories))
    arms = ",".join(map(str, frame["arm"].cat.categories))
    seeds = format_seeds(sorted(set(frame["seed"])))
    extra = " ".join(settings.to_args())
    return (f"python -m cftclip_core.proof all --out DIR --worlds {worlds} --arms {arms} --seeds {seeds}"
            + (f" {extra}" if extra else ""))


def format_table(frame: pd.DataFrame, settings: ProofSettings) -> str:
    """The Markdown report: mean ± std per world and arm, then paired differences."""
    names = [label for _, label in REPORTED]
    lines = ["# Synthetic proof: results", "",
             f"Settings: {json.dumps(settings.result_key())}", "",
             f"Rerun: `{rerun_command(frame, settings)}`", ""]
    by_world: dict[str, list[Comparison]] = {}
    for c in comparisons(frame):
        by_world.setdefault(c.world, []).append(c)
    for world in frame["world"].cat.categories:
        in_world = frame[frame["world"] == world]
        lines += [f"## World `{world}`: {WORLDS[str(world)].description}", "",
                  "| arm | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for arm in in_world["arm"].cat.categories:
            runs = in_world[in_world["arm"] == arm]
            if runs.empty:
                continue
            cells = [_mean_std(runs[name]) for name, _ in REPORTED]
            lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
        if by_world.get(str(world)):
            lines += ["", "Paired differences across seeds (mean difference, paired t-test p; seeds won on ROC-AUC):",
                      "", "| comparison | seeds | " + " | ".join(f"Δ {n}" for n in names) + " | won |",
                      "|---|---|" + "---|" * len(names) + "---|"]
            for c in by_world[str(world)]:
                cells = [f"{t.mean_diff:+.3f} (p={_p(t.p_value)})" for t in (c.tests[name] for name, _ in REPORTED)]
                auc = c.tests["roc_auc"]
                lines.append(f"| {c.arm} − {c.baseline} | {auc.n} | " + " | ".join(cells) + f" | {auc.wins_a}/{auc.n} |")
        lines.append("")
    return "\n".join(lines)


def write_results(root: Path) -> tuple[Path, Path]:
    """Write ROOT/results.csv and ROOT/table.md from the finished runs under ROOT."""
    frame = collect_results(root)
    first = finished_metrics(root / frame.loc[0, "run_dir"])
    assert first is not None
    settings = ProofSettings(**first["settings"])
    csv_path, md_path = root / "results.csv", root / "table.md"
    frame.to_csv(csv_path, index=False)
    md_path.write_text(format_table(frame, settings), encoding="utf-8")
    logger.info("Wrote %s (%d runs) and %s", csv_path, len(frame), md_path)
    return csv_path, md_path


# --- command line ----------------------------------------------------------------------------------
def _add_settings(parser: argparse.ArgumentParser) -> None:
    types = typing.get_type_hints(ProofSettings)
    group = parser.add_argument_group("settings (the defaults reproduce the reference prototype)")
    for f in dataclasses.fields(ProofSettings):
        group.add_argument(f"--{_flag(f.name)}", dest=f"set_{f.name}", type=types[f.name], default=f.default,
                           metavar=types[f.name].__name__.upper(), help=f"default: {f.default}")


def _settings(args: argparse.Namespace) -> ProofSettings:
    settings = ProofSettings(**{f.name: getattr(args, f"set_{f.name}") for f in dataclasses.fields(ProofSettings)})
    settings.validate()
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cftclip_core.proof", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    every = commands.add_parser("all", help="run every world, arm and seed, then write the table")
    every.add_argument("--out", required=True, type=Path, help="output folder (runs/, results.csv, table.md)")
    every.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2,3 (default: %(default)s)")
    every.add_argument("--worlds", default=",".join(WORLDS), help="default: %(default)s")
    every.add_argument("--arms", default=",".join(ARMS), help="default: %(default)s")
    every.add_argument("--jobs", type=int, default=1, help="runs at a time, one CPU thread each (default: 1)")
    every.add_argument("--cache", type=Path, default=None, help="cache folder (default: OUT/cache)")
    _add_settings(every)

    one = commands.add_parser("run", help="one world, arm and seed (what the jobs page launches)")
    one.add_argument("--world", required=True, help=f"one of {', '.join(WORLDS)}")
    one.add_argument("--arm", required=True, help=f"one of {', '.join(ARMS)}")
    one.add_argument("--seed", required=True, type=int)
    one.add_argument("--out", required=True, type=Path, help="the run folder")
    one.add_argument("--cache", required=True, type=Path, help="cache shared by runs (worlds, stage-0 models)")
    _add_settings(one)

    table = commands.add_parser("table", help="re-aggregate finished runs into results.csv and table.md")
    table.add_argument("dir", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    quiet_progress_bars_off_terminal()
    try:
        if args.command == "table":
            write_results(args.dir)
            return 0
        settings = _settings(args)
        if args.command == "all":
            failed = run_all(args.out, parse_list("world", args.worlds, list(WORLDS)),
                             parse_list("arm", args.arms, list(ARMS)), parse_seeds(args.seeds), settings,
                             jobs=args.jobs, cache=args.cache)
            for line in failed:
                logger.error("failed: %s", line)
            return 1 if failed else 0
        return _run_command(args, settings)
    except CftClipError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


def _run_command(args: argparse.Namespace, settings: ProofSettings) -> int:
    torch.set_num_threads(1)
    stop_requested = threading.Event()
    handles_signal = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.set()) if handles_signal else None
    try:
        run_one(args.world, args.arm, args.seed, args.out, args.cache, settings, stop=stop_requested.is_set)
    except RunStopped:
        logger.warning("Stopped by SIGTERM; start the same command again to rerun (a finished stage 0 stays cached).")
        return EXIT_TERMINATED
    finally:
        if handles_signal:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
