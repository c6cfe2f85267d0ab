"""The synthetic proof's specification: worlds, arms, stage-0 doses, settings and the pre-registered grid.

Torch-free (a test asserts it), so the job queue and the app can plan, check and estimate the proof
without loading a model. The protocol these values implement is in docs/synthetic-proof.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cftclip_core.errors import ConfigError
from cftclip_core.formats import TEXT_FIELDS
from cftclip_core.specs.seeds import check_seeds
from cftclip_core.synthetic import WorldConfig

PROOF_VERSION = 2  # bump when rendering, the model or stage 0 change, so old cache entries are not reused
NAME_SEED = 0  # every world uses the names of world seed 0: whole words of the shipped tiny tokenizer
PREREGISTERED_SEEDS = (100, 101, 102, 103, 104, 105)  # fresh: never used by an earlier proof run
PRIMARY_WORLD = "many"
PRIMARY_CONTRASTS = (("cft", "i2t"), ("cft", "clip"))  # Holm-corrected together
SECONDARY_CONTRASTS = (("cft-m3", "cft"),)
PRIMARY_METRIC = "roc_auc"
ALPHA = 0.05
CONTEXT_NEGATIVE_SEED = 0  # which other context each test image gets in the context AUC
METRICS: tuple[tuple[str, str], ...] = (  # (key in each dose's metrics, label in the report)
    ("roc_auc", "ROC-AUC (name swap)"),
    ("f1", "F1 (val threshold)"),
    ("name_accuracy", "16-way name accuracy"),
    ("context_auc", "context AUC"),
    ("image_auc_person", "image AUC: other person"),
    ("image_auc_empty", "image AUC: nobody"),
)


@dataclass(frozen=True)
class ArmSpec:
    loss: str | None  # the stage-1 loss (cftclip_core.loss); None: not trained (the stage-0 model)
    swaps: int  # name-swap counterfactuals per caption (the cft losses), 0 otherwise
    description: str


ARMS: dict[str, ArmSpec] = {
    "zero-shot": ArmSpec(None, 0, "the dose's stage-0 model, not trained further"),
    "clip": ArmSpec("clip", 0, "plain symmetric CLIP loss, learned scale, in-batch negatives"),
    "i2t": ArmSpec("i2t", 0, "image-to-text InfoNCE at temperature 0.05, no counterfactuals (cft's loss form)"),
    "cft": ArmSpec("cft", 1, "the paper's loss: i2t plus M=1 name-swap counterfactual per caption"),
    "cft-m3": ArmSpec("cft", 3, "i2t plus M=3 name-swap counterfactuals per caption"),
}


@dataclass(frozen=True)
class WorldSpec:
    config: WorldConfig  # the data seed and image size are set per run (see world_config)
    description: str
    arms: tuple[str, ...]  # the pre-registered arms of this world


WORLDS: dict[str, WorldSpec] = {
    "many": WorldSpec(WorldConfig(name_seed=NAME_SEED),
                      "128 contexts: random batch negatives almost never share the context", tuple(ARMS)),
    "few": WorldSpec(WorldConfig(n_contexts=6, name_seed=NAME_SEED),
                     "6 contexts: random batch negatives often share the context", ("zero-shot", "clip", "i2t", "cft")),
}


@dataclass(frozen=True)
class ProofSettings:
    """Everything besides world, arm and seeds that a run's result depends on (and ``device``).

    ``stage0_steps`` are the doses: one constant-learning-rate stage-0 run per (world, seed) is saved
    after each of these steps, and every arm runs from each of them.
    """

    train_items: int = 3000
    val_items: int = 400
    test_items: int = 800
    image_size: int = 64
    text_field: str = "title"
    stage0_steps: tuple[int, ...] = (400, 1200, 2400)
    stage0_lr: float = 1e-3
    steps: int = 300
    lr: float = 3e-4
    batch_size: int = 64
    warmup_steps: int = 30
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    temperature: float = 0.05
    device: str = "cpu"

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the flag of the first invalid value."""
        def bad(name: str, why: str) -> ConfigError:
            value = getattr(self, name)
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)
            return ConfigError(f"--{flag(name)}={shown} is not valid: {why}.")

        for name in ("train_items", "steps", "batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "use a positive integer")
        for name in ("val_items", "test_items"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 2:
                raise bad(name, "use at least 2 images")
        if self.train_items < self.batch_size:
            raise bad("train_items", f"it must be at least --batch-size ({self.batch_size})")
        doses = self.stage0_steps
        if (not isinstance(doses, tuple) or not doses or not all(is_int(d) and d >= 1 for d in doses)
                or list(doses) != sorted(set(doses))):
            raise bad("stage0_steps", "give increasing positive step counts separated by commas, e.g. 400,1200,2400")
        if not is_int(self.image_size) or not 32 <= self.image_size <= 1024 or self.image_size % 8:
            raise bad("image_size", "use a multiple of 8 from 32 to 1024 (the model's patches are 8 pixels)")
        if self.text_field not in TEXT_FIELDS:
            raise bad("text_field", f"choose one of {', '.join(TEXT_FIELDS)}")
        for name in ("stage0_lr", "lr", "grad_clip", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise bad(name, "use a positive number")
        if not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            raise bad("weight_decay", "use 0 or a positive number")
        if not is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise bad("warmup_steps", "use 0 or a positive integer")
        if not self.device:
            raise bad("device", "use cpu, cuda or cuda:N")

    @property
    def stage0_total(self) -> int:
        """The length of the one stage-0 run per (world, seed): its longest dose."""
        return self.stage0_steps[-1]

    def to_args(self) -> list[str]:
        """The flags that give these settings (those that differ from the defaults)."""
        default = ProofSettings()
        return [part for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(default, f.name)
                for part in (f"--{flag(f.name)}", format_value(getattr(self, f.name)))]

    def result_key(self) -> dict[str, Any]:
        """The settings results depend on (all but the device), for comparing runs."""
        values = dataclasses.asdict(self)
        del values["device"]
        values["stage0_steps"] = list(self.stage0_steps)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ProofSettings:
        """Settings as ``dataclasses.asdict`` or JSON gave them back (lists become tuples)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown proof setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def flag(field_name: str) -> str:
    return field_name.replace("_", "-")


def format_value(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def parse_steps(text: str) -> tuple[int, ...]:
    """``400,1200,2400`` as a tuple (the stage-0 doses flag); ``ConfigError`` names the flag."""
    try:
        return tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--stage0-steps={text} is not valid: give increasing positive step counts separated by "
                          "commas, e.g. 400,1200,2400.") from None


def check_choice(kind: str, value: str, known: Sequence[str]) -> str:
    if value not in known:
        raise ConfigError(f"Unknown {kind} '{value}': choose one of {', '.join(known)}.")
    return value


def parse_list(kind: str, text: str, known: Sequence[str]) -> list[str]:
    """A comma-separated list of known names, in the order given, without repeats."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"No {kind} given; name one or more of {', '.join(known)}, separated by commas.")
    return list(dict.fromkeys(check_choice(kind, name, known) for name in names))


def world_config(world: str, settings: ProofSettings, data_seed: int) -> WorldConfig:
    """The world of one data seed: it draws the looks, who has which name, the contexts (few) and the render."""
    return dataclasses.replace(WORLDS[world].config, image_size=settings.image_size, seed=data_seed)


@dataclass(frozen=True, order=True)
class RunKey:
    """One run: an arm of a world trained from every dose of one (seed, data seed)."""

    world: str
    arm: str
    seed: int
    data_seed: int

    def describe(self) -> str:
        data = "" if self.data_seed == self.seed else f" (data seed {self.data_seed})"
        return f"{self.world} {self.arm} seed {self.seed}{data}"


def grid(worlds: Sequence[str] = tuple(WORLDS), seeds: Sequence[int] = PREREGISTERED_SEEDS, *,
         arms: Sequence[str] | None = None, data_seed: int | None = None) -> list[RunKey]:
    """The runs of a grid, in launch order: world, then arm, then seed (so that parallel runs build
    different stage-0 models). ``arms=None``: each world's pre-registered arms. ``data_seed=None``:
    each seed renders its own world."""
    for world in worlds:
        check_choice("world", world, list(WORLDS))
    for arm in arms or ():
        check_choice("arm", arm, list(ARMS))
    check_seeds(seeds)
    if data_seed is not None:
        check_seeds([data_seed])
    return [RunKey(world, arm, seed, seed if data_seed is None else data_seed)
            for world in worlds for arm in (arms or WORLDS[world].arms) for seed in seeds]
