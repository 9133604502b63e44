"""The editor's built-in faces, by the model's domain (scadm.shipped.model_domain).

A procedural model gets held-out procedural faces (any number, "random face" draws another); a
photo model gets the two public-domain photos (scadm.sample_photos), aligned and parsed as an
upload with "photos without a mask" is, because cartoon faces mean nothing to it.
"""

from __future__ import annotations

import logging
import random
from functools import cached_property

from scadm.labels import LabelSet
from scadm.sample_photos import PHOTOS, require_photo_extras
from scadm.serve.editor import Face, procedural_face

log = logging.getLogger("scadm.serve")
PROCEDURAL_EXAMPLES = 8


class Examples:
    """The picker's choices and the face behind each; photos are parsed once, on first use."""

    def __init__(self, domain: str, size: int, label_set: LabelSet):
        self.domain, self.size, self.label_set = domain, size, label_set
        self.photos = domain == "photos"
        if self.photos:  # refuse at start-up, not on the first page load
            require_photo_extras("the editor of a photo model (its examples)")
        self.choices = list(PHOTOS) if self.photos else [f"face {i}" for i in range(PROCEDURAL_EXAMPLES)]
        self.random = not self.photos  # "random face" draws a new procedural face; there are two photos

    def default(self, index: int) -> str:
        """The choice shown first for the target (0) and the reference (1)."""
        return self.choices[index % len(self.choices)]

    def face(self, choice: str | None, new: bool = False) -> tuple[Face, str | None]:
        """(the face, the picker's value: None for a random face that is not among the choices)."""
        if self.photos:
            name = choice if choice in PHOTOS else self.default(0)
            return self._parsed[name], name
        seed = random.randrange(PROCEDURAL_EXAMPLES, 10**6) if new or not choice else int(str(choice).split()[-1])
        return procedural_face(seed, self.size), (f"face {seed}" if seed < PROCEDURAL_EXAMPLES else None)

    @cached_property
    def _parsed(self) -> dict[str, Face]:
        from scadm.io import to_uint8
        from scadm.sample_photos import parse_sample_photos

        faces = parse_sample_photos(self.size, self.label_set, notify=log.info)
        return {
            name: Face(to_uint8(x), labels.numpy(), f"{name} (public domain), automatic mask")
            for name, (x, labels) in faces.items()
        }
