"""The faces an evaluation runs on: held-out procedural faces or a folder in the authors' layout.

`--data procedural` renders faces the shipped models never saw (seeds from HELD_OUT_FIRST_SEED;
training used dataset seed 0, i.e. face seeds 0 .. N-1), each with its per-part style ground
truth. `--data celebamask-hq:ROOT` is the authors' 2,000-face test split (ROOT/test, ids >= 28000,
as `scadm prepare celebamask-hq` writes it); any other value is a folder ROOT[/--split] with
images/N.jpg and labels/N.png. Face i takes its reference (for swaps) from face i + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scadm.data.celebamask_hq import TEST_START
from scadm.data.folder import FaceFolder
from scadm.data.synthetic import SyntheticFace, render_face
from scadm.errors import InputError
from scadm.io import to_uint8
from scadm.labels import LabelSet

HELD_OUT_FIRST_SEED = 900_000_000
CELEBAMASK_PREFIX = "celebamask-hq:"


@dataclass
class Face:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) int64
    truth: SyntheticFace | None = None  # procedural faces: the generator's ground truth


@dataclass(frozen=True)
class DataSpec:
    """What to load; `describe()` is part of every cache key and report."""

    kind: str  # "procedural" | "folder"
    root: str | None = None
    split: str | None = None
    num: int = 16
    first_seed: int = HELD_OUT_FIRST_SEED
    test_ids_only: bool = False  # CelebAMask-HQ: refuse ids of the training split

    @classmethod
    def parse(cls, value: str, num: int, split: str | None = None) -> DataSpec:
        if num < 1:
            raise InputError(f"--num must be >= 1, got {num}")
        if value == "procedural":
            return cls("procedural", num=num)
        if value.startswith(CELEBAMASK_PREFIX):
            return cls("folder", value[len(CELEBAMASK_PREFIX) :], split or "test", num, test_ids_only=True)
        return cls("folder", value, split, num)

    @property
    def procedural(self) -> bool:
        return self.kind == "procedural"

    @property
    def folder(self) -> Path:
        """The root of a "folder" spec (`parse` always gives one)."""
        if self.root is None:
            raise InputError("--data: a folder of faces needs its path")
        return Path(self.root)

    def describe(self) -> dict:
        if self.procedural:
            return {"kind": "procedural", "num": self.num, "first_seed": self.first_seed}
        return {
            "kind": "folder",
            "root": str(self.folder.resolve()),
            "split": self.split,
            "num": self.num,
            "test_ids_only": self.test_ids_only,
        }

    def title(self) -> str:
        if self.procedural:
            return f"{self.num} held-out procedural faces (seeds {self.first_seed}..{self.first_seed + self.num - 1})"
        where = self.folder / self.split if self.split else self.folder
        return f"the first {self.num} faces of {where}"


def load_faces(spec: DataSpec, size: int, label_set: LabelSet) -> list[Face]:
    """`spec.num` faces at size x size (fewer only if a folder holds fewer: then InputError)."""
    if spec.procedural:
        faces = []
        for i in range(spec.num):
            f = render_face(spec.first_seed + i, size)
            faces.append(Face(f"seed{f.seed}", f.image, f.labels, f))
        return faces
    folder = FaceFolder(spec.folder, size=size, label_set=label_set, split=spec.split)
    names = folder.names
    if spec.test_ids_only:
        train = [n for n in names if not n.isdigit() or int(n) < TEST_START]
        if train:
            raise InputError(
                f"{folder.root}: {len(train)} file(s) are not CelebAMask-HQ test ids "
                f"(>= {TEST_START}), e.g. {train[0]}; point at the test split"
            )
    if len(names) < spec.num:
        raise InputError(f"{folder.root}: holds {len(names)} faces, --num asks for {spec.num}")
    faces = []
    for i in range(spec.num):
        item = folder[i]
        faces.append(Face(item["name"], to_uint8(item["image"]), item["labels"].numpy()))
    return faces


def reference_index(i: int, count: int) -> int:
    """The face whose styles face i receives in a swap."""
    return (i + 1) % count
