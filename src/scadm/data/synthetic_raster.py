"""Rasterising a face layout: exact labels at pixel centres, antialiased colours.

The label of a pixel is the class of the topmost layer that contains its centre, so the label map
is the geometry sampled exactly, at any resolution. Colours are averaged over SUPERSAMPLE^2 points
per pixel wherever a pixel can be mixed (a 4-neighbour has another class, or its part has sharp
inner details: iris, pupil, teeth); elsewhere one sample at the centre is the pixel's colour,
since textures and the other parts' inner details vary slowly (styles keep a texture period
near 4 px or more at 64 px; nostrils and ear folds are soft-edged).
"""

from __future__ import annotations

import math

import numpy as np

from scadm.data.synthetic_shapes import CLS, FaceLayout, Pose
from scadm.data.synthetic_styles import PartStyle

SUPERSAMPLE = 4  # samples per axis in a mixed pixel
TEXTURE_CONTRAST = 0.22  # a texture scales the colour by 1 +- this
NOISE_WAVES = ((1.0, 0.0), (1.3, 2.1), (0.7, 4.2))  # (frequency factor, angle offset)
DETAILED = tuple(CLS[n] for n in ("l_eye", "r_eye", "mouth"))  # sharp inner details


def rasterise(layout: FaceLayout, styles: list[PartStyle], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (S, S, 3), labels int64 (S, S)); styles[k] is the style of class k."""
    centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    u, v = np.meshgrid(centres, centres)
    x, y = layout.pose.to_face(u, v)
    labels = _label_grid(layout, x, y)

    mixed = _mixed(labels)
    for k in DETAILED:
        mixed |= labels == k
    rows, cols = np.nonzero(mixed)
    offsets = ((np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5) * (2.0 / size)
    du, dv = (o.ravel() for o in np.meshgrid(offsets, offsets))
    xs, ys = layout.pose.to_face(centres[cols][:, None] + du, centres[rows][:, None] + dv)
    sub_labels = _sub_labels(layout, labels, rows, cols, xs, ys)  # (n, SUPERSAMPLE^2)

    flat = ~mixed
    rgb = _paint_all(
        layout,
        styles,
        np.concatenate([x[flat], xs.ravel()]),
        np.concatenate([y[flat], ys.ravel()]),
        np.concatenate([labels[flat], sub_labels.ravel()]),
    )
    image = np.empty((size, size, 3))
    n_flat = len(rgb) - sub_labels.size
    image[flat] = rgb[:n_flat]
    image[rows, cols] = rgb[n_flat:].reshape(len(rows), -1, 3).sum(axis=1) / du.size
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels


def _label_grid(layout: FaceLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class of the topmost layer containing each pixel centre (painter's order)."""
    size = x.shape[0]
    labels = np.zeros((size, size), np.int64)
    for layer in layout.layers:
        r0, r1, c0, c1 = _pixel_box(layout.pose, layer.box, size)
        if r0 < r1 and c0 < c1:
            window = labels[r0:r1, c0:c1]
            window[layer.inside(x[r0:r1, c0:c1], y[r0:r1, c0:c1])] = layer.cls
    return labels


def _sub_labels(layout, labels, rows, cols, xs, ys) -> np.ndarray:
    """Class owning each sub-sample of the mixed pixels (rows, cols).

    Only layers of a class present among a pixel's 3x3 neighbours are tested there: a part
    missing from all nine centres is thinner than a pixel, and skipping it costs nothing visible.
    Where all nine agree (inside an eye), every sub-sample has that class.
    """
    pad = np.pad(labels, 1, mode="edge")
    near = np.stack([pad[rows + dy, cols + dx] for dy in range(3) for dx in range(3)], axis=1)
    sub = np.repeat(labels[rows, cols][:, None], xs.shape[1], axis=1)
    border = np.flatnonzero((near != near[:, :1]).any(axis=1))
    present = np.bitwise_or.reduce(1 << near[border], axis=1)  # bit k: class k is near
    xs, ys = xs[border], ys[border]
    owner = np.zeros(xs.shape, np.int64)
    for layer in layout.layers:
        sel = np.flatnonzero(present & (1 << layer.cls))
        if sel.size:
            part = owner[sel]
            part[layer.inside(xs[sel], ys[sel])] = layer.cls
            owner[sel] = part
    sub[border] = owner
    return sub


def _pixel_box(pose: Pose, box, size: int) -> tuple[int, int, int, int]:
    """Rows r0:r1, cols c0:c1 of the pixel centres a face-space box can hold (one spare)."""
    u0, v0, u1, v1 = pose.frame_box(box)

    def span(lo, hi):  # frame coordinates -> clipped range of pixel indices
        i0 = math.floor((lo + 1.0) / 2.0 * size - 0.5) - 1
        i1 = math.ceil((hi + 1.0) / 2.0 * size - 0.5) + 2
        return min(max(i0, 0), size), min(max(i1, 0), size)

    (r0, r1), (c0, c1) = span(v0, v1), span(u0, u1)
    return r0, r1, c0, c1


def _mixed(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class: a part boundary may cross them."""
    mixed = np.zeros(labels.shape, bool)
    step_y, step_x = labels[1:] != labels[:-1], labels[:, 1:] != labels[:, :-1]
    mixed[1:] |= step_y
    mixed[:-1] |= step_y
    mixed[:, 1:] |= step_x
    mixed[:, :-1] |= step_x
    return mixed


def _paint_all(layout, styles, x, y, cls) -> np.ndarray:
    """Colour (N, 3) float of N points in face coordinates owned by classes `cls`."""
    rgb = np.empty((len(x), 3))
    order = np.argsort(cls.astype(np.uint8), kind="stable")  # a radix sort for bytes
    bounds = np.searchsorted(cls[order], np.arange(len(styles) + 1))
    for k in range(len(styles)):
        idx = order[bounds[k] : bounds[k + 1]]
        if idx.size:
            rgb[idx] = paint(layout, k, styles[k], x[idx], y[idx])
    return rgb


def paint(layout: FaceLayout, k: int, style: PartStyle, x, y) -> np.ndarray:
    """Colour of class k at points (x, y): base colour x texture x shading, then details."""
    cx, cy, r = layout.anchors.get(k, (0.0, 0.0, 1.0))
    towards_dark = ((x - cx) * layout.light[0] + (y - cy) * layout.light[1]) / r
    shade = 1.0 - style.shading * (0.5 + 0.5 * np.clip(towards_dark, -1.0, 1.0))
    factor = shade
    if style.texture != "none":
        factor = shade * (1.0 + TEXTURE_CONTRAST * texture(style, x, y))
    rgb = np.asarray(style.colour, float) * factor[:, None]
    detail = layout.details.get(k)
    return rgb if detail is None else detail(x, y, rgb, shade)


def texture(style: PartStyle, x, y) -> np.ndarray:
    """Texture in [-1, 1]: soft square stripes, or noise made of a few crossing sinusoids."""
    if style.texture == "stripes":
        d = x * np.cos(style.angle) + y * np.sin(style.angle)
        return np.clip(1.5 * np.sin(2.0 * np.pi * style.frequency * d + style.phase), -1.0, 1.0)
    total = np.zeros_like(x)
    for k, (scale, turn) in enumerate(NOISE_WAVES):
        a = style.angle + turn
        d = x * np.cos(a) + y * np.sin(a)
        total += np.sin(2.0 * np.pi * scale * style.frequency * d + (k + 1) * style.phase + k)
    return np.clip(total / 1.6, -1.0, 1.0)
