"""Per-part styles of a procedural face: a colour from a per-part palette, a texture and a shading
strength, drawn with the correlations of real faces so single-part edits are a real test.

Entanglement (what a style encoder sees in real data): both eyes share a colour 90 % of the time,
brows follow the hair colour 85 %, ears, nose and neck follow the skin, lips are a redder, darker
skin tone unless painted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scadm.data.synthetic_shapes import CLASS_NAMES
from scadm.errors import InputError

TEXTURES = ("none", "stripes", "noise")
EYE_COLOUR_MATCH_RATE = 0.90
BROWS_FOLLOW_HAIR_RATE = 0.85
DYED_HAIR_RATE = 0.15
LIPSTICK_RATE = 0.25

Colour = tuple[int, int, int]

SKIN_TONES = (
    (255, 224, 200),
    (245, 208, 180),
    (234, 190, 160),
    (222, 172, 138),
    (200, 148, 112),
    (176, 122, 88),
    (150, 98, 66),
    (120, 76, 52),
    (92, 58, 40),
    (70, 45, 32),
)
HAIR_NATURAL = (
    (24, 20, 20),
    (48, 34, 28),
    (78, 52, 34),
    (112, 78, 48),
    (150, 112, 70),
    (206, 172, 110),
    (232, 212, 160),
    (138, 58, 30),
    (188, 96, 46),
    (140, 136, 132),
    (216, 214, 210),
)
HAIR_DYED = ((220, 90, 150), (70, 90, 200), (120, 60, 170), (50, 150, 110), (40, 160, 180), (230, 60, 50))
IRIS = (
    (62, 38, 22),
    (100, 64, 36),
    (140, 104, 56),
    (78, 120, 70),
    (66, 108, 168),
    (118, 160, 206),
    (112, 124, 136),
    (168, 118, 46),
)
LIPSTICK = ((186, 28, 42), (214, 96, 136), (120, 36, 70), (198, 132, 116), (92, 26, 38), (232, 80, 70))
LIP_TINT = (172, 72, 80)  # natural lips: skin pulled towards this
MOUTH_INSIDE = (96, 34, 40)
GARMENTS = (
    (20, 20, 24),
    (240, 240, 236),
    (30, 40, 90),
    (120, 120, 124),
    (170, 30, 40),
    (40, 90, 50),
    (200, 170, 120),
    (90, 60, 40),
    (60, 110, 170),
    (230, 200, 60),
)
FRAMES = ((15, 15, 15), (80, 50, 30), (130, 90, 50), (200, 170, 90), (180, 180, 190), (160, 30, 40), (30, 60, 140))
JEWELLERY = ((212, 175, 55), (192, 192, 200), (240, 234, 214), (170, 40, 60), (40, 120, 170), (20, 20, 20))


@dataclass(frozen=True)
class PartStyle:
    """Ground-truth look of one part: base colour, texture and shading.

    texture: "none", "stripes" (sinusoid across `angle`) or "noise" (a few sinusoids around
    `angle`); frequency in cycles per face unit (half the image width); phase in radians;
    shading: how much darker the part's side away from the light gets (0 = flat).
    """

    colour: Colour
    texture: str = "none"
    frequency: float = 0.0
    angle: float = 0.0
    phase: float = 0.0
    shading: float = 0.0

    def __post_init__(self):
        if self.texture not in TEXTURES:
            raise InputError(f"texture: {self.texture!r} is not one of {', '.join(TEXTURES)}")
        if len(self.colour) != 3 or not all(0 <= int(c) <= 255 for c in self.colour):
            raise InputError(f"colour: {self.colour} is not an (R, G, B) triple in 0..255")
        if not 0.0 <= self.shading <= 1.0:
            raise InputError(f"shading: {self.shading} is outside 0..1")


def _rgb(values) -> Colour:
    r, g, b = (int(v) for v in np.clip(np.round(values), 0, 255))
    return r, g, b


def _pick(g, palette, jitter: float) -> np.ndarray:
    return np.asarray(palette[g.integers(len(palette))], float) + g.normal(0.0, jitter, 3)


def _textured(g, colour, rates, freq, angle=(0.0, np.pi), shading=(0.05, 0.3)) -> PartStyle:
    texture = g.choice(TEXTURES, p=rates)
    flat = texture == "none"
    return PartStyle(
        colour=_rgb(colour),
        texture=str(texture),
        frequency=0.0 if flat else float(g.uniform(*freq)),
        angle=0.0 if flat else float(g.uniform(*angle)),
        phase=0.0 if flat else float(g.uniform(0.0, 2.0 * np.pi)),
        shading=float(g.uniform(*shading)),
    )


def _flat(g, colour, shading=(0.03, 0.25)) -> PartStyle:
    return PartStyle(colour=_rgb(colour), shading=float(g.uniform(*shading)))


def sample_styles(g: np.random.Generator) -> dict[str, PartStyle]:
    """One style per class name (all 19, also for parts this face does not show)."""
    skin = _pick(g, SKIN_TONES, 7.0)
    dyed = g.random() < DYED_HAIR_RATE
    hair = _pick(g, HAIR_DYED if dyed else HAIR_NATURAL, 10.0)
    if g.random() < BROWS_FOLLOW_HAIR_RATE:
        light_hair = hair.mean() > 60.0
        brow = hair * g.uniform(0.55, 0.85) if light_hair else hair * g.uniform(1.2, 1.6) + 12.0
    else:
        brow = _pick(g, HAIR_NATURAL[:6], 8.0)
    iris = _pick(g, IRIS, 8.0)
    other_iris = _pick(g, IRIS, 8.0)
    same_eyes = g.random() < EYE_COLOUR_MATCH_RATE
    if g.random() < LIPSTICK_RATE:
        lips = _pick(g, LIPSTICK, 8.0)
    else:
        lips = (skin + g.uniform(0.35, 0.55) * (np.asarray(LIP_TINT) - skin)) * g.uniform(0.85, 1.0)
    garment = g.uniform(20, 240, 3) if g.random() < 0.5 else _pick(g, GARMENTS, 8.0)
    headwear = g.uniform(20, 240, 3) if g.random() < 0.5 else _pick(g, GARMENTS, 8.0)
    brow_style = _flat(g, brow, shading=(0.0, 0.15))
    ear = skin * g.uniform(0.92, 0.98)
    # Entries draw from `g` in the order written, which fixes each seed's look: the subject's
    # right eye and ear (on the image's left) draw first, as they always have.
    styles = {
        "bg": _textured(
            g,
            g.uniform(25, 235, 3),
            (0.8, 0.08, 0.12),
            (1.0, 3.0),
            shading=(0.0, 0.45) if g.random() < 0.5 else (0.0, 0.0),
        ),
        "skin": _flat(g, skin),
        "nose": _flat(g, skin * g.uniform(0.86, 0.92)),
        "eye_g": _flat(g, _pick(g, FRAMES, 6.0), shading=(0.0, 0.1)),
        "r_eye": _flat(g, iris, shading=(0.0, 0.15)),
        "l_eye": _flat(g, iris if same_eyes else other_iris, shading=(0.0, 0.15)),
        "l_brow": brow_style,
        "r_brow": brow_style,
        "r_ear": _flat(g, ear),
        "l_ear": _flat(g, ear),
        "mouth": _flat(g, _pick(g, (MOUTH_INSIDE,), 10.0), shading=(0.0, 0.15)),
        "u_lip": _flat(g, lips * g.uniform(0.88, 0.96)),
        "l_lip": _flat(g, lips),
        "hair": _textured(g, hair, (0.25, 0.55, 0.2), (4.0, 8.0), (-0.4, 0.4), (0.1, 0.35)),
        "hat": _textured(g, headwear, (0.5, 0.35, 0.15), (2.5, 6.0)),
        "ear_r": _flat(g, _pick(g, JEWELLERY, 6.0), shading=(0.0, 0.2)),
        "neck_l": _flat(g, _pick(g, JEWELLERY, 6.0), shading=(0.0, 0.2)),
        "neck": _flat(g, skin * g.uniform(0.84, 0.92)),
        "cloth": _textured(g, garment, (0.5, 0.35, 0.15), (2.5, 6.0)),
    }
    return {name: styles[name] for name in CLASS_NAMES}
