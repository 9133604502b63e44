"""Implicit 2-D shapes and the pose of a procedural face.

Every part of a synthetic face is a predicate `inside(x, y) -> bool array` over face coordinates,
so the same geometry rasterises at any resolution and the label of a pixel is exactly the part
that owns its centre. Face coordinates: origin at the head centre, x to the image right, y down,
one unit = half the image width at scale 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scadm.labels import CELEBAMASK_HQ

CLASS_NAMES = CELEBAMASK_HQ.names  # index = label value
CLS = {name: k for k, name in enumerate(CLASS_NAMES)}

Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in face coordinates
Shape = tuple[Inside, Box]  # the box holds every inside point, so rasterising can skip the rest
# detail(x, y, rgb, shade) -> rgb: paints a part's inner structure (iris, nostrils, teeth) over
# its styled colour; rgb is (N, 3) float, shade (N,) the part's shading factor.
Detail = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Layer:
    """One painted shape: `cls` owns every point `inside` accepts, over all earlier layers."""

    cls: int
    inside: Inside
    box: Box


@dataclass(frozen=True)
class Pose:
    """Similarity transform face -> frame (frame: [-1, 1]^2, x right, y down)."""

    angle: float  # radians, positive turns the face clockwise on screen
    scale: float
    shift: tuple[float, float]

    def to_face(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        du, dv = (u - self.shift[0]) / self.scale, (v - self.shift[1]) / self.scale
        return c * du + s * dv, -s * du + c * dv

    def frame_box(self, box: Box) -> Box:
        """Bounds (u0, v0, u1, v1) in the frame of a face-space box."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        x0, y0, x1, y1 = box
        corners = ((x0, y0), (x1, y0), (x0, y1), (x1, y1))
        us = [self.scale * (c * x - s * y) + self.shift[0] for x, y in corners]
        vs = [self.scale * (s * x + c * y) + self.shift[1] for x, y in corners]
        return min(us), min(vs), max(us), max(vs)


@dataclass
class FaceLayout:
    """Everything about a face except its colours: pose, light and the layers to paint."""

    pose: Pose
    light: tuple[float, float]  # unit vector in face coordinates pointing away from the light
    layers: list[Layer] = field(default_factory=list)
    anchors: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # cx, cy, r
    details: dict[int, Detail] = field(default_factory=dict)

    def add(self, cls: int, shape: Shape) -> None:
        self.layers.append(Layer(cls, *shape))


def ellipse(cx: float, cy: float, a: float, b: float, tilt: float = 0.0, power: float = 2.0) -> Shape:
    """Inside of a (super)ellipse with half-axes a, b, turned by `tilt` radians; power > 2
    squares it off (glasses rims, hat crowns)."""
    c, s = np.cos(tilt), np.sin(tilt)

    def inside(x, y):
        dx, dy = x - cx, y - cy
        px, py = (c * dx + s * dy) / a, (-s * dx + c * dy) / b
        if power == 2.0:
            return px * px + py * py <= 1.0
        return np.abs(px) ** power + np.abs(py) ** power <= 1.0

    rx, ry = (a, b) if tilt == 0.0 else (math.hypot(a, b),) * 2
    return inside, (cx - rx, cy - ry, cx + rx, cy + ry)


def ellipse_radius(x, y, cx: float, cy: float, a: float, b: float, tilt: float = 0.0):
    """Normalised radius (1 on the boundary) of the ellipse used by `ellipse`."""
    c, s = np.cos(tilt), np.sin(tilt)
    dx, dy = x - cx, y - cy
    return np.hypot((c * dx + s * dy) / a, (-s * dx + c * dy) / b)


def egg(cx: float, cy: float, a: float, b: float, taper: float) -> Shape:
    """A head outline: an ellipse whose half-width shrinks towards the chin by `taper`."""

    def inside(x, y):
        t = (y - cy) / b
        w = a * (1.0 - taper * np.clip(t, 0.0, 1.0) ** 2)
        return ((x - cx) / w) ** 2 + t * t <= 1.0

    return inside, (cx - a, cy - b, cx + a, cy + b)


def egg_half_width(y: float, cy: float, a: float, b: float, taper: float) -> float:
    t = (y - cy) / b
    if abs(t) >= 1.0:
        return 0.0
    return a * (1.0 - taper * min(max(t, 0.0), 1.0) ** 2) * math.sqrt(1.0 - t * t)


def union(*shapes: Shape) -> Shape:
    insides = [s[0] for s in shapes]
    boxes = np.array([s[1] for s in shapes])

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = insides[0](x, y)
        for f in insides[1:]:
            out = out | f(x, y)
        return out

    box = (float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max()))
    return inside, box


def minus(shape: Shape, *holes: Shape) -> Shape:
    """`shape` without any of `holes` (the box is the shape's)."""

    def inside(x, y):
        out = shape[0](x, y)
        for h in holes:
            out = out & ~h[0](x, y)
        return out

    return inside, shape[1]


def intersect(shape: Shape, *others: Shape) -> Shape:
    """Points inside `shape` and all `others` (the box is the shape's)."""

    def inside(x, y):
        out = shape[0](x, y)
        for o in others:
            out = out & o[0](x, y)
        return out

    return inside, shape[1]


def half_plane_above(y0: float) -> Shape:
    """Points with y < y0 (above a horizontal line); unbounded, so only to intersect with."""
    return (lambda x, y: y < y0), (-np.inf, -np.inf, np.inf, y0)


def soft_darken(cx: float, cy: float, a: float, b: float, factor: float, tilt: float = 0.0) -> Detail:
    """A detail that darkens the part by `factor` inside an ellipse, fading out over its outer
    third (ear concha, nostrils): soft, so one sample per pixel renders it without aliasing."""

    def detail(x, y, rgb, shade):
        q = ellipse_radius(x, y, cx, cy, a, b, tilt)
        weight = np.clip((1.0 - q) * 3.0, 0.0, 1.0)
        return rgb * (1.0 - (1.0 - factor) * weight)[:, None]

    return detail


def band(curve: Callable[[np.ndarray], np.ndarray], x0: float, x1: float, width, box: Box) -> Shape:
    """Points within width(x)/2 of the curve y = curve(x), for x0 <= x <= x1.

    `width` is a number or a function of x (a tapered stroke: brows, necklace chains)."""

    def inside(x, y):
        w = width(x) if callable(width) else width
        return (x >= x0) & (x <= x1) & (np.abs(y - curve(x)) <= 0.5 * w)

    return inside, box
