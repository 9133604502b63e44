"""Class vocabularies, their display palettes, and label map <-> one-hot conversion.

A label map is an int64 tensor (B, H, W) or (H, W) of class indices; the models take the one-hot
float mask (B, C, H, W) at image resolution (the paper's semantic mask m, Sec. 3).

Sides: `l_*` and `r_*` are the subject's own left and right, so in a frontal face `l_eye`,
`l_brow` and `l_ear` lie on the image's right. This is CelebAMask-HQ's convention, followed by
BiSeNet's `79999_iter.pth`, the authors' checkpoints, the procedural faces (scadm.data.synthetic)
and every model and parser scadm ships.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from scadm.errors import InputError

Colour = tuple[int, int, int]

NUM_CLASSES = 19

# Groups a user can name instead of listing classes one by one (expanded in order).
PART_ALIASES: dict[str, tuple[str, ...]] = {
    "eyes": ("l_eye", "r_eye"),
    "brows": ("l_brow", "r_brow"),
    "lips": ("u_lip", "l_lip"),
    "mouth_all": ("mouth", "u_lip", "l_lip"),
    "ears": ("l_ear", "r_ear"),
}
ALL_PARTS = "all"

#: Classes of the subject's left and right (CELEBAMASK_HQ): a mirrored face trades their labels.
LEFT_RIGHT_PAIRS = (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear"))


@dataclass(frozen=True)
class LabelSet:
    """A dataset's class names (index = label value) and one display colour per class.

    `palette_aliases` lists extra colours that also decode to a class when reading colour masks:
    published variants of a palette that disagree on a colour (see CELEBAMASK_HQ).
    """

    names: tuple[str, ...]
    palette: tuple[Colour, ...]
    palette_aliases: tuple[tuple[Colour, int], ...] = field(default=(), compare=False)

    def __post_init__(self):
        if not self.names:
            raise InputError("names: a label set needs at least one class")
        if len({n.lower() for n in self.names}) != len(self.names):
            raise InputError(f"names: duplicate class names in {list(self.names)}")
        if len(self.palette) != len(self.names):
            raise InputError(f"palette: {len(self.palette)} colours for {len(self.names)} classes")
        colours = list(self.palette) + [c for c, _ in self.palette_aliases]
        for c in colours:
            in_range = all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in c)
            if len(c) != 3 or not in_range:
                raise InputError(f"palette: {c} is not an (R, G, B) triple of ints in 0..255")
        if len(set(colours)) != len(colours):
            raise InputError("palette: colours must be distinct, or colour masks cannot be decoded")
        for _, k in self.palette_aliases:
            if not 0 <= k < len(self.names):
                raise InputError(f"palette_aliases: class {k} is out of range")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name_or_int: str | int, what: str = "part") -> int:
        """The label value of a class given by name ("hair"), int (13) or digit string ("13");
        errors start with `what` (the option or key it came from)."""
        if isinstance(name_or_int, str):
            found = self._find_name(name_or_int)
            if found is not None:
                return found
        if isinstance(name_or_int, (int, np.integer)) and not isinstance(name_or_int, bool):
            k = int(name_or_int)
        elif isinstance(name_or_int, str) and name_or_int.strip().isdigit():
            k = int(name_or_int.strip())
        else:
            raise InputError(
                f"{what}: unknown class {name_or_int!r}; valid names are {', '.join(self.names)}"
                f" (or 0..{self.num_classes - 1})"
            )
        if not 0 <= k < self.num_classes:
            raise InputError(f"{what}: class index {k} is out of range 0..{self.num_classes - 1}")
        return k

    def _find_name(self, name: str) -> int | None:
        lowered = [n.lower() for n in self.names]
        key = name.strip().lower()
        return lowered.index(key) if key in lowered else None

    def parse_parts(self, spec: str | Iterable[str | int], what: str = "parts") -> list[int]:
        """Class indices from "hair,l_eye,u_lip" or an iterable of names/ints, deduplicated,
        in order; errors start with `what` (e.g. "--parts") and list the valid names.

        Besides class names and indices, these groups are accepted: "eyes" (l_eye, r_eye),
        "brows" (l_brow, r_brow), "lips" (u_lip, l_lip), "mouth_all" (mouth, u_lip, l_lip),
        "ears" (l_ear, r_ear) and "all" (every class). A class whose name equals a group's wins.

        >>> CELEBAMASK_HQ.parse_parts("hair, eyes, 13")
        [13, 4, 5]
        """
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        items = [i.strip() if isinstance(i, str) else i for i in items]
        items = [i for i in items if i != ""]
        if not items:
            raise InputError(f"{what}: {spec!r} names no classes")
        out: list[int] = []
        for item in items:
            for k in self._expand(item, what):
                if k not in out:
                    out.append(k)
        return out

    def _expand(self, item: str | int, what: str) -> list[int]:
        if isinstance(item, str) and self._find_name(item) is None:
            key = item.lower()
            if key == ALL_PARTS:
                return list(range(self.num_classes))
            if key in PART_ALIASES:
                missing = [n for n in PART_ALIASES[key] if self._find_name(n) is None]
                if missing:
                    raise InputError(
                        f"{what}: group {key!r} needs {', '.join(missing)}, which this label set"
                        f" lacks; valid names are {', '.join(self.names)}"
                    )
                return [self.index(n) for n in PART_ALIASES[key]]
        try:
            return [self.index(item, what)]
        except InputError as err:
            if "unknown class" not in str(err):
                raise
            groups = ", ".join([*(g for g in PART_ALIASES if g not in self.names), ALL_PARTS])
            raise InputError(f"{err}; or the groups {groups}") from None

    def palette_array(self) -> np.ndarray:
        """The palette as a (C, 3) uint8 array, for table look-ups."""
        return np.asarray(self.palette, dtype=np.uint8)


# `l_*` = the subject's left, on the image's right (see the module docstring).
CELEBAMASK_HQ = LabelSet(
    names=(
        "bg",
        "skin",
        "nose",
        "eye_g",
        "l_eye",
        "r_eye",
        "l_brow",
        "r_brow",
        "l_ear",
        "r_ear",
        "mouth",
        "u_lip",
        "l_lip",
        "hair",
        "hat",
        "ear_r",
        "neck_l",
        "neck",
        "cloth",
    ),
    # The colours of the dataset's own colour-mask script (CelebAMask-HQ,
    # face_parsing/Data_preprocessing/g_color.py), in class order.
    palette=(
        (0, 0, 0),
        (204, 0, 0),
        (76, 153, 0),
        (204, 204, 0),
        (51, 51, 255),
        (204, 0, 204),
        (0, 255, 255),
        (255, 204, 204),
        (102, 51, 0),
        (255, 0, 0),
        (102, 204, 0),
        (255, 255, 0),
        (0, 0, 153),
        (0, 0, 204),
        (255, 51, 153),
        (0, 204, 204),
        (0, 51, 0),
        (255, 153, 51),
        (0, 204, 0),
    ),
    # The same repository's parser visualiser and MaskGAN demo paint r_brow (51, 255, 255).
    palette_aliases=(((51, 255, 255), 7),),
)


def auto_palette(num_classes: int) -> tuple[Colour, ...]:
    """Distinct colours for any class count: the bits of each index spread over R, G and B from
    the most significant bit down (the Pascal VOC scheme), so class 0 is black."""
    if not 1 <= num_classes <= 1 << 24:
        raise InputError(f"num_classes: {num_classes} is out of range 1..{1 << 24}")
    colours = []
    for k in range(num_classes):
        rgb = [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((k >> (3 * bit + ch)) & 1) << (7 - bit)
        colours.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colours)


def label_set_from_config(names: Sequence[str], palette: Sequence[Sequence[int]] | None = None) -> LabelSet:
    """A LabelSet from plain lists (a config file); without a palette, distinct colours are
    generated. CelebAMask-HQ's classes and colours give CELEBAMASK_HQ itself, palette variants
    included."""
    names = tuple(str(n) for n in names)
    # LabelSet itself refuses an entry that is not an (R, G, B) triple
    colours = (
        auto_palette(len(names)) if palette is None else tuple(cast(Colour, tuple(int(v) for v in c)) for c in palette)
    )
    label_set = LabelSet(names=names, palette=colours)
    return CELEBAMASK_HQ if label_set == CELEBAMASK_HQ else label_set


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_label_range(labels: torch.Tensor | np.ndarray, num_classes: int, what: str = "labels") -> None:
    """Raise InputError naming `what` unless every label is in 0..num_classes-1."""
    if labels.reshape(-1).shape[0] == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if hi >= num_classes:
        raise InputError(
            f"{what}: max label is {hi}, but labels must be < {num_classes}"
            f" (there are {num_classes} classes, 0..{num_classes - 1})"
        )
    if lo < 0:
        raise InputError(f"{what}: min label is {lo}, but labels must be >= 0")


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) or (H, W) integer labels -> float one-hot (B, C, H, W); (H, W) gives B = 1."""
    if labels.dtype not in _INT_DTYPES:
        raise InputError(f"labels: expected an integer tensor, got {labels.dtype}")
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    if labels.dim() != 3:
        raise InputError(f"labels: expected shape (B, H, W) or (H, W), got {tuple(labels.shape)}")
    check_label_range(labels, num_classes)
    b, h, w = labels.shape
    out = torch.zeros(b, num_classes, h, w, device=labels.device)
    return out.scatter_(1, labels.long().unsqueeze(1), 1.0)


def _as_numpy_labels(labels: torch.Tensor | np.ndarray, label_set: LabelSet) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"labels: expected an (H, W) integer map, got {arr.dtype} {arr.shape}")
    check_label_range(arr, label_set.num_classes)
    return arr


def colorize(labels: torch.Tensor | np.ndarray, label_set: LabelSet = CELEBAMASK_HQ) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 picture in the label set's palette."""
    return label_set.palette_array()[_as_numpy_labels(labels, label_set)]


def overlay(
    image: np.ndarray,
    labels: torch.Tensor | np.ndarray,
    label_set: LabelSet = CELEBAMASK_HQ,
    alpha: float = 0.5,
) -> np.ndarray:
    """The colourised label map blended over an (H, W, 3) uint8 image:
    (1 - alpha)·image + alpha·colour."""
    image = np.asarray(image)
    colours = colorize(labels, label_set)
    if image.shape != colours.shape or image.dtype != np.uint8:
        raise InputError(f"image: expected uint8 {colours.shape} to match the labels, got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha: {alpha} is not in [0, 1]")
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
