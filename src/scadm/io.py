"""Reading and validating images and masks; writing images and masks (grids: `scadm.figures`).

Every problem with a file raises InputError with one line naming the file and what is wrong, never
a raw PIL traceback. What is accepted, and why:

- Images must be 8-bit colour. RGB is used as is; palette ("P") images are expanded to RGB (their
  colours are exact). Grayscale, CMYK (no colour management here, a naive conversion shifts
  colours), 16-bit (PIL would silently drop the low byte) and images with transparency are refused.
  An alpha channel that is fully opaque carries no information and is dropped.
- Masks must be lossless: a label PNG (mode "L", "P", "1", or 16/32-bit integer) whose pixel values
  are class indices, or an RGB colour PNG in the label set's palette. JPEG masks are refused.
  A "P" PNG is decoded by its colours when every colour it uses is in the palette (a colour mask
  saved with a palette, as `save_mask` writes), otherwise by its indices (the Pascal VOC
  convention: index = class, the palette is for display only). An RGB file whose pixels are all
  grey is a label map saved with three equal channels.
- Files carrying an EXIF orientation are turned upright first, as viewers show them.
- Resizing follows the authors' data loader: images with PIL's default filter (bicubic), masks
  nearest-neighbour; only square inputs are resized, never stretched.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from scadm.errors import InputError
from scadm.labels import CELEBAMASK_HQ, LabelSet, check_label_range, colorize

PathLike = str | os.PathLike
IMAGE_RESAMPLE = Image.Resampling.BICUBIC  # PIL's default for resize(): what the authors used
MASK_RESAMPLE = Image.Resampling.NEAREST
GRAYSCALE_MODES = ("1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
LABEL_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")


class _Source(NamedTuple):
    image: Image.Image
    path: Path
    format: str | None  # the file format as PIL detected it ("PNG", "JPEG", ...)
    wide: bool  # 16-bit samples that PIL decodes into an 8-bit mode (e.g. 48-bit RGB PNG)


def _open(path: PathLike) -> _Source:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image file")
    try:
        with Image.open(path) as img:
            fmt, wide = img.format, _has_16bit_samples(img)
            img.load()
            upright = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: cannot read, image is too large ({e})") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: cannot read, not an image or corrupt") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot read, corrupt or truncated image ({reason})") from None
    return _Source(upright, path, fmt, wide)


def _has_16bit_samples(img: ImageFile.ImageFile) -> bool:
    for tile in img.tile:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if args else "")
        if isinstance(rawmode, str) and ";16" in rawmode and img.mode not in GRAYSCALE_MODES:
            return True
    return False


def _opaque(src: _Source) -> Image.Image:
    """The image without its alpha channel, or InputError if any pixel is not fully opaque."""
    img = src.image
    keyed = img.mode == "P" and "transparency" in img.info
    rgba = img.convert("RGBA") if keyed or img.mode == "PA" else img
    if rgba.mode not in ALPHA_MODES:
        return img
    if np.asarray(rgba.getchannel(rgba.mode[-1])).min() < 255:
        raise InputError(
            f"{src.path}: has an alpha channel with transparent pixels; flatten it onto a"
            " background and save without alpha"
        )
    if keyed:  # keep the indices: they may be labels
        img = img.copy()
        del img.info["transparency"]
        return img
    return rgba.convert({"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L"}[rgba.mode])


def _check_size(path: Path, img: Image.Image, size: int | None) -> None:
    w, h = img.size
    if size is not None and (not isinstance(size, int) or size < 1):
        raise InputError(f"size: expected a positive int, got {size!r}")
    if size is not None and w != h:
        raise InputError(
            f"{path}: is {w}x{h}, expected a square image (aspect 1:1) to resize to {size}x{size}; crop it first"
        )


def _image_from(src: _Source, size: int | None) -> torch.Tensor:
    if src.wide or src.image.mode.startswith("I;16"):
        kind = "grayscale " if src.image.mode in GRAYSCALE_MODES else ""
        raise InputError(f"{src.path}: is a 16-bit {kind}image; save it as 8-bit RGB")
    img = _opaque(src)
    if img.mode in GRAYSCALE_MODES:
        raise InputError(f"{src.path}: is grayscale (mode {img.mode}); SCA-DM needs an RGB colour image")
    if img.mode == "CMYK":
        raise InputError(f"{src.path}: is CMYK; convert it to RGB with a colour-managed tool")
    if img.mode == "P":
        img = img.convert("RGB")
    if img.mode != "RGB":
        raise InputError(f"{src.path}: unsupported colour mode {img.mode}; save it as RGB")
    _check_size(src.path, img, size)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), IMAGE_RESAMPLE)
    # x / 127.5 - 1 computed in float64 then rounded, as the authors' loader does.
    x = (np.asarray(img, dtype=np.float64) / 127.5 - 1.0).astype(np.float32)
    return torch.from_numpy(x).permute(2, 0, 1).contiguous()  # (3, H, W)


def read_image(path: PathLike, size: int | None = None) -> torch.Tensor:
    """An RGB image as a float tensor (3, H, W) in [-1, 1]; resized to size x size if given.

    >>> x = read_image("face.jpg", size=256)  # doctest: +SKIP
    """
    return _image_from(_open(path), size)


def _colour_lookup(rgb: np.ndarray, label_set: LabelSet) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) uint8 colours -> (labels, known) where `known` marks colours in the palette."""
    table = list(label_set.palette) + [c for c, _ in label_set.palette_aliases]
    classes = list(range(label_set.num_classes)) + [k for _, k in label_set.palette_aliases]
    table_keys = np.array([(r << 16) | (g << 8) | b for r, g, b in table], dtype=np.int64)
    order = np.argsort(table_keys)
    table_keys, values = table_keys[order], np.asarray(classes, dtype=np.int64)[order]
    rgb = rgb.astype(np.int64)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pos = np.minimum(np.searchsorted(table_keys, keys), len(table_keys) - 1)
    return values[pos], table_keys[pos] == keys


def _decode_colours(src: _Source, rgb: np.ndarray, label_set: LabelSet) -> np.ndarray:
    labels, known = _colour_lookup(rgb, label_set)
    if known.all():
        return labels
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    if grey.all():
        return rgb[..., 0].astype(np.int64)
    y, x = np.argwhere(~known)[0]
    raise InputError(
        f"{src.path}: {int((~known).sum())} pixel(s) have a colour not in the"
        f" {label_set.num_classes}-class palette, e.g. {tuple(int(v) for v in rgb[y, x])} at"
        f" (x={x}, y={y}); colour masks must be lossless PNGs in the palette (JPEG changes colours)"
    )


def _decode_palette_image(img: Image.Image, label_set: LabelSet) -> np.ndarray:
    index = np.asarray(img, dtype=np.int64)
    flat = img.getpalette() or []
    colours = np.asarray(flat, dtype=np.uint8).reshape(-1, 3)
    used = np.unique(index)
    if used.size and used.max() < len(colours):
        labels, known = _colour_lookup(colours[used], label_set)
        if known.all():
            remap = np.zeros(int(used.max()) + 1, dtype=np.int64)
            remap[used] = labels
            return remap[index]
    return index


def _labels_from(src: _Source, label_set: LabelSet, size: int | None) -> torch.Tensor:
    if src.format in ("JPEG", "MPO"):
        raise InputError(
            f"{src.path}: is a JPEG; masks must be lossless PNG (JPEG compression changes label values and colours)"
        )
    if src.wide:
        raise InputError(f"{src.path}: is a 16-bit colour mask; save it as an 8-bit RGB PNG")
    img = _opaque(src)
    if img.mode == "P":
        labels = _decode_palette_image(img, label_set)
    elif img.mode in LABEL_MODES:
        labels = np.asarray(img).astype(np.int64)
    elif img.mode == "RGB":
        labels = _decode_colours(src, np.asarray(img), label_set)
    else:
        raise InputError(f"{src.path}: unsupported mask mode {img.mode}; use a label PNG (L) or RGB colour PNG")
    check_label_range(labels, label_set.num_classes, what=str(src.path))
    _check_size(src.path, img, size)
    if size is not None and img.size != (size, size):
        resized = Image.fromarray(labels.astype(np.int32)).resize((size, size), MASK_RESAMPLE)
        labels = np.asarray(resized).astype(np.int64)
    return torch.from_numpy(labels)  # (H, W)


def _resize_note(what: str, native: tuple[int, int], size: int | None, how: str) -> str | None:
    if size is None or native == (size, size):
        return None
    return f"{what}: resized from {native[0]}x{native[1]} to {size}x{size} ({how})"


def read_mask(
    path: PathLike,
    label_set: LabelSet = CELEBAMASK_HQ,
    size: int | None = None,
    notes: list[str] | None = None,
) -> torch.Tensor:
    """A label map as int64 (H, W) from a label PNG or a colour PNG (see the module docstring).

    When it is resized, a line saying so is appended to `notes` (for the caller to show).

    >>> labels = read_mask("face.png", size=256)  # doctest: +SKIP
    """
    src = _open(path)
    labels = _labels_from(src, label_set, size)
    note = _resize_note(str(src.path), src.image.size, size, "nearest")
    if note and notes is not None:
        notes.append(note)
    return labels


def read_pair(
    image_path: PathLike,
    mask_path: PathLike,
    label_set: LabelSet = CELEBAMASK_HQ,
    size: int | None = 256,
    *,
    scaled_mask: bool = False,
    notes: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An image (3, S, S) and its label map (S, S), checked to belong together.

    The two files must have the same size: a mask of another size is almost always the wrong
    file, and resizing it would hide that. `scaled_mask=True` accepts a mask at another
    resolution of the same aspect, as datasets store them (CelebAMask-HQ: 1024 px images, 512 px
    labels). Both are resized to `size` (image bicubic, mask nearest), and a line saying so is
    appended to `notes` (for the caller to show); size=None keeps the native resolution.
    """
    image, mask = _open(image_path), _open(mask_path)
    (wi, hi), (wm, hm) = image.image.size, mask.image.size
    same_aspect = wi * hm == wm * hi
    if (wi, hi) != (wm, hm) and (not scaled_mask or not same_aspect or size is None):
        need = (
            ("have the same aspect" if not same_aspect else "be the same size (or pass size)")
            if scaled_mask
            else "be the same size; is this the mask of another image?"
        )
        raise InputError(f"{image.path} is {wi}x{hi} but {mask.path} is {wm}x{hm}: an image and its mask must {need}")
    pair = _image_from(image, size), _labels_from(mask, label_set, size)
    note = _resize_note(f"{image.path} and {mask.path}", (wi, hi), size, "image bicubic, mask nearest")
    if note and notes is not None:
        notes.append(note)
    return pair


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] images (B, 3, H, W) or (3, H, W) -> uint8 (B, H, W, 3) or (H, W, 3).

    Rounds to the nearest level; the authors' FID script truncates instead (x.astype(uint8)),
    which darkens every pixel by half a level on average.
    """
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise InputError(f"images: expected (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    x = ((images.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
    x = (x * 255.0).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def write_picture(img: Image.Image, path: PathLike) -> None:
    """Save a PIL image (format from the extension), creating its folder; errors name the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        img.save(path)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: cannot write ({e})") from None


def save_image(image: torch.Tensor | np.ndarray, path: PathLike) -> None:
    """Write a [-1, 1] tensor (3, H, W) or a uint8 array (H, W, 3); format from the extension."""
    arr = to_uint8(image) if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(f"image: expected a (3, H, W) tensor or (H, W, 3) uint8 array for {path}")
    write_picture(Image.fromarray(arr), path)


def save_mask(
    labels: torch.Tensor | np.ndarray,
    path: PathLike,
    label_set: LabelSet | None = None,
    *,
    color: bool = True,
) -> None:
    """Write an (H, W) label map as a lossless PNG whose pixel values are the labels.

    With a label set (and color=True) the PNG is a palette image: viewers show the class colours,
    while readers that take pixel values (the authors' loader, `read_mask`) get the labels.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: masks must be saved as lossless .png")
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"labels: expected an (H, W) integer map for {path}, got {arr.shape}")
    check_label_range(arr, label_set.num_classes if label_set else 1 << 16, what=str(path))
    if label_set is not None and color and label_set.num_classes <= 256:
        img = Image.fromarray(arr.astype(np.uint8))
        img.putpalette([v for c in label_set.palette for v in c])  # "L" -> "P", values kept
    elif arr.size == 0 or arr.max() < 256:
        img = Image.fromarray(arr.astype(np.uint8))
    else:
        img = Image.fromarray(arr.astype(np.uint16))
    write_picture(img, path)


def mask_to_rgb(labels: torch.Tensor | np.ndarray, label_set: LabelSet = CELEBAMASK_HQ) -> np.ndarray:
    """An (H, W) label map as an (H, W, 3) uint8 picture in the label set's colours, for grids."""
    return colorize(labels, label_set)
