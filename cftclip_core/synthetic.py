"""A deterministic synthetic "news thumbnail" world, so the method can run end to end on a CPU.

Fictional people are drawn as simple figures whose look (shirt colour, hair colour, accessory)
is unique to each of them; each image also shows a context (a background plus an object of
some colour). Texts name the person and every context element, plus a verb, a preposition and
a weekday that cannot be seen. Label 1 means the text names the person drawn; label 0 means the
same text with another person's name. With many contexts, random in-batch negatives almost never
share the positive's context, which is the regime where counterfactual (name-swapped) negatives
matter; ``WorldConfig(n_contexts=6)`` gives the opposite regime.

Everything depends only on the seeds: the same arguments give byte-identical images and tables.
Command line: ``python -m cftclip_core synthetic OUT_DIR --items 2000``.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cftclip_core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]
ProgressCallback = Callable[[int, int], None]

WORLD_FORMAT = "cftclip-synthetic-world/1"
TABLE_COLUMNS = (
    "id", "image", "title", "summary", "label", "split",
    "person", "named_person", "background", "object", "colour",
)
SPLIT_NAMES = ("train", "val", "test")
ANONYMOUS = "a person"

# Palettes. Every RGB value below is distinct from every other one, so a noise-free render can be
# decoded back into (shirt, hair, accessory); tests rely on that to prove people look different.
SHIRT_COLOURS: dict[str, RGB] = {
    "red": (200, 35, 35), "blue": (40, 80, 210), "green": (40, 160, 70), "yellow": (240, 210, 40),
    "purple": (140, 60, 180), "orange": (245, 135, 25), "white": (246, 246, 246), "black": (30, 30, 30),
}
HAIR_COLOURS: dict[str, RGB] = {
    "black": (18, 16, 22), "brown": (120, 70, 30), "blond": (238, 208, 100), "grey": (172, 172, 178),
}
ACCESSORIES = ("none", "hat", "glasses", "tie")
SKIN: RGB = (236, 190, 150)
TROUSERS: RGB = (48, 46, 62)
HAT: RGB = (22, 34, 92)
GLASSES: RGB = (8, 8, 8)
TIE_DARK: RGB = (92, 18, 44)
TIE_LIGHT: RGB = (236, 236, 196)
_DARK_SHIRTS = frozenset({"blue", "purple", "black", "red"})
OUTLINE: RGB = (24, 22, 20)

OBJECT_COLOURS: dict[str, RGB] = {
    "red": (222, 52, 52), "green": (62, 192, 92), "pink": (245, 142, 202), "brown": (142, 92, 52),
    "orange": (255, 162, 62), "purple": (162, 92, 212), "yellow": (250, 232, 92), "cyan": (62, 212, 222),
}
OBJECTS = ("car", "umbrella", "ball", "tent", "flag", "box", "kite", "bench")
BACKGROUNDS = (
    "press hall", "park", "street", "stadium", "beach", "library", "harbour", "market",
    "airport", "office",
)

VERBS = (
    ("waves", "waving"), ("smiles", "smiling"), ("speaks", "speaking"), ("laughs", "laughing"),
    ("points", "pointing"), ("poses", "posing"), ("listens", "listening"), ("arrives", "arriving"),
)
PREPOSITIONS = ("near", "beside", "next to")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TITLE_TEMPLATE = "{Name} {verbs} {prep} the {colour} {object} at the {background}"
SUMMARY_TEMPLATES = (
    "{Name} {verbs} {prep} the {colour} {object} at the {background} on {day}, witnesses said.",
    "On {day}, {name} was seen {verbing} {prep} the {colour} {object} at the {background}.",
    "Photographers caught {name} {verbing} {prep} the {colour} {object} during a visit to the {background}.",
    "At the {background}, {name} {verbs} {prep} the {colour} {object} as a small crowd gathers.",
)

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

    def __post_init__(self) -> None:
        max_people = len(SHIRT_COLOURS) * len(HAIR_COLOURS) * len(ACCESSORIES)
        _check_range("n_people", self.n_people, 2, max_people, "each person needs a unique look")
        _check_range("n_backgrounds", self.n_backgrounds, 1, len(BACKGROUNDS), "backgrounds available")
        _check_range("n_objects", self.n_objects, 1, len(OBJECTS), "objects available")
        _check_range("n_colours", self.n_colours, 1, len(OBJECT_COLOURS), "object colours available")
        product = self.n_backgrounds * self.n_objects * self.n_colours
        if self.n_contexts is not None:
            _check_range("n_contexts", self.n_contexts, 1, product,
                         "it cannot exceed n_backgrounds x n_objects x n_colours")
        _check_range("image_size", self.image_size, 32, 1024, "figures are drawn for 32 to 1024 pixels")
        if not 0.0 <= self.noise_std <= 0.5:
            raise ConfigError(f"noise_std={self.noise_std} is out of range; use a value from 0 to 0.5 "
                              "(a fraction of the full pixel range, e.g. 0.03).")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} is not valid; use a non-negative integer.")


def _check_range(name: str, value: object, low: int, high: int, why: str) -> None:
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
        return cls(config=config, people=_make_people(config.n_people, rng),
                   contexts=_make_contexts(config, rng))

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
        return _fill(TITLE_TEMPLATE, name, context, parts)

    def summary(self, name: str | None, context: Context, parts: TextParts) -> str:
        """A longer sentence naming the same person and every context element."""
        return _fill(SUMMARY_TEMPLATES[parts.template], name, context, parts)

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

    def render(self, person: Person, context: Context, rng: np.random.Generator) -> Image.Image:
        """Draw ``person`` in ``context`` at a random layout, with Gaussian pixel noise."""
        layout = self.draw_layout(rng)
        img = self._background(context.background).copy()
        draw = ImageDraw.Draw(img)
        scale = self.config.image_size / 64.0
        _draw_object(draw, context, layout, scale)
        _draw_person(draw, person, layout, scale)
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
            base = _BACKGROUND_PAINTERS[name]()
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


def _fill(template: str, name: str | None, context: Context, parts: TextParts) -> str:
    verbs, verbing = VERBS[parts.verb]
    shown = name if name is not None else ANONYMOUS
    return template.format(
        Name=shown[0].upper() + shown[1:], name=shown, verbs=verbs, verbing=verbing,
        prep=PREPOSITIONS[parts.preposition], colour=context.colour, object=context.object,
        background=context.background, day=DAYS[parts.day],
    )


def text_vocabulary() -> set[str]:
    """Lower-cased words any text can contain apart from names; names must avoid them."""
    pieces = [TITLE_TEMPLATE, *SUMMARY_TEMPLATES, ANONYMOUS, *PREPOSITIONS, *DAYS, *BACKGROUNDS, *OBJECTS,
              *OBJECT_COLOURS, *itertools.chain.from_iterable(VERBS)]
    words: set[str] = set()
    for piece in pieces:
        words.update(re.findall(r"[a-z]+", re.sub(r"\{[^}]*\}", " ", piece).lower()))
    return words


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


# --- drawing ------------------------------------------------------------------------------------
def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """Integer box at least one pixel wide and high (PIL boxes include both ends)."""
    a, b = round(x0), round(y0)
    return a, b, max(a, round(x1) - 1), max(b, round(y1) - 1)


def _draw_person(draw: ImageDraw.ImageDraw, person: Person, layout: SceneLayout, scale: float) -> None:
    h = layout.person_height * scale
    cx = layout.person_x * scale
    feet = layout.person_feet_y * scale
    top = feet - h
    r = max(2.0, 0.15 * h)  # head radius
    half_w = 0.2 * h  # half the shoulder width
    shirt_top, shirt_bottom = top + 2 * r, top + 0.62 * h
    hair = HAIR_COLOURS[person.hair]
    shirt = SHIRT_COLOURS[person.shirt]

    leg_w = max(1.0, 0.12 * h)
    gap = max(1.0, 0.04 * h)
    draw.rectangle(_box(cx - gap / 2 - leg_w, shirt_bottom, cx - gap / 2, feet), fill=TROUSERS)
    draw.rectangle(_box(cx + gap / 2, shirt_bottom, cx + gap / 2 + leg_w, feet), fill=TROUSERS)
    draw.rectangle(_box(cx - half_w, shirt_top, cx + half_w, shirt_bottom), fill=shirt)
    hand = max(1.0, 0.06 * h)
    draw.rectangle(_box(cx - half_w, shirt_bottom, cx - half_w + hand, shirt_bottom + hand), fill=SKIN)
    draw.rectangle(_box(cx + half_w - hand, shirt_bottom, cx + half_w, shirt_bottom + hand), fill=SKIN)
    # Hair is a cap one pixel wider than the face; the face covers its lower part.
    draw.ellipse(_box(cx - r - 1, top - 1, cx + r + 1, top + 2 * r), fill=hair)
    draw.ellipse(_box(cx - 0.8 * r, top + 0.7 * r, cx + 0.8 * r, top + 2 * r + 0.3), fill=SKIN)
    if person.accessory == "hat":
        draw.rectangle(_box(cx - 0.85 * r, top - 0.8 * r, cx + 0.85 * r, top + 0.3 * r), fill=HAT)
        draw.rectangle(_box(cx - 1.5 * r, top + 0.2 * r, cx + 1.5 * r, top + 0.2 * r + max(1.0, 0.3 * r)), fill=HAT)
    elif person.accessory == "glasses":
        eye_y = top + 1.15 * r
        lens = max(1.0, 0.45 * r)
        draw.rectangle(_box(cx - 0.8 * r, eye_y, cx + 0.8 * r, eye_y + 1), fill=GLASSES)
        draw.rectangle(_box(cx - 0.75 * r, eye_y, cx - 0.75 * r + lens, eye_y + lens), fill=GLASSES)
        draw.rectangle(_box(cx + 0.75 * r - lens, eye_y, cx + 0.75 * r, eye_y + lens), fill=GLASSES)
    elif person.accessory == "tie":
        tie = TIE_LIGHT if person.shirt in _DARK_SHIRTS else TIE_DARK
        tw = max(1.0, 0.07 * h)
        tie_bottom = shirt_top + 0.7 * (shirt_bottom - shirt_top)
        draw.polygon([(cx - tw, shirt_top), (cx + tw, shirt_top), (cx + tw * 0.6, tie_bottom),
                      (cx, tie_bottom + tw), (cx - tw * 0.6, tie_bottom)], fill=tie)


def _draw_object(draw: ImageDraw.ImageDraw, context: Context, layout: SceneLayout, scale: float) -> None:
    d = layout.object_size * scale
    x = layout.object_x * scale
    bottom = layout.object_bottom_y * scale
    colour = OBJECT_COLOURS[context.colour]
    width = max(1, round(scale))
    kind = context.object
    if kind == "car":
        draw.rectangle(_box(x - 0.3 * d, bottom - 0.62 * d, x + 0.22 * d, bottom - 0.3 * d), fill=colour,
                       outline=OUTLINE, width=width)
        draw.rectangle(_box(x - 0.5 * d, bottom - 0.35 * d, x + 0.5 * d, bottom - 0.08 * d), fill=colour,
                       outline=OUTLINE, width=width)
        for wx in (x - 0.28 * d, x + 0.28 * d):
            draw.ellipse(_box(wx - 0.12 * d, bottom - 0.22 * d, wx + 0.12 * d, bottom + 0.02 * d), fill=OUTLINE)
    elif kind == "umbrella":
        draw.line([(x, bottom - 0.55 * d), (x, bottom)], fill=OUTLINE, width=width)
        draw.line([(x, bottom), (x + 0.12 * d, bottom)], fill=OUTLINE, width=width)
        draw.pieslice(_box(x - 0.5 * d, bottom - d, x + 0.5 * d, bottom - 0.1 * d), 180, 360, fill=colour,
                      outline=OUTLINE, width=width)
    elif kind == "ball":
        draw.ellipse(_box(x - 0.35 * d, bottom - 0.7 * d, x + 0.35 * d, bottom), fill=colour, outline=OUTLINE,
                     width=width)
    elif kind == "tent":
        draw.polygon([(x - 0.55 * d, bottom), (x, bottom - 0.8 * d), (x + 0.55 * d, bottom)], fill=colour,
                     outline=OUTLINE, width=width)
        draw.polygon([(x - 0.15 * d, bottom), (x, bottom - 0.4 * d), (x + 0.15 * d, bottom)], fill=OUTLINE)
    elif kind == "flag":
        draw.line([(x - 0.35 * d, bottom - d), (x - 0.35 * d, bottom)], fill=OUTLINE, width=width)
        draw.rectangle(_box(x - 0.35 * d, bottom - d, x + 0.45 * d, bottom - 0.5 * d), fill=colour,
                       outline=OUTLINE, width=width)
    elif kind == "box":
        draw.rectangle(_box(x - 0.38 * d, bottom - 0.75 * d, x + 0.38 * d, bottom), fill=colour, outline=OUTLINE,
                       width=width)
        draw.line([(x - 0.38 * d, bottom - 0.75 * d), (x + 0.38 * d, bottom)], fill=OUTLINE, width=width)
        draw.line([(x + 0.38 * d, bottom - 0.75 * d), (x - 0.38 * d, bottom)], fill=OUTLINE, width=width)
    elif kind == "kite":
        top, mid = bottom - d, bottom - 0.62 * d
        draw.polygon([(x, top), (x + 0.3 * d, mid), (x, bottom - 0.2 * d), (x - 0.3 * d, mid)], fill=colour,
                     outline=OUTLINE, width=width)
        draw.line([(x, bottom - 0.2 * d), (x + 0.15 * d, bottom)], fill=OUTLINE, width=width)
    elif kind == "bench":
        draw.rectangle(_box(x - 0.5 * d, bottom - 0.6 * d, x + 0.5 * d, bottom - 0.45 * d), fill=colour,
                       outline=OUTLINE, width=width)
        draw.rectangle(_box(x - 0.5 * d, bottom - 0.35 * d, x + 0.5 * d, bottom - 0.2 * d), fill=colour,
                       outline=OUTLINE, width=width)
        for lx in (x - 0.42 * d, x + 0.35 * d):
            draw.rectangle(_box(lx, bottom - 0.2 * d, lx + 0.08 * d, bottom), fill=OUTLINE)


# Backgrounds are painted once on a 64 x 64 grid and scaled up, so they look alike at every size.
_Y, _X = np.mgrid[0:64, 0:64]


def _fill_rows(img: np.ndarray, y0: int, y1: int, colour: RGB) -> None:
    img[y0:y1] = colour


def _canvas(colour: RGB) -> np.ndarray:
    img = np.empty((64, 64, 3), dtype=np.uint8)
    img[:] = colour
    return img


def _speckle(img: np.ndarray, rows: slice, density: float, colour: RGB, seed: int) -> None:
    mask = np.random.default_rng(seed).random((64, 64)) < density
    mask[: rows.start or 0] = False
    mask[rows.stop or 64:] = False
    img[mask] = colour


def _paint_press_hall() -> np.ndarray:
    img = _canvas((58, 68, 104))
    img[(_X // 4) % 2 == 0] = (74, 86, 128)
    _fill_rows(img, 50, 64, (112, 80, 52))
    return img


def _paint_park() -> np.ndarray:
    img = _canvas((82, 152, 72))
    _fill_rows(img, 0, 16, (152, 202, 236))
    _speckle(img, slice(16, 64), 0.15, (58, 118, 50), seed=11)
    return img


def _paint_street() -> np.ndarray:
    img = _canvas((96, 96, 102))
    _fill_rows(img, 0, 28, (166, 160, 154))
    windows = (_Y < 24) & (_Y % 8 >= 3) & (_Y % 8 < 6) & (_X % 8 >= 2) & (_X % 8 < 6)
    img[windows] = (92, 102, 122)
    img[(_Y >= 44) & (_Y < 46) & ((_X // 6) % 2 == 0)] = (250, 250, 250)
    return img


def _paint_stadium() -> np.ndarray:
    img = _canvas((72, 166, 72))
    img[(_Y // 6) % 2 == 0] = (56, 142, 56)
    _fill_rows(img, 0, 18, (150, 62, 62))
    _speckle(img, slice(0, 18), 0.3, (190, 186, 176), seed=13)
    _fill_rows(img, 40, 41, (235, 235, 235))
    return img


def _paint_beach() -> np.ndarray:
    img = _canvas((226, 206, 152))
    _fill_rows(img, 0, 22, (136, 196, 240))
    _fill_rows(img, 22, 32, (42, 112, 182))
    _speckle(img, slice(32, 64), 0.06, (204, 182, 130), seed=17)
    return img


def _paint_library() -> np.ndarray:
    img = _canvas((112, 72, 42))
    books = np.random.default_rng(19).integers(0, 4, size=32)
    tints = np.array([(88, 58, 38), (70, 84, 66), (96, 70, 90), (126, 104, 70)], dtype=np.uint8)
    in_band = (_Y % 12) >= 3
    img[in_band] = tints[books[_X // 2]][in_band]
    img[(_Y % 12) < 2] = (62, 36, 22)
    return img


def _paint_harbour() -> np.ndarray:
    img = _canvas((46, 86, 150))
    img[(_Y % 4) == 0] = (72, 116, 182)
    _fill_rows(img, 0, 12, (172, 210, 234))
    return img


def _paint_market() -> np.ndarray:
    img = _canvas((206, 176, 126))
    img[((_X // 8) + (_Y // 8)) % 2 == 1] = (180, 150, 100)
    return img


def _paint_airport() -> np.ndarray:
    img = _canvas((200, 205, 212))
    img[((_X + _Y) // 6) % 2 == 0] = (186, 191, 201)
    _fill_rows(img, 0, 20, (152, 190, 222))
    img[(_Y < 20) & (_X % 16 == 0)] = (110, 116, 126)
    return img


def _paint_office() -> np.ndarray:
    img = _canvas((226, 216, 196))
    img[(_Y >= 4) & (_Y < 20) & (_X % 16 >= 3) & (_X % 16 < 13)] = (172, 206, 228)
    _fill_rows(img, 52, 64, (150, 120, 90))
    return img


_BACKGROUND_PAINTERS: dict[str, Callable[[], np.ndarray]] = {
    "press hall": _paint_press_hall, "park": _paint_park, "street": _paint_street,
    "stadium": _paint_stadium, "beach": _paint_beach, "library": _paint_library,
    "harbour": _paint_harbour, "market": _paint_market, "airport": _paint_airport, "office": _paint_office,
}


# --- texts for counterfactuals and tokenizers ---------------------------------------------------
def _name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])")


def swap_name(text: str, old_name: str, new_name: str) -> str:
    """Replace every whole-word occurrence of ``old_name`` (a counterfactual text)."""
    pattern = _name_pattern(old_name)
    if not pattern.search(text):
        raise DataError(f"The text does not name {old_name!r}, so it cannot be swapped for {new_name!r}: "
                        f"{text!r}. Pass the name the text actually contains (column 'named_person').")
    return pattern.sub(lambda _: new_name, text)


def anonymize(text: str, name: str) -> str:
    """Replace ``name`` by "a person" ("A person" at the start), as in the anonymous captions."""
    swapped = swap_name(text, name, ANONYMOUS)
    return swapped[0].upper() + swapped[1:] if swapped.startswith(ANONYMOUS) else swapped


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


# --- datasets -----------------------------------------------------------------------------------
def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Exact counts by largest remainder, so small sets honour the fractions as well as possible."""
    raw = [n * f for f in fractions]
    counts = [int(np.floor(r)) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _validate_dataset_args(n_items: int, split_fractions: Sequence[float], negative_fraction: float,
                           pairs: bool, anonymous: bool, seed: int) -> None:
    _check_range("n_items", n_items, 1, 10_000_000, "the number of images to render")
    if len(split_fractions) != 3 or any(f < 0 for f in split_fractions) or abs(sum(split_fractions) - 1) > 1e-6:
        raise ConfigError(f"split_fractions={tuple(split_fractions)} is not valid; give three non-negative "
                          "fractions for train, val and test that add up to 1, e.g. (0.8, 0.1, 0.1).")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ConfigError(f"negative_fraction={negative_fraction} is out of range; use a value from 0 to 1.")
    if pairs and anonymous:
        raise ConfigError("pairs=True needs texts that name people, but anonymous=True removes the names; "
                          "choose one of them.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} is not valid; use a non-negative integer.")


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    ours = [out / "data.csv", out / "world.json", out / "images"]
    existing = [p for p in ours if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds a generated dataset ({existing[0].name}); choose an empty "
                          "folder or pass overwrite=True (--overwrite) to replace it.")
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "images").mkdir(parents=True)


def generate_dataset(
    out_dir: str | os.PathLike[str],
    n_items: int,
    world_config: WorldConfig | None = None,
    *,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    negative_fraction: float = 0.5,
    pairs: bool = False,
    anonymous: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Render ``n_items`` images into ``out_dir`` and write ``data.csv`` and ``world.json``; return the CSV path.

    Each image is one row, labelled 0 (another person's name) with probability ``negative_fraction``
    (an exact count per split). ``pairs=True`` writes each image twice, with its positive and its
    negative text (rows ``<id>-pos`` and ``<id>-neg``, same split), as used for evaluation.
    ``anonymous=True`` writes "A person ..." texts with an empty label, for pre-training without names.
    Images are written as they are rendered (never all held in memory); the table appears only when
    everything is done. Besides the standard columns the CSV holds ``person`` (who is drawn),
    ``named_person`` (who the text names) and the context elements, for building counterfactuals.
    ``progress(done, total)`` is called about 200 times in all.
    """
    world_config = world_config or WorldConfig()
    _validate_dataset_args(n_items, split_fractions, negative_fraction, pairs, anonymous, seed)
    world = World.from_config(world_config)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    started = time.perf_counter()

    plan_rng = np.random.default_rng([seed, 0])
    counts = _split_counts(n_items, split_fractions)
    splits = np.repeat(np.arange(3), counts)[plan_rng.permutation(n_items)]
    negative = np.zeros(n_items, dtype=bool)
    if not (pairs or anonymous):
        for s, count in enumerate(counts):
            members = np.flatnonzero(splits == s)
            chosen = plan_rng.permutation(members)[: round(count * negative_fraction)]
            negative[chosen] = True

    width = max(6, len(str(n_items - 1)))
    step = max(1, n_items // 200)
    rows_written = 0
    label_counts: Counter[str] = Counter()
    tmp_csv = out / "data.csv.partial"
    with tmp_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(TABLE_COLUMNS)
        for i in range(n_items):
            rng = np.random.default_rng([seed, 1, i])
            # Image first, then text, then the other name: the image of item i does not depend on labels.
            person = world.people[int(rng.integers(len(world.people)))]
            context = world.contexts[int(rng.integers(len(world.contexts)))]
            image = world.render(person, context, rng)
            parts = world.draw_text_parts(rng)
            other_index = int(rng.integers(len(world.people) - 1))
            other = world.people[other_index + (other_index >= world.people.index(person))]

            item_id = f"syn-{i:0{width}d}"
            rel = f"images/{i // 1000:04d}/{item_id}.png"
            (out / rel).parent.mkdir(exist_ok=True)
            image.save(out / rel, format="PNG")

            split = SPLIT_NAMES[int(splits[i])]
            context_cols = [context.background, context.object, context.colour]
            if anonymous:
                variants = [(item_id, None, "")]
            elif pairs:
                variants = [(f"{item_id}-pos", person, "1"), (f"{item_id}-neg", other, "0")]
            else:
                variants = [(item_id, other, "0") if negative[i] else (item_id, person, "1")]
            for row_id, named, label in variants:
                name = named.name if named else None
                writer.writerow([row_id, rel, world.caption(name, context, parts), world.summary(name, context, parts),
                                 label, split, person.name, name or "", *context_cols])
                label_counts[label or "none"] += 1
                rows_written += 1
            if progress is not None and ((i + 1) % step == 0 or i + 1 == n_items):
                progress(i + 1, n_items)

    meta = world.to_json()
    meta["dataset"] = {
        "n_images": n_items, "n_rows": rows_written, "seed": seed, "split_fractions": list(split_fractions),
        "negative_fraction": negative_fraction, "pairs": pairs, "anonymous": anonymous,
        "split_counts": dict(zip(SPLIT_NAMES, counts)), "label_counts": dict(label_counts),
    }
    (out / "world.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    csv_path = out / "data.csv"
    tmp_csv.replace(csv_path)
    elapsed = time.perf_counter() - started
    logger.info("Generated %d synthetic images (%d rows) in %s in %.1f s (%.2f ms per image)",
                n_items, rows_written, out, elapsed, 1000 * elapsed / n_items)
    return csv_path


def load_world(path: str | os.PathLike[str]) -> World:
    """Rebuild the world of a generated dataset from its folder or its ``world.json``."""
    p = Path(path)
    json_path = p / "world.json" if p.is_dir() else p
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"Cannot read the synthetic world description {json_path}: {exc}. "
                        "Point to a folder made by generate_dataset (it holds world.json).") from exc
    if not isinstance(meta, dict) or meta.get("format") != WORLD_FORMAT:
        raise DataError(f"{json_path} is not a synthetic world description (expected format {WORLD_FORMAT}); "
                        "regenerate the dataset with generate_dataset.")
    try:
        world = World.from_config(WorldConfig(**meta["config"]))
    except (TypeError, ConfigError) as exc:
        raise DataError(f"{json_path} holds a world configuration this version cannot use ({exc}); "
                        "regenerate the dataset with this version.") from exc
    if [asdict(x) for x in world.people] != meta["people"] or [asdict(c) for c in world.contexts] != meta["contexts"]:
        raise DataError(f"{json_path} was made by a different version of the generator (people or contexts "
                        "differ); regenerate the dataset with this version.")
    return world
