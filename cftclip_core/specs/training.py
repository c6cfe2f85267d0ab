"""What a training run is: ``TrainConfig``, the losses it can use, and one way to read it from text.

The trainer (``cftclip_core.training``), the command line, the job queue and the Train page's form
all build a config through ``TrainConfig.from_mapping`` (typed values: JSON, keyword arguments) or
``TrainConfig.from_texts`` (what a person typed), and check it with ``validate``: one set of rules,
with messages that name the field as the form and ``--config`` files spell it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cftclip_core.errors import ConfigError
from cftclip_core.specs.counterfactuals import LONG_TEXTS
from cftclip_core.specs.replication import REPLICATE_ORIGINAL
from cftclip_core.specs.seeds import MAX_SEED

DEFAULT_MODEL = "openai/clip-vit-large-patch14"  # the paper's backbone
DEFAULT_TEMPERATURE = 0.05  # the paper's LOSS_TEMPERATURE
TEXT_FIELDS = ("title", "summary")
SCHEDULES = ("cosine", "periodic", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
ITEM_SUBSETS = ("counterfactual", "all")  # which items train: those cft can use (like with like), or every item
MAX_INT = 2**31 - 1  # every integer field fits a database integer column


@dataclass(frozen=True)
class LossSpec:
    """What a loss needs from the trainer (the modules themselves live in ``cftclip_core.loss``)."""

    name: str
    description: str
    uses_counterfactuals: bool
    learns_scale: bool


LOSSES: dict[str, LossSpec] = {spec.name: spec for spec in (
    LossSpec("clip", "plain symmetric CLIP loss, learned scale (no counterfactuals)", False, True),
    LossSpec("i2t", "image-to-text InfoNCE at a fixed temperature, no counterfactuals (loss-form control)",
             False, False),
    LossSpec("cft", "the paper's loss: image-to-text InfoNCE with all counterfactuals as negatives", True, False),
    LossSpec("cftsym", "cft plus a text-to-image term over the originals, learned scale", True, True),
)}

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass
class TrainConfig:
    """Every training choice, with the paper's (or its released code's) value as the default; what each does:
    ``FIELD_HELP``."""

    model: str = DEFAULT_MODEL
    loss: str = "cft"
    temperature: float = DEFAULT_TEMPERATURE
    lr: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 128
    max_epochs: int = 20
    schedule: str = "cosine"  # "periodic": the original's CosineAnnealingLR(T_max=100) stepped per iteration
    warmup_steps: int = 0
    val_every_steps: int = 160
    patience: int = 5
    freeze_text_layers: int = 11
    freeze_vision_layers: int = 0
    counterfactuals_per_text: int = 1
    seed: int = 0
    precision: str = "auto"
    grad_clip: float | None = None
    text_field: str = "summary"
    max_steps: int | None = None
    device: str | None = None  # None with a model given to ``train``: that model's device
    num_workers: int = 0
    gradient_checkpointing: bool | None = None
    pixel_cache_dir: str | None = None
    snapshot_steps: tuple[int, ...] = ()
    long_texts: str = "truncate"
    ties_improve: bool = False  # True: the original's EarlyStopping (delta 0)
    item_subset: str = "counterfactual"
    replicate_original: bool = False  # specs.replication.REPLICATE_ORIGINAL

    # --- building ---------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "the config") -> TrainConfig:
        """A config from typed values (a JSON object, keyword arguments): unknown fields and non-finite
        numbers are refused here, everything else by ``validate``."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{source} has unknown field(s) {', '.join(unknown)}; known fields: "
                              f"{', '.join(sorted(cls.field_names()))}.")
        for name, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name}={value!r} is not valid: use a finite number.")
        changes = dict(values)
        if isinstance(changes.get("snapshot_steps"), list):  # JSON has no tuples
            changes["snapshot_steps"] = tuple(changes["snapshot_steps"])
        if changes.get("replicate_original") is True:  # the preset fills what is not given and refuses contradictions
            REPLICATE_ORIGINAL.check({k: v for k, v in changes.items() if k in REPLICATE_ORIGINAL.train})
            changes = {**REPLICATE_ORIGINAL.train, **changes}
        config = cls(**changes)
        config.validate()
        return config

    @classmethod
    def from_texts(cls, texts: Mapping[str, str], *, base: Mapping[str, Any] | None = None) -> TrainConfig:
        """A config from what a person typed (form fields, command-line flags), over ``base`` values."""
        return cls.from_mapping({**(base or {}), **typed_values(texts)})

    # --- checking ---------------------------------------------------------------------------------------
    def validate(self, *, text_layers: int | None = None, vision_layers: int | None = None) -> None:
        """Raise ``ConfigError`` naming the first invalid field; layer counts check the freeze fields."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name}={getattr(self, name)!r} is not valid: {why}.")

        def whole(name: str, low: int, why: str) -> None:
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= MAX_INT:
                raise bad(name, why)

        if not isinstance(self.model, str) or not self.model.strip():
            raise bad("model", "give a hub id (e.g. openai/clip-vit-large-patch14) or a local model folder")
        if self.loss not in LOSSES:
            raise bad("loss", f"choose one of {', '.join(LOSSES)}")
        if not _positive(self.temperature):
            raise bad("temperature", "use a positive number such as 0.05 (the paper's)")
        if not _positive(self.lr):
            raise bad("lr", "use a positive learning rate such as 1e-4 (the paper's)")
        if not (_number(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "use 0 or a positive number such as 0.01")
        whole("batch_size", 2, "use at least 2 (a contrastive batch needs negatives); the paper used 128")
        whole("max_epochs", 1, "use a positive integer (the paper: 20)")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"choose one of {', '.join(SCHEDULES)}")
        whole("warmup_steps", 0, "use 0 or a positive integer")
        whole("val_every_steps", 1, "use a positive number of steps (the original code: 160)")
        whole("patience", 1, "use at least 1 (the paper: 5)")
        for name, limit, what in (("freeze_text_layers", text_layers, "text"),
                                  ("freeze_vision_layers", vision_layers, "vision")):
            whole(name, 0, "use 0 or a positive number of layers")
            if limit is not None and getattr(self, name) > limit:
                raise bad(name, f"the model's {what} tower has only {limit} layers; use 0 to {limit}")
        whole("counterfactuals_per_text", 1, "use a positive integer (the paper: 1)")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise bad("seed", f"use an integer from 0 to {MAX_SEED}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"choose one of {', '.join(PRECISIONS)}")
        if self.grad_clip is not None and not _positive(self.grad_clip):
            raise bad("grad_clip", "use a positive max norm, or none for no clipping")
        if self.text_field not in TEXT_FIELDS:
            raise bad("text_field", f"choose one of {', '.join(TEXT_FIELDS)}")
        if self.max_steps is not None:
            whole("max_steps", 1, "use a positive integer, or none to train for max_epochs")
        whole("num_workers", 0, "use 0 or a positive integer")
        if self.gradient_checkpointing not in (None, True, False):
            raise bad("gradient_checkpointing", "use true, false, or none (on for CUDA runs)")
        if not isinstance(self.snapshot_steps, (tuple, list)) or not all(
                _is_int(s) and 1 <= s <= MAX_INT for s in self.snapshot_steps):
            raise bad("snapshot_steps", "give a list of positive step numbers, or none")
        if self.long_texts not in LONG_TEXTS:
            raise bad("long_texts", f"choose {' or '.join(LONG_TEXTS)}")
        for name in ("ties_improve", "replicate_original"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "use true or false")
        if self.item_subset not in ITEM_SUBSETS:
            raise bad("item_subset", f"choose {' or '.join(ITEM_SUBSETS)}")
        if self.replicate_original:
            for name, value in REPLICATE_ORIGINAL.train.items():
                if getattr(self, name) != value:
                    raise bad(name, f"replicate_original sets it to {as_text(value)}; change it back or turn "
                                    "replicate_original off")

    @property
    def loss_spec(self) -> LossSpec:
        return LOSSES[self.loss]


# What each field does, for a researcher: --help and the Train form's tooltips (``field_help`` adds the default).
FIELD_HELP: dict[str, str] = {
    "model": "The CLIP model to fine-tune: a hub id or a local model folder; the paper used CLIP ViT-L/14",
    "loss": "The training loss: cft (the paper's) is image-to-text InfoNCE with the counterfactual texts as "
            "extra negatives; clip, i2t and cftsym are the comparisons",
    "temperature": "Fixed softmax temperature of i2t and cft (the paper: 0.05); clip and cftsym learn their "
                   "scale and ignore it",
    "lr": "AdamW learning rate, 1e-4 in the paper",
    "weight_decay": "AdamW weight decay; the original code kept torch's default, 0.01",
    "batch_size": "Items per batch, negatives of one another (the paper: 128); training drops the last "
                  "incomplete batch, validation keeps it",
    "max_epochs": "Most passes over the training items, 20 in the paper",
    "schedule": "Learning-rate schedule: cosine decays once over the run, periodic is the original code's "
                "repeating 100-step cosine (lr 0 at step 100, back to lr at 200), constant keeps lr",
    "warmup_steps": "Steps of linear learning-rate warm-up before the schedule; the paper used none",
    "val_every_steps": "Optimiser steps between validations: 160 in the original code (20,480 samples at batch "
                       "128), 20 in the paper's text",
    "patience": "Validations without improvement before training stops early, 5 in the paper",
    "freeze_text_layers": "Freeze the text embeddings and the first k text layers (the paper: 11 of ViT-L/14's "
                          "12); 0 freezes nothing",
    "freeze_vision_layers": "Freeze the vision embeddings and the first k vision layers; 0 (the paper's) freezes "
                            "nothing",
    "counterfactuals_per_text": "Counterfactual texts per item that cft and cftsym use as negatives, 1 in the paper",
    "seed": "Seed of Python, NumPy and torch and of the data order; the paper ran seeds 0-4",
    "precision": "Training precision: auto (bf16 where the device supports it), bf16 (autocast) or fp32, the "
                 "original code's",
    "grad_clip": "Largest gradient norm, clipped above it; none (the paper's): no clipping",
    "text_field": "The item text trained on, title or summary; the paper trained on summary",
    "max_steps": "Stop after this many optimiser steps, for tests and demos; none: train for max_epochs",
    "device": "Torch device to train on, e.g. cuda:1; none: cuda when available, else cpu",
    "num_workers": "DataLoader worker processes that prepare batches; 0: the training process itself",
    "gradient_checkpointing": "Recompute activations in the backward pass, saving GPU memory for time; none: on "
                              "for CUDA runs",
    "pixel_cache_dir": "Folder of decoded images; share it across runs so later seeds decode none; none: the "
                       "run folder's pixel-cache",
    "snapshot_steps": "Also save the model after these optimiser steps (e.g. 100,500), in the run folder's "
                      "snapshots/step-N",
    "long_texts": "Texts longer than the model's token window: truncate (cut and counted) or drop, as the "
                  "original code did: they never reach training",
    "ties_improve": "Count a validation loss equal to the best as improvement, as the original code's early "
                    "stopping did; false: only a lower loss counts",
    "item_subset": "Which items train: counterfactual (those with counterfactuals, for every loss, so ablations "
                   "compare like with like) or all, where losses without counterfactuals use every item",
    "replicate_original": "Replicate the released code exactly, undoing the product's fixes",
}
FIELD_CHOICES: dict[str, tuple[str, ...]] = {  # the fields with a fixed set of values
    "loss": tuple(LOSSES), "schedule": SCHEDULES, "precision": PRECISIONS, "text_field": TEXT_FIELDS,
    "long_texts": LONG_TEXTS, "item_subset": ITEM_SUBSETS,
}


def field_help(name: str) -> str:
    """What a ``TrainConfig`` field does, then its default: ``--help`` and the Train form say it so."""
    return f"{FIELD_HELP[name]} (default: {as_text(getattr(TrainConfig, name)) or 'none'})"


def typed_values(texts: Mapping[str, str]) -> dict[str, Any]:
    """Typed values from text, by each ``TrainConfig`` field's annotation (``int | None``...). Text that
    does not parse is kept as text, so ``validate`` refuses it naming the field."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}  # annotations as written
    values: dict[str, Any] = {}
    for name, raw in texts.items():
        text = str(raw).strip()
        kind = kinds.get(name, "str")
        if text.lower() in ("", "none") and "None" in kind:
            values[name] = None
        elif kind.startswith("bool") and text.lower() in _TRUE + _FALSE:
            values[name] = text.lower() in _TRUE
        elif kind.startswith("int") and re.fullmatch(r"[+-]?\d+", text):
            values[name] = int(text)
        elif kind.startswith("float") and _parses_as_float(text):
            values[name] = float(text)
        elif kind.startswith("tuple[int"):
            parts = [p.strip() for p in text.split(",") if p.strip()]
            values[name] = tuple(int(p) for p in parts) if all(re.fullmatch(r"\d+", p) for p in parts) else text
        else:
            values[name] = text
    return values


def as_text(value: Any) -> str:
    """A config value as a form shows it (``typed_values`` reads it back): empty for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: object) -> bool:
    return _number(value) and value > 0  # type: ignore[operator]


def _parses_as_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
