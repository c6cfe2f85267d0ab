"""Saving models (``save_pretrained`` folders, written atomically) and the resumable trainer state."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPImageProcessorPil

from cftclip_core.errors import ConfigError
from cftclip_core.models import LoadedModel
from cftclip_core.specs.training import TrainConfig

SNAPSHOTS_DIR = "snapshots"  # models saved at TrainConfig.snapshot_steps (one run, several lengths)
LAST_DIR = "last"  # the resumable checkpoint written when a run is stopped (e.g. by SIGTERM)
TRAINER_STATE = "trainer_state.pt"  # inside LAST_DIR: optimiser, schedule, step, RNG states
RESUME_MAY_CHANGE = ("max_steps", "max_epochs", "device", "num_workers", "pixel_cache_dir", "gradient_checkpointing",
                     "snapshot_steps")


def save_model(loaded: LoadedModel, target: Path) -> Path:
    """Write model, tokenizer and preprocessing as a ``save_pretrained`` folder, atomically: a crash or a
    full disk leaves the previous folder in place, never a half-written one."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.saving-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        cfg = loaded.preprocess
        CLIPImageProcessorPil(
            size={"shortest_edge": cfg.size}, do_center_crop=cfg.crop is not None,
            crop_size={"height": cfg.crop or cfg.size, "width": cfg.crop or cfg.size},
            image_mean=list(cfg.mean), image_std=list(cfg.std), resample=cfg.resample,
            rescale_factor=cfg.rescale_factor,
        ).save_pretrained(tmp)
        if loaded.is_tiny:
            (tmp / "cftclip_tiny.json").write_text(json.dumps({"note": "fine-tuned from the tiny model"}))
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_trainer_state(target: Path, payload: dict[str, Any]) -> None:
    """The optimiser, schedule, step and RNG states beside a saved model, written atomically."""
    tmp = target / f".{TRAINER_STATE}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, target / TRAINER_STATE)


def load_trainer_state(out: Path, config: TrainConfig) -> dict[str, Any]:
    """The state saved by an interrupted run, checked against ``config``."""
    path = out / LAST_DIR / TRAINER_STATE
    if not path.is_file():
        raise ConfigError(f"Cannot resume: {path} does not exist. Resume only a run that was stopped (SIGTERM) "
                          "in this folder, or start a new run without --resume.")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    changed = [name for name, value in saved["config"].items()
               if name not in RESUME_MAY_CHANGE and getattr(config, name, value) != value]
    if changed:
        raise ConfigError(f"Cannot resume with a changed config: {', '.join(changed)} differ from the stopped run's "
                          f"(see {out / 'config.json'}); resume with the same settings or start a new run.")
    return saved
