"""Labelled picture grids: the figures of the demo, the evaluation reports and the training samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from scadm.errors import InputError
from scadm.io import PathLike, to_uint8, write_picture
from scadm.labels import CELEBAMASK_HQ, LabelSet, colorize

GridCell = torch.Tensor | np.ndarray | Image.Image | None
GRID_BACKGROUND = (255, 255, 255)
GRID_TEXT = (0, 0, 0)


def enlarge(picture: np.ndarray, zoom: int) -> np.ndarray:
    """An (H, W, ...) picture or label map `zoom` times larger by nearest sampling, so that a small
    model's pixels stay visible (and a row of 64 px cells leaves room for its column labels)."""
    return picture.repeat(zoom, 0).repeat(zoom, 1)


def _cell_rgb(cell: GridCell, label_set: LabelSet) -> np.ndarray | None:
    """A grid cell as (H, W, 3) uint8: images as they are, integer (H, W) label maps colourised."""
    if cell is None:
        return None
    if isinstance(cell, Image.Image):
        return np.asarray(cell.convert("RGB"))
    if isinstance(cell, torch.Tensor) and cell.dtype.is_floating_point:
        return to_uint8(cell)
    arr = cell.detach().cpu().numpy() if isinstance(cell, torch.Tensor) else np.asarray(cell)
    if arr.ndim == 2 and np.issubdtype(arr.dtype, np.integer):
        return colorize(arr, label_set)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3:
        return arr
    raise InputError(
        f"images: a grid cell must be a [-1, 1] (3, H, W) tensor, an (H, W, 3) uint8 array or an"
        f" (H, W) integer label map, got {arr.dtype} {arr.shape}"
    )


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable, Pillow >= 10.1 with FreeType
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


def save_grid(
    images: Sequence[Sequence[GridCell]],
    path: PathLike,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    label_set: LabelSet = CELEBAMASK_HQ,
) -> None:
    """Write rows of pictures as one labelled PNG on white; rows may differ in length.

    A cell is a [-1, 1] (3, H, W) tensor, an (H, W, 3) uint8 array, a PIL image, an (H, W) integer
    label map (shown in `label_set`'s colours), or None for a blank slot. Cells are centred in slots
    as large as the largest cell.

    >>> save_grid([[src, labels, out]], "grid.png",
    ...           col_labels=["source", "mask", "result"])  # doctest: +SKIP
    """
    rows = [[_cell_rgb(c, label_set) for c in row] for row in images]
    cells = [c for row in rows for c in row if c is not None]
    if not cells:
        raise InputError(f"images: nothing to draw in {path}")
    n_cols = max(len(row) for row in rows)
    if row_labels is not None and len(row_labels) != len(rows):
        raise InputError(f"row_labels: {len(row_labels)} labels for {len(rows)} rows")
    if col_labels is not None and len(col_labels) > n_cols:
        raise InputError(f"col_labels: {len(col_labels)} labels for {n_cols} columns")
    cell_h = max(c.shape[0] for c in cells)
    cell_w = max(c.shape[1] for c in cells)
    font = _font(max(10, cell_h // 12))
    _, line_h = _text_size(font, "Ag")
    margin = max(4, line_h // 2)
    label_w = max((_text_size(font, t)[0] for t in row_labels), default=0) if row_labels else 0
    left = margin + (label_w + margin if row_labels else 0)
    top = margin + (line_h + margin if title else 0) + (line_h + margin if col_labels else 0)
    width = max(left + n_cols * (cell_w + margin), 2 * margin + _text_size(font, title or "")[0])
    height = top + len(rows) * (cell_h + margin)
    canvas = Image.new("RGB", (width, height), GRID_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((margin, margin), title, fill=GRID_TEXT, font=font)
    for j, text in enumerate(col_labels or []):
        x = left + j * (cell_w + margin) + (cell_w - _text_size(font, text)[0]) // 2
        draw.text((x, top - margin - line_h), text, fill=GRID_TEXT, font=font)
    for i, row in enumerate(rows):
        y = top + i * (cell_h + margin)
        if row_labels:
            text_y = y + (cell_h - line_h) // 2
            draw.text((margin, text_y), row_labels[i], fill=GRID_TEXT, font=font)
        for j, cell in enumerate(row):
            if cell is not None:
                x = left + j * (cell_w + margin) + (cell_w - cell.shape[1]) // 2
                canvas.paste(Image.fromarray(cell), (x, y + (cell_h - cell.shape[0]) // 2))
    write_picture(canvas, path)
