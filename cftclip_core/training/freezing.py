"""Which parameters train (freezing by module name) and the learning-rate schedule."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from transformers import CLIPModel

from cftclip_core.errors import ConfigError
from cftclip_core.specs.training import TrainConfig

logger = logging.getLogger(__name__)

PERIODIC_T_MAX = 100  # the original code's CosineAnnealingLR(T_max=100), stepped every iteration


@dataclass(frozen=True)
class FreezeReport:
    trainable: int  # parameters (elements) that train
    frozen: int
    frozen_modules: tuple[str, ...]  # named submodules frozen


def freeze(model: CLIPModel, config: TrainConfig) -> FreezeReport:
    """Freeze the embeddings and the first k encoder layers of each tower, by module name.

    The original code froze by parameter index, which silently shifts when the architecture does;
    names do not. k = 0 freezes nothing in that tower.
    """
    names: list[str] = []
    for tower, k in (("text_model", config.freeze_text_layers), ("vision_model", config.freeze_vision_layers)):
        if k == 0:
            continue
        layers = getattr(model, tower).encoder.layers
        if k > len(layers):
            raise ConfigError(
                f"freeze_{tower.split('_')[0]}_layers={k} but the model's {tower} has only {len(layers)} layers; "
                f"use 0 to {len(layers)}."
            )
        names.append(f"{tower}.embeddings")
        if tower == "vision_model":
            names.append("vision_model.pre_layrnorm")  # applied right after the embeddings
        names.extend(f"{tower}.encoder.layers.{i}" for i in range(k))
    for p in model.parameters():
        p.requires_grad_(True)
    for name in names:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    logger.info("Frozen %s: %d parameters train, %d frozen", ", ".join(names) or "nothing", trainable, frozen)
    return FreezeReport(trainable, frozen, tuple(names))


def lr_factor(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning-rate multiplier for optimiser step ``step`` (0-based) of ``total_steps``."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "periodic":  # CosineAnnealingLR's recurrence = this cosine, continued periodically
        return 0.5 * (1 + math.cos(math.pi * step / PERIODIC_T_MAX))
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return 0.5 * (1 + math.cos(math.pi * progress))
