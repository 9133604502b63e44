"""Convert the official CelebAMask-HQ release into the authors' train/test folders.

Input, as downloaded::

    SRC/CelebA-HQ-img/<id>.jpg                                  1024x1024 faces
    SRC/CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_<part>.png  512x512 binary mask per part

Output, what `FaceFolder` (and the authors' loader) reads::

    DST/train/images/<id>.jpg  DST/train/labels/<id>.png   ids 0..27999
    DST/test/images/<id>.jpg   DST/test/labels/<id>.png    ids 28000..29999

Split. The paper says "28k images for training and 2k for testing" without naming them. The
authors' code reads test ids 28000..29999: their demo offers `range(28000, 30000)` as the ids under
CelebA-HQ/test/images (gradio_img2img.py) and their FID script refers to test/labels/28000.png
(generate_fid_samples.py). Their CelebA-HQ/{train,test}/{images,labels} folders are the layout of
SEAN's prepared CelebA-HQ download, whose test examples are all numbered 28000..29999. So test =
the last 2000 ids, files keep their ids. (The CelebA identity-based partition of the dataset's
g_partition.py gives about 24k/3k/3k and is not what the paper used.)

Labels. Parts are painted in class order (`CELEBAMASK_HQ`: skin=1 ... cloth=18), each over the
earlier ones where its mask is set, as the dataset's own g_mask.py does; e.g. hair (13) covers the
skin and brows under it, and cloth (18) covers the neck. A mask pixel counts as set above 127
(the masks hold 0 and 255). Labels are saved as 8-bit grey PNGs whose pixel value is the class.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from scadm.errors import InputError
from scadm.io import MASK_RESAMPLE, PathLike, read_image, to_uint8
from scadm.labels import CELEBAMASK_HQ

IMAGE_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
IDS_PER_MASK_DIR = 2000
TEST_START = 28000  # first test id: the last 2000 of 30000 (see the module docstring)
PARTS = CELEBAMASK_HQ.names[1:]  # part file suffixes; class = position + 1
PART_THRESHOLD = 127
JPEG_QUALITY = 95
PROBLEMS_FILE = "prepare_problems.txt"  # written to DST when entries are skipped
SHOWN = 10  # problems of each kind the summary shows
CHECK_SIZE = 64  # a copied JPEG is still fully decoded and checked; a small size keeps that cheap
READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass
class PrepareReport:
    """What `prepare` did and every problem it passed over (ids are CelebA-HQ ids)."""

    train: int = 0  # pairs present under DST/train after the run
    test: int = 0
    written: int = 0  # pairs (re)written by this run
    up_to_date: int = 0  # pairs already complete, left alone
    missing_images: list[int] = field(default_factory=list)  # part masks but no image
    missing_mask_dirs: list[str] = field(default_factory=list)  # mask folders images need
    missing_masks: list[int] = field(default_factory=list)  # image, folder present, no parts
    unreadable: list[str] = field(default_factory=list)  # one line per bad file, naming it
    problems_file: Path | None = None  # every problem, one per line (the summary shows the first ones)

    @property
    def problems(self) -> int:
        return len(self.missing_images) + len(self.missing_mask_dirs) + len(self.missing_masks) + len(self.unreadable)

    def summary(self) -> str:
        lines = [
            f"train {self.train}, test {self.test} pairs ({self.written} written,"
            f" {self.up_to_date} already done), {self.problems} problems"
        ]
        for title, items in self._groups():
            if items:
                shown = ", ".join(str(x) for x in items[:SHOWN])
                lines.append(f"{title}: {shown}{' ...' if len(items) > SHOWN else ''}")
        lines += self.unreadable[:SHOWN]
        if len(self.unreadable) > SHOWN:
            lines.append(f"... and {len(self.unreadable) - SHOWN} more unreadable files")
        if self.problems_file is not None:
            lines.append(f"skipped: every problem is listed in {self.problems_file}")
        return "\n".join(lines)

    def _groups(self) -> tuple[tuple[str, list], ...]:
        return (
            ("images missing for ids", self.missing_images),
            ("mask folders missing", self.missing_mask_dirs),
            ("no part masks for ids", self.missing_masks),
        )

    def write_problems(self, path: Path) -> None:
        """Every problem, one line each (`title: item`), so none is lost to a long summary; an
        old list from an earlier run is removed when there are none."""
        lines = [f"{title}: {item}" for title, items in self._groups() for item in items] + self.unreadable
        if lines:
            _write_atomic(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
            self.problems_file = path
        else:
            path.unlink(missing_ok=True)


def combine_parts(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """(H, W) uint8 label map from boolean part masks; later classes are painted over earlier."""
    if not masks:
        raise InputError("masks: no part masks to combine")
    shape = next(iter(masks.values())).shape
    labels = np.zeros(shape, dtype=np.uint8)
    for k, part in enumerate(PARTS, start=1):
        if part in masks:
            labels[masks[part]] = k
    return labels


def _unreadable(path: Path, e: Exception) -> InputError:
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    if isinstance(e, UnidentifiedImageError):
        reason = "not an image"
    return InputError(f"{path}: cannot read, corrupt or truncated ({reason})")


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except READ_ERRORS as e:
        raise _unreadable(path, e) from None


def _has_size(path: Path, size: tuple[int, int]) -> bool:
    try:
        return path.is_file() and _header_size(path) == size
    except InputError:
        return False  # a damaged output is rewritten


def _read_part(path: Path, shape: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"))  # RGB or L masks, 0/255
    except READ_ERRORS as e:
        raise _unreadable(path, e) from None
    if shape is not None and grey.shape != shape:
        raise InputError(
            f"{path}: is {grey.shape[1]}x{grey.shape[0]}, other parts of this face are {shape[1]}x{shape[0]}"
        )
    return grey > PART_THRESHOLD


def _label_map(parts: Mapping[str, Path], size: int | None) -> np.ndarray:
    masks: dict[str, np.ndarray] = {}
    for name, path in parts.items():
        masks[name] = _read_part(path, next(iter(masks.values())).shape if masks else None)
    labels = combine_parts(masks)
    if size is not None and labels.shape != (size, size):
        labels = np.asarray(Image.fromarray(labels).resize((size, size), MASK_RESAMPLE))
    return labels


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    # An interrupted run leaves only a .part file, never a truncated output that looks complete.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    write(tmp)
    os.replace(tmp, path)


def _prepare_one(face: int, image: Path, parts: Mapping[str, Path], dst: Path, size: int | None, split: str) -> str:
    """Write one pair unless already complete; returns "written", "up_to_date", or an error line."""
    out_image = dst / split / "images" / f"{face}.jpg"
    out_labels = dst / split / "labels" / f"{face}.png"
    try:
        native = _header_size(next(iter(parts.values())))
        image_ok = _has_size(out_image, (size, size) if size else _header_size(image))
        labels_ok = _has_size(out_labels, (size, size) if size else native)
        if image_ok and labels_ok:
            return "up_to_date"
        labels = None if labels_ok else _label_map(parts, size)
        pixels = None if image_ok else read_image(image, size or CHECK_SIZE)  # decodes, checks
    except InputError as e:
        return str(e)
    if labels is not None:
        _write_atomic(out_labels, lambda tmp: Image.fromarray(labels).save(tmp, format="PNG"))
    if pixels is not None and size is None:
        _write_atomic(out_image, lambda tmp: shutil.copyfile(image, tmp))  # original JPEG bytes
    elif pixels is not None:
        _write_atomic(
            out_image, lambda tmp: Image.fromarray(to_uint8(pixels)).save(tmp, format="JPEG", quality=JPEG_QUALITY)
        )
    return "written"


def _find_sources(src: Path) -> tuple[dict[int, Path], dict[int, dict[str, Path]], set[str]]:
    """Images by id, part masks by id (in class order), and the mask folders present."""
    image_dir, mask_dir = src / IMAGE_DIR, src / MASK_DIR
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            hint = " (is SRC the unzipped CelebAMask-HQ folder?)"
            raise InputError(f"{folder}: folder not found{hint}")
    images = {int(p.stem): p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and p.stem.isdigit()}
    found: dict[int, dict[str, Path]] = {}
    dirs = {d.name for d in mask_dir.iterdir() if d.is_dir()}
    for d in sorted(dirs):
        for p in (mask_dir / d).iterdir():
            face, _, part = p.stem.partition("_")
            if p.suffix.lower() == ".png" and face.isdigit() and part in PARTS:
                found.setdefault(int(face), {})[part] = p
    parts = {face: {n: got[n] for n in PARTS if n in got} for face, got in found.items()}
    return images, parts, dirs


def prepare(
    src: PathLike,
    dst: PathLike,
    size: int | None = None,
    progress: bool = True,
    test_start: int = TEST_START,
    workers: int = 1,
) -> PrepareReport:
    """Convert CelebAMask-HQ at `src` into DST/{train,test}/{images,labels} (see module doc).

    size=None copies the JPEGs byte for byte and keeps labels at 512; otherwise both are resized
    to size x size (image bicubic, saved at JPEG quality 95; labels nearest). Ids >= test_start go
    to test. Bad or missing inputs are reported in the returned PrepareReport (and listed in
    DST/prepare_problems.txt), never raised, and the pair is left out. Outputs are written
    atomically and complete ones are skipped, so an interrupted run resumes and a repeated run
    does nothing. `workers` threads decode in parallel.

    >>> report = prepare("CelebAMask-HQ", "data/celebamask-hq")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    src, dst = Path(src), Path(dst)
    if size is not None and size < 1:
        raise InputError(f"size: {size} must be a positive number of pixels, or None")
    images, parts, dirs = _find_sources(src)
    report = PrepareReport(missing_images=sorted(parts.keys() - images.keys()))
    todo = []
    for face in sorted(images):
        if face in parts:
            todo.append(face)
        elif str(face // IDS_PER_MASK_DIR) in dirs:
            report.missing_masks.append(face)
        else:
            missing = str(src / MASK_DIR / str(face // IDS_PER_MASK_DIR))
            if missing not in report.missing_mask_dirs:
                report.missing_mask_dirs.append(missing)

    def run(face: int) -> tuple[int, str]:
        split = "test" if face >= test_start else "train"
        return face, _prepare_one(face, images[face], parts[face], dst, size, split)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        bar = tqdm(pool.map(run, todo), total=len(todo), desc="CelebAMask-HQ", disable=not progress)
        for face, outcome in bar:
            if outcome not in ("written", "up_to_date"):
                report.unreadable.append(outcome)
            else:
                report.written += outcome == "written"
                report.up_to_date += outcome == "up_to_date"
                report.test += face >= test_start
                report.train += face < test_start
            bar.set_postfix(written=report.written, problems=report.problems, refresh=False)
    report.write_problems(dst / PROBLEMS_FILE)
    return report
