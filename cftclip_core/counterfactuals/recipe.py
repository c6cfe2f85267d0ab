"""Recipes: the paper's (spaCy PERSON tagger, ``bert-base-uncased`` at temperature 2.0, CLIP filter with the
training model, up to 10 tries) or the offline one (rule-based or known-names tagger, name swap, a filter
only when a model is given). The paper's is the default when its models are on this machine; otherwise
the offline recipe runs and the plan says which model is missing and how to get it.

Component specs are short strings, as the command line takes them: taggers ``rule``, ``names:FILE``,
``spacy[:PIPELINE]``, ``hf:MODEL``, ``auto``; infillers ``swap``, ``mlm[:MODEL]``; filter models any
``--model`` value, or ``none``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cftclip_core.counterfactuals.entities import EntityTagger
from cftclip_core.counterfactuals.generate import collect_names
from cftclip_core.counterfactuals.infillers import EntitySwapInfiller, Infiller, MaskedLMInfiller
from cftclip_core.counterfactuals.loading import hub_model_missing, hub_offline, spacy_pipeline_missing
from cftclip_core.counterfactuals.taggers import (
    HFTokenClassificationTagger,
    KnownNamesTagger,
    RuleBasedPersonTagger,
    SpacyTagger,
)
from cftclip_core.errors import ConfigError, ModelError
from cftclip_core.specs.counterfactuals import (
    PAPER_INFILLER,
    PAPER_MAX_TRIES,
    PAPER_MLM,
    PAPER_SPACY_PIPELINE,
    PAPER_TAGGER,
    PAPER_TEMPERATURE,
    RECIPES,
)
from cftclip_core.specs.training import DEFAULT_MODEL

NO_FILTER = "none"


@dataclass(frozen=True)
class Components:
    """The component specs of a recipe (strings, before anything loads)."""

    tagger: str
    infiller: str
    temperature: float
    filter_model: str  # a model name, or NO_FILTER
    max_tries: int


PAPER = Components(PAPER_TAGGER, PAPER_INFILLER, PAPER_TEMPERATURE, DEFAULT_MODEL, PAPER_MAX_TRIES)
OFFLINE = Components("auto", "swap", PAPER_TEMPERATURE, NO_FILTER, PAPER_MAX_TRIES)


@dataclass(frozen=True)
class Plan:
    """What will run: the recipe's name (paper, offline or custom), its components, and, when the default
    fell back to the offline recipe, why (each missing model and how to get it)."""

    name: str
    components: Components
    fallback: str | None = None


def plan_recipe(requested: str | None, overrides: dict[str, object] | None = None) -> Plan:
    """The recipe to run. ``requested``: ``paper``, ``offline``, or None for the paper's when its models are on
    this machine (else the offline one, saying why). ``overrides``: component specs given one by one
    (``tagger``, ``infiller``, ``temperature``, ``filter_model``, ``max_tries``); None values are not given.

    ``paper`` asked for explicitly with a model missing is an error that says how to get it; on a machine
    with the internet (HF_HUB_OFFLINE unset) the hub models it lacks are downloaded when they load.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - set(Components.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"Unknown recipe component(s): {', '.join(sorted(unknown))}.")
    if requested is not None and requested not in RECIPES:
        raise ConfigError(f"--recipe '{requested}' is not known; use {' or '.join(RECIPES)}.")
    if requested == "offline":
        return _named(replace(OFFLINE, **given))
    paper = replace(PAPER, **given)
    problems = missing_models(paper, downloadable=requested == "paper" and not hub_offline())
    if not problems:
        return _named(paper)
    if requested == "paper":
        raise ModelError("The paper's recipe cannot run here: " + "; ".join(problems) + ". Or make counterfactuals "
                         "with the offline recipe (--recipe offline: rule-based tagger, name swap).")
    reason = ("the paper's recipe needs models this machine lacks: " + "; ".join(problems)
              + ". With the internet, --recipe paper downloads the Hugging Face models.")
    return _named(replace(OFFLINE, **given), fallback=reason)


def _named(components: Components, fallback: str | None = None) -> Plan:
    if components.filter_model != NO_FILTER and components == replace(PAPER, filter_model=components.filter_model):
        name = "paper"  # the filter is the training model, whichever that is
    elif components == replace(OFFLINE, filter_model=components.filter_model):
        name = "offline"
    else:
        name = "custom"
    return Plan(name, components, fallback)


def missing_models(components: Components, *, downloadable: bool = False) -> list[str]:
    """Each model the components need that is not on this machine, with how to get it. ``downloadable``: hub
    models may come from the internet when they load, so only what cannot be downloaded counts."""
    problems = []
    kind, _, value = components.tagger.partition(":")
    if kind == "spacy":
        problems.append(spacy_pipeline_missing(value or PAPER_SPACY_PIPELINE))
    elif kind == "hf" and value and not downloadable:
        problems.append(hub_model_missing(value, "NER model"))
    kind, _, value = components.infiller.partition(":")
    if kind == "mlm" and not downloadable:
        problems.append(hub_model_missing(value or PAPER_MLM, "masked language model"))
    model = components.filter_model
    if model not in (NO_FILTER, "tiny-demo") and not downloadable:
        problems.append(hub_model_missing(model, "CLIP model for the filter"))
    return [p for p in problems if p]


# --- building the components ---------------------------------------------------------------------------
def build_tagger(spec: str, base_dir: Path, device: str | None = None) -> EntityTagger:
    kind, _, value = spec.partition(":")
    if kind == "auto" and not value:
        names = _world_names(base_dir / "world.json")
        return KnownNamesTagger(names) if names else RuleBasedPersonTagger()
    if kind == "rule" and not value:
        return RuleBasedPersonTagger()
    if kind == "names" and value:
        return KnownNamesTagger(_names_file(Path(value)))
    if kind == "spacy":
        return SpacyTagger(value or PAPER_SPACY_PIPELINE)
    if kind == "hf" and value:
        return HFTokenClassificationTagger(value, device=device)
    raise ConfigError(f"--tagger '{spec}' is not known; use rule, names:FILE, spacy[:MODEL], hf:MODEL or auto.")


def build_infiller(spec: str, tagger: EntityTagger, texts: Sequence[str], *, temperature: float,
                   vocabulary: str = "whole-words", device: str | None = None) -> Infiller:
    kind, _, value = spec.partition(":")
    if kind == "swap" and not value:
        pool = tagger.names if isinstance(tagger, KnownNamesTagger) else collect_names(texts, tagger)
        return EntitySwapInfiller(pool)
    if kind == "mlm":
        return MaskedLMInfiller(value or PAPER_MLM, temperature=temperature, vocabulary=vocabulary, device=device)
    raise ConfigError(f"--infiller '{spec}' is not known; use swap or mlm[:MODEL].")


def _world_names(path: Path) -> list[str] | None:
    from cftclip_core.synthetic import load_world

    return load_world(path).names if path.is_file() else None


def _names_file(path: Path) -> list[str]:
    from cftclip_core.synthetic import load_world

    if not path.is_file():
        raise ConfigError(f"No names file at '{path}'; give a text file with one name a line, or a world.json.")
    if path.suffix == ".json":
        return load_world(path).names
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def versions(tagger: EntityTagger) -> dict[str, str]:
    """The versions that decide the counterfactuals: this package, torch, transformers, spaCy and its pipeline."""
    found = {}
    for package in ("cftclip-studio", "torch", "transformers", "spacy"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    meta = getattr(getattr(tagger, "_nlp", None), "meta", None)
    if isinstance(meta, dict) and meta.get("version"):
        found["spacy_pipeline"] = f"{meta.get('lang', '')}_{meta.get('name', '')}=={meta['version']}"
    return found
