"""Drawing people, objects and backgrounds with Pillow and numpy (sizes in units of a 64-pixel image)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PIL import ImageDraw

from cftclip_core.synthetic.palette import (
    DARK_SHIRTS,
    GLASSES,
    HAIR_COLOURS,
    HAT,
    OBJECT_COLOURS,
    OUTLINE,
    RGB,
    SHIRT_COLOURS,
    SKIN,
    TIE_DARK,
    TIE_LIGHT,
    TROUSERS,
)

if TYPE_CHECKING:
    from cftclip_core.synthetic.world import Context, Person, SceneLayout

def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """Integer box at least one pixel wide and high (PIL boxes include both ends)."""
    a, b = round(x0), round(y0)
    return a, b, max(a, round(x1) - 1), max(b, round(y1) - 1)


def draw_person(draw: ImageDraw.ImageDraw, person: Person, layout: SceneLayout, scale: float) -> None:
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
        tie = TIE_LIGHT if person.shirt in DARK_SHIRTS else TIE_DARK
        tw = max(1.0, 0.07 * h)
        tie_bottom = shirt_top + 0.7 * (shirt_bottom - shirt_top)
        draw.polygon([(cx - tw, shirt_top), (cx + tw, shirt_top), (cx + tw * 0.6, tie_bottom),
                      (cx, tie_bottom + tw), (cx - tw * 0.6, tie_bottom)], fill=tie)


def draw_object(draw: ImageDraw.ImageDraw, context: Context, layout: SceneLayout, scale: float) -> None:
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


BACKGROUND_PAINTERS: dict[str, Callable[[], np.ndarray]] = {
    "press hall": _paint_press_hall, "park": _paint_park, "street": _paint_street,
    "stadium": _paint_stadium, "beach": _paint_beach, "library": _paint_library,
    "harbour": _paint_harbour, "market": _paint_market, "airport": _paint_airport, "office": _paint_office,
}

