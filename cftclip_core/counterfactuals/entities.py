"""Named-entity mentions, the tagger protocol, and the paper's rules for choosing which mentions to replace.

The rules follow the released code (reference/method.md, section 2.4): a sanity filter on each entity, a
masking budget of 30 % of the text's non-space characters (mentions dropped at random until the rest
fit), and each surviving mention replaced as a whole span.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cftclip_core.errors import CounterfactualError

MASK = "[MASK]"  # how masked spans are shown in results, whatever the infiller's own mask token


@dataclass(frozen=True)
class Entity:
    """A named-entity mention: ``text == source[start:end]``; labels are OntoNotes names (PERSON, ORG, ...)."""

    text: str
    label: str
    start: int
    end: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class EntityTagger(Protocol):
    name: str  # recorded with the results, e.g. "spacy:en_core_web_trf"

    def tag(self, text: str) -> list[Entity]: ...



# --- the paper's rules ------------------------------------------------------------------------------
def passes_sanity_filter(entity: Entity) -> bool:
    """The paper's filter: at least one word once punctuation is removed, and more than one character."""
    without_punctuation = "".join(c for c in entity.text if not unicodedata.category(c).startswith("P"))
    return len(without_punctuation.split()) >= 1 and len(entity.text) > 1


def non_space_length(text: str) -> int:
    return sum(not c.isspace() for c in text)


def apply_budget(text: str, entities: Sequence[Entity], budget: float, rng: np.random.Generator) -> list[Entity]:
    """Drop mentions chosen uniformly at random until their non-space characters total at most
    ``int(budget * non-space characters of text)``; the survivors, in text order."""
    limit = int(budget * non_space_length(text))
    chosen = list(entities)
    while chosen and sum(non_space_length(e.text) for e in chosen) > limit:
        chosen.pop(int(rng.integers(len(chosen))))
    return chosen


def replace_spans(text: str, spans: Sequence[Entity], replacements: Sequence[str]) -> str:
    """``text`` with each span replaced; spans must not overlap."""
    for span, replacement in sorted(zip(spans, replacements), key=lambda p: p[0].start, reverse=True):
        text = text[: span.start] + replacement + text[span.end:]
    return text


def checked_entities(text: str, entities: Iterable[Entity], tagger_name: str) -> list[Entity]:
    """The tagger's entities in text order, after checking that each span is that part of the text."""
    checked = []
    for e in entities:
        if not (0 <= e.start < e.end <= len(text)) or text[e.start:e.end] != e.text:
            raise CounterfactualError(
                f"The tagger '{tagger_name}' returned the span {e.start}-{e.end} '{e.text}', which is not that part "
                f"of the text {text[:80]!r}. Fix the tagger so that text[start:end] == entity text."
            )
        checked.append(e)
    return sorted(checked, key=lambda e: (e.start, -(e.end - e.start)))


def without_overlaps(entities: Sequence[Entity]) -> list[Entity]:
    """Sorted entities minus those overlapping an earlier one (the earlier, then longer, mention wins)."""
    kept: list[Entity] = []
    for e in entities:
        if not kept or e.start >= kept[-1].end:
            kept.append(e)
    return kept


