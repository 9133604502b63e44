"""Procedural cartoon faces with exact CelebAMask-HQ label maps and ground-truth per-part styles.

Why: the demo model trains on a CPU at 64 px, and evaluating partial style swaps (paper Sec. 4.3)
needs to know what a swap *should* look like. Here a face is a deterministic function of its seed;
`style_overrides` repaints parts with another face's styles while geometry, lighting and every
other part stay put, which is exactly the ground truth of a partial style swap.

>>> face = render_face(7)
>>> face.image.shape, face.labels.shape
((64, 64, 3), (64, 64))
>>> ref = render_face(8)
>>> swapped = render_face(7, style_overrides={"l_eye": ref.styles["l_eye"]})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from scadm.data.synthetic_layout import OPTIONAL_PART_RATES, sample_layout
from scadm.data.synthetic_raster import rasterise
from scadm.data.synthetic_shapes import CLASS_NAMES
from scadm.data.synthetic_styles import EYE_COLOUR_MATCH_RATE, PartStyle, sample_styles
from scadm.errors import InputError

__all__ = [
    "CLASS_NAMES",
    "EYE_COLOUR_MATCH_RATE",
    "OPTIONAL_PART_RATES",
    "PartStyle",
    "SyntheticFace",
    "SyntheticFaces",
    "render_face",
    "swap_parts",
]

MIN_SIZE, MAX_SIZE = 16, 1024
SEED_STRIDE = 1_000_003  # sample i of a dataset with seed s is face s * SEED_STRIDE + i


@dataclass
class SyntheticFace:
    """One rendered face. Parts named l_* are the subject's left, on the image's right (x > 0
    before the pose), as in CelebAMask-HQ (see scadm.labels)."""

    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) int64, CelebAMask-HQ class indices (CLASS_NAMES)
    styles: dict[str, PartStyle]  # every class name -> its style (also for absent parts)
    seed: int


def render_face(seed: int, size: int = 64, style_overrides: Mapping[str, PartStyle] | None = None) -> SyntheticFace:
    """Render face `seed` at size x size pixels; the geometry does not depend on `size`.

    `style_overrides` maps class names to styles that replace the face's own; a part this face
    does not show is left as it is (absent).
    """
    _check_count("seed", seed)
    _check_size(size)
    overrides = dict(style_overrides or {})
    _check_parts("style_overrides", overrides)
    for name, style in overrides.items():
        if not isinstance(style, PartStyle):
            raise InputError(f"style_overrides: {name!r} maps to a {type(style).__name__}, not a PartStyle")
    # Separate streams, so overriding styles can never move the geometry (and vice versa).
    geometry_seq, style_seq = np.random.SeedSequence(int(seed)).spawn(2)
    layout = sample_layout(np.random.default_rng(geometry_seq))
    styles = {**sample_styles(np.random.default_rng(style_seq)), **overrides}
    image, labels = rasterise(layout, [styles[n] for n in CLASS_NAMES], int(size))
    return SyntheticFace(image=image, labels=labels, styles=styles, seed=int(seed))


def swap_parts(target: SyntheticFace, reference: SyntheticFace, parts) -> SyntheticFace:
    """Ground truth of a partial style swap: `target` (same geometry, same size) with the styles
    of `parts` (class names, e.g. ["l_eye", "r_eye"]) taken from `reference`."""
    parts = [parts] if isinstance(parts, str) else list(parts)
    _check_parts("parts", parts)
    styles = {**target.styles, **{p: reference.styles[p] for p in parts}}
    return render_face(target.seed, target.labels.shape[0], style_overrides=styles)


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name}: {value!r} is not a non-negative integer")


def _check_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise InputError(f"size: {size!r} is not an integer")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"size: {size} is outside {MIN_SIZE}..{MAX_SIZE}")


def _check_parts(name: str, parts) -> None:
    unknown = [p for p in parts if p not in CLASS_NAMES]
    if unknown:
        raise InputError(f"{name}: unknown part(s) {unknown}; valid: {', '.join(CLASS_NAMES)}")


class SyntheticFaces(Dataset):
    """`num` procedural faces; item i is face seed * SEED_STRIDE + i, identical on every call.

    Items are {"image": float (3, H, W) in [-1, 1], "labels": int64 (H, W), "index": int}.
    """

    def __init__(self, num: int, size: int = 64, seed: int = 0):
        _check_count("num", num)
        _check_size(size)
        _check_count("seed", seed)
        self.num, self.size, self.seed = int(num), int(size), int(seed)

    def __len__(self) -> int:
        return self.num

    def face_seed(self, index: int) -> int:
        if not -self.num <= index < self.num:
            raise IndexError(f"index {index} is out of range for {self.num} faces")
        return self.seed * SEED_STRIDE + index % self.num

    def face(self, index: int) -> SyntheticFace:
        return render_face(self.face_seed(index), self.size)

    def __getitem__(self, index: int) -> dict:
        face = self.face(index)
        image = torch.from_numpy(face.image).permute(2, 0, 1).float() / 127.5 - 1.0
        return {"image": image, "labels": torch.from_numpy(face.labels), "index": index % self.num}
