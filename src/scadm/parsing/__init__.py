"""Face parsing: CelebAMask-HQ label maps for procedural faces and for real photos.

>>> from scadm.parsing import load_face_parser, parse_photo
>>> parser = load_face_parser("procedural")   # or "bisenet" (needs the parse extra)
>>> aligned, labels = parse_photo("me.jpg")   # doctest: +SKIP
"""

import importlib

# Imported on first use (PEP 562): the `scadm` command reads light submodules such as
# scadm.parsing.landmarks while building its parser, and must not import torch for that.
_EXPORTS = {
    "PARSERS": "parser",
    "FaceParser": "parser",
    "load_face_parser": "parser",
    "auto_mask_face": "photo",
    "parse_photo": "photo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scadm.parsing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"scadm.parsing.{_EXPORTS[name]}"), name)
