"""The ``--replicate-original`` preset: the released code's behaviour where the product fixed it, in one place.

Without the preset the product keeps its fixes (a cosine schedule that decays once, bf16 where the
hardware has it, long texts truncated and counted, the masked LM sampling whole words only, early
stopping on strict improvement) and records which it used. With it a run does what
``ssu-humane/news-images-acl24`` does (docs: reference/method.md, sections 2 and 4-5):

* ``CosineAnnealingLR(T_max=100)`` stepped per iteration: the periodic schedule;
* fp32 training and scoring;
* texts longer than CLIP's 77 tokens dropped (status ``too_long``, counted) instead of truncated;
* the masked LM free to sample any vocabulary piece (sub-words, punctuation, special tokens);
* a validation loss equal to the best counts as an improvement (its ``EarlyStopping`` with delta 0);
* the val-median threshold taken from the training run's validation pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cftclip_core.errors import ConfigError

THRESHOLD_SOURCES = ("train-val", "eval-val")  # where a threshold is chosen: the training run's val pairs,
# or the evaluation table's 'val' rows


@dataclass(frozen=True)
class Preset:
    name: str
    flag: str
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields it fixes
    counterfactual: Mapping[str, Any] = field(default_factory=dict)  # counterfactual options it fixes
    threshold_from: str | None = None
    scoring_precision: str | None = None

    def check(self, given: Mapping[str, Any], what: str = "setting") -> None:
        """Refuse a value given alongside the preset that contradicts it (an exact replication is all or nothing)."""
        for name, value in given.items():
            fixed = {**self.train, **self.counterfactual}.get(name)
            if name in {**self.train, **self.counterfactual} and value != fixed:
                raise ConfigError(f"{name}={value!r} contradicts {self.label}, which sets {name}={fixed!r}; leave "
                                  f"{name} out, or turn the preset off to run the product's own choices.")

    @property
    def label(self) -> str:
        """How messages name the preset: its form field and its command-line flag."""
        return f"{self.name.replace('-', '_')} ({self.flag})"


REPLICATE_ORIGINAL = Preset(
    name="replicate-original",
    flag="--replicate-original",
    train={"schedule": "periodic", "precision": "fp32", "long_texts": "drop", "ties_improve": True},
    counterfactual={"vocabulary": "any", "long_texts": "drop"},
    threshold_from="train-val",
    scoring_precision="fp32",
)


def check_threshold_from(value: str, *, replicate: bool = False) -> str:
    value = str(value).strip()
    if value not in THRESHOLD_SOURCES:
        raise ConfigError(f"threshold_from={value!r} is not valid: choose {' or '.join(THRESHOLD_SOURCES)} (train-val: "
                          "the training run's validation pairs, as the original code; eval-val: the evaluation "
                          "table's 'val' rows).")
    if replicate and value != REPLICATE_ORIGINAL.threshold_from:
        raise ConfigError(f"threshold_from={value!r} contradicts {REPLICATE_ORIGINAL.label}, which takes the threshold "
                          f"from {REPLICATE_ORIGINAL.threshold_from}; leave it out or drop the preset.")
    return value


def resolve_threshold_from(threshold: str | float, given: str | None, *, replicate: bool = False) -> str | None:
    """Where the threshold is chosen: ``given`` (checked), else the preset's, else ``eval-val`` for the labelled
    ``f1-optimal`` and ``train-val`` (the original code's source) for ``val-median``; None for a fixed number."""
    if given is not None:
        return check_threshold_from(given, replicate=replicate)
    if replicate:
        return REPLICATE_ORIGINAL.threshold_from
    if not isinstance(threshold, str):
        return None
    return "eval-val" if threshold == "f1-optimal" else "train-val"
