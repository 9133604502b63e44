"""What the page shows of a face: the face | mask strip, the painter's picture, the legend, the line
naming the files in use, and the order of the parts panel.

Plain numpy and HTML (no gradio), one function each, so that the layout and every callback that
shows a face show it the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scadm.io import mask_to_rgb
from scadm.labels import LabelSet
from scadm.serve.editor import Face

#: the parts people edit most come first in the parts panel
FIRST_PARTS = ("hair", "skin", "l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip", "mouth", "nose")


def panel_order(names: list[str]) -> list[str]:
    """The parts panel's rows, top to bottom (the order in which the page passes their values)."""
    return [n for n in FIRST_PARTS if n in names] + [n for n in names if n not in FIRST_PARTS]


def css_colour(colour) -> str:
    """A class colour (R, G, B) as CSS, for the brush and the legend."""
    return f"rgb({colour[0]}, {colour[1]}, {colour[2]})"


def face_strip(face: Face, label_set: LabelSet) -> np.ndarray:
    """The face and its mask side by side, at the model's pixels (the page enlarges them)."""
    return np.concatenate([face.image, mask_to_rgb(face.labels, label_set)], axis=1)


def painter_value(picture: np.ndarray | None) -> dict:
    """The mask painter's value: `picture` (editor.overlay_picture) with no strokes yet; None clears it."""
    return {"background": picture, "layers": [], "composite": None}


def legend_html(labels: np.ndarray, label_set: LabelSet) -> str:
    """Class colours with the share of the mask each class covers; absent classes greyed."""
    counts = np.bincount(labels.reshape(-1), minlength=label_set.num_classes)
    items = []
    for name, colour, n in zip(label_set.names, label_set.palette, counts, strict=True):
        share = f"{100 * n / labels.size:.1f}%" if n else "absent"
        items.append(
            f'<span class="{"present" if n else "absent"}"><span class="sw" '
            f'style="background: {css_colour(colour)}"></span>{name} <small>{share}</small></span>'
        )
    return f'<div class="legend" id="legend">{"".join(items)}</div>'


def face_line(role: str, face: Face, size: int, image_file=None, mask_file=None) -> str:
    """The line under a face's view: the uploaded files' names, or the example's."""
    files = " + ".join(Path(f).name for f in (image_file, mask_file) if f)
    return f"{role}: {files or face.name}, {size}x{size}"
