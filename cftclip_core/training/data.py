"""What a run trains on: the items of a table, their counterfactuals, and the rules that decide which items
take part (written to the run's config.json so a reader knows exactly what was trained on).

Rules, in order, per item:
* ``long_texts="drop"``: an item whose text (or a counterfactual it uses) is longer than the model's token
  window is dropped (``too_long``), as the original pipeline did; with ``"truncate"`` it is cut and counted.
* ``item_subset="counterfactual"`` (or a loss that uses counterfactuals): an item needs ``per_text``
  counterfactuals (``no_counterfactual``) that the model can tell from the text within its window
  (``identical_in_window``: a negative identical to its positive would teach nothing but noise). So the
  ``clip`` and ``i2t`` ablations train on the items ``cft`` trains on. When the data carries no
  counterfactual at all, every item trains and the record says so.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cftclip_core.counterfactuals import EntitySwapInfiller, KnownNamesTagger, TokenWindow, generate_counterfactuals
from cftclip_core.errors import DataError, TrainingError
from cftclip_core.formats import Record, Table, check_text_field
from cftclip_core.images import PixelCache, load_image, sha256_file
from cftclip_core.models import LoadedModel
from cftclip_core.specs import counterfactuals as cf_spec

logger = logging.getLogger(__name__)

Item = tuple[np.ndarray, str, tuple[str, ...]]
WORLD_SWAP = "the synthetic world's names, swapped when training (known-names tagger, entity swap, no filter)"


def table_counterfactuals(table: Table, per_text: int) -> list[tuple[str, ...]] | None:
    """Counterfactuals from the table's ``counterfactual`` (``counterfactual_2`` ...) columns, or None
    if it has none. An item whose counterfactuals are missing gets an empty tuple."""
    if not table.records or not cf_spec.has_counterfactual_columns(list(table.records[0].extra)):
        return None
    result = []
    for r in table.records:
        texts = tuple(str(r.extra[c]) for c in cf_spec.counterfactual_columns(per_text)
                      if r.extra.get(c) not in (None, ""))
        result.append(texts if len(texts) == per_text else ())
    return result


def swap_counterfactuals(
    records: Sequence[Record], names: Sequence[str], *, text_field: str, per_text: int, seed: int
) -> list[tuple[str, ...]]:
    """Entity-swap counterfactuals over known names (the synthetic world's people)."""
    results = generate_counterfactuals(
        records, KnownNamesTagger(names), EntitySwapInfiller(names), text_field=text_field,
        per_text=per_text, max_tries=max(10, per_text), seed=seed,
    )
    return [r.counterfactuals for r in results]


def world_names(table: Table) -> list[str] | None:
    """The people of a synthetic dataset, if the table sits next to its ``world.json``."""
    from cftclip_core.synthetic import load_world

    if not (table.base_dir / "world.json").is_file():
        return None
    return load_world(table.base_dir).names


def counterfactual_recipe(table: Table) -> dict[str, Any]:
    """What made a table's counterfactuals, for the run's record: the ``cf_recipe`` values of its rows and the
    ``<file>.recipe.json`` beside it (when the table is the file the generator wrote)."""
    summaries = sorted({str(r.extra[cf_spec.RECIPE_COLUMN]) for r in table.records
                        if r.extra.get(cf_spec.RECIPE_COLUMN) not in (None, "")})
    record: dict[str, Any] = {"recipes": summaries}
    if table.source is not None:
        sidecar = cf_spec.read_sidecar(table.source)
        if sidecar is not None:
            record["record"] = sidecar
    if not summaries and table_counterfactuals(table, 1) is None and world_names(table) is not None:
        record["recipes"] = [WORLD_SWAP]
    return record


@dataclass
class DataReport:
    """How a table became a training (or validation) set."""

    items: int  # rows of the table
    used: int  # items that take part
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> items left out
    truncated: int = 0  # items whose text is cut to the model's window (long_texts="truncate")
    subset: str = "all"  # the rule in force: "counterfactual" or "all", with why when it differs from the config

    def to_json(self) -> dict[str, Any]:
        return {"items": self.items, "used": self.used, "dropped": dict(self.dropped), "truncated": self.truncated,
                "subset": self.subset}


class ContrastiveTrainingSet(Dataset):
    """(uint8 crop, text, counterfactual texts) per item; crops come from the pixel cache.

    ``counterfactuals``: one tuple per record; None takes them from the table's columns or, for a
    synthetic dataset, swaps the world's names. Which items take part: see the module docstring
    (``report`` says, and ``skipped`` counts those left out).
    """

    def __init__(
        self,
        table: Table,
        pixel_cache: PixelCache,
        *,
        text_field: str = "summary",
        needs_counterfactuals: bool = True,
        per_text: int = 1,
        counterfactuals: Sequence[tuple[str, ...]] | None = None,
        seed: int = 0,
        item_subset: str = "counterfactual",
        window: TokenWindow | None = None,
        long_texts: str = "truncate",
    ) -> None:
        check_text_field(text_field)
        records = table.records
        if counterfactuals is None:
            counterfactuals = table_counterfactuals(table, per_text)
        if counterfactuals is None and (needs_counterfactuals or item_subset == "counterfactual"):
            names = world_names(table)
            if names is not None:
                counterfactuals = swap_counterfactuals(records, names, text_field=text_field, per_text=per_text,
                                                       seed=seed)
        if needs_counterfactuals and counterfactuals is None:
            raise DataError(
                f"The table {table.source or table.base_dir} has no 'counterfactual' column, and the loss "
                "needs counterfactuals. Generate them first (python -m cftclip_core counterfactual "
                "--data TABLE --out TABLE_CF) or choose a loss without them (clip or i2t).")
        if counterfactuals is not None and len(counterfactuals) != len(records):
            raise DataError(f"{len(counterfactuals)} counterfactual entries for {len(records)} records; give one each.")
        cfs = [tuple(c) for c in counterfactuals] if counterfactuals is not None else [() for _ in records]
        by_counterfactuals = needs_counterfactuals or (
            item_subset == "counterfactual" and any(len(c) >= per_text for c in cfs))
        if needs_counterfactuals or item_subset == "all":
            subset = "counterfactual" if needs_counterfactuals else "all"
        else:
            subset = "counterfactual" if by_counterfactuals else "all (the data carries no counterfactuals)"
        texts = [r.text(text_field) for r in records]
        keep, dropped, truncated = self._select(texts, cfs, per_text, by_counterfactuals, window, long_texts)
        self.report = DataReport(len(records), len(keep), dict(dropped), truncated, subset)
        self.skipped = len(records) - len(keep)
        if self.skipped:
            logger.warning("%d of %d items left out (%s)", self.skipped, len(records),
                           ", ".join(f"{reason} {n}" for reason, n in dropped.items()))
        self.records = [records[i] for i in keep]
        self.counterfactuals = [keep[i] if needs_counterfactuals else () for i in keep]
        self.paths = [table.image_path(r) for r in self.records]
        self.hashes = [sha256_file(p) for p in self.paths]
        self.text_field = text_field
        self.cache = pixel_cache

    @staticmethod
    def _select(texts: list[str], cfs: list[tuple[str, ...]], per_text: int, by_counterfactuals: bool,
                window: TokenWindow | None, long_texts: str) -> tuple[dict[int, tuple[str, ...]], Counter, int]:
        """item index -> the counterfactuals it trains with, for the items that take part; why the others do not;
        how many kept texts are cut to the window."""
        dropped: Counter[str] = Counter()
        flat = [c for own in cfs for c in own] if by_counterfactuals else []
        if window is not None:  # one tokenizer pass over all texts, one over all counterfactuals
            lengths, seen = window.lengths(texts), window.seen(texts)
            cf_lengths, cf_seen = window.lengths(flat), window.seen(flat)
        keep: dict[int, tuple[str, ...]] = {}
        truncated, offset = 0, 0
        for i, own in enumerate(cfs):
            first, offset = offset, offset + (len(own) if by_counterfactuals else 0)
            too_long = window is not None and lengths[i] > window.max_tokens
            if too_long and long_texts == "drop":
                dropped["too_long"] += 1
                continue
            if by_counterfactuals:
                if len(own) < per_text:
                    dropped["no_counterfactual"] += 1
                    continue
                if window is not None:
                    positions = range(first, first + len(own))
                    over = [cf_lengths[k] > window.max_tokens and long_texts == "drop" for k in positions]
                    same = [cf_seen[k] == seen[i] for k in positions]
                    own = tuple(c for c, o, s in zip(own, over, same) if not (o or s))
                    if len(own) < per_text:
                        dropped["too_long" if any(over) else "identical_in_window"] += 1
                        continue
            truncated += too_long
            keep[i] = tuple(own[:per_text])
        return keep, dropped, truncated

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        path = self.paths[index]
        crop = self.cache.get_or_compute(self.hashes[index], lambda: load_image(path))
        return crop, self.records[index].text(self.text_field), self.counterfactuals[index]


@dataclass
class Batch:
    pixels: Tensor  # uint8, B x H x W x 3
    input_ids: Tensor
    attention_mask: Tensor
    cf_input_ids: Tensor | None  # (B*M) x L, counterfactuals of item i at rows i*M .. i*M+M-1
    cf_attention_mask: Tensor | None

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


class Collate:
    """Stack crops and tokenise texts, truncated to the model's text window (a picklable callable)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.tokenizer = loaded.tokenizer
        self.window = loaded.max_text_tokens

    def _tokens(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.window, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def __call__(self, items: list[Item]) -> Batch:
        if not items:
            raise TrainingError("An empty batch reached the trainer; the training set has no usable items.")
        pixels = torch.from_numpy(np.stack([i[0] for i in items]))
        ids, mask = self._tokens([i[1] for i in items])
        cf_texts = [t for i in items for t in i[2]]
        cf_ids, cf_mask = self._tokens(cf_texts) if cf_texts else (None, None)
        return Batch(pixels, ids, mask, cf_ids, cf_mask)
