"""The commands a run can execute, as ``python -m MODULE ARGS`` so that every launcher (a plain
process, torchrun, srun) can wrap them the same way.

Two kinds: ``train`` (``python -m cftclip_core train``, the run folder contract) and ``proof`` (the
synthetic proof, ``python -m cftclip_core.proof run``). Configs are checked here, before anything
is written or launched, with errors that name the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cftclip_core.errors import ConfigError
from cftclip_core.specs.training import TrainConfig

THRESHOLDS = ("val-median", "f1-optimal")
PROOF_FIELDS = {"world": "many", "arm": "cft"}  # the proof's options and their defaults
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class JobKind:
    """Both kinds follow the run folder contract: heartbeat.json while alive, metrics.json, eval/."""

    name: str
    module: str


TRAIN = JobKind("train", "cftclip_core")
PROOF = JobKind("proof", "cftclip_core.proof")
KINDS = {kind.name: kind for kind in (TRAIN, PROOF)}


def python_command(kind: JobKind, args: list[str]) -> list[str]:
    """The stored form of a run's command; launchers swap ``python`` for their interpreter or torchrun."""
    return ["python", "-m", kind.module, *args]


def split_command(command: list[str]) -> tuple[str, list[str]]:
    """(module, arguments) of a command made by :func:`python_command`."""
    if len(command) < 3 or command[:2] != ["python", "-m"]:
        raise ValueError(f"not a 'python -m MODULE ...' command: {command!r}")
    return command[2], command[3:]


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config as canonical JSON: equal configs (any key order) hash equal."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- train ---------------------------------------------------------------------------------------------
def validate_train_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as a plain dict if ``TrainConfig`` accepts it; else ``ConfigError`` naming the field.

    The same rules as the trainer's (``cftclip_core.specs``, torch-free), checked before a run is
    created, not minutes later in a job's log. The freeze fields are checked against the model's depth
    when its config can be read here (the tiny model, a local folder, a downloaded hub model).
    """
    from cftclip_core.models import tower_depths  # reads config files; imports torch, so only when checking

    config = dict(config)
    if "seed" in config:
        raise ConfigError("seed is set per run from the experiment's seeds; remove it from the config and list the "
                          "seeds instead (default 0-4).")
    checked = TrainConfig.from_mapping(config)
    depths = tower_depths(checked.model)
    if depths is not None:
        checked.validate(text_layers=depths[0], vision_layers=depths[1])
    return config


def threshold_value(value: str) -> str | float:
    """A checked threshold as the evaluation takes it: a strategy name, or a number."""
    value = check_threshold(value)
    return value if value in THRESHOLDS else float(value)


def check_threshold(value: str) -> str:
    value = str(value).strip()
    if value in THRESHOLDS:
        return value
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"threshold={value!r} is not valid: use {', '.join(THRESHOLDS)} or a number.") from None
    if not math.isfinite(number):
        raise ConfigError(f"threshold={value!r} is not valid: use a finite number.")
    return value


def train_args(data_dir: Path, config_file: Path, seed: int, run_dir: Path, *, has_eval: bool, threshold: str,
               pixel_cache: Path | None, threshold_from: str | None = None) -> list[str]:
    """``pixel_cache``: a crop cache shared by every run (later seeds decode no image), given as a flag
    so that it stays out of the config and its hash. ``threshold_from``: where the evaluation's threshold is
    chosen (train-val or eval-val; None for a fixed number)."""
    args = ["train", "--train", str(data_dir / "train.csv"), "--val", str(data_dir / "val.csv")]
    if has_eval:
        args += ["--eval", str(data_dir / "eval.csv"), "--threshold", threshold]
        if threshold_from is not None:
            args += ["--threshold-from", threshold_from]
    if pixel_cache is not None:
        args += ["--pixel-cache-dir", str(pixel_cache)]
    return [*args, "--config", str(config_file), "--seed", str(seed), "--out", str(run_dir)]


# --- proof ---------------------------------------------------------------------------------------------
def validate_proof_config(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - set(PROOF_FIELDS))
    if unknown:
        raise ConfigError(f"Unknown proof option(s) {', '.join(unknown)}; known: {', '.join(PROOF_FIELDS)}.")
    merged = {**PROOF_FIELDS, **config}
    for name, value in merged.items():
        if not isinstance(value, str) or not _WORD.fullmatch(value):
            raise ConfigError(f"proof option {name}={value!r} is not valid: use a short name of letters, digits, "
                              "'-', '_' or '.' (see python -m cftclip_core.proof run --help).")
    return merged


def proof_args(config: Mapping[str, Any], seed: int, run_dir: Path, cache_dir: Path) -> list[str]:
    return ["run", "--world", config["world"], "--arm", config["arm"], "--seed", str(seed), "--out", str(run_dir),
            "--cache", str(cache_dir)]
