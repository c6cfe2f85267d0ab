"""The CLIP filter (a candidate is kept only if the model scores it lower than the original) and the model's
token window (which texts it sees whole, and which candidates it cannot tell from their original)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cftclip_core.images import load_image, normalize, resize_and_crop

if TYPE_CHECKING:
    from cftclip_core.models import LoadedModel


class TokenWindow:
    """What a CLIP text tower sees of a text: at most ``max_tokens`` tokens, start and end tokens included."""

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)

    @classmethod
    def of(cls, loaded: LoadedModel) -> TokenWindow:
        return cls(loaded.tokenizer, loaded.max_text_tokens)

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts before any cut (start and end tokens included)."""
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def too_long(self, text: str) -> bool:
        return self.lengths([text])[0] > self.max_tokens

    def seen(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """The token ids the model sees of each text (cut to the window), as the trainer and scorer cut them."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens)["input_ids"]
        return [tuple(ids) for ids in encoded]

    def same_within(self, original: str, candidate: str) -> bool:
        """True when the model cannot tell ``candidate`` from ``original``: every change lies past the window."""
        first, second = self.seen([original, candidate])
        return first == second


class ClipFilter:
    """The CLIP filter's scorer: cosine similarity of a record's image with each text under ``loaded``
    (fp32, texts cut to the model's window). Called as ``scorer(image key, texts)``."""

    def __init__(self, loaded: LoadedModel, image_paths: Mapping[str, Path]) -> None:
        self.loaded = loaded
        self.paths = dict(image_paths)
        self._images: dict[str, Any] = {}

    def __call__(self, key: str, texts: Sequence[str]) -> list[float]:
        import torch

        loaded = self.loaded
        with torch.inference_mode():
            if key not in self._images:
                crop = resize_and_crop(load_image(self.paths[key]), loaded.preprocess)
                pixels = normalize(torch.from_numpy(crop[None]).to(loaded.device), loaded.preprocess)
                image = loaded.model.get_image_features(pixel_values=pixels).pooler_output
                self._images[key] = torch.nn.functional.normalize(image.float(), dim=-1)[0]
            enc = loaded.tokenizer(list(texts), padding=True, truncation=True, max_length=loaded.max_text_tokens,
                                   return_tensors="pt")
            text = loaded.model.get_text_features(input_ids=enc["input_ids"].to(loaded.device),
                                                  attention_mask=enc["attention_mask"].to(loaded.device)).pooler_output
            text = torch.nn.functional.normalize(text.float(), dim=-1)
            return (text @ self._images[key]).cpu().tolist()
