"""The inner features of a procedural face (nose, mouth, eyes, brows) and what is worn on the head
(glasses, hat): each adds its layers, shading anchor and inner details to a FaceLayout.

`f` is the head frame from `synthetic_layout`: head size, eye line, yaw, hairline.
Sizes are in face units (32 px at 64 px and scale 1).
"""

from __future__ import annotations

import numpy as np

from scadm.data.synthetic_shapes import (
    CLS,
    band,
    ellipse,
    ellipse_radius,
    half_plane_above,
    intersect,
    minus,
    soft_darken,
    union,
)

MOUTH_OPEN_RATE = 0.45
TEETH_RATE = 0.65  # among open mouths
TEETH_SHARE = 0.4  # of the opening's height

# Fixed colours of inner details: they belong to their part's label, not to its style.
SCLERA = np.array([236.0, 233.0, 226.0])
PUPIL = np.array([18.0, 14.0, 14.0])
LASH = np.array([35.0, 25.0, 22.0])
TEETH = np.array([236.0, 230.0, 212.0])
GLINT = np.array([250.0, 250.0, 250.0])


def nose(g, face, f) -> None:
    """Bridge, tip and wings, a little darker than the skin, with two soft nostrils."""
    top, tip = f["eye_y"], g.uniform(0.2, 0.26)
    x_top, x_tip = 0.08 * f["yaw"], 0.14 * f["yaw"]
    tip_a, w0 = g.uniform(0.085, 0.11), g.uniform(0.025, 0.04)
    w1 = 0.5 * tip_a

    def bridge(x, y):  # a trapezoid widening from w0 to w1, leaning with the yaw
        t = np.clip((y - top) / (tip - top), 0.0, 1.0)
        axis = x_top + (x_tip - x_top) * t
        return (y >= top) & (y <= tip) & (np.abs(x - axis) <= w0 + (w1 - w0) * t)

    face.add(
        CLS["nose"],
        union(
            (bridge, (x_tip - tip_a, top, x_tip + tip_a, tip)),
            ellipse(x_tip, tip - 0.01, 0.6 * tip_a, 0.055),
            ellipse(x_tip - 0.65 * tip_a, tip + 0.005, 0.45 * tip_a, 0.04),
            ellipse(x_tip + 0.65 * tip_a, tip + 0.005, 0.45 * tip_a, 0.04),
        ),
    )
    face.anchors[CLS["nose"]] = (x_tip, (top + tip) / 2, tip - top)
    left, right = (soft_darken(x_tip + s * 0.45 * tip_a, tip + 0.025, 0.035, 0.02, 0.45) for s in (-1.0, 1.0))
    face.details[CLS["nose"]] = lambda x, y, rgb, shade: right(x, y, left(x, y, rgb, shade), shade)
    f["nose_tip"] = tip


def mouth(g, face, f) -> None:
    """Upper lip, lower lip and, when open, the inner mouth between them (a lens-shaped mouth
    whose three parts share one profile, so they tile without gaps)."""
    cx, cy = 0.09 * f["yaw"], f["nose_tip"] + g.uniform(0.16, 0.2)
    half, up, lo = g.uniform(0.16, 0.21), g.uniform(0.065, 0.085), g.uniform(0.08, 0.105)
    smile, bow = g.uniform(-0.015, 0.04), g.uniform(0.15, 0.35)
    gap = g.uniform(0.07, 0.12) if g.random() < MOUTH_OPEN_RATE else 0.0
    teeth = g.random() < TEETH_RATE

    def profile(x):
        t = np.clip((x - cx) / half, -1.0, 1.0)
        env = np.sqrt(1.0 - t * t)
        mid = cy - smile * t * t
        open_half = 0.5 * gap * env
        top = mid - open_half - up * env**0.7 * (1.0 - bow * np.exp(-((t / 0.2) ** 2)))
        return mid - open_half, mid + open_half, top, mid + open_half + lo * env**0.8

    def part(k):
        def inside(x, y):
            upper_in, lower_in, top, bottom = profile(x)
            lo_y, hi_y = ((top, upper_in), (upper_in, lower_in), (lower_in, bottom))[k]
            return (np.abs(x - cx) < half) & (y >= lo_y) & (y < hi_y)

        return inside, (cx - half, cy - gap - up - 0.05, cx + half, cy + gap + lo + 0.05)

    for k, name in enumerate(("u_lip", "mouth", "l_lip")):
        face.add(CLS[name], part(k))
        face.anchors[CLS[name]] = (cx, cy, half)
    if teeth:  # the upper teeth fill the top of the opening

        def detail(x, y, rgb, shade):
            upper_in, lower_in, _, _ = profile(x)
            upper_teeth = y < upper_in + TEETH_SHARE * (lower_in - upper_in)
            return np.where(upper_teeth[:, None], TEETH * shade[:, None], rgb)

        face.details[CLS["mouth"]] = detail


def eyes(g, face, f) -> None:
    """Both eyes: sclera, an iris in the part's colour, pupil, glint and an upper lash line."""
    cy, dx = f["eye_y"], g.uniform(0.22, 0.25)
    a, b, tilt = g.uniform(0.135, 0.16), g.uniform(0.085, 0.1), g.uniform(-0.1, 0.15)
    iris_r, pupil = b * g.uniform(1.1, 1.3), g.uniform(0.3, 0.42)
    gaze = (g.uniform(-0.3, 0.3) * a, g.uniform(-0.15, 0.15) * b)
    f["eyes"] = []
    for name, side in (("r_eye", -1.0), ("l_eye", 1.0)):  # the subject's right eye: image left
        cx, t = side * dx + 0.1 * f["yaw"], -side * tilt
        face.add(CLS[name], ellipse(cx, cy, a, b, tilt=t))
        face.anchors[CLS[name]] = (cx, cy, a)
        iris_centre = (cx + gaze[0], cy + gaze[1])
        face.details[CLS[name]] = _eye_detail(cx, cy, a, b, t, iris_centre, iris_r, pupil)
        f["eyes"].append((cx, cy, a, b))


def _eye_detail(cx, cy, a, b, tilt, iris_centre, iris_r, pupil):
    c, s = np.cos(tilt), np.sin(tilt)
    ix, iy = iris_centre

    def detail(x, y, rgb, shade):
        d = np.hypot(x - ix, y - iy) / iris_r
        iris = rgb * (1.0 - 0.3 * d**4)[:, None]  # darker towards the limbal ring
        out = np.where((d < 1.0)[:, None], iris, SCLERA * shade[:, None])
        out = np.where((d < pupil)[:, None], PUPIL, out)
        glint = np.hypot(x - ix + 0.35 * iris_r, y - iy + 0.4 * iris_r) < 0.25 * iris_r
        out = np.where(glint[:, None], GLINT, out)
        upper = -s * (x - cx) + c * (y - cy) < 0.0
        lash = upper & (ellipse_radius(x, y, cx, cy, a, b, tilt) > 0.72)
        return np.where(lash[:, None], LASH, out)

    return detail


def brows(g, face, f) -> None:
    """Arched strokes above the eyes, thickest at the inner end."""
    cy_eye, b_eye = f["eye_y"], f["eyes"][0][3]
    cy = cy_eye - b_eye - g.uniform(0.075, 0.11)
    half, thick = g.uniform(0.13, 0.17), g.uniform(0.065, 0.09)
    arch, tilt = g.uniform(0.01, 0.045), g.uniform(-0.05, 0.06)
    dx = abs(f["eyes"][0][0] - 0.1 * f["yaw"]) + g.uniform(0.0, 0.02)
    for name, side in (("r_brow", -1.0), ("l_brow", 1.0)):
        cx = side * dx + 0.1 * f["yaw"]

        def curve(x, cx=cx, side=side):
            t = (x - cx) / half
            return cy - arch * (1.0 - t * t) - tilt * t * side

        def width(x, cx=cx, side=side):
            outward = np.clip((x - cx) / half * side, -1.0, 1.0)  # -1 inner end, +1 outer end
            return thick * (1.0 - 0.3 * outward) * np.sqrt(np.clip(1.0 - outward**8, 0.0, 1.0))

        box = (cx - half, cy - arch - thick - 0.1, cx + half, cy + thick + 0.1)
        face.add(CLS[name], band(curve, cx - half, cx + half, width, box))
        face.anchors[CLS[name]] = (cx, cy, half)


def glasses(g, face, f) -> None:
    """Frames only (rims, bridge, temples): the eyes stay visible through the lenses."""
    grow_a, grow_b = g.uniform(0.04, 0.07), g.uniform(0.05, 0.08)
    power, rim = g.uniform(2.0, 5.0), g.uniform(0.04, 0.055)
    shapes = []
    for cx, cy, a, b in f["eyes"]:
        la, lb = a + grow_a, b + grow_b
        outer = ellipse(cx, cy, la + rim / 2, lb + rim / 2, power=power)
        shapes.append(minus(outer, ellipse(cx, cy, la - rim / 2, lb - rim / 2, power=power)))
    (lx, cy, a, b), (rx, _, _, _) = f["eyes"]
    la, y = a + grow_a, cy - 0.3 * (b + grow_b)
    edge = f["half_width"](y) + 0.02
    for x0, x1 in ((lx + la, rx - la), (-edge, lx - la), (rx + la, edge)):  # bridge, temples
        shapes.append(band(lambda x: np.full_like(x, y), x0, x1, rim, (x0, y - rim, x1, y + rim)))
    face.add(CLS["eye_g"], union(*shapes))
    face.anchors[CLS["eye_g"]] = (0.0, cy, 0.5)


def hat(g, face, f) -> None:
    """A beanie (dome + cuff) or a brimmed hat (crown + wide brim) over the top of the head."""
    brim_y, a = g.uniform(-0.5, -0.38), f["a"] + g.uniform(0.08, 0.14)
    if g.random() < 0.5:
        dome = intersect(ellipse(0.0, brim_y, a, g.uniform(0.45, 0.6)), half_plane_above(brim_y))
        cuff = ellipse(0.0, brim_y - 0.04, a + 0.02, g.uniform(0.06, 0.09), power=6.0)
        shape = union(dome, cuff)
    else:
        crown_h = g.uniform(0.3, 0.45)
        crown = ellipse(0.0, brim_y - crown_h / 2, a - 0.05, crown_h / 2 + 0.08, power=4.0)
        crown = intersect(crown, half_plane_above(brim_y))
        brim = ellipse(0.0, brim_y, a + g.uniform(0.15, 0.3), g.uniform(0.06, 0.09))
        shape = union(crown, brim)
    face.add(CLS["hat"], shape)
    face.anchors[CLS["hat"]] = (0.0, brim_y - 0.2, a)
