"""What a counterfactual file is: its columns, the statuses a text can end in, and the recipe that made it.

One naming for every reader and writer (the generator, the trainer, the job queue, the Train page, the
results pages): ``counterfactual``, ``counterfactual_2``, ... hold the texts; ``cf_status`` says what
happened to each text; ``cf_recipe`` names the recipe in one line. The full recipe (models, versions,
counts) is written beside the file as ``<file>.recipe.json``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cftclip_core.errors import ConfigError

COUNTERFACTUAL_COLUMN = re.compile(r"^counterfactual(_\d+)?$")
STATUS_COLUMN = "cf_status"
RECIPE_COLUMN = "cf_recipe"
ENTITIES_COLUMN, MASKED_COLUMN, REPLACEMENTS_COLUMN = "cf_entities", "cf_masked", "cf_replacements"
TRIES_COLUMN, ORIGINAL_SIMILARITY_COLUMN = "cf_tries", "cf_original_similarity"

# What happened to a text; only "ok" rows carry counterfactuals.
STATUSES: dict[str, str] = {
    "ok": "counterfactual(s) made",
    "no_person": "no PERSON mention found",
    "over_budget": "every mention was dropped by the 30 % masking budget",
    "filter_failed": "no candidate scored lower than the original within the tries (the CLIP filter)",
    "empty_text": "the text is empty",
    "too_long": "the text is longer than the model's token window and the recipe drops such texts",
    "beyond_window": "every candidate changed the text only past the model's token window, so once cut to "
                     "the window it equals the original",
}

RECIPES = ("paper", "offline")
PAPER_SPACY_PIPELINE = "en_core_web_trf"
PAPER_TAGGER = f"spacy:{PAPER_SPACY_PIPELINE}"
PAPER_MLM = "bert-base-uncased"
PAPER_INFILLER = f"mlm:{PAPER_MLM}"
PAPER_TEMPERATURE = 2.0
PAPER_MAX_TRIES = 10
PAPER_BUDGET = 0.3
VOCABULARIES = ("whole-words", "any")  # what the masked LM may sample: our fix, or any piece (the original)
LONG_TEXTS = ("truncate", "drop")  # texts over the token window: cut and counted, or dropped (the original)


def counterfactual_column(k: int) -> str:
    """The column of counterfactual number ``k`` (0-based): ``counterfactual``, ``counterfactual_2``, ..."""
    return "counterfactual" if k == 0 else f"counterfactual_{k + 1}"


def similarity_column(k: int) -> str:
    """The filter's similarity of counterfactual ``k``: ``cf_similarity``, ``cf_similarity_2``, ..."""
    return "cf_similarity" if k == 0 else f"cf_similarity_{k + 1}"


def counterfactual_columns(per_text: int) -> list[str]:
    return [counterfactual_column(k) for k in range(per_text)]


def is_counterfactual_column(name: str) -> bool:
    return COUNTERFACTUAL_COLUMN.match(str(name)) is not None


def has_counterfactual_columns(columns: Sequence[str]) -> bool:
    return counterfactual_column(0) in columns


def counterfactual_texts(extra: Mapping[str, Any]) -> tuple[str, ...]:
    """The non-empty counterfactual texts of one row, in column order (``counterfactual`` first)."""
    found = sorted((_column_number(k), str(v)) for k, v in extra.items()
                   if is_counterfactual_column(k) and v is not None and str(v).strip() != "")
    return tuple(text for _, text in found)


def _column_number(name: str) -> int:
    suffix = COUNTERFACTUAL_COLUMN.match(name).group(1)  # type: ignore[union-attr]
    return int(suffix[1:]) if suffix else 1


def sidecar_path(table_path: str | Path) -> Path:
    """Where a counterfactual file's full recipe record lives: ``<file>.recipe.json`` beside it."""
    path = Path(table_path)
    return path.with_name(path.name + ".recipe.json")


@dataclass(frozen=True)
class Recipe:
    """Every choice that made a counterfactual file, as recorded with it.

    ``name`` is ``paper`` or ``offline`` when the components are that recipe's, else ``custom``;
    ``fallback`` says why the paper's recipe was not used when it was the default but a model was missing.
    """

    name: str
    tagger: str
    infiller: str
    temperature: float | None  # the masked LM's sampling temperature (None for a name swap)
    filter_model: str | None  # the CLIP model of the filter (None: the first differing candidate is kept)
    max_tries: int
    per_text: int
    seed: int
    budget: float
    entity_labels: tuple[str, ...] | None
    vocabulary: str  # VOCABULARIES
    long_texts: str  # LONG_TEXTS
    text_field: str
    window: int | None = None  # the filter model's token window, when one was loaded
    fallback: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line naming the recipe, for the ``cf_recipe`` column (the Train page shows it)."""
        parts = [f"{self.name}: {self.tagger}", self.infiller, f"filter {self.filter_model or 'none'}",
                 f"tries {self.max_tries}", f"seed {self.seed}", f"vocabulary {self.vocabulary}",
                 f"long texts {self.long_texts}"]
        return ", ".join(parts) + (" (fallback: the paper's models are missing)" if self.fallback else "")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["entity_labels"] = list(self.entity_labels) if self.entity_labels is not None else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Recipe:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("entity_labels") is not None:
            values["entity_labels"] = tuple(values["entity_labels"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"Not a counterfactual recipe record ({exc}).") from None


def write_sidecar(table_path: str | Path, recipe: Recipe, counts: Mapping[str, int]) -> Path:
    path = sidecar_path(table_path)
    payload = {"recipe": recipe.to_json(), "summary": recipe.summary(), "statuses": dict(counts)}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def read_sidecar(table_path: str | Path) -> dict[str, Any] | None:
    """The recipe record written beside a counterfactual file, or None when there is none (or it is unreadable)."""
    path = sidecar_path(table_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
