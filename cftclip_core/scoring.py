"""Cosine similarity between thumbnails and texts, batched and cached.

Work is split so that nothing is done twice: images are identified by content hash and texts by
their exact string, each embedding is looked up in the cache first, and only misses go through the
model. Images are decoded and cropped by worker threads while the model runs, texts are batched by
length so padding stays short, and bf16 autocast is used where the hardware multiplies bf16 fast.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cftclip_core.embedding_cache import EmbeddingCache, text_key
from cftclip_core.errors import CftClipError
from cftclip_core.formats import Table, check_text_field
from cftclip_core.images import PixelCache, load_image, normalize, resize_and_crop, sha256_file
from cftclip_core.models import LoadedModel
from cftclip_core.specs.training import PRECISIONS

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class ScoreItem:
    key: str  # the caller's id for the pair
    image: Path
    text: str


@dataclass(frozen=True)
class ScoreOptions:
    batch_size: int = 64
    precision: str = "fp32"  # evaluation scores in fp32 unless bf16 is asked for; auto: bf16 where supported
    decode_workers: int = 2

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise CftClipError(f"Unknown precision '{self.precision}': choose one of {', '.join(PRECISIONS)}.")
        if self.batch_size < 1:
            raise CftClipError(f"Batch size must be at least 1, got {self.batch_size}.")


@dataclass
class ScoreRun:
    keys: list[str]
    similarities: np.ndarray  # float32, one per key, in input order
    truncated: np.ndarray  # bool: the text was cut to the model's token window
    image_sha256: list[str]
    precision: str
    images_computed: int
    texts_computed: int

    @property
    def n_truncated(self) -> int:
        return int(self.truncated.sum())


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        supported = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return "bf16" if supported else "fp32"
    return "fp32"


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _unit(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def items_from_table(table: Table, text_field: str) -> list[ScoreItem]:
    check_text_field(text_field)
    return [ScoreItem(r.id, table.image_path(r), r.text(text_field)) for r in table.records]


def score_pairs(
    loaded: LoadedModel,
    items: Sequence[ScoreItem],
    *,
    cache: EmbeddingCache | None = None,
    pixel_cache: PixelCache | None = None,
    options: ScoreOptions = ScoreOptions(),
    progress: Progress | None = None,
) -> ScoreRun:
    """Score each (image, text) pair by the cosine similarity of its CLIP embeddings."""
    report = progress or (lambda stage, done, total: None)
    precision = resolve_precision(options.precision, loaded.device)
    image_hashes = [sha256_file(item.image) for item in items]
    # Precision is part of the key: a bf16 embedding must not be served to a run that asked for fp32.
    image_space = f"{loaded.fingerprint}|image|{loaded.preprocess.fingerprint()}|{precision}"
    text_space = f"{loaded.fingerprint}|text|{loaded.max_text_tokens}|{precision}"

    image_paths = dict(zip(image_hashes, (item.image for item in items)))
    image_vectors = cache.get_many(image_space, list(image_paths)) if cache else {}
    missing_images = [h for h in image_paths if h not in image_vectors]
    image_vectors.update(_embed_images(loaded, missing_images, image_paths, pixel_cache, options, precision, report))

    texts = {text_key(item.text): item.text for item in items}
    text_vectors = cache.get_many(text_space, list(texts)) if cache else {}
    missing_texts = [k for k in texts if k not in text_vectors]
    new_text_vectors = _embed_texts(loaded, [texts[k] for k in missing_texts], options, precision, report)
    text_vectors.update(zip(missing_texts, new_text_vectors))

    if cache:
        cache.put_many(image_space, {h: image_vectors[h] for h in missing_images})
        cache.put_many(text_space, dict(zip(missing_texts, new_text_vectors)))

    image_matrix = np.stack([image_vectors[h] for h in image_hashes]) if items else np.zeros((0, 1), np.float32)
    text_matrix = np.stack([text_vectors[text_key(i.text)] for i in items]) if items else image_matrix
    token_counts = count_tokens(loaded, [item.text for item in items])
    return ScoreRun(
        keys=[item.key for item in items],
        similarities=np.einsum("ij,ij->i", image_matrix, text_matrix).astype(np.float32),
        truncated=np.asarray(token_counts, dtype=int) > loaded.max_text_tokens,
        image_sha256=image_hashes,
        precision=precision,
        images_computed=len(missing_images),
        texts_computed=len(missing_texts),
    )


def count_tokens(loaded: LoadedModel, texts: Sequence[str]) -> list[int]:
    """Token counts including the start and end tokens, before any truncation."""
    if not texts:
        return []
    return [len(ids) for ids in loaded.tokenizer(list(texts), truncation=False)["input_ids"]]


def _prefetch(tasks: Sequence[Callable[[], np.ndarray]], workers: int, window: int) -> Iterator[np.ndarray]:
    """Run tasks in threads, at most ``window`` ahead of the consumer, yielding results in order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[Future] = []
        next_task = 0
        for _ in range(len(tasks)):
            while next_task < len(tasks) and len(pending) < window:
                pending.append(pool.submit(tasks[next_task]))
                next_task += 1
            yield pending.pop(0).result()


def _embed_images(
    loaded: LoadedModel,
    hashes: list[str],
    paths: dict[str, Path],
    pixel_cache: PixelCache | None,
    options: ScoreOptions,
    precision: str,
    report: Progress,
) -> dict[str, np.ndarray]:
    config = loaded.preprocess

    def crop(sha: str) -> Callable[[], np.ndarray]:
        if pixel_cache is None:
            return lambda: resize_and_crop(load_image(paths[sha]), config)
        return lambda: pixel_cache.get_or_compute(sha, lambda: load_image(paths[sha]))

    vectors: dict[str, np.ndarray] = {}
    crops = _prefetch([crop(h) for h in hashes], options.decode_workers, window=2 * options.batch_size)
    device = loaded.device
    for start in range(0, len(hashes), options.batch_size):
        batch = hashes[start : start + options.batch_size]
        # uint8 goes to the device (a quarter of the bytes) and is normalised there, off the CPU.
        pixels = normalize(torch.from_numpy(np.stack([next(crops) for _ in batch])).to(device), config)
        with torch.inference_mode(), _autocast(precision, device):
            features = loaded.model.get_image_features(pixel_values=pixels).pooler_output
        vectors.update(zip(batch, _unit(features)))
        report("images", start + len(batch), len(hashes))
    return vectors


def _embed_texts(
    loaded: LoadedModel, texts: list[str], options: ScoreOptions, precision: str, report: Progress
) -> list[np.ndarray]:
    tokenizer = loaded.tokenizer
    window = loaded.max_text_tokens
    encoded = tokenizer(texts, truncation=True, max_length=window)["input_ids"] if texts else []
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    result: list[np.ndarray | None] = [None] * len(texts)
    device = loaded.device
    for start in range(0, len(order), options.batch_size):
        batch = order[start : start + options.batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids[row, : len(encoded[index])] = torch.tensor(encoded[index])
            mask[row, : len(encoded[index])] = 1
        with torch.inference_mode(), _autocast(precision, device):
            features = loaded.model.get_text_features(input_ids=ids.to(device), attention_mask=mask.to(device))
        for index, vector in zip(batch, _unit(features.pooler_output)):
            result[index] = vector
        report("texts", start + len(batch), len(texts))
    return result  # type: ignore[return-value]
