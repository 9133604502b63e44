"""Random geometry of a procedural face: the painted layers, in painter's order, with the anchors
their shading uses and the inner details (iris, nostrils, teeth...) their colours need.

Proportions are chosen for 64 px images: an eye spans about 9x5.5 px, each lip 2-3.5 px, a brow
2-3 px, so every CelebAMask-HQ class stays visible at the resolution the demo model trains at.
"""

from __future__ import annotations

import numpy as np

from scadm.data.synthetic_features import brows, eyes, glasses, hat, mouth, nose
from scadm.data.synthetic_shapes import (
    CLS,
    FaceLayout,
    Pose,
    band,
    egg,
    egg_half_width,
    ellipse,
    ellipse_radius,
    half_plane_above,
    intersect,
    minus,
    soft_darken,
    union,
)

# Probability that a face has each optional part.
OPTIONAL_PART_RATES = {"eye_g": 0.20, "hat": 0.10, "ear_r": 0.15, "neck_l": 0.10}
HAIR_STYLE_RATES = {"short": 0.32, "long": 0.30, "bob": 0.16, "curly": 0.16, "bald": 0.06}
BANGS_RATE = 0.3


def sample_layout(g: np.random.Generator) -> FaceLayout:
    """Draw a face's geometry from `g`. Layers go back to front: neck, cloth, necklace, hair
    behind the head, ears, head, earrings, nose, lips and mouth, eyes, brows, glasses, hair over
    the forehead, hat; a pixel's label is the last layer holding its centre."""
    pose = Pose(
        angle=g.uniform(-0.17, 0.17),
        scale=g.uniform(0.98, 1.12),
        shift=(g.uniform(-0.06, 0.06), g.uniform(-0.14, -0.06)),
    )
    light_angle = g.uniform(0.0, 2.0 * np.pi)
    face = FaceLayout(pose, (float(np.cos(light_angle)), float(np.sin(light_angle))))
    f = _head_frame(g)
    present = {name: g.random() < rate for name, rate in OPTIONAL_PART_RATES.items()}
    hair_style = g.choice(list(HAIR_STYLE_RATES), p=list(HAIR_STYLE_RATES.values()))
    _neck_and_cloth(g, face, f)
    if present["neck_l"]:
        _necklace(g, face, f)
    hair_front = _hair(g, face, f, hair_style)
    rings = _ears(g, face, f, present["ear_r"])
    face.add(CLS["skin"], egg(0.0, 0.0, f["a"], f["b"], f["taper"]))
    face.anchors[CLS["skin"]] = (0.0, 0.0, 0.75)
    if rings:  # after the skin, so a ring in front of the jaw stays visible
        face.add(CLS["ear_r"], union(*rings))
    nose(g, face, f)
    mouth(g, face, f)
    eyes(g, face, f)
    brows(g, face, f)
    if present["eye_g"]:
        glasses(g, face, f)
    for shape in hair_front:
        face.add(CLS["hair"], shape)
    if present["hat"]:
        hat(g, face, f)
    face.anchors[CLS["bg"]] = (0.0, 0.0, 1.5)
    return face


def _head_frame(g) -> dict:
    """Head outline and the positions every feature is placed relative to."""
    f = {"a": g.uniform(0.50, 0.57), "b": g.uniform(0.68, 0.74), "taper": g.uniform(0.12, 0.3)}
    f["yaw"] = g.uniform(-0.5, 0.5)  # turns inner features sideways (a cheap out-of-plane turn)
    f["eye_y"] = g.uniform(-0.04, 0.03)
    f["hairline"] = g.uniform(-0.5, -0.4)
    f["half_width"] = lambda y: egg_half_width(y, 0.0, f["a"], f["b"], f["taper"])
    return f


def _neck_and_cloth(g, face, f) -> None:
    w = g.uniform(0.2, 0.27)
    flare = g.uniform(0.2, 0.6)
    f["neck_w"] = w

    def neck(x, y):
        return (y > 0.2) & (np.abs(x) <= w + flare * np.maximum(y - 0.75, 0.0))

    face.add(CLS["neck"], (neck, (-w - 0.6, 0.2, w + 0.6, 2.2)))
    chin = f["b"]
    face.anchors[CLS["neck"]] = (0.0, chin + 0.15, 0.3)
    face.details[CLS["neck"]] = lambda x, y, rgb, shade: (
        rgb * (1.0 - 0.3 * np.clip(1.0 - (y - chin + 0.05) / 0.15, 0.0, 1.0))[:, None]
    )

    top, slope = g.uniform(0.76, 0.86), g.uniform(0.1, 0.5)
    cut_w, depth = w + g.uniform(0.0, 0.12), g.uniform(0.04, 0.3)
    v_neck = g.random() < 0.4

    def cloth(x, y):
        body = y >= top + slope * np.maximum(np.abs(x) - w, 0.0) ** 2
        r = np.clip(np.abs(x) / cut_w, 0.0, 1.0)
        cut = top + depth * ((1.0 - r) if v_neck else np.sqrt(1.0 - r * r))
        return body & ~((np.abs(x) < cut_w) & (y < cut))

    face.add(CLS["cloth"], (cloth, (-2.2, top, 2.2, 2.2)))
    face.anchors[CLS["cloth"]] = (0.0, top + 0.3, 1.0)


def _necklace(g, face, f) -> None:
    y0, half = f["b"] + g.uniform(0.08, 0.18), f["neck_w"] + g.uniform(0.03, 0.12)
    depth, width = g.uniform(0.05, 0.15), g.uniform(0.04, 0.055)
    chain = band(
        lambda x: y0 + depth * (1.0 - (x / half) ** 2),
        -half,
        half,
        width,
        (-half, y0 - width, half, y0 + depth + width),
    )
    shapes = [chain]
    if g.random() < 0.5:
        r = g.uniform(0.035, 0.05)
        shapes.append(ellipse(0.0, y0 + depth + r, r, r))
    face.add(CLS["neck_l"], union(*shapes))
    face.anchors[CLS["neck_l"]] = (0.0, y0 + depth / 2, half)


def _hair(g, face, f, style: str) -> list:
    """Adds the hair behind the head (long styles); returns the hair painted over the face."""
    a, b, yaw = f["a"], f["b"], f["yaw"]
    curly = style == "curly"
    pad = g.uniform(0.15, 0.22) if curly else g.uniform(0.04, 0.1)
    low = {"short": (-0.15, 0.0), "long": (0.15, 0.4), "bob": (0.3, 0.45), "curly": (0.1, 0.3), "bald": (-0.2, -0.05)}[
        style
    ]
    side_limit = g.uniform(*low)
    length = {"long": g.uniform(0.8, 1.3), "bob": g.uniform(0.45, 0.6), "curly": g.uniform(0.3, 0.7)}.get(style)
    bumps = (g.uniform(0.03, 0.06), int(g.integers(7, 12)), g.uniform(0, 2 * np.pi))
    outer = _bumpy(0.0, -0.05, a + pad, b + pad, bumps if curly else None)
    face.anchors[CLS["hair"]] = (0.0, -0.3, 0.9)

    if length is not None:
        neck_gap = f["neck_w"] + 0.02
        back = ellipse(0.0, (length - 0.3) / 2, a + pad + g.uniform(0.0, 0.06), (length + 0.3) / 2, power=4.0)
        back = minus(back, ((lambda x, y: (np.abs(x) < neck_gap) & (y > b - 0.1)), back[1]))
        face.add(CLS["hair"], union(back, intersect(outer, half_plane_above(length))))

    hairline = f["hairline"]
    window_cy = 0.15
    window = ellipse(yaw * 0.04, window_cy, a - g.uniform(0.03, 0.08), window_cy - hairline)
    if style == "bald":
        if g.random() < 0.5:
            return []  # fully bald
        window = ellipse(yaw * 0.04, window_cy, a - 0.03, window_cy - hairline + 0.25)
    front = [intersect(minus(outer, window), half_plane_above(side_limit))]
    if style != "bald" and not curly and g.random() < BANGS_RATE:
        brow_top = f["eye_y"] - 0.3
        edge = g.uniform(brow_top - 0.12, brow_top - 0.04)
        tilt, jag = g.uniform(-0.12, 0.12), g.uniform(0.0, 0.025)
        freq = g.uniform(20.0, 35.0)
        fringe = (lambda x, y: y < edge + tilt * x + jag * np.sin(freq * x)), outer[1]
        front.append(intersect(outer, fringe))
    return front


def _bumpy(cx, cy, a, b, bumps):
    """An ellipse, or with `bumps` (amplitude, count, phase) a curly outline."""
    if bumps is None:
        return ellipse(cx, cy, a, b)
    amp, n, phase = bumps

    def inside(x, y):
        theta = np.arctan2((y - cy) / b, (x - cx) / a)
        return ellipse_radius(x, y, cx, cy, a, b) <= 1.0 + amp * np.sin(n * theta + phase)

    r = (1.0 + amp) * max(a, b)
    return inside, (cx - r, cy - r, cx + r, cy + r)


def _ears(g, face, f, rings: bool) -> list:
    """Adds both ears; returns the earring shapes (empty without earrings)."""
    cy = f["eye_y"] + g.uniform(0.04, 0.1)
    ea, eb, tilt = g.uniform(0.095, 0.12), g.uniform(0.15, 0.19), g.uniform(0.0, 0.2)
    edge = f["half_width"](cy)
    lobes = []
    for name, side in (("r_ear", -1.0), ("l_ear", 1.0)):  # the subject's right ear: image left
        cx = side * (edge + 0.15 * ea) - 0.08 * f["yaw"]
        face.add(CLS[name], ellipse(cx, cy, ea, eb, tilt=side * tilt))
        face.anchors[CLS[name]] = (cx, cy, eb)
        face.details[CLS[name]] = soft_darken(
            cx + side * 0.15 * ea, cy + 0.01, 0.5 * ea, 0.6 * eb, 0.75, tilt=side * tilt
        )
        lobes.append((cx, cy + 0.85 * eb))
    if not rings:
        return []
    r, drop = g.uniform(0.045, 0.06), g.random() < 0.5
    face.anchors[CLS["ear_r"]] = (0.0, lobes[0][1] + 0.05, f["a"])
    return [ellipse(x, y + (0.07 if drop else 0.03), r, 2 * r if drop else r) for x, y in lobes]
