"""One call from a table to its counterfactual table and recipe record: what the command line and the
studio's quick-run preset both do."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cftclip_core.counterfactuals.filter import ClipFilter, TokenWindow
from cftclip_core.counterfactuals.generate import Progress, counterfactual_table, name_of
from cftclip_core.counterfactuals.recipe import NO_FILTER, Plan, build_infiller, build_tagger, versions
from cftclip_core.formats import Record, Table
from cftclip_core.specs.counterfactuals import PAPER_BUDGET, STATUS_COLUMN, STATUSES, Recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Made:
    records: list[Record]
    recipe: Recipe
    counts: dict[str, int]  # texts per status
    filter_is_tiny: bool  # the filter model has random weights: its decisions mean nothing


def make_counterfactuals(
    table: Table,
    plan: Plan,
    *,
    text_field: str = "summary",
    per_text: int = 1,
    seed: int = 0,
    budget: float = PAPER_BUDGET,
    vocabulary: str = "whole-words",
    long_texts: str = "truncate",
    device: str | None = None,
    models_dir: Path | None = None,
    progress: Progress | None = None,
) -> Made:
    """The table's records with counterfactual columns (``cftclip_core.specs.counterfactuals``), made by the
    planned recipe's components; the recipe record names every choice and the versions."""
    from cftclip_core import models

    parts = plan.components
    tagger = build_tagger(parts.tagger, table.base_dir, device)
    infiller = build_infiller(parts.infiller, tagger, [r.text(text_field) for r in table.records],
                              temperature=parts.temperature, vocabulary=vocabulary, device=device)
    scorer, window, tiny = None, None, False
    if parts.filter_model != NO_FILTER:
        loaded = models.load_model(parts.filter_model, cache_dir=models_dir, device=device or _default_device())
        scorer = ClipFilter(loaded, {r.image: table.image_path(r) for r in table.records})
        window, tiny = TokenWindow.of(loaded), loaded.is_tiny
    is_mlm = parts.infiller.startswith("mlm")
    recipe = Recipe(
        name=plan.name, tagger=name_of(tagger), infiller=name_of(infiller),
        temperature=parts.temperature if is_mlm else None, filter_model=None if scorer is None else parts.filter_model,
        max_tries=parts.max_tries, per_text=per_text, seed=seed, budget=budget, entity_labels=("PERSON",),
        vocabulary=vocabulary if is_mlm else "names", long_texts=long_texts, text_field=text_field,
        window=None if window is None else window.max_tokens, fallback=plan.fallback, versions=versions(tagger))
    records = counterfactual_table(table.records, text_field, tagger, infiller, recipe=recipe, scorer=scorer,
                                   max_tries=parts.max_tries, per_text=per_text, seed=seed, budget=budget,
                                   window=window, long_texts=long_texts, progress=progress)
    counts = {status: sum(r.extra[STATUS_COLUMN] == status for r in records) for status in STATUSES}
    return Made(records, recipe, counts, tiny)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
