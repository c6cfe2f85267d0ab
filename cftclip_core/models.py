"""Loading CLIP models, fingerprinting them, and building the tiny offline model.

Every model goes through ``from_pretrained``: a hub id, a local directory (including checkpoints of our
own runs, saved with ``save_pretrained``), or ``tiny-demo``, a small random-weight CLIP with a CLIP
tokenizer trained on local texts. The tiny model exists so that tests and the offline demo exercise
the real loading and scoring code; its scores mean nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer
from transformers.utils import logging as hf_logging

from cftclip_core.errors import ModelError
from cftclip_core.images import PreprocessConfig
from cftclip_core.specs.models import KNOWN_MODELS, TINY_LAYERS, TINY_NAME, tower_depths  # noqa: F401 - also used as models.X
from cftclip_core.specs.training import DEFAULT_MODEL

log = logging.getLogger(__name__)

TINY_VERSION = 1  # bump when the tiny recipe changes, so old builds are not reused
TINY_TOKENIZER_DIR = Path(__file__).parent / "tiny_tokenizer"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.index.json")  # single files, shards and shard indexes
FINGERPRINT_FILES = ("config.json", "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                     "special_tokens_map.json", "added_tokens.json", "preprocessor_config.json")
MIN_TOKENIZER_SIZE = 100  # fewer tokens than this is a broken tokenizer, not a real CLIP one


@dataclass
class LoadedModel:
    """A CLIP model ready to score, with what is needed to reproduce its scores."""

    name: str  # what the user asked for
    fingerprint: str  # hub id@commit, or a content hash of the weights and tokenizer
    model: CLIPModel
    tokenizer: CLIPTokenizer
    preprocess: PreprocessConfig
    is_tiny: bool

    @property
    def max_text_tokens(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def quiet_progress_bars_off_terminal() -> None:
    """Turn off transformers' weight loading and saving bars when stderr is not a terminal: in a job's log
    file they are one line of noise per load and per checkpoint."""
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()


def load_model(name: str, *, cache_dir: Path | None = None, device: str | torch.device | None = None) -> LoadedModel:
    """Load a CLIP model by hub id, local directory or ``tiny-demo``.

    ``tiny-demo`` is built on first use in ``cache_dir`` (required for it) and reused afterwards.
    """
    target = _check_device(device)
    is_tiny = name == TINY_NAME
    if is_tiny:
        if cache_dir is None:
            raise ModelError("The tiny-demo model needs a cache folder to be built in; pass cache_dir.")
        path: Path | None = ensure_tiny_model(Path(cache_dir) / f"{TINY_NAME}-v{TINY_VERSION}")
    else:
        path = Path(name).expanduser()
        if not path.is_dir():
            if path.is_file():
                raise ModelError(f"'{name}' is a file; give the folder that holds the model (config.json, weights).")
            if not _looks_like_hub_id(name):
                raise ModelError(
                    f"No model folder at '{name}': check the path, or give a hub id such as {DEFAULT_MODEL}."
                )
            path = None  # a hub id
    if path is not None:
        _check_model_folder(path)
    source = str(path) if path is not None else name
    try:
        model = CLIPModel.from_pretrained(source)
        tokenizer = CLIPTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_failure_message(name, exc, local=path is not None)) from None
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelError(_damaged_message(name, path, exc)) from None
    _check_tokenizer_fits(name, tokenizer, model)
    model.eval()
    if target is not None:
        model.to(target)
    return LoadedModel(
        name=name,
        fingerprint=directory_fingerprint(path) if path is not None else _hub_fingerprint(name, model),
        model=model,
        tokenizer=tokenizer,
        preprocess=_preprocess_config(source),
        is_tiny=is_tiny or _is_marked_tiny(source),
    )


def _check_device(device: str | torch.device | None) -> torch.device | None:
    """The device to load onto; a clear error for a name torch does not know or a GPU that is absent."""
    if device is None:
        return None
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"Unknown device '{device}': use cpu, cuda or cuda:N.") from None
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError("No CUDA GPU is available here; use --device cpu (or device='cpu').")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ModelError(
                f"There is no GPU {target.index} here ({torch.cuda.device_count()} visible); use cuda:0 or --device cpu."
            )
    return target


# A hub id is "name" or "owner/name" with letters, digits, '-', '_' and '.' (e.g. timm/...clip_224.openai).
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*")


def _looks_like_hub_id(name: str) -> bool:
    return _HUB_ID.fullmatch(name) is not None and ".." not in name and not name.endswith(".")


def _check_model_folder(path: Path) -> None:
    """Name every file a local model folder lacks, before transformers gives a vaguer error."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json (save the model with model.save_pretrained(DIR))")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(
            "the weights: model.safetensors, pytorch_model.bin, or a sharded model's *.index.json with its shards "
            "(save the model with model.save_pretrained(DIR))"
        )
    if not (path / "tokenizer.json").is_file() and not all((path / f).is_file() for f in ("vocab.json", "merges.txt")):
        missing.append("the tokenizer: tokenizer.json, or vocab.json + merges.txt "
                       "(save the tokenizer with tokenizer.save_pretrained(DIR))")
    if missing:
        raise ModelError(
            f"The model folder '{path}' is incomplete; it lacks " + "; and ".join(missing)
            + ". Save both into the folder and load it again."
        )


def _check_tokenizer_fits(name: str, tokenizer: CLIPTokenizer, model: CLIPModel) -> None:
    """A tokenizer that does not belong to the model gives meaningless scores or an index error later."""
    size = len(tokenizer)
    vocab_size = int(model.config.text_config.vocab_size)
    if size > vocab_size:
        raise ModelError(
            f"The tokenizer of '{name}' has {size} tokens but the model's text embedding only {vocab_size}: "
            "they do not belong together. Save the model's own tokenizer into its folder "
            "(tokenizer.save_pretrained(DIR))."
        )
    if size < MIN_TOKENIZER_SIZE:
        raise ModelError(
            f"The tokenizer of '{name}' has only {size} tokens, too few for a CLIP tokenizer; its files are "
            "probably incomplete. Save the model's tokenizer with tokenizer.save_pretrained(DIR)."
        )


def _load_failure_message(name: str, exc: Exception, *, local: bool) -> str:
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
    if local:
        return (
            f"Cannot load the model in folder '{name}' ({detail}). Re-save it with model.save_pretrained(DIR) "
            "and tokenizer.save_pretrained(DIR), or download it again."
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    where = "this machine is offline (HF_HUB_OFFLINE is set)" if offline else "the Hugging Face hub could not provide it"
    return (
        f"Cannot load model '{name}': it is not a local model folder and {where} ({detail}). Download it where "
        f"there is internet (`hf download {name} --local-dir DIR`) and pass DIR, or use the offline model '{TINY_NAME}'."
    )


def _damaged_message(name: str, path: Path | None, exc: Exception) -> str:
    files = ", ".join(f.name for f in _weight_files(path)) if path is not None else "its weight files"
    return (
        f"The weights of model '{name}' ({files}) are damaged or do not match its config.json "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). The file was probably "
        "cut short while copying or downloading: copy or download it again."
    )


def _hub_fingerprint(name: str, model: CLIPModel) -> str:
    commit = getattr(model.config, "_commit_hash", None)
    return f"{name}@{commit}" if commit else name


def _preprocess_config(source: str) -> PreprocessConfig:
    path = Path(source)
    if path.is_dir():
        if (path / "preprocessor_config.json").is_file():
            return PreprocessConfig.from_pretrained_dir(path)
        return PreprocessConfig()
    try:
        return PreprocessConfig.from_image_processor(CLIPImageProcessorPil.from_pretrained(source))
    except OSError:
        log.warning("No image processor config for %s; using CLIP's standard preprocessing", source)
        return PreprocessConfig()


def _is_marked_tiny(source: str) -> bool:
    marker = Path(source) / "cftclip_tiny.json"
    return marker.is_file()


def _weight_files(path: Path) -> list[Path]:
    return sorted(f for pattern in WEIGHT_PATTERNS for f in path.glob(pattern) if f.is_file())


def directory_fingerprint(path: Path) -> str:
    """Content hash of the files that determine a local model's scores: config, every weight file
    (shards and their index included), tokenizer and preprocessing settings."""
    files = sorted({*_weight_files(path), *(path / f for f in FINGERPRINT_FILES if (path / f).is_file())})
    if not files:
        raise ModelError(f"'{path}' holds no model files (config.json, model.safetensors); is it a model folder?")
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(stats)


@functools.lru_cache(maxsize=32)
def _hash_files(stats: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, size, _ in stats:
        digest.update(f"{Path(name).name}\0{size}\0".encode())  # name and length keep file boundaries apart
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:32]


# --- the tiny offline model -------------------------------------------------------------------


def tiny_config(vocab_size: int, eos_id: int, pad_id: int, bos_id: int) -> CLIPConfig:
    """A CLIP small enough for CPU tests, with CLIP's 77-token text window and 224-pixel input."""
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=TINY_LAYERS,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=64,
            # The trained tokenizer gives pad, eos and unk one id; pooling reads the first eos position
            # only if eos_token_id is that id (the legacy value 2 means "take the argmax id").
            eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=bos_id,
        ),
        vision_config=dict(
            hidden_size=64, intermediate_size=256, num_hidden_layers=TINY_LAYERS, num_attention_heads=2,
            image_size=224, patch_size=32, projection_dim=64,
        ),
        projection_dim=64,
    )
    return config


def tokenizer_corpus(extra_texts: Iterable[str] = ()) -> list[str]:
    """Texts the tiny tokenizer learns from: the demo set, the synthetic world, and every single
    printable character as its own word (a character never seen at the end of a word would
    otherwise be dropped silently by CLIP's ``</w>`` BPE)."""
    from cftclip_core import synthetic
    from cftclip_core.demo import demo_table_path
    from cftclip_core.formats import read_table

    table = read_table(demo_table_path(), check_images=False)
    texts = [t for r in table.records for t in (r.title, r.summary)]
    texts += synthetic.caption_corpus(synthetic.World.from_config(synthetic.WorldConfig()))
    characters = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 256)]
    texts.append(" ".join(characters))
    texts.extend(extra_texts)
    return texts


def train_tokenizer(out_dir: Path, extra_texts: Iterable[str] = ()) -> CLIPTokenizer:
    """Train the tiny model's CLIP tokenizer on local texts and save it.

    The tokenizers library breaks ties between equally frequent merges in hash order, so two
    trainings can differ; the product therefore ships one trained tokenizer (``TINY_TOKENIZER_DIR``)
    and ``build_tiny_model`` reuses it, which keeps the tiny model byte-for-byte reproducible.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    tokenizer = CLIPTokenizer().train_new_from_iterator(
        tokenizer_corpus(extra_texts), vocab_size=2048, initial_alphabet=ByteLevel.alphabet()
    )
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_tiny_model(out_dir: Path, *, seed: int = 0, tokenizer_dir: Path = TINY_TOKENIZER_DIR) -> Path:
    """Build the tiny model deterministically and save it with ``save_pretrained``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = tiny_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id)
    model = CLIPModel(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    CLIPImageProcessorPil().save_pretrained(out_dir)  # CLIP's standard 224-pixel preprocessing
    (out_dir / "cftclip_tiny.json").write_text(
        json.dumps({"name": TINY_NAME, "version": TINY_VERSION, "seed": seed,
                    "note": "random weights: scores carry no meaning"}, indent=2)
    )
    return out_dir


def ensure_tiny_model(path: Path) -> Path:
    """Return the tiny model at ``path``, building it there first if it is missing."""
    if (path / "cftclip_tiny.json").is_file():
        return path
    if path.exists():  # an interrupted build
        shutil.rmtree(path, ignore_errors=True)
    tmp = path.with_name(path.name + f".building-{os.getpid()}")
    build_tiny_model(tmp)
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return path
