"""The world: who the people are (a unique look and a made-up name each), the contexts, and rendering."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from cftclip_core.errors import ConfigError, DataError
from cftclip_core.synthetic.drawing import BACKGROUND_PAINTERS, draw_object, draw_person
from cftclip_core.synthetic.palette import (
    ACCESSORIES,
    BACKGROUNDS,
    HAIR_COLOURS,
    OBJECT_COLOURS,
    OBJECTS,
    SHIRT_COLOURS,
)
from cftclip_core.synthetic.texts import (
    DAYS,
    PREPOSITIONS,
    SUMMARY_TEMPLATES,
    TITLE_TEMPLATE,
    VERBS,
    fill_template,
    text_vocabulary,
)

WORLD_FORMAT = "cftclip-synthetic-world/1"

# Name syllables: first names CVCV ("Mara"), surnames CV+cluster ("Velk") or CVCVC ("Doran").
_ONSETS = ("b", "d", "f", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_MIDDLES = ("l", "r", "n", "m", "v", "s", "d", "k")
_CLUSTERS = ("lk", "rn", "lz", "nz", "sk", "lm", "ft", "ks")
_CODAS = ("k", "n", "r", "l", "s", "t", "m")
_BLOCKED_NAME_WORDS = frozenset({
    "homo", "pedo", "demon", "vomit", "satan", "semen", "penis", "nudes", "moron", "sodom", "tumor", "virus",
    "dumbo", "sucks",
})


@dataclass(frozen=True)
class WorldConfig:
    """What the world contains. ``seed`` picks appearances, names and (with ``n_contexts``) contexts.

    ``name_seed`` keeps the names of another seed's world: ``seed`` then still picks the looks and
    the contexts, and also which of those names goes with which look. The proof sets it to 0, whose
    names the product's tiny tokenizer holds as whole words, so that every world seed's names are
    tokenized alike (another seed's made-up names fall apart into shared sub-word pieces).

    Contexts are the product backgrounds x objects x colours (default 8 x 4 x 4 = 128), or, when
    ``n_contexts`` is set, that many of them chosen so that backgrounds repeat as little as possible
    (``n_contexts=6``: six scenes with six different backgrounds, the "few contexts" world).
    """

    n_people: int = 16
    n_backgrounds: int = 8
    n_objects: int = 4
    n_colours: int = 4
    n_contexts: int | None = None
    image_size: int = 64
    noise_std: float = 0.03
    seed: int = 0
    name_seed: int | None = None

    def __post_init__(self) -> None:
        max_people = len(SHIRT_COLOURS) * len(HAIR_COLOURS) * len(ACCESSORIES)
        check_range("n_people", self.n_people, 2, max_people, "each person needs a unique look")
        check_range("n_backgrounds", self.n_backgrounds, 1, len(BACKGROUNDS), "backgrounds available")
        check_range("n_objects", self.n_objects, 1, len(OBJECTS), "objects available")
        check_range("n_colours", self.n_colours, 1, len(OBJECT_COLOURS), "object colours available")
        product = self.n_backgrounds * self.n_objects * self.n_colours
        if self.n_contexts is not None:
            check_range("n_contexts", self.n_contexts, 1, product,
                         "it cannot exceed n_backgrounds x n_objects x n_colours")
        check_range("image_size", self.image_size, 32, 1024, "figures are drawn for 32 to 1024 pixels")
        if not 0.0 <= self.noise_std <= 0.5:
            raise ConfigError(f"noise_std={self.noise_std} is out of range; use a value from 0 to 0.5 "
                              "(a fraction of the full pixel range, e.g. 0.03).")
        for name in ("seed", "name_seed"):
            value = getattr(self, name)
            if (value is not None or name == "seed") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name}={value!r} is not valid; use a non-negative integer.")


def check_range(name: str, value: object, low: int, high: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is out of range ({why}); use an integer from {low} to {high}.")


@dataclass(frozen=True)
class Person:
    name: str
    shirt: str
    hair: str
    accessory: str

    @property
    def appearance(self) -> tuple[str, str, str]:
        return (self.shirt, self.hair, self.accessory)


@dataclass(frozen=True)
class Context:
    background: str
    object: str
    colour: str

    @property
    def description(self) -> str:
        return f"{self.colour} {self.object} at the {self.background}"


@dataclass(frozen=True)
class TextParts:
    """The invisible parts of a text: they vary between texts but never show in the image."""

    verb: int
    preposition: int
    template: int
    day: int


@dataclass(frozen=True)
class SceneLayout:
    """Where things are drawn; sizes and positions are in units of a 64-pixel image."""

    person_left: bool
    person_x: float
    person_feet_y: float
    person_height: float
    object_x: float
    object_bottom_y: float
    object_size: float


@dataclass
class World:
    config: WorldConfig
    people: list[Person]
    contexts: list[Context]
    _backgrounds: dict[str, Image.Image] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: WorldConfig | None = None) -> World:
        config = config or WorldConfig()
        rng = np.random.default_rng([config.seed, 7])
        people = _make_people(config.n_people, rng)
        if config.name_seed is not None and config.name_seed != config.seed:
            names = [p.name for p in _make_people(config.n_people, np.random.default_rng([config.name_seed, 7]))]
            order = np.random.default_rng([config.seed, 9]).permutation(config.n_people)
            people = [replace(p, name=names[int(k)]) for p, k in zip(people, order)]
        return cls(config=config, people=people, contexts=_make_contexts(config, rng))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.people]

    def person(self, name: str) -> Person:
        for p in self.people:
            if p.name == name:
                return p
        raise DataError(f"{name!r} is not a person of this synthetic world; "
                        f"use one of {', '.join(self.names)}.")

    # --- text -------------------------------------------------------------------------------
    def draw_text_parts(self, rng: np.random.Generator) -> TextParts:
        return TextParts(verb=int(rng.integers(len(VERBS))), preposition=int(rng.integers(len(PREPOSITIONS))),
                         template=int(rng.integers(len(SUMMARY_TEMPLATES))), day=int(rng.integers(len(DAYS))))

    def caption(self, name: str | None, context: Context, parts: TextParts) -> str:
        """The short title; ``name=None`` gives the anonymous "A person ..." variant."""
        return fill_template(TITLE_TEMPLATE, name, context, parts)

    def summary(self, name: str | None, context: Context, parts: TextParts) -> str:
        """A longer sentence naming the same person and every context element."""
        return fill_template(SUMMARY_TEMPLATES[parts.template], name, context, parts)

    # --- images -----------------------------------------------------------------------------
    def draw_layout(self, rng: np.random.Generator) -> SceneLayout:
        left = bool(rng.integers(2))
        return SceneLayout(
            person_left=left,
            person_x=float(rng.uniform(11, 23) if left else rng.uniform(41, 53)),
            person_feet_y=float(rng.uniform(54, 61)),
            person_height=float(rng.uniform(26, 40)),
            object_x=float(rng.uniform(42, 52) if left else rng.uniform(12, 22)),
            object_bottom_y=float(rng.uniform(32, 60)),
            object_size=float(rng.uniform(12, 20)),
        )

    def render(self, person: Person | None, context: Context, rng: np.random.Generator) -> Image.Image:
        """Draw ``person`` (None: nobody) in ``context`` at a random layout, with Gaussian pixel noise."""
        layout = self.draw_layout(rng)
        img = self._background(context.background).copy()
        draw = ImageDraw.Draw(img)
        scale = self.config.image_size / 64.0
        draw_object(draw, context, layout, scale)
        if person is not None:
            draw_person(draw, person, layout, scale)
        if self.config.noise_std == 0:
            return img
        size = self.config.image_size
        arr = np.asarray(img, dtype=np.float32)
        arr += rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(self.config.noise_std * 255)
        arr += 0.5
        np.clip(arr, 0, 255, out=arr)
        return Image.fromarray(arr.astype(np.uint8), mode="RGB")

    def _background(self, name: str) -> Image.Image:
        if name not in self._backgrounds:
            base = BACKGROUND_PAINTERS[name]()
            index = np.arange(self.config.image_size) * 64 // self.config.image_size
            self._backgrounds[name] = Image.fromarray(np.ascontiguousarray(base[index][:, index]), mode="RGB")
        return self._backgrounds[name]

    def to_json(self) -> dict:
        return {
            "format": WORLD_FORMAT,
            "config": asdict(self.config),
            "people": [asdict(p) for p in self.people],
            "contexts": [asdict(c) for c in self.contexts],
        }


def _make_people(n: int, rng: np.random.Generator) -> list[Person]:
    combos = list(itertools.product(SHIRT_COLOURS, HAIR_COLOURS, ACCESSORIES))
    chosen = rng.choice(len(combos), size=n, replace=False)
    reserved = text_vocabulary() | _BLOCKED_NAME_WORDS
    used: set[str] = set()
    people = []
    for index in chosen:
        first = _new_word(rng, reserved | used, surname=False)
        used.add(first)
        last = _new_word(rng, reserved | used, surname=True)
        used.add(last)
        shirt, hair, accessory = combos[int(index)]
        people.append(Person(name=f"{first.title()} {last.title()}", shirt=shirt, hair=hair, accessory=accessory))
    return people


def _new_word(rng: np.random.Generator, taken: set[str], surname: bool) -> str:
    """A pronounceable made-up word, unused so far, so each name word identifies one person."""
    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    while True:
        if surname and rng.random() < 0.5:
            word = pick(_ONSETS) + pick(_VOWELS) + pick(_CLUSTERS)
        elif surname:
            word = pick(_ONSETS) + pick(_VOWELS) + pick(_MIDDLES) + pick(_VOWELS) + pick(_CODAS)
        else:
            word = pick(_ONSETS) + pick(_VOWELS) + pick(_MIDDLES) + pick(("a", "i", "o"))
        if word not in taken:
            return word


def _make_contexts(config: WorldConfig, rng: np.random.Generator) -> list[Context]:
    every = [Context(b, o, c) for b, o, c in itertools.product(
        BACKGROUNDS[:config.n_backgrounds], OBJECTS[:config.n_objects], list(OBJECT_COLOURS)[:config.n_colours])]
    if config.n_contexts is None:
        return every
    # Shuffle, then take contexts in rounds: each background's first appearance before any second one.
    order = [every[int(i)] for i in rng.permutation(len(every))]
    seen: Counter[str] = Counter()
    ranked = []
    for position, ctx in enumerate(order):
        ranked.append((seen[ctx.background], position, ctx))
        seen[ctx.background] += 1
    return [ctx for _, _, ctx in sorted(ranked, key=lambda r: (r[0], r[1]))[:config.n_contexts]]




def caption_corpus(world: World) -> Iterator[str]:
    """Texts covering every word the world's titles and summaries can contain, anonymous ones too.

    Not the full cross product (that grows into the millions): every (name, context) pair appears
    once per template, and verbs, prepositions and days rotate over the pairs, so each value of each
    slot occurs in each template at least once. Enough to train a tokenizer that knows every word.
    """
    names: list[str | None] = [*world.names, None]
    pairs = list(itertools.product(names, world.contexts))
    order = np.random.default_rng([world.config.seed, 8]).permutation(len(pairs))
    n = max(len(pairs), len(VERBS), len(PREPOSITIONS), len(DAYS))
    for template in range(-1, len(SUMMARY_TEMPLATES)):
        for k in range(n):
            name, context = pairs[int(order[k % len(pairs)])]
            parts = TextParts(verb=k % len(VERBS), preposition=k % len(PREPOSITIONS),
                              template=max(template, 0), day=k % len(DAYS))
            yield world.caption(name, context, parts) if template < 0 else world.summary(name, context, parts)


