"""Counterfactual generation: tag, choose the mentions, infill, filter; one result per text, every choice kept.

Differences from the original code, on purpose: sampling is seeded per record (same inputs and seed give
the same counterfactuals, whatever the order of the records); every choice is recorded; texts without a
PERSON are counted and skipped instead of failing; and, given the model's token window, a candidate the
model cannot tell from its original (every change past the window) is never kept (status
``beyond_window``), and with ``long_texts="drop"`` a text over the window is dropped (status ``too_long``)
as the original pipeline did.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cftclip_core.counterfactuals.entities import (
    MASK,
    Entity,
    EntityTagger,
    apply_budget,
    checked_entities,
    passes_sanity_filter,
    replace_spans,
    without_overlaps,
)
from cftclip_core.counterfactuals.filter import TokenWindow
from cftclip_core.counterfactuals.infillers import Infiller
from cftclip_core.errors import ConfigError, CounterfactualError
from cftclip_core.formats import Record, check_text_field
from cftclip_core.specs import counterfactuals as spec
from cftclip_core.specs.counterfactuals import LONG_TEXTS, STATUSES, Recipe

log = logging.getLogger(__name__)

Scorer = Callable[[str, Sequence[str]], Sequence[float]]  # (image key, texts) -> similarity per text
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class CounterfactualResult:
    """Everything decided for one text. ``counterfactuals`` is empty unless ``status == "ok"``."""

    id: str
    text: str
    status: str  # one of STATUSES
    entities: tuple[Entity, ...] = ()  # everything the tagger found (all labels)
    masked: tuple[Entity, ...] = ()  # the mentions replaced, after the label, sanity and budget rules
    masked_text: str | None = None  # the text with each masked mention shown as [MASK]
    counterfactuals: tuple[str, ...] = ()
    replacements: tuple[tuple[str, ...], ...] = ()  # per counterfactual, one replacement per masked mention
    similarities: tuple[float, ...] = ()  # the scorer's similarity per counterfactual
    original_similarity: float | None = None
    tries: int = 0  # candidates looked at (up to the last one accepted, or all of them)

    @property
    def counterfactual(self) -> str | None:
        return self.counterfactuals[0] if self.counterfactuals else None

    @property
    def counterfactual_similarity(self) -> float | None:
        return self.similarities[0] if self.similarities else None


@dataclass(frozen=True)
class _Options:
    tagger: EntityTagger
    infiller: Infiller
    scorer: Scorer | None
    max_tries: int
    per_text: int
    seed: int
    labels: frozenset[str] | None
    budget: float
    window: TokenWindow | None
    long_texts: str


def name_of(component: object) -> str:
    return str(getattr(component, "name", type(component).__name__))


def _record_rng(seed: int, item_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, item id), so results do not depend on record order."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def check_options(max_tries: int, per_text: int, seed: int, budget: float, long_texts: str = "truncate") -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(max_tries) or max_tries < 1:
        raise ConfigError(f"max_tries={max_tries!r} is not valid; use a positive integer (the paper: 10).")
    if not is_int(per_text) or not 1 <= per_text <= max_tries:
        raise ConfigError(f"per_text={per_text!r} is not valid; use 1 to max_tries ({max_tries}).")
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed={seed!r} is not valid; use a non-negative integer.")
    if not (isinstance(budget, (int, float)) and 0 < budget <= 1):
        raise ConfigError(f"budget={budget!r} is not valid; use a fraction in (0, 1] (the paper: 0.3).")
    if long_texts not in LONG_TEXTS:
        raise ConfigError(f"long_texts={long_texts!r} is not valid; choose {' or '.join(LONG_TEXTS)}.")


def generate_counterfactuals(
    records_or_texts: Iterable[Record | str],
    tagger: EntityTagger,
    infiller: Infiller,
    *,
    text_field: str = "summary",
    scorer: Scorer | None = None,
    max_tries: int = 10,
    per_text: int = 1,
    seed: int = 0,
    entity_labels: Sequence[str] | None = ("PERSON",),
    budget: float = 0.3,
    window: TokenWindow | None = None,
    long_texts: str = "truncate",
    progress: Progress | None = None,
) -> list[CounterfactualResult]:
    """One result per input, in input order.

    Records use their ``text_field`` text and are identified by their id; plain strings by their position.
    ``scorer(image_key, texts)`` returns a similarity per text (the current model); the key is the
    record's ``image`` (a plain string's position). Without a scorer the first candidate that differs
    from the original is kept. ``per_text`` counterfactuals are kept per text (distinct ones), else the
    status is ``filter_failed``. ``entity_labels=None`` keeps every label. ``window`` (the model's token
    window) rejects candidates the model cannot tell from the original and, with ``long_texts="drop"``,
    texts (and candidates) longer than the window.
    """
    check_options(max_tries, per_text, seed, budget, long_texts)
    check_text_field(text_field)
    if long_texts == "drop" and window is None:
        raise ConfigError("long_texts='drop' needs the model's token window to know which texts are too long; give "
                          "a filter model (--model), or keep long_texts='truncate'.")
    items = list(records_or_texts)
    options = _Options(tagger, infiller, scorer, max_tries, per_text, seed,
                       None if entity_labels is None else frozenset(entity_labels), budget, window, long_texts)
    results = []
    for position, item in enumerate(items):
        if isinstance(item, Record):
            item_id, text, key = item.id, item.text(text_field), item.image
        else:
            item_id = key = str(position)
            text = item
        results.append(_generate_one(item_id, key, text, options))
        if progress is not None:
            progress(position + 1, len(items))
    counts = status_counts(results)
    log.info("Counterfactuals for %d texts (%s, %s, seed %d): %s", len(results), name_of(tagger),
             name_of(infiller), seed, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return results


def _generate_one(item_id: str, key: str, text: str, o: _Options) -> CounterfactualResult:
    if not text or not text.strip():
        return CounterfactualResult(item_id, text, "empty_text")
    if o.long_texts == "drop" and o.window is not None and o.window.too_long(text):
        return CounterfactualResult(item_id, text, "too_long")
    entities = tuple(checked_entities(text, o.tagger.tag(text), name_of(o.tagger)))
    eligible = without_overlaps(
        [e for e in entities if (o.labels is None or e.label in o.labels) and passes_sanity_filter(e)]
    )
    if not eligible:
        return CounterfactualResult(item_id, text, "no_person", entities)
    rng = _record_rng(o.seed, item_id)
    masked = tuple(apply_budget(text, eligible, o.budget, rng))
    if not masked:
        return CounterfactualResult(item_id, text, "over_budget", entities)
    masked_text = replace_spans(text, masked, [MASK] * len(masked))
    proposals = o.infiller.propose(text, masked, rng, o.max_tries)
    candidates = [replace_spans(text, masked, replacement) for replacement in proposals]
    visible = [_visible(text, c, o) for c in candidates]
    if o.window is not None and not any(visible):
        return CounterfactualResult(item_id, text, "beyond_window", entities, masked, masked_text,
                                    tries=len(candidates))
    original_similarity, similarities = None, None
    if o.scorer is not None:
        scores = [float(s) for s in o.scorer(key, [text, *candidates])]
        if len(scores) != len(candidates) + 1:
            raise CounterfactualError(
                f"The scorer returned {len(scores)} similarities for {len(candidates) + 1} texts; it must return "
                "one per text, in order."
            )
        original_similarity, similarities = scores[0], scores[1:]
    accepted: list[int] = []
    seen = {text.casefold()}
    tries = 0
    for i, candidate in enumerate(candidates):
        tries = i + 1
        lower = similarities is None or similarities[i] < original_similarity  # type: ignore[operator]
        if lower and visible[i] and candidate.casefold() not in seen:
            accepted.append(i)
            seen.add(candidate.casefold())
            if len(accepted) == o.per_text:
                break
    ok = len(accepted) == o.per_text
    return CounterfactualResult(
        item_id, text, "ok" if ok else "filter_failed", entities, masked, masked_text,
        counterfactuals=tuple(candidates[i] for i in accepted) if ok else (),
        replacements=tuple(tuple(proposals[i]) for i in accepted) if ok else (),
        similarities=tuple(similarities[i] for i in accepted) if ok and similarities is not None else (),
        original_similarity=original_similarity,
        tries=tries,
    )


def _visible(text: str, candidate: str, o: _Options) -> bool:
    """Whether the model sees the candidate as a different text (and, when long texts are dropped, whole)."""
    if o.window is None:
        return True
    if o.long_texts == "drop" and o.window.too_long(candidate):
        return False
    return not o.window.same_within(text, candidate)


def status_counts(results: Iterable[CounterfactualResult]) -> dict[str, int]:
    """How many texts ended in each status (all statuses listed, zeros included)."""
    counts = Counter(r.status for r in results)
    return {status: counts.get(status, 0) for status in STATUSES}


def collect_names(texts: Iterable[str], tagger: EntityTagger, label: str = "PERSON") -> list[str]:
    """The distinct names a tagger finds in a corpus, most frequent first: a pool for ``EntitySwapInfiller``."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(e.text for e in tagger.tag(text) if e.label == label and passes_sanity_filter(e))
    return [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def counterfactual_table(
    table_records: Iterable[Record],
    text_field: str,
    tagger: EntityTagger,
    infiller: Infiller,
    *,
    recipe: Recipe | None = None,
    **options: Any,
) -> list[Record]:
    """The records with counterfactual columns added, ready for ``formats.write_table``.

    Columns (named in ``cftclip_core.specs.counterfactuals``): ``counterfactual`` (and
    ``counterfactual_2`` ... with ``per_text``), ``cf_status``, ``cf_entities`` and ``cf_masked`` (JSON
    lists of {text, label, start, end}), ``cf_replacements`` (JSON: per counterfactual, the replacement
    of each masked mention), ``cf_tries``, ``cf_original_similarity``, ``cf_similarity`` (and
    ``cf_similarity_2`` ...), and with ``recipe`` the recipe's one-line summary in ``cf_recipe``. Empty
    where not applicable. ``options`` are those of ``generate_counterfactuals``.
    """
    records = list(table_records)
    per_text = options.get("per_text", 1)
    results = generate_counterfactuals(records, tagger, infiller, text_field=text_field, **options)
    rows = []
    for record, result in zip(records, results):
        columns: dict[str, Any] = {}
        for k in range(per_text):
            columns[spec.counterfactual_column(k)] = result.counterfactuals[k] if result.counterfactuals else None
        columns.update({
            spec.STATUS_COLUMN: result.status,
            spec.ENTITIES_COLUMN: json.dumps([e.to_json() for e in result.entities], ensure_ascii=False),
            spec.MASKED_COLUMN: json.dumps([e.to_json() for e in result.masked], ensure_ascii=False),
            spec.REPLACEMENTS_COLUMN: json.dumps([list(r) for r in result.replacements], ensure_ascii=False),
            spec.TRIES_COLUMN: result.tries,
            spec.ORIGINAL_SIMILARITY_COLUMN: result.original_similarity,
        })
        for k in range(per_text):
            columns[spec.similarity_column(k)] = result.similarities[k] if result.similarities else None
        if recipe is not None:
            columns[spec.RECIPE_COLUMN] = recipe.summary()
        rows.append(dataclasses.replace(record, extra={**record.extra, **columns}))
    return rows
