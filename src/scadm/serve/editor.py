"""The editor's logic without the web page: faces in, per-part style code, one rendered face out.

Why a separate module: everything the page does must be reproducible from the command line
(`scadm edit --settings FILE.json`) and testable without a browser, so the page only collects
choices into an `EditSettings` (`scadm.editing`, the library layer the CLI reads too) and calls
`render`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scadm.data.synthetic import render_face
from scadm.editing import EditSettings
from scadm.errors import InputError
from scadm.io import read_image, read_mask, read_pair, save_image, save_mask, to_uint8
from scadm.labels import LabelSet, check_label_range, overlay
from scadm.regions import Preserve

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096
#: procedural faces the demo model never saw in training (its datasets are seed 0, faces 0..29,999)
HELD_OUT_SEED = 900_000_000
BUNDLE_FILES = {
    "target": "target.png",
    "target_mask": "target_mask.png",
    "reference": "reference.png",
    "reference_mask": "reference_mask.png",
    "mask": "edited_mask.png",
    "settings": "settings.json",
    "result": "result.png",
}


@dataclass
class Face:
    """An RGB face (H, W, 3) uint8 and its label map (H, W) int64, at the model's size."""

    image: np.ndarray
    labels: np.ndarray
    name: str

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-1 tensors, converted exactly as `scadm.io.read_image` converts a PNG of this face
        (x / 127.5 - 1 in float64, then float32), so the CLI replays the page bit for bit."""
        x = (self.image.astype(np.float64) / 127.5 - 1.0).astype(np.float32)
        return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous(), torch.from_numpy(self.labels)[None]


# ------------------------------------------------------------------ faces in


def procedural_face(seed: int, size: int) -> Face:
    """A procedural face (exact mask) from the held-out range, so the demo model never saw it."""
    face = render_face(HELD_OUT_SEED + seed, size)
    return Face(face.image, face.labels, f"procedural face {seed}")


def load_upload(
    image_path: str | Path, mask_path: str | Path, label_set: LabelSet, size: int, role: str
) -> tuple[Face, list[str]]:
    """An uploaded image + mask, validated by `scadm.io` and resized to the model's `size` (image
    bicubic, mask nearest, as `scadm edit` does); returns the face and notes for the user."""
    if not image_path or not mask_path:
        raise InputError(f"{role}: upload both the image and its mask (label or colour PNG)")
    names = {image_path: f"{role} image {Path(image_path).name}", mask_path: f"{role} mask {Path(mask_path).name}"}
    with _named(names):
        (wi, hi), _ = (_check_upload(Path(p), what) for p, what in names.items())
        image, labels = read_pair(image_path, mask_path, label_set, size=size)  # refuses pairs of two sizes
    notes = []
    if (wi, hi) != (size, size):
        notes.append(f"{role}: resized {wi}x{hi} to the model's {size}x{size} (image bicubic, mask nearest)")
    return Face(to_uint8(image), labels.numpy(), f"uploaded {role}"), notes


def check_upload(path: str | Path, kind: str, label_set: LabelSet, size: int, role: str) -> None:
    """Validate one half of a pair ("image" or "mask") on its own, so that a bad file is refused
    the moment it is uploaded, before its other half arrives."""
    what = f"{role} {kind} {Path(path).name}"
    with _named({path: what}):
        _check_upload(Path(path), what)
        if kind == "image":
            read_image(path, size=size)
        else:
            read_mask(path, label_set, size=size)


def auto_mask_upload(image_path: str | Path, label_set: LabelSet, size: int, role: str) -> tuple[Face, list[str]]:
    """An uploaded photo without a mask: aligned and labelled by the face parser (`scadm parse`,
    the `parse` extras), for models with CelebAMask-HQ's classes."""
    what = f"{role} image {Path(image_path).name}"
    notes = [f"{role}: aligned and parsed automatically (BiSeNet, non-commercial CelebAMask-HQ weights)"]
    with _named({image_path: what}):
        _check_upload(Path(image_path), what)
        from scadm.parsing.photo import auto_mask_face

        image, labels = auto_mask_face(image_path, size, label_set, notify=notes.append)
    notes = [_rename(note, {image_path: what}) for note in notes]
    return Face(to_uint8(image), labels.numpy(), f"uploaded {role}, automatic mask"), notes


@contextlib.contextmanager
def _named(names: dict):
    """InputErrors about an upload name it by role and file name, never by its temporary path on
    the server (which means nothing to the user and tells a stranger the server's layout)."""
    try:
        yield
    except InputError as err:
        raise InputError(_rename(str(err), names)) from None


def _rename(message: str, names: dict) -> str:
    for path, name in names.items():
        message = message.replace(str(path), name).replace(str(Path(path)), name)
    return message


def _check_upload(path: Path, what: str) -> tuple[int, int]:
    """Reject before decoding: files over MAX_UPLOAD_BYTES or sides over MAX_UPLOAD_SIDE."""
    if not path.is_file():
        raise InputError(f"{what}: the upload did not arrive; try again")
    n = path.stat().st_size
    if n > MAX_UPLOAD_BYTES:
        raise InputError(f"{what}: {n / 2**20:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB limit")
    try:
        with Image.open(path) as img:  # reads the header only
            w, h = img.size
    except Image.DecompressionBombError:  # PIL refuses headers over 2 * MAX_IMAGE_PIXELS (~179 Mpx)
        raise InputError(f"{what}: too large, over the {MAX_UPLOAD_SIDE} px limit per side") from None
    except (OSError, SyntaxError, ValueError):
        raise InputError(f"{what}: not an image or corrupt") from None
    if max(w, h) > MAX_UPLOAD_SIDE:
        raise InputError(f"{what}: {w}x{h} is over the {MAX_UPLOAD_SIDE} px limit per side")
    return w, h


def missing_parts(settings: EditSettings, reference: Face | None, labels: np.ndarray, label_set: LabelSet) -> list[str]:
    """Parts to be taken from a reference that has none of them, among those the rendered mask
    shows: the encoder's row for an absent class is a constant (tanh of its bias), not a style, so
    such a swap silently invents one."""
    if reference is None:
        return []
    return [
        name
        for name, (source, _) in settings.edited_parts().items()
        if source == "reference"
        and (labels == label_set.index(name)).any()
        and not (reference.labels == label_set.index(name)).any()
    ]


# ------------------------------------------------------------------ painting


def display_scale(size: int, display: int = 512) -> int:
    """Integer upscaling for the painting canvas, so that a model pixel is a block of pixels."""
    return max(1, display // size)


def overlay_picture(face: Face, labels: np.ndarray, label_set: LabelSet, scale: int, alpha: float = 0.55) -> np.ndarray:
    """The face with its (edited) mask blended over it in class colours, upscaled by `scale`
    (nearest, so that the canvas shows the model's pixel grid)."""
    picture = overlay(face.image, labels, label_set, alpha=alpha)
    return picture.repeat(scale, axis=0).repeat(scale, axis=1)


def labels_from_strokes(layer: np.ndarray | None, labels: np.ndarray, label_set: LabelSet) -> np.ndarray:
    """Apply painted strokes (an RGBA layer, any multiple of the mask's size) to a label map.

    A canvas pixel counts as paint only where its alpha is full (antialiased stroke edges are
    ignored), and takes the class of the nearest palette colour; a model pixel is repainted when
    at least half of its block is paint, with the most painted class.
    """
    check_label_range(labels, label_set.num_classes, what="mask")
    if layer is None:
        return labels.copy()
    layer = np.asarray(layer)
    if layer.ndim != 3 or layer.shape[-1] != 4:
        raise InputError(f"paint layer: expected an RGBA picture, got shape {layer.shape}")
    h, w = labels.shape
    if layer.shape[:2] != (h, w) and (layer.shape[0] % h or layer.shape[1] % w):
        layer = np.asarray(
            Image.fromarray(layer.astype(np.uint8), "RGBA").resize(
                (w * display_scale(w), h * display_scale(h)), Image.Resampling.NEAREST
            )
        )
    fy, fx = layer.shape[0] // h, layer.shape[1] // w
    palette = label_set.palette_array().astype(np.int32)
    rgb = layer[..., :3].astype(np.int32)
    nearest = ((rgb[..., None, :] - palette) ** 2).sum(-1).argmin(-1)  # (H', W')
    painted = np.where(layer[..., 3] == 255, nearest, label_set.num_classes)  # C = "no paint"
    counts = np.eye(label_set.num_classes + 1, dtype=np.int32)[painted]  # (H', W', C+1)
    counts = counts.reshape(h, fy, w, fx, -1).sum((1, 3))  # (H, W, C+1)
    paint = counts[..., :-1]
    repaint = paint.sum(-1) * 2 >= fy * fx
    return np.where(repaint, paint.argmax(-1), labels).astype(np.int64)


# ------------------------------------------------------------------ rendering and results


def render(
    pipe,
    target: Face,
    reference: Face | None,
    labels: np.ndarray,
    settings: EditSettings,
    progress: bool | Callable[[int, int], None] = False,
) -> np.ndarray:
    """The edited face (H, W, 3) uint8: target and reference styles encoded under their own masks,
    rendered on `labels` (the target's mask, possibly repainted). `pipe` must already be in
    `settings.dtype`: casting fp32 -> bf16 -> fp32 in place would lose precision for good."""
    settings.check(pipe.label_set)
    target_code = pipe.encode_style(*target.tensors())
    reference_code = pipe.encode_style(*reference.tensors()) if reference is not None else None
    code = settings.style_code(target_code, reference_code, pipe.label_set)
    check_label_range(labels, pipe.label_set.num_classes, what="mask")
    preserve = Preserve(*target.tensors(), settings.margin) if settings.preserve else None
    images = pipe(torch.from_numpy(labels)[None], code, settings.render, progress=progress, preserve=preserve)
    return to_uint8(images[0])


def replay_command(model: str) -> str:
    """The `scadm edit` line that reproduces a bundle written by `write_bundle`, run inside it."""
    f = BUNDLE_FILES
    return (
        f"scadm edit --model {model} --image {f['target']} --mask {f['target_mask']} "
        f"--reference {f['reference']} --reference-mask {f['reference_mask']} "
        f"--edited-mask {f['mask']} --settings {f['settings']} --out replay"
    )


def write_bundle(
    folder: Path,
    result: np.ndarray,
    target: Face,
    reference: Face | None,
    labels: np.ndarray,
    settings: EditSettings,
    label_set: LabelSet,
    model: str,
) -> dict[str, Path]:
    """Write the result, its inputs and settings.json (with the replay command) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = reference or target  # the CLI needs a reference; the settings may not use it
    paths = {k: folder / v for k, v in BUNDLE_FILES.items()}
    save_image(result, paths["result"])
    save_image(target.image, paths["target"])
    save_mask(target.labels, paths["target_mask"], label_set)
    save_image(reference.image, paths["reference"])
    save_mask(reference.labels, paths["reference_mask"], label_set)
    save_mask(labels, paths["mask"], label_set)
    data = {**settings.to_json(), "command": replay_command(model)}
    paths["settings"].write_text(json.dumps(data, indent=2) + "\n")
    return paths
