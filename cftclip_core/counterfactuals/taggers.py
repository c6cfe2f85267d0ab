"""Entity taggers: spaCy (the paper used ``en_core_web_trf``), a Hugging Face token-classification model,
an offline rule-based PERSON tagger, or a list of known names (the synthetic world's people)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cftclip_core.counterfactuals.entities import Entity
from cftclip_core.counterfactuals.loading import PAPER_REQUIREMENTS, check_model_source, load_message
from cftclip_core.errors import ConfigError, ModelError
from cftclip_core.specs.counterfactuals import PAPER_SPACY_PIPELINE

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
    """spaCy named entities (the paper used ``en_core_web_trf``): an installed pipeline's name or a pipeline
    folder (``nlp.to_disk``). Needs spaCy (requirements-paper.txt) and the pipeline installed."""

    def __init__(self, model: str = PAPER_SPACY_PIPELINE) -> None:
        try:
            import spacy
        except ImportError:
            raise ModelError(
                "spaCy is not installed, so the spacy tagger cannot run. Install it and the pipeline "
                f"({PAPER_REQUIREMENTS} && python -m spacy download {model}), or use the rule-based tagger "
                "(--recipe offline)."
            ) from None
        try:
            self._nlp = spacy.load(model)
        except OSError as exc:
            raise ModelError(
                f"The spaCy pipeline '{model}' is not installed ({str(exc).splitlines()[0]}). Install it with "
                f"`python -m spacy download {model}` (or pip install the pipeline's wheel), or use the rule-based "
                "tagger (--recipe offline)."
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

        check_model_source(model)
        try:
            self._pipeline = pipeline(
                "token-classification", model=model, aggregation_strategy=aggregation_strategy, device=device
            )
        except (OSError, ValueError) as exc:
            raise ModelError(load_message(model, exc)) from None
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


