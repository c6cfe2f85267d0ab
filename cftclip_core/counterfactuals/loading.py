"""Finding the models a recipe needs: fail fast on a path that does not exist, say how to get a missing
model, and tell, without loading anything, whether a model is on this machine."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from cftclip_core.errors import ModelError
from cftclip_core.specs.counterfactuals import PAPER_MLM

PAPER_REQUIREMENTS = "pip install -r requirements-paper.txt"


def check_model_source(model: str) -> None:
    """Fail at once for a local path that does not exist, instead of asking the hub about it."""
    path = Path(model).expanduser()
    if path.exists():
        return
    from cftclip_core.models import _looks_like_hub_id

    if not _looks_like_hub_id(model):
        raise ModelError(f"No model folder at '{model}': check the path, or give a hub id such as {PAPER_MLM}.")


def load_message(model: str, exc: Exception) -> str:
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
    if Path(model).expanduser().exists():
        return f"Cannot load the model in folder '{model}' ({detail}). Save it again with save_pretrained(DIR)."
    where = ("this machine is offline (HF_HUB_OFFLINE is set)" if hub_offline()
             else "the Hugging Face hub could not provide it")
    return (
        f"Cannot load '{model}': it is not a local folder and {where} ({detail}). Download it where there is "
        f"internet (`hf download {model} --local-dir DIR`) and pass DIR, or use the offline choices "
        "(rule-based tagger, entity-swap infiller)."
    )


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def spacy_pipeline_missing(pipeline: str) -> str | None:
    """Why the spaCy pipeline cannot load here (spaCy or the pipeline not installed), or None when it can."""
    if importlib.util.find_spec("spacy") is None:
        return (f"spaCy is not installed ({PAPER_REQUIREMENTS}, then `python -m spacy download {pipeline}` for "
                "the paper's NER pipeline)")
    if Path(pipeline).expanduser().is_dir():
        return None
    if importlib.util.find_spec(pipeline.replace("-", "_")) is None:
        return (f"the spaCy pipeline '{pipeline}' is not installed (`python -m spacy download {pipeline}` where "
                "there is internet, or pip install the pipeline's wheel)")
    return None


def hub_model_missing(name: str, what: str) -> str | None:
    """Why ``name`` (a local folder or a hub id) cannot load without the internet, or None when it can: a
    folder that exists, or a hub id already in the Hugging Face cache."""
    if Path(name).expanduser().is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    from cftclip_core.models import _looks_like_hub_id

    if not _looks_like_hub_id(name):
        return f"there is no {what} folder at '{name}'"

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except (ValueError, OSError):
        cached = None
    if isinstance(cached, str):
        return None
    return (f"the {what} '{name}' is not on this machine (not a folder, not in the Hugging Face cache); download "
            f"it where there is internet (`hf download {name}`, or `--local-dir DIR` and pass DIR)")
