"""Infillers propose replacements for the masked mentions: the paper's masked language model, or an offline
swap for another person's name."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cftclip_core.counterfactuals.entities import Entity, replace_spans
from cftclip_core.counterfactuals.loading import check_model_source, load_message
from cftclip_core.errors import ConfigError, CounterfactualError, ModelError
from cftclip_core.specs.counterfactuals import PAPER_MLM, PAPER_TEMPERATURE, VOCABULARIES

if TYPE_CHECKING:
    import torch

DEFAULT_MLM = PAPER_MLM


class Infiller(Protocol):
    name: str  # recorded with the results

    def propose(self, text: str, spans: Sequence[Entity], rng: np.random.Generator, n: int) -> list[list[str]]:
        """``n`` candidate replacement lists, one string per span, drawn from ``rng``."""
        ...


class EntitySwapInfiller:
    """Replace each name by another person's name from a pool (offline; used by the synthetic proof).

    A replacement is never the replaced name, nor (while the pool allows) a name already in the text;
    every mention of one name gets the same new name, and different names get different ones. Candidate
    k takes the k-th name of a random order of the pool, so the tries of one text differ from each other.
    """

    name = "entity-swap"

    def __init__(self, name_pool: Iterable[str]) -> None:
        seen: dict[str, str] = {}
        for n in name_pool:
            if n and n.strip():
                seen.setdefault(n.strip().casefold(), n.strip())
        self.pool = list(seen.values())
        self._keys = list(seen)
        if len(self.pool) < 2:
            raise ConfigError(
                f"The name pool has {len(self.pool)} distinct name(s); swapping needs at least 2. Pass the names "
                "of the corpus's people (collect_names) or of the synthetic world."
            )
        longest_first = sorted(self.pool, key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, longest_first)) + r")(?!\w)", re.IGNORECASE)

    def propose(self, text: str, spans: Sequence[Entity], rng: np.random.Generator, n: int) -> list[list[str]]:
        originals = list(dict.fromkeys(s.text.casefold() for s in spans))
        in_text = {m.casefold() for m in self._pattern.findall(text)} | set(originals)
        orders = {o: self._order(in_text, rng, n) or self._order({o}, rng, n) for o in originals}
        proposals = []
        for k in range(n):
            chosen: dict[str, str] = {}
            for original in originals:
                order = orders[original]
                rotated = order[k % len(order):] + order[: k % len(order)]
                used = {c.casefold() for c in chosen.values()}
                chosen[original] = next((c for c in rotated if c.casefold() not in used), rotated[0])
            proposals.append([chosen[s.text.casefold()] for s in spans])
        return proposals

    def _order(self, excluded: set[str], rng: np.random.Generator, n: int) -> list[str]:
        """The start of a random order of the pool without the excluded names (n of them if the pool allows)."""
        picks = rng.choice(len(self.pool), size=min(len(self.pool), n + len(excluded)), replace=False)
        return [self.pool[i] for i in picks if self._keys[i] not in excluded]


class MaskedLMInfiller:
    """The paper's infiller: one [MASK] per span, one token sampled per mask from softmax(logits / T).

    Any masked LM loads (``bert-base-uncased`` by default, a hub id or a local folder). All masks are
    predicted in one pass, as in the paper, so the ``n`` candidates of a text are ``n`` samples from
    the same distributions (the original code re-ran the same input for each try, which is equivalent).

    ``vocabulary="whole-words"`` (the default) restricts sampling to whole words: special tokens, bracketed
    placeholders ("[unused0]"), sub-word continuations ("##ing" in WordPiece; pieces without the
    word-start marker in BPE/SentencePiece vocabularies) and tokens without any letter or digit are never
    drawn. ``vocabulary="any"`` samples the whole vocabulary as the original code did (its counterfactuals
    can name a person "##x" or "[CLS]"). Texts longer than the model's window are cut into windows around
    the masks instead of failing.
    """

    def __init__(
        self, model_name_or_path: str = DEFAULT_MLM, *, temperature: float = PAPER_TEMPERATURE,
        device: str | None = None, vocabulary: str = "whole-words",
    ) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature={temperature!r} is not valid; use a positive number (the paper: 2.0).")
        if vocabulary not in VOCABULARIES:
            raise ConfigError(f"vocabulary={vocabulary!r} is not valid; choose {' or '.join(VOCABULARIES)}.")
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        check_model_source(model_name_or_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            self.model = AutoModelForMaskedLM.from_pretrained(model_name_or_path)
        except (OSError, ValueError) as exc:
            raise ModelError(load_message(model_name_or_path, exc)) from None
        if self.tokenizer.mask_token_id is None:
            raise ModelError(f"'{model_name_or_path}' has no mask token, so it is not a masked language model.")
        self.model.eval()
        if device is not None:
            self.model.to(device)
        self.temperature = float(temperature)
        self.vocabulary = vocabulary
        self.name = f"mlm:{model_name_or_path}@T={self.temperature:g}" + (" (any piece)" if vocabulary == "any" else "")
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        allowed = (word_start_tokens(vocab, special=set(self.tokenizer.all_special_tokens))
                   if vocabulary == "whole-words" else [True] * len(vocab))
        if not any(allowed):
            raise ModelError(f"The vocabulary of '{model_name_or_path}' has no whole-word tokens to sample.")
        self._vocab = vocab
        self._banned = torch.tensor([not a for a in allowed], dtype=torch.bool)
        limits = [getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        self.max_length = min(int(v) for v in limits if v is not None and 0 < v < 1_000_000)

    def propose(self, text: str, spans: Sequence[Entity], rng: np.random.Generator, n: int) -> list[list[str]]:
        import torch

        if not spans:
            return [[] for _ in range(n)]
        masked = replace_spans(text, spans, [self.tokenizer.mask_token] * len(spans))
        logits = self._mask_logits(masked)  # (masks, vocab), float32 on CPU
        if logits.shape[0] != len(spans):
            raise CounterfactualError(
                f"The masked LM's tokenizer found {logits.shape[0]} masks for {len(spans)} spans in {masked[:80]!r}; "
                "a name may have merged with a neighbouring word. Use another tokenizer or the entity-swap infiller."
            )
        logits = logits[:, : len(self._vocab)].masked_fill(self._banned[: logits.shape[1]], float("-inf"))
        probabilities = torch.softmax(logits / self.temperature, dim=-1)
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        samples = torch.multinomial(probabilities, n, replacement=True, generator=generator)  # (masks, n)
        return [[self._word(int(samples[m, k])) for m in range(len(spans))] for k in range(n)]

    def _word(self, token_id: int) -> str:
        return self.tokenizer.convert_tokens_to_string([self._vocab[token_id]]).strip()

    def _mask_logits(self, masked: str) -> torch.Tensor:
        """Logits at every mask, taking windows of the model's length around masks a long text puts out of reach."""
        import torch

        encoded = self.tokenizer(masked, add_special_tokens=True)["input_ids"]
        special = set(self.tokenizer.all_special_ids) - {self.tokenizer.mask_token_id}
        lead = next((i for i, t in enumerate(encoded) if t not in special), len(encoded))
        tail = next((i for i, t in enumerate(reversed(encoded)) if t not in special), 0)
        prefix, body, suffix = encoded[:lead], encoded[lead: len(encoded) - tail], encoded[len(encoded) - tail:]
        width = self.max_length - len(prefix) - len(suffix)
        if width < 1:
            raise ModelError(f"The masked LM's window ({self.max_length} tokens) is too short to hold any text.")
        positions = [i for i, t in enumerate(body) if t == self.tokenizer.mask_token_id]
        windows: list[tuple[int, list[int]]] = []  # (window start, mask positions predicted in it)
        todo = list(positions)
        while todo:
            start = max(0, min(todo[0] - width // 2, len(body) - width))
            inside = [p for p in todo if start <= p < start + width]
            windows.append((start, inside))
            todo = [p for p in todo if p not in inside]
        device = next(self.model.parameters()).device
        rows = []
        with torch.no_grad():
            for start, inside in windows:
                ids = torch.tensor([prefix + body[start:start + width] + suffix], device=device)
                out = self.model(input_ids=ids).logits[0].float().cpu()
                rows.extend(out[len(prefix) + p - start] for p in inside)
        return torch.stack(rows) if rows else torch.zeros(0, len(self._vocab))


def word_start_tokens(vocab: Sequence[str], special: set[str]) -> list[bool]:
    """Which vocabulary entries may replace a name: whole-word starts with a letter or digit."""
    marker = next((m for m in ("Ġ", "▁") if sum(t.startswith(m) for t in vocab) > len(vocab) // 10), None)
    allowed = []
    for token in vocab:
        if token in special or (token.startswith("[") and token.endswith("]")) or token.startswith("##"):
            allowed.append(False)
        elif marker is not None:
            allowed.append(token.startswith(marker) and any(c.isalnum() for c in token[1:]))
        else:
            allowed.append(any(c.isalnum() for c in token))
    return allowed


