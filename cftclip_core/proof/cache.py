"""The proof's cache: rendered worlds and stage-0 runs, each in a folder named by a hash of everything it
depends on, built once under a file lock so that parallel runs share them without racing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from cftclip_core.errors import DataError
from cftclip_core.formats import Record, Table, read_table
from cftclip_core.heartbeat import Heartbeat
from cftclip_core.proof.model import initial_model, stage0_config
from cftclip_core.specs.proof import PROOF_VERSION, ProofSettings, world_config
from cftclip_core.synthetic import (
    World,
    anonymize,
    generate_dataset,
    load_world,
    read_image_negatives,
)
from cftclip_core.training import SNAPSHOTS_DIR, train

logger = logging.getLogger(__name__)

STAGE0_DOSES_FILE = "doses.json"  # in a stage-0 entry: dose -> validation loss at that step


class RunStopped(Exception):
    """The run was asked to stop (SIGTERM) and did."""


def cache_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _locked(target: Path) -> FileLock:
    """The lock of a cache entry: one process builds it, the others wait and then reuse it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target.with_name(target.name + ".lock")))


def world_folder(cache: Path, world: str, settings: ProofSettings, data_seed: int) -> Path:
    config = world_config(world, settings, data_seed)
    counts = (settings.train_items, settings.val_items, settings.test_items)
    payload = {"version": PROOF_VERSION, "world": dataclasses.asdict(config), "items": counts}
    return cache / f"world-{world}-data{data_seed}-{cache_key(payload)}"


def prepare_world(cache: Path, world: str, settings: ProofSettings, data_seed: int) -> Path:
    """Render the world of ``data_seed`` once: each image with its caption and another person's (pairs), and
    the test images' image-side negatives (another person in the same context; nobody)."""
    target = world_folder(cache, world, settings, data_seed)
    with _locked(target):
        if not (target / "data.csv").is_file():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            counts = (settings.train_items, settings.val_items, settings.test_items)
            total = sum(counts)
            logger.info("Rendering the %s world of data seed %d: %d images into %s", world, data_seed, total, target)
            generate_dataset(partial, total, world_config(world, settings, data_seed),
                             split_fractions=[c / total for c in counts], pairs=True, seed=data_seed,
                             image_negatives=("test",))
            os.replace(partial, target)
    return target


@dataclass(frozen=True)
class WorldData:
    """A rendered world's tables: ``rows`` holds each image twice (its caption and another person's)."""

    world: World
    rows: Table
    image_negatives: dict[str, dict[str, str]]  # test image id -> other_image, other_person, empty_image

    @classmethod
    def load(cls, folder: Path) -> WorldData:
        return cls(load_world(folder), read_table(folder / "data.csv"), read_image_negatives(folder))

    def _table(self, records: list[Record]) -> Table:
        return Table(records, self.rows.base_dir, self.rows.source)

    def pairs(self, *splits: str) -> Table:
        return self._table([r for r in self.rows.records if r.split in splits])

    def positives(self, split: str) -> Table:
        return self._table([r for r in self.rows.records if r.split == split and r.label == 1])

    def anonymous(self, split: str) -> Table:
        """The positives with the name replaced by "a person" (stage 0 learns contexts, not people)."""
        return self._table([
            dataclasses.replace(r, title=anonymize(r.title, named(r)), summary=anonymize(r.summary, named(r)),
                                label=None)
            for r in self.positives(split).records
        ])


def named(record: Record) -> str:
    return str(record.extra["named_person"])


def image_id(record: Record) -> str:
    """The id of a pair row's image (``syn-000012-pos`` -> ``syn-000012``)."""
    return record.id.rsplit("-", 1)[0]


@dataclass(frozen=True)
class Stage0:
    """One stage-0 run of (world, seed, data seed), saved after each dose."""

    folder: Path
    val_loss: dict[int, float]  # dose -> validation loss (anonymous captions) at that step

    def model_dir(self, dose: int) -> Path:
        return self.folder / f"step-{dose}"

    @classmethod
    def load(cls, folder: Path) -> Stage0:
        losses = json.loads((folder / STAGE0_DOSES_FILE).read_text(encoding="utf-8"))
        return cls(folder, {int(dose): float(value) for dose, value in losses.items()})


def stage0_folder(cache: Path, world: str, data: WorldData, settings: ProofSettings, seed: int,
                  data_seed: int) -> Path:
    fields = ("image_size", "text_field", "stage0_steps", "stage0_lr", "batch_size", "warmup_steps",
              "weight_decay", "grad_clip")
    payload = {"version": PROOF_VERSION, "data": data.rows.base_dir.name, "seed": seed,
               **{name: settings.result_key()[name] for name in fields}}
    return cache / f"stage0-{world}-seed{seed}-data{data_seed}-{cache_key(payload)}"


def ensure_stage0(cache: Path, world: str, data: WorldData, settings: ProofSettings, seed: int, data_seed: int, *,
                  stop: Callable[[], bool] = lambda: False, on_train: Callable[[], None] = lambda: None,
                  beat: Heartbeat | None = None) -> Stage0:
    """The stage-0 run of (world, seed, data seed), trained on first use (``on_train`` is called first) and
    then shared by every arm and dose."""
    target = stage0_folder(cache, world, data, settings, seed, data_seed)
    with _locked(target):
        if (target / STAGE0_DOSES_FILE).is_file():
            return Stage0.load(target)
        on_train()
        work = target.with_name(target.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        logger.info("Stage 0 for %s, seed %d, data seed %d: %d steps on anonymous captions, saved at %s", world,
                    seed, data_seed, settings.stage0_total, ", ".join(map(str, settings.stage0_steps)))
        result = train(stage0_config(settings, cache, seed), data.anonymous("train"), data.anonymous("val"), work,
                       model=initial_model(settings, seed), stop=stop, heartbeat=beat)
        if result.interrupted:
            shutil.rmtree(work, ignore_errors=True)
            raise RunStopped()
        history = json.loads((work / "metrics.json").read_text(encoding="utf-8"))["history"]
        at_step = {record["step"]: record["val_loss"] for record in history}
        missing = [dose for dose in settings.stage0_steps if dose not in at_step]
        if missing:
            raise DataError(f"Stage 0 in {work} was not validated at step(s) {missing}; the trainer's validation "
                            "cadence changed. Report this as a bug.")
        shutil.rmtree(work / "best", ignore_errors=True)  # the doses are the snapshots, not the lowest validation loss
        for dose in settings.stage0_steps:
            os.replace(work / SNAPSHOTS_DIR / f"step-{dose}", work / f"step-{dose}")
        os.rmdir(work / SNAPSHOTS_DIR)
        for name in ("config.json", "log.jsonl", "metrics.json"):  # the trainer's record, beside the models
            os.replace(work / name, work / f"stage0-{name}")
        (work / STAGE0_DOSES_FILE).write_text(json.dumps({str(d): at_step[d] for d in settings.stage0_steps}),
                                              encoding="utf-8")
        os.replace(work, target)
    return Stage0.load(target)
