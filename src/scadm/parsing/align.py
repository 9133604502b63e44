"""FFHQ / CelebA-HQ face alignment: a rotated square from eye and mouth points, warped to N x N.

Why: CelebAMask-HQ parsers (and SCA-DM models trained on CelebAMask-HQ) only work on faces cropped
the way that dataset was: eyes level, at a fixed height and spacing. The crop is the one Karras et
al. used for FFHQ ("A Style-Based Generator Architecture for GANs", 2019, its align script),
without its blurred-border step: parts outside the photo are filled by reflection.

>>> quad = ffhq_quad(np.array([40., 50.]), np.array([60., 50.]),
...                  np.array([42., 70.]), np.array([58., 70.]))
>>> quad.tolist()   # top-left, bottom-left, bottom-right, top-right
[[10.0, 12.0], [10.0, 92.0], [90.0, 92.0], [90.0, 12.0]]
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from scadm.errors import InputError
from scadm.parsing.landmarks import FaceLandmarks

EYE_SPAN = 2.0  # half-side of the crop >= EYE_SPAN x eye-to-eye distance ...
EYE_MOUTH_SPAN = 1.8  # ... and >= EYE_MOUTH_SPAN x eye-to-mouth distance
CENTRE_SHIFT = 0.1  # the centre sits this fraction of the eye-to-mouth vector below the eyes


def ffhq_quad(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """The crop square as 4 (x, y) corners: top-left, bottom-left, bottom-right, top-right."""
    eye_left, eye_right, mouth_left, mouth_right = (
        np.asarray(p, dtype=np.float64) for p in (eye_left, eye_right, mouth_left, mouth_right)
    )
    eye = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye
    # x: the face's horizontal axis, averaged from the eye line and the normal of the eye-mouth line
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if norm == 0 or not np.isfinite(norm):
        raise InputError("landmarks: degenerate eye/mouth points, cannot orient the face")
    x = x / norm * max(EYE_SPAN * np.hypot(*eye_to_eye), EYE_MOUTH_SPAN * np.hypot(*eye_to_mouth))
    y = np.flipud(x) * [-1, 1]
    c = eye + CENTRE_SHIFT * eye_to_mouth
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_for(landmarks: FaceLandmarks) -> np.ndarray:
    return ffhq_quad(landmarks.eye_left, landmarks.eye_right, landmarks.mouth_left, landmarks.mouth_right)


def warp_quad(image: Image.Image, quad: np.ndarray, size: int) -> Image.Image:
    """The quad of `image` resampled to size x size (bilinear).

    A quad much larger than `size` is first shrunk by an integer factor (box filter), so the
    output is not aliased; a quad reaching outside the image is filled by reflecting the border.
    """
    if not isinstance(size, int) or size < 1:
        raise InputError(f"size: expected a positive int, got {size!r}")
    image = image.convert("RGB")
    quad = np.asarray(quad, dtype=np.float64).copy()
    side = np.hypot(*(quad[3] - quad[0]))
    shrink = math.floor(side / size / 2)
    if shrink > 1:
        image = image.reduce(shrink)
        quad /= shrink
    image, offset = _reflect_pad(image, quad)
    quad += offset
    data = [float(v) for v in quad.reshape(-1)]
    return image.transform((size, size), Image.Transform.QUAD, data, Image.Resampling.BILINEAR)


def _reflect_pad(image: Image.Image, quad: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Pad by reflection so the quad (plus a pixel) lies inside; returns the image and how far
    its origin moved."""
    w, h = image.size
    lo = np.maximum(0, np.ceil(-quad.min(0)) + 1).astype(int)  # left, top
    hi = np.maximum(0, np.ceil(quad.max(0) - (w, h)) + 1).astype(int)  # right, bottom
    arr, todo = np.asarray(image), [int(lo[1]), int(hi[1]), int(lo[0]), int(hi[0])]
    while any(todo):  # numpy reflects at most (side - 1) pixels per call: repeat for far quads
        step = [min(p, arr.shape[0 if i < 2 else 1] - 1) for i, p in enumerate(todo)]
        arr = np.pad(arr, ((step[0], step[1]), (step[2], step[3]), (0, 0)), mode="reflect")
        todo = [p - s for p, s in zip(todo, step, strict=True)]
    return Image.fromarray(arr), lo.astype(np.float64)
