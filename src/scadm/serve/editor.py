"""The editor's logic without the web page: faces in, per-part style code, one rendered face out.

Why a separate module: everything the page does must be reproducible from the command line
(`scadm edit --settings FILE.json`) and testable without a browser, so the page only collects
choices into an `EditSettings` and calls `render`. Per part, the style source is the target (keep),
the reference (part transfer, paper §4.3) or random (the style of an all-zero image, §4.4), and a
weight in [0, 1] mixes the target's style toward that source (interpolation, §4.2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from scadm.data.synthetic import render_face
from scadm.errors import InputError
from scadm.io import read_pair, save_image, save_mask, to_uint8
from scadm.labels import LabelSet, check_label_range, overlay
from scadm.regions import Preserve, check_margin
from scadm.sampling import SAMPLERS
from scadm.style import StyleCode

SOURCES = ("target", "reference", "random")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SETTINGS_FORMAT = "scadm-edit-settings/1"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096
MAX_STEPS = 1000
#: procedural faces the demo model never saw in training (its datasets are seed 0, faces 0..29,999)
HELD_OUT_SEED = 900_000_000
BUNDLE_FILES = {"target": "target.png", "target_mask": "target_mask.png", "reference": "reference.png",
                "reference_mask": "reference_mask.png", "mask": "edited_mask.png",
                "settings": "settings.json", "result": "result.png"}


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


@dataclass
class PartChoice:
    source: str = "target"
    weight: float = 1.0


@dataclass
class EditSettings:
    """Everything besides the input files that decides an edited face."""

    parts: dict[str, PartChoice] = field(default_factory=dict)  # class name -> choice; others: target
    global_weight: float = 1.0
    steps: int = 25
    guidance: float = 1.2
    sampler: str = "ddim"
    eta: float = 0.0
    seed: int = 0
    dtype: str = "fp32"
    preserve: bool = True  # keep the target's own pixels outside the edited parts (scadm.regions)
    margin: int | None = None  # of the preserved region, in pixels (None: the default)

    def check(self, label_set: LabelSet) -> "EditSettings":
        for name, choice in self.parts.items():
            label_set.index(name)
            if choice.source not in SOURCES:
                raise InputError(f"parts.{name}.source must be one of {', '.join(SOURCES)}, got {choice.source!r}")
            _check_unit(f"parts.{name}.weight", choice.weight)
        _check_unit("global_weight", self.global_weight)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"steps must be an integer in 1..{MAX_STEPS}, got {self.steps!r}")
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("guidance", "eta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a number >= 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InputError(f"seed must be an integer in 0..2^63-1, got {self.seed!r}")
        if not isinstance(self.preserve, bool):
            raise InputError(f"preserve must be true or false, got {self.preserve!r}")
        if self.margin is not None:
            check_margin(self.margin)
        return self

    def edited_parts(self) -> dict[str, tuple[str, float]]:
        """Parts whose style moves away from the target: name -> (source, effective weight)."""
        out = {}
        for name, choice in self.parts.items():
            weight = choice.weight * self.global_weight
            if choice.source != "target" and weight > 0:
                out[name] = (choice.source, weight)
        return out

    def style_code(self, target: StyleCode, reference: StyleCode | None, label_set: LabelSet) -> StyleCode:
        """Part by part: (1 - w) * target + w * source on that part's row, where w = the part's
        weight times the global weight and source is the reference's row or the random row."""
        self.check(label_set)
        code = target
        for name, (source, weight) in self.edited_parts().items():
            k = label_set.index(name)
            if source == "reference":
                if reference is None:
                    raise InputError(f"parts.{name}: source 'reference' needs a reference image and mask")
                other = reference
            else:
                other = target.randomize([k])
            code = code.interpolate(other, weight, [k])
        return code

    def to_json(self) -> dict:
        return {"format": SETTINGS_FORMAT,
                "parts": {n: {"source": c.source, "weight": c.weight} for n, c in self.parts.items()},
                "global_weight": self.global_weight, "steps": self.steps, "guidance": self.guidance,
                "sampler": self.sampler, "eta": self.eta, "seed": self.seed, "dtype": self.dtype,
                "preserve": self.preserve, "margin": self.margin}

    @classmethod
    def from_json(cls, data) -> "EditSettings":
        if not isinstance(data, dict) or data.get("format") != SETTINGS_FORMAT:
            raise InputError(f"settings: not a scadm settings file (expected \"format\": \"{SETTINGS_FORMAT}\")")
        parts = data.get("parts", {})
        if not isinstance(parts, dict) or not all(isinstance(c, dict) for c in parts.values()):
            raise InputError("settings: 'parts' must map class names to {\"source\": ..., \"weight\": ...}")
        try:
            choices = {str(n): PartChoice(**c) for n, c in parts.items()}
            options = {k: data[k] for k in ("global_weight", "steps", "guidance", "sampler", "eta", "seed", "dtype",
                                            "margin") if k in data}
            # files written before region-preserving edits existed were rendered without them
            return cls(parts=choices, preserve=data.get("preserve", False), **options)
        except TypeError as err:
            raise InputError(f"settings: unexpected field ({err})") from None

    @classmethod
    def load(cls, path: str | Path) -> "EditSettings":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except OSError as err:
            raise InputError(f"{path}: cannot read ({err.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: not valid JSON ({err})") from None


def _check_unit(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")


# ------------------------------------------------------------------ faces in


def procedural_face(seed: int, size: int) -> Face:
    """A procedural face (exact mask) from the held-out range, so the demo model never saw it."""
    face = render_face(HELD_OUT_SEED + seed, size)
    return Face(face.image, face.labels, f"procedural face {seed}")


def load_upload(image_path: str | Path, mask_path: str | Path, label_set: LabelSet, size: int,
                role: str) -> tuple[Face, list[str]]:
    """An uploaded image + mask, validated by `scadm.io` and resized to the model's `size` (image
    bicubic, mask nearest, as `scadm edit` does); returns the face and notes for the user."""
    if not image_path or not mask_path:
        raise InputError(f"{role}: upload both the image and its mask (label or colour PNG)")
    sizes = [_check_upload(Path(p), f"{role} {what}") for p, what in ((image_path, "image"), (mask_path, "mask"))]
    image, labels = read_pair(image_path, mask_path, label_set, size=size)
    notes = []
    if sizes[0] != (size, size):
        notes.append(f"{role}: resized {sizes[0][0]}x{sizes[0][1]} to the model's {size}x{size} "
                     "(image bicubic, mask nearest)")
    return Face(to_uint8(image), labels.numpy(), f"uploaded {role}"), notes


def auto_mask_upload(image_path: str | Path, label_set: LabelSet, size: int, role: str) -> tuple[Face, list[str]]:
    """An uploaded photo without a mask: aligned and labelled by the face parser (`scadm parse`,
    the `parse` extras), for models with CelebAMask-HQ's classes."""
    _check_upload(Path(image_path), f"{role} image")
    from scadm.parsing.photo import auto_mask_face

    image, labels = auto_mask_face(image_path, size, label_set)
    note = f"{role}: aligned and parsed automatically (BiSeNet, non-commercial CelebAMask-HQ weights)"
    return Face(to_uint8(image), labels.numpy(), f"uploaded {role}, automatic mask"), [note]


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
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError(f"{what}: not an image or corrupt") from None
    if max(w, h) > MAX_UPLOAD_SIDE:
        raise InputError(f"{what}: {w}x{h} is over the {MAX_UPLOAD_SIDE} px limit per side")
    return w, h


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
        layer = np.asarray(Image.fromarray(layer.astype(np.uint8), "RGBA").resize(
            (w * display_scale(w), h * display_scale(h)), Image.Resampling.NEAREST))
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


def render(pipe, target: Face, reference: Face | None, labels: np.ndarray, settings: EditSettings,
           progress: bool | Callable[[int, int], None] = False) -> np.ndarray:
    """The edited face (H, W, 3) uint8: target and reference styles encoded under their own masks,
    rendered on `labels` (the target's mask, possibly repainted). `pipe` must already be in
    `settings.dtype`: casting fp32 -> bf16 -> fp32 in place would lose precision for good."""
    settings.check(pipe.label_set)
    if pipe.dtype != DTYPES[settings.dtype]:
        raise InputError(f"dtype: the pipeline runs in {pipe.dtype}, the settings ask for {settings.dtype}")
    target_code = pipe.encode_style(*target.tensors())
    reference_code = pipe.encode_style(*reference.tensors()) if reference is not None else None
    code = settings.style_code(target_code, reference_code, pipe.label_set)
    check_label_range(labels, pipe.label_set.num_classes, what="mask")
    preserve = Preserve(*target.tensors(), settings.margin) if settings.preserve else None
    images = pipe(torch.from_numpy(labels)[None], code, num_inference_steps=settings.steps,
                  guidance_scale=settings.guidance, sampler=settings.sampler, eta=settings.eta,
                  seed=settings.seed, progress=progress, preserve=preserve)
    return to_uint8(images[0])


def replay_command(model: str) -> str:
    """The `scadm edit` line that reproduces a bundle written by `write_bundle`, run inside it."""
    f = BUNDLE_FILES
    return (f"scadm edit --model {model} --image {f['target']} --mask {f['target_mask']} "
            f"--reference {f['reference']} --reference-mask {f['reference_mask']} "
            f"--edited-mask {f['mask']} --settings {f['settings']} --out replay")


def write_bundle(folder: Path, result: np.ndarray, target: Face, reference: Face | None, labels: np.ndarray,
                 settings: EditSettings, label_set: LabelSet, model: str) -> dict[str, Path]:
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
