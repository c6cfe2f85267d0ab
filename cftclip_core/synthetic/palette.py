"""Colours, objects and backgrounds of the synthetic world.

Every RGB value below is distinct from every other one, so a noise-free render can be decoded back
into (shirt, hair, accessory); tests rely on that to prove people look different.
"""

from __future__ import annotations

RGB = tuple[int, int, int]

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
DARK_SHIRTS = frozenset({"blue", "purple", "black", "red"})
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

