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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

from cftclip_core.errors import ModelError
from cftclip_core.images import PreprocessConfig

log = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-large-patch14"
TINY_NAME = "tiny-demo"
KNOWN_MODELS = {  # offered by name in the app; any hub id or local folder works too
    TINY_NAME: "tiny offline model (random weights, for trying the studio)",
    DEFAULT_MODEL: "CLIP ViT-L/14, zero-shot (the paper's backbone)",
    "humane-lab/CFT-CLIP": "CFT-CLIP, the released checkpoint",
}
TINY_VERSION = 1  # bump when the tiny recipe changes, so old builds are not reused
TINY_TOKENIZER_DIR = Path(__file__).parent / "tiny_tokenizer"
FINGERPRINT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.json",
                     "merges.txt", "preprocessor_config.json")


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


def load_model(name: str, *, cache_dir: Path | None = None, device: str | torch.device | None = None) -> LoadedModel:
    """Load a CLIP model by hub id, local directory or ``tiny-demo``.

    ``tiny-demo`` is built on first use in ``cache_dir`` (required for it) and reused afterwards.
    """
    is_tiny = name == TINY_NAME
    if is_tiny:
        if cache_dir is None:
            raise ModelError("The tiny-demo model needs a cache folder to be built in; pass cache_dir.")
        path = ensure_tiny_model(Path(cache_dir) / f"{TINY_NAME}-v{TINY_VERSION}")
        source = str(path)
    else:
        path = Path(name).expanduser()
        source = str(path) if path.is_dir() else name
        if not path.is_dir() and (path.suffix or os.sep in name and not _looks_like_hub_id(name)):
            raise ModelError(f"No model folder at '{name}': check the path, or give a hub id such as {DEFAULT_MODEL}.")
    try:
        model = CLIPModel.from_pretrained(source)
        tokenizer = CLIPTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_failure_message(name, exc)) from None
    model.eval()
    if device is not None:
        model.to(device)
    fingerprint = directory_fingerprint(Path(source)) if Path(source).is_dir() else _hub_fingerprint(name, model)
    return LoadedModel(
        name=name,
        fingerprint=fingerprint,
        model=model,
        tokenizer=tokenizer,
        preprocess=_preprocess_config(source),
        is_tiny=is_tiny or _is_marked_tiny(source),
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _load_failure_message(name: str, exc: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    where = "this machine is offline (HF_HUB_OFFLINE is set)" if offline else "the Hugging Face hub could not provide it"
    return (
        f"Cannot load model '{name}': it is not a local model folder and {where} ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Download it where there is internet "
        f"(`hf download {name} --local-dir DIR`) and pass DIR, or use the offline model '{TINY_NAME}'."
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


def directory_fingerprint(path: Path) -> str:
    """Content hash of the files that determine a local model's scores."""
    files = [path / f for f in FINGERPRINT_FILES if (path / f).is_file()]
    if not files:
        raise ModelError(f"'{path}' holds no model files (config.json, model.safetensors); is it a model folder?")
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(stats)


@functools.lru_cache(maxsize=32)
def _hash_files(stats: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stats:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:32]


# --- the tiny offline model -------------------------------------------------------------------


def tiny_config(vocab_size: int, eos_id: int, pad_id: int, bos_id: int) -> CLIPConfig:
    """A CLIP small enough for CPU tests, with CLIP's 77-token text window and 224-pixel input."""
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=64,
            # The trained tokenizer gives pad, eos and unk one id; pooling reads the first eos position
            # only if eos_token_id is that id (the legacy value 2 means "take the argmax id").
            eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=bos_id,
        ),
        vision_config=dict(
            hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
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
