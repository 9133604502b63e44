"""A user's own photo -> an aligned face crop and its CelebAMask-HQ label map.

Landmarks (dlib) -> FFHQ crop (align.py) -> BiSeNet at 512 px. This is what `scadm parse`,
`scadm edit --mask auto` and the web editor run, so a model trained on CelebAMask-HQ (the
authors' checkpoint, converted) can edit a photo nobody has masked.

>>> aligned, labels = parse_photo("me.jpg", size=512)   # doctest: +SKIP
>>> aligned.shape, labels.shape                         # doctest: +SKIP
((512, 512, 3), (512, 512))
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from scadm.errors import InputError, ScadmWarning
from scadm.io import read_image, to_uint8
from scadm.labels import CELEBAMASK_HQ, LabelSet
from scadm.parsing.align import quad_for, warp_quad
from scadm.parsing.landmarks import detect_landmarks
from scadm.parsing.parser import BISENET_INPUT, FaceParser, load_face_parser

# The smallest face (side of the FFHQ crop square, in photo pixels) parse_photo accepts: 8x
# upsampling to BiSeNet's 512 px. Measured on Grace Hopper's photo (crop 327 px) shrunk: at a
# 54 px crop the labels agreed with the full photo's on 70 % of pixels, the glasses were gone and
# the mouth mislabelled; at 68 px they agreed on 83 % (glasses half gone), at 169 px on 92 %.
MIN_FACE_SIDE = 64


@lru_cache(maxsize=1)
def _default_parser() -> FaceParser:
    return load_face_parser("bisenet")


def parse_photo(
    image: Image.Image | str | os.PathLike,
    size: int = BISENET_INPUT,
    landmarks: str = "dlib",
    parser: FaceParser | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(aligned RGB uint8 (size, size, 3), int64 labels (size, size)) for the photo's main face.

    A crop smaller than BiSeNet's 512 px is parsed from a 512 px crop of the same square, its
    logits shrunk to `size` (FaceParser's rule): parsing an upsampled small crop loses detail.
    A path is read with scadm.io's checks (RGB only, EXIF orientation applied). A face smaller
    than the parser's input is upsampled to it, said in one line to `notify` (default: a
    ScadmWarning; the web editor shows it on the page); one under MIN_FACE_SIDE px is refused
    (InputError): its labels would be guesses.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"size: expected a positive int, got {size!r}")
    photo = _as_rgb(image)
    name = "image" if isinstance(image, Image.Image) else str(image)
    quad = quad_for(detect_landmarks(np.asarray(photo), backend=landmarks, name=name))
    _check_face_side(float(np.hypot(*(quad[3] - quad[0]))), name, notify)
    aligned = np.asarray(warp_quad(photo, quad, size))
    to_parse = aligned if size >= BISENET_INPUT else np.asarray(warp_quad(photo, quad, BISENET_INPUT))
    x = torch.from_numpy(to_parse.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    return aligned, (parser or _default_parser())(x, size=size)[0].numpy()


def auto_mask_face(
    path: str | os.PathLike,
    size: int,
    label_set: LabelSet = CELEBAMASK_HQ,
    notify: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A photo as a pipeline input: the aligned crop (3, size, size) in [-1, 1] and its labels
    (size, size), for `scadm edit --mask auto`. `label_set` is the model's: automatic masks are
    CelebAMask-HQ's. `notify`: as for parse_photo."""
    if label_set != CELEBAMASK_HQ:
        raise InputError(
            f"mask 'auto' gives CelebAMask-HQ labels, but this model has "
            f"{label_set.num_classes} other classes; give a mask file"
        )
    rgb, labels = parse_photo(path, size=size, notify=notify)
    x = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    return x.contiguous(), torch.from_numpy(labels)


def _check_face_side(side: float, name: str, notify: Callable[[str], None] | None) -> None:
    """Refuse a face under MIN_FACE_SIDE px; announce one the parser sees upsampled."""
    if side < MIN_FACE_SIDE:
        raise InputError(
            f"{name}: the face's crop square is {side:.0f} px in the photo; parsing needs at least "
            f"{MIN_FACE_SIDE} px (upsampled over {BISENET_INPUT / MIN_FACE_SIDE:.0f}x to the parser's "
            f"{BISENET_INPUT} px input, its labels are guesses): give a photo where the face is larger"
        )
    if side < BISENET_INPUT:
        notice = (
            f"{name}: the face's crop square is {side:.0f} px in the photo, upsampled "
            f"{BISENET_INPUT / side:.1f}x to the parser's {BISENET_INPUT} px input; small parts "
            "(glasses, eyes, brows) may be missed"
        )
        if notify is None:
            warnings.warn(ScadmWarning(notice), stacklevel=3)
        else:
            notify(notice)


def _as_rgb(image: Image.Image | str | os.PathLike) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "RGBA", "P", "L"):
            raise InputError(f"image: unsupported colour mode {image.mode}; give an RGB photo")
        return image.convert("RGB")
    return Image.fromarray(to_uint8(read_image(image)))
