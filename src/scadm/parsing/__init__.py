"""Face parsing: CelebAMask-HQ label maps for procedural faces and for real photos.

>>> from scadm.parsing import load_face_parser, parse_photo
>>> parser = load_face_parser("procedural")   # or "bisenet" (needs the parse extra)
>>> aligned, labels = parse_photo("me.jpg")   # doctest: +SKIP
"""

from scadm.parsing.parser import PARSERS, FaceParser, load_face_parser
from scadm.parsing.photo import auto_mask_face, parse_photo

__all__ = ["PARSERS", "FaceParser", "auto_mask_face", "load_face_parser", "parse_photo"]
