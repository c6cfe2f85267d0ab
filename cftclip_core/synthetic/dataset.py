"""Rendering a world into a dataset folder (images, ``data.csv``, ``world.json``) and reading it back."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cftclip_core.errors import ConfigError, DataError
from cftclip_core.synthetic.world import (
    WORLD_FORMAT,
    Context,
    Person,
    World,
    WorldConfig,
    check_range,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
TABLE_COLUMNS = (
    "id", "image", "title", "summary", "label", "split",
    "person", "named_person", "background", "object", "colour",
)
SPLIT_NAMES = ("train", "val", "test")
IMAGE_NEGATIVES_FILE = "image-negatives.csv"
IMAGE_NEGATIVE_COLUMNS = ("id", "split", "other_image", "other_person", "empty_image")


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Exact counts by largest remainder, so small sets honour the fractions as well as possible."""
    raw = [n * f for f in fractions]
    counts = [int(np.floor(r)) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _validate_dataset_args(n_items: int, split_fractions: Sequence[float], negative_fraction: float,
                           pairs: bool, anonymous: bool, seed: int) -> None:
    check_range("n_items", n_items, 1, 10_000_000, "the number of images to render")
    if len(split_fractions) != 3 or any(f < 0 for f in split_fractions) or abs(sum(split_fractions) - 1) > 1e-6:
        raise ConfigError(f"split_fractions={tuple(split_fractions)} is not valid; give three non-negative "
                          "fractions for train, val and test that add up to 1, e.g. (0.8, 0.1, 0.1).")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ConfigError(f"negative_fraction={negative_fraction} is out of range; use a value from 0 to 1.")
    if pairs and anonymous:
        raise ConfigError("pairs=True needs texts that name people, but anonymous=True removes the names; "
                          "choose one of them.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} is not valid; use a non-negative integer.")


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    ours = [out / "data.csv", out / "world.json", out / "images"]
    existing = [p for p in ours if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds a generated dataset ({existing[0].name}); choose an empty "
                          "folder or pass overwrite=True (--overwrite) to replace it.")
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "images").mkdir(parents=True)


def generate_dataset(
    out_dir: str | os.PathLike[str],
    n_items: int,
    world_config: WorldConfig | None = None,
    *,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    negative_fraction: float = 0.5,
    pairs: bool = False,
    anonymous: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    image_negatives: Sequence[str] = (),
) -> Path:
    """Render ``n_items`` images into ``out_dir`` and write ``data.csv`` and ``world.json``; return the CSV path.

    Each image is one row, labelled 0 (another person's name) with probability ``negative_fraction``
    (an exact count per split). ``pairs=True`` writes each image twice, with its positive and its
    negative text (rows ``<id>-pos`` and ``<id>-neg``, same split), as used for evaluation.
    ``anonymous=True`` writes "A person ..." texts with an empty label, for pre-training without names.
    Images are written as they are rendered (never all held in memory); the table appears only when
    everything is done. Besides the standard columns the CSV holds ``person`` (who is drawn),
    ``named_person`` (who the text names) and the context elements, for building counterfactuals.
    ``progress(done, total)`` is called about 200 times in all.

    ``image_negatives`` names splits (e.g. ``("test",)``) whose images also get two negative images,
    listed in ``image-negatives.csv`` (columns ``IMAGE_NEGATIVE_COLUMNS``; ``id`` is the image's id,
    without ``-pos``/``-neg``): ``other_image``, another person (``other_person``, uniform over the rest)
    in the same context, and ``empty_image``, the same context with nobody; each at a freshly drawn
    layout, from its own random stream (the dataset's other images and texts do not change).
    """
    world_config = world_config or WorldConfig()
    _validate_dataset_args(n_items, split_fractions, negative_fraction, pairs, anonymous, seed)
    unknown = sorted(set(image_negatives) - set(SPLIT_NAMES))
    if unknown:
        raise ConfigError(f"image_negatives={tuple(image_negatives)} names unknown split(s) {', '.join(unknown)}; "
                          f"use {', '.join(SPLIT_NAMES)}.")
    world = World.from_config(world_config)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    started = time.perf_counter()

    plan_rng = np.random.default_rng([seed, 0])
    counts = _split_counts(n_items, split_fractions)
    splits = np.repeat(np.arange(3), counts)[plan_rng.permutation(n_items)]
    negative = np.zeros(n_items, dtype=bool)
    if not (pairs or anonymous):
        for s, count in enumerate(counts):
            members = np.flatnonzero(splits == s)
            chosen = plan_rng.permutation(members)[: round(count * negative_fraction)]
            negative[chosen] = True

    width = max(6, len(str(n_items - 1)))
    step = max(1, n_items // 200)
    rows_written = 0
    label_counts: Counter[str] = Counter()
    tmp_csv = out / "data.csv.partial"
    negatives_rows: list[list[str]] = []
    with tmp_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(TABLE_COLUMNS)
        for i in range(n_items):
            rng = np.random.default_rng([seed, 1, i])
            # Image first, then text, then the other name: the image of item i does not depend on labels.
            person = world.people[int(rng.integers(len(world.people)))]
            context = world.contexts[int(rng.integers(len(world.contexts)))]
            image = world.render(person, context, rng)
            parts = world.draw_text_parts(rng)
            other_index = int(rng.integers(len(world.people) - 1))
            other = world.people[other_index + (other_index >= world.people.index(person))]

            item_id = f"syn-{i:0{width}d}"
            rel = f"images/{i // 1000:04d}/{item_id}.png"
            (out / rel).parent.mkdir(exist_ok=True)
            image.save(out / rel, format="PNG")

            split = SPLIT_NAMES[int(splits[i])]
            if split in image_negatives:
                negatives_rows.append([item_id, split, *_render_image_negatives(world, person, context, out, rel,
                                                                                np.random.default_rng([seed, 2, i]))])
            context_cols = [context.background, context.object, context.colour]
            if anonymous:
                variants = [(item_id, None, "")]
            elif pairs:
                variants = [(f"{item_id}-pos", person, "1"), (f"{item_id}-neg", other, "0")]
            else:
                variants = [(item_id, other, "0") if negative[i] else (item_id, person, "1")]
            for row_id, named, label in variants:
                name = named.name if named else None
                writer.writerow([row_id, rel, world.caption(name, context, parts), world.summary(name, context, parts),
                                 label, split, person.name, name or "", *context_cols])
                label_counts[label or "none"] += 1
                rows_written += 1
            if progress is not None and ((i + 1) % step == 0 or i + 1 == n_items):
                progress(i + 1, n_items)

    if image_negatives:
        with (out / IMAGE_NEGATIVES_FILE).open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([list(IMAGE_NEGATIVE_COLUMNS), *negatives_rows])
    meta = world.to_json()
    meta["dataset"] = {
        "n_images": n_items, "n_rows": rows_written, "seed": seed, "split_fractions": list(split_fractions),
        "negative_fraction": negative_fraction, "pairs": pairs, "anonymous": anonymous,
        "split_counts": dict(zip(SPLIT_NAMES, counts)), "label_counts": dict(label_counts),
        "image_negatives": list(image_negatives),
    }
    (out / "world.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    csv_path = out / "data.csv"
    tmp_csv.replace(csv_path)
    elapsed = time.perf_counter() - started
    logger.info("Generated %d synthetic images (%d rows) in %s in %.1f s (%.2f ms per image)",
                n_items, rows_written, out, elapsed, 1000 * elapsed / n_items)
    return csv_path


def _render_image_negatives(world: World, person: Person, context: Context, out: Path, rel: str,
                            rng: np.random.Generator) -> list[str]:
    """Render the other-person and the empty image of one item beside its image; their table cells."""
    other_index = int(rng.integers(len(world.people) - 1))
    other = world.people[other_index + (other_index >= world.people.index(person))]
    stem = rel.removesuffix(".png")
    world.render(other, context, rng).save(out / f"{stem}-other.png", format="PNG")
    world.render(None, context, rng).save(out / f"{stem}-empty.png", format="PNG")
    return [f"{stem}-other.png", other.name, f"{stem}-empty.png"]


def read_image_negatives(folder: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """``image-negatives.csv`` of a generated dataset: image id -> its row (see ``generate_dataset``)."""
    path = Path(folder) / IMAGE_NEGATIVES_FILE
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"Cannot read {path} ({exc}); generate the dataset with image_negatives=('test',).") from exc
    if rows and set(IMAGE_NEGATIVE_COLUMNS) - set(rows[0]):
        raise DataError(f"{path} lacks columns {', '.join(sorted(set(IMAGE_NEGATIVE_COLUMNS) - set(rows[0])))}; "
                        "generate the dataset again with this version.")
    return {row["id"]: row for row in rows}


def load_world(path: str | os.PathLike[str]) -> World:
    """Rebuild the world of a generated dataset from its folder or its ``world.json``."""
    p = Path(path)
    json_path = p / "world.json" if p.is_dir() else p
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"Cannot read the synthetic world description {json_path}: {exc}. "
                        "Point to a folder made by generate_dataset (it holds world.json).") from exc
    if not isinstance(meta, dict) or meta.get("format") != WORLD_FORMAT:
        raise DataError(f"{json_path} is not a synthetic world description (expected format {WORLD_FORMAT}); "
                        "regenerate the dataset with generate_dataset.")
    try:
        world = World.from_config(WorldConfig(**meta["config"]))
    except (TypeError, ConfigError) as exc:
        raise DataError(f"{json_path} holds a world configuration this version cannot use ({exc}); "
                        "regenerate the dataset with this version.") from exc
    if [asdict(x) for x in world.people] != meta["people"] or [asdict(c) for c in world.contexts] != meta["contexts"]:
        raise DataError(f"{json_path} was made by a different version of the generator (people or contexts "
                        "differ); regenerate the dataset with this version.")
    return world
