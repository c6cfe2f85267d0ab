"""The models the studio offers by name, and the depth of a model's towers read from its config file,
without torch or transformers (the Train page fits its freezing fields to the depth; the trainer checks it
again when it loads the weights)."""

from __future__ import annotations

import json
from pathlib import Path

from cftclip_core.specs.training import DEFAULT_MODEL

TINY_NAME = "tiny-demo"
KNOWN_MODELS = {  # offered by name in the app; any hub id or local folder works too
    TINY_NAME: "tiny offline model (random weights, for trying the studio)",
    DEFAULT_MODEL: "CLIP ViT-L/14, zero-shot (the paper's backbone)",
    "humane-lab/CFT-CLIP": "CFT-CLIP, the released checkpoint",
}
TINY_LAYERS = 2  # transformer layers in each of the tiny model's towers
CLIP_DEFAULT_LAYERS = 12  # what transformers' CLIPTextConfig and CLIPVisionConfig assume when a config omits it


def tower_depths(name: str) -> tuple[int, int] | None:
    """(text layers, vision layers) of a model, read from its config.json without loading any weights; None when
    no config is at hand (a hub id not downloaded yet) or it is not a CLIP model."""
    if name == TINY_NAME:
        return TINY_LAYERS, TINY_LAYERS
    path = Path(name).expanduser()
    config_file = path / "config.json" if path.is_dir() else _downloaded_config(name)
    if config_file is None:
        return None
    try:
        found = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("model_type") != "clip":
        return None
    depths = []
    for tower in ("text", "vision"):
        config = found.get(f"{tower}_config") or found.get(f"{tower}_config_dict") or {}
        depths.append(int(config.get("num_hidden_layers", CLIP_DEFAULT_LAYERS)))
    return depths[0], depths[1]


def _downloaded_config(repo_id: str) -> str | None:
    """The config.json of a hub model in the local Hugging Face cache, if it was downloaded."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except (HFValidationError, ValueError):
        return None
    return found if isinstance(found, str) else None
