"""Counterfactual texts: the article's people replaced by others, for contrastive fine-tuning.

The pipeline follows the paper's released code (see docs: reference/method.md, section 2):

1. An entity tagger finds named entities. Pluggable: spaCy (the paper used ``en_core_web_trf``), a
   Hugging Face token-classification model, an offline rule-based PERSON tagger, or a list of known names.
2. Keep entities with the chosen labels (PERSON by default) that pass the paper's sanity filter: the
   text without punctuation has at least one word, and the raw text is longer than one character.
3. Masking budget: at most ``budget`` (30 %) of the text's non-space characters may be masked; while
   the chosen mentions exceed it, one mention chosen at random is dropped. Every surviving mention is
   replaced, each span as a whole (a multi-word name is one mask).
4. An infiller proposes replacements: a masked language model sampling one token per mask at
   temperature 2.0 (the paper), or an offline swap for another person's name.
5. CLIP filter: a candidate is kept only if the scoring model rates it lower than the original and it
   differs from the original (ignoring case); up to ``max_tries`` candidates are tried.

Differences from the original code, on purpose: sampling is seeded per record (same inputs and seed give
the same counterfactuals, whatever the order of the records); the masked LM never samples special
tokens, sub-word continuations ('##x') or tokens without a letter or digit; long texts are windowed to
the masked LM's length instead of crashing; every choice is recorded, and texts without a PERSON are
counted and skipped instead of failing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cftclip_core.errors import ConfigError, CounterfactualError, ModelError
from cftclip_core.formats import Record, check_text_field

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MASK = "[MASK]"  # how masked spans are shown in results, whatever the infiller's own mask token
STATUSES = ("ok", "no_person", "over_budget", "filter_failed", "empty_text")
DEFAULT_MLM = "bert-base-uncased"

Scorer = Callable[[str, Sequence[str]], Sequence[float]]  # (image key, texts) -> similarity per text
Progress = Callable[[int, int], None]  # (done, total)


# --- entities and taggers -------------------------------------------------------------------------
@dataclass(frozen=True)
class Entity:
    """A named-entity mention: ``text == source[start:end]``; labels are OntoNotes names (PERSON, ORG, ...)."""

    text: str
    label: str
    start: int
    end: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class EntityTagger(Protocol):
    name: str  # recorded with the results, e.g. "spacy:en_core_web_trf"

    def tag(self, text: str) -> list[Entity]: ...


_WORD = re.compile(r"(?P<initial>\b[A-Z]\.)|(?P<word>[^\W\d_]+(?:[-'’][^\W\d_]+)*)")
_POSSESSIVE = re.compile(r"['’]s$")
_PARTICLE_PREFIX = re.compile(r"^(?:al|el|bin|ibn|de|da|di|du|le|la|van|von)[-'’][A-Z][a-z]")  # "al-Assad"
_OPENERS = "\"'“‘([«"
_ABBREVIATIONS = frozenset("mr mrs ms dr st sen rep gov gen lt col capt sgt prof rev jr sr fr hon".split())
_PARTICLES = frozenset("de da di del della dos das du van von der den ter la le bin ibn al el".split())
# Capitalised words that are not names: they split a run of capitalised words ("Russian President
# Vladimir Putin" -> "Vladimir Putin"). Function words, titles, nationalities, days, months, places.
_SPLIT_WORDS = frozenset("""
a an the in on at for from to of with by as after before but and or if when while this that these those there
here it its he she they we i you his her their our my your what who why how where which no not all some many
more most former late then now today yesterday tomorrow breaking exclusive watch video live update report
opinion analysis photos says said told asks asked
president vice prime minister secretary senator representative governor mayor judge justice chief king queen
prince princess pope sir lord lady dame mr mrs ms miss dr prof professor gen general col colonel lt captain
capt sgt officer detective pastor rev reverend father bishop cardinal rabbi imam sheikh ambassador chancellor
speaker leader chairman chairwoman chair ceo director commissioner attorney coach host star actor actress
singer rapper candidate congressman congresswoman emperor premier spokesman spokeswoman spokesperson sen rep gov
democrat democrats republican republicans gop
american americans british russian chinese ukrainian french german israeli palestinian iranian indian japanese
korean mexican canadian australian european african asian arab muslim christian catholic jewish democratic
conservative liberal western soviet syrian turkish italian spanish saudi afghan pakistani iraqi egyptian
brazilian english irish scottish welsh
twitter facebook instagram youtube tiktok google apple microsoft amazon netflix tesla fox covid coronavirus
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december christmas easter
america europe asia africa australia antarctica britain england scotland wales ireland russia ukraine china
japan korea india pakistan iran iraq israel gaza palestine syria turkey egypt germany france italy spain
portugal poland greece canada mexico brazil argentina chile cuba venezuela colombia afghanistan taiwan vietnam
nigeria kenya ethiopia sudan libya lebanon jordan qatar yemen belarus hungary sweden norway finland denmark
netherlands belgium switzerland austria washington london paris moscow beijing kyiv kiev tokyo berlin rome
jerusalem tehran chicago boston houston seattle miami atlanta dallas denver detroit philadelphia baltimore
alabama alaska arizona arkansas california colorado connecticut delaware florida georgia hawaii idaho illinois
indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan minnesota mississippi missouri
montana nebraska nevada ohio oklahoma oregon pennsylvania tennessee texas utah vermont virginia wisconsin
wyoming
""".split())
_SPLIT_PHRASES = tuple(tuple(p.split()) for p in """
new york|new jersey|new mexico|new hampshire|new zealand|new delhi|new orleans|north carolina|south carolina
|north dakota|south dakota|west virginia|rhode island|united states|united kingdom|south korea|north korea
|south africa|saudi arabia|hong kong|los angeles|san francisco|san diego|las vegas|middle east|sri lanka
|costa rica|puerto rico|el salvador|capitol hill|silicon valley|west bank""".replace("\n", "").split("|"))
# A segment containing one of these names an organisation, a place or an event, not a person.
_ORG_WORDS = frozenset("""
church industry university college school institute party house senate congress parliament court company
corporation corp inc ltd llc group bank fund foundation association council committee commission agency
department ministry administration office army navy force forces police times post news journal network press
media street avenue road square city county state states province island islands river lake mountain park
valley airport hospital center centre museum stadium hotel club league cup team nations union republic kingdom
empire federation bureau service services board authority organization organisation movement campaign act bill
law day week war olympics games series awards festival prize world global international national federal
entertainment tv radio magazine books records studios pictures airlines motors technologies labs security
health energy capital partners holdings trust exchange market markets mall temple mosque cathedral prison jail
base station bridge tower hall building plaza
""".split())


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    kind: str  # cap (capitalised word), particle ("van"), initial ("J."), other

    def key(self, text: str) -> str:
        return text[self.start:self.end].rstrip(".").lower()


class RuleBasedPersonTagger:
    """Offline PERSON tagger by capitalisation; a stand-in where no NER model is installed.

    A name is a run of capitalised words (with particles such as "van" and initials such as "J." inside),
    split at known non-name words (titles, nationalities, weekdays, months, countries, US states, big
    cities), dropped if it contains an organisation or place word ("Church", "Court", "Street"), and
    dropped if it is one word at the start of a sentence (where every word is capitalised).
    "'s" is not part of a name.

    Limits: it misses one-word names that start a sentence ("Trump said ..."), names in lower case or
    all capitals, and names that are also stoplisted words ("Theresa May" gives "Theresa"); it takes
    capitalised companies, products and places missing from its lists for people ("Pfizer", "Kyoto");
    headlines in Title Case are capitalised throughout, so use the summary, or spaCy, for them. English only.
    """

    name = "rule-based-person"

    def tag(self, text: str) -> list[Entity]:
        entities = []
        for run in self._runs(text):
            for segment in self._segments(text, run):
                if any(t.kind == "cap" and t.key(text) in _ORG_WORDS for t in segment):
                    continue
                if len(segment) == 1 and self._at_sentence_start(text, segment[0].start):
                    continue
                start, end = segment[0].start, segment[-1].end
                entities.append(Entity(text[start:end], "PERSON", start, end))
        return entities

    @staticmethod
    def _tokens(text: str) -> list[_Token]:
        tokens = []
        for match in _WORD.finditer(text):
            start, end = match.span()
            if match.group("initial"):
                tokens.append(_Token(start, end, "initial"))
                continue
            word = match.group("word")
            possessive = _POSSESSIVE.search(word)
            if possessive:
                end -= len(possessive.group())
                word = word[: -len(possessive.group())]
            if word.lower() in _PARTICLES and word.islower():
                tokens.append(_Token(start, end, "particle"))
            elif (word[0].isupper() and any(c.islower() for c in word)) or _PARTICLE_PREFIX.match(word):
                tokens.append(_Token(start, end, "cap"))
            else:
                tokens.append(_Token(start, end, "other"))
        return tokens

    def _runs(self, text: str) -> list[list[_Token]]:
        """Maximal sequences of capitalised words joined by single spaces, starting and ending on one."""
        runs: list[list[_Token]] = []
        current: list[_Token] = []
        for token in self._tokens(text):
            joins = current and text[current[-1].end:token.start] == " " and token.kind != "other"
            if joins:
                current.append(token)
                continue
            runs.append(current)
            current = [token] if token.kind == "cap" else []
        runs.append(current)
        return [trimmed for run in runs if (trimmed := _trim(run))]

    @staticmethod
    def _segments(text: str, run: list[_Token]) -> list[list[_Token]]:
        """Split a run at stoplisted words and phrases."""
        keys = [t.key(text) for t in run]
        split = [t.kind == "cap" and k in _SPLIT_WORDS for t, k in zip(run, keys)]
        for phrase in _SPLIT_PHRASES:
            for i in range(len(run) - len(phrase) + 1):
                if tuple(keys[i:i + len(phrase)]) == phrase:
                    split[i:i + len(phrase)] = [True] * len(phrase)
        segments, current = [], []
        for token, is_split in zip(run, split):
            if is_split:
                segments.append(current)
                current = []
            else:
                current.append(token)
        segments.append(current)
        return [trimmed for s in segments if (trimmed := _trim(s))]

    @staticmethod
    def _at_sentence_start(text: str, position: int) -> bool:
        i = position - 1
        while i >= 0 and text[i] != "\n" and (text[i].isspace() or text[i] in _OPENERS):
            i -= 1
        if i < 0 or text[i] == "\n" or text[i] in "!?:;":
            return True
        if text[i] != ".":
            return False
        before = re.search(r"([^\W\d_]+)\.$", text[: i + 1])  # "Mr. Smith", "J. Smith" do not end a sentence
        word = before.group(1) if before else ""
        return not (word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()))


def _trim(tokens: list[_Token]) -> list[_Token]:
    """Drop particles and initials from both ends: a name starts and ends with a capitalised word."""
    start, end = 0, len(tokens)
    while start < end and tokens[start].kind != "cap":
        start += 1
    while end > start and tokens[end - 1].kind != "cap":
        end -= 1
    return tokens[start:end]


class KnownNamesTagger:
    """Exact, case-sensitive, whole-word matches of given names (e.g. the synthetic world's people).

    Longer names win where names overlap ("Mara Velk" over "Mara").
    """

    def __init__(self, names: Iterable[str], label: str = "PERSON") -> None:
        self.names = sorted({n.strip() for n in names if n and n.strip()}, key=lambda n: (-len(n), n))
        if not self.names:
            raise ConfigError("KnownNamesTagger needs at least one name; pass the people's names to look for.")
        self.label = label
        self.name = f"known-names:{len(self.names)}"
        alternatives = "|".join(re.escape(n) for n in self.names)
        self._pattern = re.compile(rf"(?<![\w])(?:{alternatives})(?![\w])")

    def tag(self, text: str) -> list[Entity]:
        return [Entity(m.group(), self.label, m.start(), m.end()) for m in self._pattern.finditer(text)]


class SpacyTagger:
    """spaCy named entities (the paper used ``en_core_web_trf``). Needs spaCy and the model installed."""

    def __init__(self, model: str = "en_core_web_trf") -> None:
        try:
            import spacy
        except ImportError:
            raise ModelError(
                "spaCy is not installed, so the spacy tagger cannot run. Install it and the model "
                f"(pip install spacy && python -m spacy download {model}), or use the rule-based tagger."
            ) from None
        try:
            self._nlp = spacy.load(model)
        except OSError as exc:
            raise ModelError(
                f"The spaCy model '{model}' is not installed ({str(exc).splitlines()[0]}). Install it with "
                f"`python -m spacy download {model}`, or use the rule-based tagger."
            ) from None
        self.name = f"spacy:{model}"

    def tag(self, text: str) -> list[Entity]:
        return [Entity(e.text, e.label_, e.start_char, e.end_char) for e in self._nlp(text).ents]


class HFTokenClassificationTagger:
    """A Hugging Face token-classification (NER) model, by hub id or local folder.

    CoNLL-style labels are renamed to OntoNotes ones (``PER`` -> ``PERSON``) so the PERSON rule applies.
    """

    def __init__(
        self,
        model: str,
        *,
        label_map: dict[str, str] | None = None,
        aggregation_strategy: str = "simple",
        device: str | None = None,
    ) -> None:
        from transformers import pipeline

        _check_model_source(model)
        try:
            self._pipeline = pipeline(
                "token-classification", model=model, aggregation_strategy=aggregation_strategy, device=device
            )
        except (OSError, ValueError) as exc:
            raise ModelError(_load_message(model, exc)) from None
        self.label_map = {"PER": "PERSON"} if label_map is None else dict(label_map)
        self.name = f"hf-ner:{model}"

    def tag(self, text: str) -> list[Entity]:
        entities = []
        for found in self._pipeline(text):
            start, end = int(found["start"]), int(found["end"])
            label = re.sub(r"^[BI]-", "", str(found.get("entity_group") or found.get("entity")))
            label = self.label_map.get(label, label)
            entities.append(Entity(text[start:end], label, start, end))
        return entities


def _check_model_source(model: str) -> None:
    """Fail at once for a local path that does not exist, instead of asking the hub about it."""
    path = Path(model).expanduser()
    if path.exists():
        return
    from cftclip_core.models import _looks_like_hub_id

    if not _looks_like_hub_id(model):
        raise ModelError(f"No model folder at '{model}': check the path, or give a hub id such as {DEFAULT_MLM}.")


def _load_message(model: str, exc: Exception) -> str:
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
    if Path(model).expanduser().exists():
        return f"Cannot load the model in folder '{model}' ({detail}). Save it again with save_pretrained(DIR)."
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    where = ("this machine is offline (HF_HUB_OFFLINE is set)" if offline
             else "the Hugging Face hub could not provide it")
    return (
        f"Cannot load '{model}': it is not a local folder and {where} ({detail}). Download it where there is "
        f"internet (`hf download {model} --local-dir DIR`) and pass DIR, or use the offline choices "
        "(rule-based tagger, entity-swap infiller)."
    )


# --- the paper's rules ------------------------------------------------------------------------------
def passes_sanity_filter(entity: Entity) -> bool:
    """The paper's filter: at least one word once punctuation is removed, and more than one character."""
    without_punctuation = "".join(c for c in entity.text if not unicodedata.category(c).startswith("P"))
    return len(without_punctuation.split()) >= 1 and len(entity.text) > 1


def non_space_length(text: str) -> int:
    return sum(not c.isspace() for c in text)


def apply_budget(text: str, entities: Sequence[Entity], budget: float, rng: np.random.Generator) -> list[Entity]:
    """Drop mentions chosen uniformly at random until their non-space characters total at most
    ``int(budget * non-space characters of text)``; the survivors, in text order."""
    limit = int(budget * non_space_length(text))
    chosen = list(entities)
    while chosen and sum(non_space_length(e.text) for e in chosen) > limit:
        chosen.pop(int(rng.integers(len(chosen))))
    return chosen


def replace_spans(text: str, spans: Sequence[Entity], replacements: Sequence[str]) -> str:
    """``text`` with each span replaced; spans must not overlap."""
    for span, replacement in sorted(zip(spans, replacements), key=lambda p: p[0].start, reverse=True):
        text = text[: span.start] + replacement + text[span.end:]
    return text


def _checked_entities(text: str, entities: Iterable[Entity], tagger_name: str) -> list[Entity]:
    """The tagger's entities in text order, after checking that each span is that part of the text."""
    checked = []
    for e in entities:
        if not (0 <= e.start < e.end <= len(text)) or text[e.start:e.end] != e.text:
            raise CounterfactualError(
                f"The tagger '{tagger_name}' returned the span {e.start}-{e.end} '{e.text}', which is not that part "
                f"of the text {text[:80]!r}. Fix the tagger so that text[start:end] == entity text."
            )
        checked.append(e)
    return sorted(checked, key=lambda e: (e.start, -(e.end - e.start)))


def _without_overlaps(entities: Sequence[Entity]) -> list[Entity]:
    """Sorted entities minus those overlapping an earlier one (the earlier, then longer, mention wins)."""
    kept: list[Entity] = []
    for e in entities:
        if not kept or e.start >= kept[-1].end:
            kept.append(e)
    return kept


# --- infillers ----------------------------------------------------------------------------------------
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

    Unlike the original, sampling is restricted to whole words: special tokens, bracketed placeholders
    ("[unused0]"), sub-word continuations ("##ing" in WordPiece; pieces without the word-start marker
    in BPE/SentencePiece vocabularies) and tokens without any letter or digit are never drawn. Texts
    longer than the model's window are cut into windows around the masks instead of failing.
    """

    def __init__(
        self, model_name_or_path: str = DEFAULT_MLM, *, temperature: float = 2.0, device: str | None = None
    ) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature={temperature!r} is not valid; use a positive number (the paper: 2.0).")
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        _check_model_source(model_name_or_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            self.model = AutoModelForMaskedLM.from_pretrained(model_name_or_path)
        except (OSError, ValueError) as exc:
            raise ModelError(_load_message(model_name_or_path, exc)) from None
        if self.tokenizer.mask_token_id is None:
            raise ModelError(f"'{model_name_or_path}' has no mask token, so it is not a masked language model.")
        self.model.eval()
        if device is not None:
            self.model.to(device)
        self.temperature = float(temperature)
        self.name = f"mlm:{model_name_or_path}@T={self.temperature:g}"
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        allowed = word_start_tokens(vocab, special=set(self.tokenizer.all_special_tokens))
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


# --- generation --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CounterfactualResult:
    """Everything decided for one text. ``counterfactuals`` is empty unless ``status == "ok"``."""

    id: str
    text: str
    status: str  # one of STATUSES
    entities: tuple[Entity, ...] = ()  # everything the tagger found (all labels)
    masked: tuple[Entity, ...] = ()  # the mentions replaced, after the label, sanity and budget rules
    masked_text: str | None = None  # the text with each masked mention shown as [MASK]
    counterfactuals: tuple[str, ...] = ()
    replacements: tuple[tuple[str, ...], ...] = ()  # per counterfactual, one replacement per masked mention
    similarities: tuple[float, ...] = ()  # the scorer's similarity per counterfactual
    original_similarity: float | None = None
    tries: int = 0  # candidates looked at (up to the last one accepted, or all of them)

    @property
    def counterfactual(self) -> str | None:
        return self.counterfactuals[0] if self.counterfactuals else None

    @property
    def counterfactual_similarity(self) -> float | None:
        return self.similarities[0] if self.similarities else None


def _name_of(component: object) -> str:
    return str(getattr(component, "name", type(component).__name__))


def _record_rng(seed: int, item_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, item id), so results do not depend on record order."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def _check_options(max_tries: int, per_text: int, seed: int, budget: float) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(max_tries) or max_tries < 1:
        raise ConfigError(f"max_tries={max_tries!r} is not valid; use a positive integer (the paper: 10).")
    if not is_int(per_text) or not 1 <= per_text <= max_tries:
        raise ConfigError(f"per_text={per_text!r} is not valid; use 1 to max_tries ({max_tries}).")
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed={seed!r} is not valid; use a non-negative integer.")
    if not (isinstance(budget, (int, float)) and 0 < budget <= 1):
        raise ConfigError(f"budget={budget!r} is not valid; use a fraction in (0, 1] (the paper: 0.3).")


def generate_counterfactuals(
    records_or_texts: Iterable[Record | str],
    tagger: EntityTagger,
    infiller: Infiller,
    *,
    text_field: str = "summary",
    scorer: Scorer | None = None,
    max_tries: int = 10,
    per_text: int = 1,
    seed: int = 0,
    entity_labels: Sequence[str] | None = ("PERSON",),
    budget: float = 0.3,
    progress: Progress | None = None,
) -> list[CounterfactualResult]:
    """One result per input, in input order.

    Records use their ``text_field`` text and are identified by their id; plain strings by their position.
    ``scorer(image_key, texts)`` returns a similarity per text (the current model); the key is the
    record's ``image`` (a plain string's position). Without a scorer the first candidate that differs
    from the original is kept. ``per_text`` counterfactuals are kept per text (distinct ones), else the
    status is ``filter_failed``. ``entity_labels=None`` keeps every label.
    """
    _check_options(max_tries, per_text, seed, budget)
    check_text_field(text_field)
    items = list(records_or_texts)
    labels = None if entity_labels is None else frozenset(entity_labels)
    results = []
    for position, item in enumerate(items):
        if isinstance(item, Record):
            item_id, text, key = item.id, item.text(text_field), item.image
        else:
            item_id = key = str(position)
            text = item
        results.append(_generate_one(item_id, key, text, tagger, infiller, scorer, max_tries, per_text, seed,
                                     labels, budget))
        if progress is not None:
            progress(position + 1, len(items))
    counts = status_counts(results)
    log.info("Counterfactuals for %d texts (%s, %s, seed %d): %s", len(results), _name_of(tagger),
             _name_of(infiller), seed, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return results


def _generate_one(
    item_id: str,
    key: str,
    text: str,
    tagger: EntityTagger,
    infiller: Infiller,
    scorer: Scorer | None,
    max_tries: int,
    per_text: int,
    seed: int,
    labels: frozenset[str] | None,
    budget: float,
) -> CounterfactualResult:
    if not text or not text.strip():
        return CounterfactualResult(item_id, text, "empty_text")
    entities = tuple(_checked_entities(text, tagger.tag(text), _name_of(tagger)))
    eligible = _without_overlaps(
        [e for e in entities if (labels is None or e.label in labels) and passes_sanity_filter(e)]
    )
    if not eligible:
        return CounterfactualResult(item_id, text, "no_person", entities)
    rng = _record_rng(seed, item_id)
    masked = tuple(apply_budget(text, eligible, budget, rng))
    if not masked:
        return CounterfactualResult(item_id, text, "over_budget", entities)
    masked_text = replace_spans(text, masked, [MASK] * len(masked))
    proposals = infiller.propose(text, masked, rng, max_tries)
    candidates = [replace_spans(text, masked, replacement) for replacement in proposals]
    original_similarity, similarities = None, None
    if scorer is not None:
        scores = [float(s) for s in scorer(key, [text, *candidates])]
        if len(scores) != len(candidates) + 1:
            raise CounterfactualError(
                f"The scorer returned {len(scores)} similarities for {len(candidates) + 1} texts; it must return "
                "one per text, in order."
            )
        original_similarity, similarities = scores[0], scores[1:]
    accepted: list[int] = []
    seen = {text.casefold()}
    tries = 0
    for i, candidate in enumerate(candidates):
        tries = i + 1
        lower = similarities is None or similarities[i] < original_similarity  # type: ignore[operator]
        if lower and candidate.casefold() not in seen:
            accepted.append(i)
            seen.add(candidate.casefold())
            if len(accepted) == per_text:
                break
    ok = len(accepted) == per_text
    return CounterfactualResult(
        item_id, text, "ok" if ok else "filter_failed", entities, masked, masked_text,
        counterfactuals=tuple(candidates[i] for i in accepted) if ok else (),
        replacements=tuple(tuple(proposals[i]) for i in accepted) if ok else (),
        similarities=tuple(similarities[i] for i in accepted) if ok and similarities is not None else (),
        original_similarity=original_similarity,
        tries=tries,
    )


def status_counts(results: Iterable[CounterfactualResult]) -> dict[str, int]:
    """How many texts ended in each status (all statuses listed, zeros included)."""
    counts = Counter(r.status for r in results)
    return {status: counts.get(status, 0) for status in STATUSES}


def collect_names(texts: Iterable[str], tagger: EntityTagger, label: str = "PERSON") -> list[str]:
    """The distinct names a tagger finds in a corpus, most frequent first: a pool for ``EntitySwapInfiller``."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(e.text for e in tagger.tag(text) if e.label == label and passes_sanity_filter(e))
    return [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def counterfactual_table(
    table_records: Iterable[Record],
    text_field: str,
    tagger: EntityTagger,
    infiller: Infiller,
    *,
    scorer: Scorer | None = None,
    max_tries: int = 10,
    per_text: int = 1,
    seed: int = 0,
    entity_labels: Sequence[str] | None = ("PERSON",),
    budget: float = 0.3,
    progress: Progress | None = None,
) -> list[Record]:
    """The records with counterfactual columns added, ready for ``formats.write_table``.

    Columns: ``counterfactual`` (and ``counterfactual_2`` ... with ``per_text``), ``cf_status``,
    ``cf_entities`` and ``cf_masked`` (JSON lists of {text, label, start, end}), ``cf_replacements``
    (JSON: per counterfactual, the replacement of each masked mention), ``cf_tries``,
    ``cf_original_similarity``, ``cf_similarity`` (and ``cf_similarity_2`` ...). Empty where not
    applicable. The options are those of ``generate_counterfactuals``.
    """
    records = list(table_records)
    results = generate_counterfactuals(
        records, tagger, infiller, text_field=text_field, scorer=scorer, max_tries=max_tries, per_text=per_text,
        seed=seed, entity_labels=entity_labels, budget=budget, progress=progress,
    )
    rows = []
    for record, result in zip(records, results):
        columns: dict[str, Any] = {}
        for k in range(per_text):
            suffix = "" if k == 0 else f"_{k + 1}"
            columns[f"counterfactual{suffix}"] = result.counterfactuals[k] if result.counterfactuals else None
        columns.update({
            "cf_status": result.status,
            "cf_entities": json.dumps([e.to_json() for e in result.entities], ensure_ascii=False),
            "cf_masked": json.dumps([e.to_json() for e in result.masked], ensure_ascii=False),
            "cf_replacements": json.dumps([list(r) for r in result.replacements], ensure_ascii=False),
            "cf_tries": result.tries,
            "cf_original_similarity": result.original_similarity,
        })
        for k in range(per_text):
            suffix = "" if k == 0 else f"_{k + 1}"
            columns[f"cf_similarity{suffix}"] = result.similarities[k] if result.similarities else None
        rows.append(dataclasses.replace(record, extra={**record.extra, **columns}))
    return rows
