"""Scoring: batched, cached similarities equal a plain per-pair CLIP forward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cftclip_core.embedding_cache import EmbeddingCache
from cftclip_core.errors import ImageError
from cftclip_core.images import PixelCache, load_image, normalize, resize_and_crop
from cftclip_core.scoring import ScoreItem, ScoreOptions, score_pairs
from tests.conftest import make_image

TEXTS = ["Mayor opens the new bridge", "A cat sleeps", "Senator Ann Blue speaks at the harbour about trade",
         "word " * 120]  # the last one is longer than CLIP's 77-token window


@pytest.fixture
def items(tmp_path: Path) -> list[ScoreItem]:
    colours = [(200, 30, 30), (20, 160, 40), (10, 10, 220), (240, 240, 0)]
    images = [make_image(tmp_path / f"{i}.jpg", size=(80 + 10 * i, 60), colour=c) for i, c in enumerate(colours)]
    return [ScoreItem(f"item-{i}", images[i % 4], TEXTS[i % 4]) for i in range(6)]


def reference_similarity(loaded, item: ScoreItem) -> float:  # noqa: ANN001
    """One pair at a time through CLIPModel.forward, as the original evaluation code did."""
    pixels = normalize(torch.from_numpy(resize_and_crop(load_image(item.image), loaded.preprocess)[None]),
                       loaded.preprocess)
    tokens = loaded.tokenizer([item.text], truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model(input_ids=tokens["input_ids"], pixel_values=pixels)
    return torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()


def test_fp32_scores_equal_the_per_pair_forward(tiny_model, items: list[ScoreItem]) -> None:  # noqa: ANN001
    run = score_pairs(tiny_model, items, options=ScoreOptions(batch_size=3, precision="fp32"))
    expected = [reference_similarity(tiny_model, item) for item in items]
    np.testing.assert_allclose(run.similarities, expected, atol=1e-5)
    assert run.keys == [item.key for item in items]
    assert run.truncated.tolist() == [False, False, False, True, False, False]
    assert run.n_truncated == 1


def test_bf16_stays_close_to_fp32(tiny_model, items: list[ScoreItem]) -> None:  # noqa: ANN001
    fp32 = score_pairs(tiny_model, items, options=ScoreOptions(precision="fp32")).similarities
    bf16 = score_pairs(tiny_model, items, options=ScoreOptions(precision="bf16")).similarities
    assert np.abs(fp32 - bf16).max() < 0.01


def test_rescoring_reads_the_cache_and_computes_nothing(tiny_model, items, tmp_path: Path) -> None:  # noqa: ANN001
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    pixels = PixelCache(tmp_path / "pixels", tiny_model.preprocess)
    first = score_pairs(tiny_model, items, cache=cache, pixel_cache=pixels, options=ScoreOptions(precision="fp32"))
    assert (first.images_computed, first.texts_computed) == (4, 4)  # duplicates are embedded once

    def fail(*_args: object) -> None:
        raise AssertionError("the model ran although everything was cached")

    original = tiny_model.model.get_image_features, tiny_model.model.get_text_features
    tiny_model.model.get_image_features = tiny_model.model.get_text_features = fail
    try:
        second = score_pairs(tiny_model, items, cache=EmbeddingCache(tmp_path / "emb.sqlite"),
                             options=ScoreOptions(precision="fp32"))
    finally:
        tiny_model.model.get_image_features, tiny_model.model.get_text_features = original
    assert (second.images_computed, second.texts_computed) == (0, 0)
    np.testing.assert_array_equal(first.similarities, second.similarities)


def test_cache_is_keyed_by_model(tiny_model, items, tmp_path: Path) -> None:  # noqa: ANN001
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    score_pairs(tiny_model, items, cache=cache)
    other = type(tiny_model)(**{**tiny_model.__dict__, "fingerprint": "sha256:other"})
    run = score_pairs(other, items, cache=cache)
    assert run.images_computed == 4 and run.texts_computed == 4


def test_progress_reports_both_stages(tiny_model, items) -> None:  # noqa: ANN001
    seen: list[tuple[str, int, int]] = []
    score_pairs(tiny_model, items, options=ScoreOptions(batch_size=2), progress=lambda *a: seen.append(a))
    assert ("images", 4, 4) in seen and ("texts", 4, 4) in seen


def test_corrupt_image_names_the_file(tiny_model, tmp_path: Path) -> None:  # noqa: ANN001
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        score_pairs(tiny_model, [ScoreItem("x", bad, "text")])


def test_cache_is_keyed_by_precision(tiny_model, items, tmp_path: Path) -> None:  # noqa: ANN001
    """A bf16 run must not hand its embeddings to a later fp32 run that claims fp32 scores."""
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    score_pairs(tiny_model, items, cache=cache, options=ScoreOptions(precision="bf16"))
    cached = score_pairs(tiny_model, items, cache=cache, options=ScoreOptions(precision="fp32"))
    fresh = score_pairs(tiny_model, items, options=ScoreOptions(precision="fp32"))
    assert (cached.images_computed, cached.texts_computed) == (4, 4)
    np.testing.assert_array_equal(cached.similarities, fresh.similarities)
