"""Image/label folders in the authors' layout, and a DataLoader whose order a resumed run repeats.

Layout (what the authors' `CelebAHQ` dataset reads, and SEAN's prepared CelebA-HQ download)::

    ROOT[/SPLIT]/images/28000.jpg    (or .png)
    ROOT[/SPLIT]/labels/28000.png    pixel value = class index

The authors list both folders, sort each by number and pair them by position, so one missing file
silently shifts every later image onto the wrong mask. Here pairs are matched by file stem and
anything unmatched is reported. Any class vocabulary works (DeepFashion, Cityscapes, ...): give its
class names in a small YAML/JSON file and use `FaceFolder.from_config`.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator, Sequence, Sized
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from scadm.errors import InputError, ScadmWarning
from scadm.io import PathLike, read_pair
from scadm.labels import (
    CELEBAMASK_HQ,
    LEFT_RIGHT_PAIRS,
    LabelSet,
    label_set_from_config,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SUFFIX = ".png"
ON_ERROR = ("raise", "skip")
FLIP_PROBABILITY = 0.5
NAMES_SHOWN = 5  # unmatched names quoted in a report; the rest are counted
CONFIG_KEYS = ("classes", "palette", "flip_pairs")

FlipPairs = Sequence[Sequence[str | int]]  # pairs of class names or indices; flip_table checks them


class Problem(NamedTuple):
    """A pair that could not be used: its stem and InputError's one line (naming the file)."""

    name: str
    message: str


def _sort_key(stem: str) -> tuple:
    # Numeric stems in numeric order (2.jpg before 10.jpg), as the authors sort; others after.
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _list_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found; expected ROOT/images and ROOT/labels")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in suffixes or not path.is_file():
            continue
        if path.stem in found:
            raise InputError(f"{path}: {found[path.stem].name} has the same name; keep one of them")
        found[path.stem] = path
    return found


def _describe(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return f"{len(names)} ({shown}{', ...' if len(names) > NAMES_SHOWN else ''})"


def flip_table(label_set: LabelSet, flip_pairs: FlipPairs) -> torch.Tensor:
    """(C,) int64 look-up: the class a pixel of class k has in the mirrored image."""
    lut = torch.arange(label_set.num_classes)
    seen: set[int] = set()
    for pair in flip_pairs:
        if len(pair) != 2:
            raise InputError(f"flip_pairs: {pair!r} is not a pair of classes")
        try:
            i, j = (label_set.index(c) for c in pair)
        except InputError as e:
            raise InputError(f"flip_pairs: {e}") from None
        if i == j or i in seen or j in seen:
            raise InputError(f"flip_pairs: {pair!r} repeats a class; a class swaps with one other")
        seen |= {i, j}
        lut[i], lut[j] = j, i
    return lut


def hflip(image: torch.Tensor, labels: torch.Tensor, lut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror an image (3, H, W) and its labels (H, W) left-right, swapping left/right classes."""
    return image.flip(-1), lut[labels.flip(-1)]


def load_label_config(path: PathLike) -> tuple[LabelSet, FlipPairs | None]:
    """A class vocabulary from YAML/JSON: `classes: [names]`, optional `palette: [[r, g, b], ...]`
    and optional `flip_pairs: [[left, right], ...]` (None when absent, so defaults apply)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        config = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, yaml.YAMLError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path}: not valid YAML/JSON ({reason})") from None
    if not isinstance(config, dict) or not isinstance(config.get("classes"), list):
        raise InputError(f"{path}: expected a mapping with `classes: [name, ...]`")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown keys {unknown}; allowed are {list(CONFIG_KEYS)}")
    pairs = config.get("flip_pairs")
    if pairs is not None and not (isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 for p in pairs)):
        raise InputError(f"{path}: flip_pairs must be a list of [left, right] class pairs")
    try:
        label_set = label_set_from_config(config["classes"], config.get("palette"))
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    return label_set, None if pairs is None else tuple(tuple(p) for p in pairs)


class FaceFolder(Dataset):
    """Image/label pairs from ROOT[/split]/images and ROOT[/split]/labels, read on demand.

    Items are {"image": float (3, S, S) in [-1, 1], "labels": int64 (S, S), "name": stem}, resized
    as the authors' loader does (image bicubic, labels nearest; see `scadm.io`); size=None keeps
    the native resolution. Files are only listed here; each is checked when first read, or all at
    once by `validate()`.

    on_error="raise": unmatched files, and any bad file when read (corrupt, grayscale, a label
    >= num_classes, an image and label of different shapes), raise InputError naming the file.
    on_error="skip": unmatched files are left out with a warning (listed in `self.unmatched`); a
    bad pair is recorded in `self.skipped` with a warning and the next good pair is returned in
    its place. DataLoader workers hold their own copies, so with num_workers > 0 the main
    process's `skipped` stays empty: call `validate()` first to get the full list.

    limit=N keeps the first N pairs in name order (numeric stems numerically; refused if there are
    fewer): a fixed training set, e.g. faces 0..N-1 of a folder that `scadm prepare` is filling.

    flip=True mirrors half the items, drawing from torch's RNG (in a DataLoader worker, seeded
    from the loader's generator), and swaps the `flip_pairs` classes; these default to
    l/r eye, brow and ear for CelebAMask-HQ's classes and to none for other vocabularies.

    >>> train = FaceFolder("data/celebamask-hq", split="train", flip=True)  # doctest: +SKIP
    >>> train[0]["labels"].shape  # doctest: +SKIP
    torch.Size([256, 256])
    """

    names: list[str]  # stems of the pairs, in name order (set by _match)
    _pairs: list[tuple[Path, Path]]

    def __init__(
        self,
        root: PathLike,
        size: int | None = 256,
        label_set: LabelSet = CELEBAMASK_HQ,
        split: str | None = None,
        on_error: str = "raise",
        flip: bool = False,
        flip_pairs: FlipPairs | None = None,
        limit: int | None = None,
    ):
        if on_error not in ON_ERROR:
            raise InputError(f"on_error: {on_error!r}; expected one of {ON_ERROR}")
        if size is not None and size < 1:
            raise InputError(f"size: {size} must be a positive number of pixels, or None")
        self.root = Path(root) / split if split else Path(root)
        self.size, self.label_set, self.on_error, self.flip = size, label_set, on_error, flip
        if flip_pairs is None:
            flip_pairs = LEFT_RIGHT_PAIRS if label_set.names == CELEBAMASK_HQ.names else ()
        self.flip_pairs = tuple(tuple(p) for p in flip_pairs)
        self._flip_lut = flip_table(label_set, self.flip_pairs)
        self._match(
            _list_files(self.root / "images", IMAGE_SUFFIXES),
            _list_files(self.root / "labels", (LABEL_SUFFIX,)),
        )
        if limit is not None:
            if len(self.names) < limit:
                raise InputError(f"{self.root}: limit {limit}, but only {len(self.names)} image/label pairs")
            self.names = self.names[:limit]
            self._pairs = self._pairs[:limit]
        self.skipped: list[Problem] = []
        self._bad: set[int] = set()

    def _match(self, images: dict[str, Path], labels: dict[str, Path]) -> None:
        self.unmatched = {
            "images without labels": sorted(images.keys() - labels.keys(), key=_sort_key),
            "labels without images": sorted(labels.keys() - images.keys(), key=_sort_key),
        }
        if any(self.unmatched.values()):
            parts = [f"{_describe(v)} {k}" for k, v in self.unmatched.items() if v]
            message = f"{self.root}: {'; '.join(parts)}"
            if self.on_error == "raise":
                raise InputError(f"{message} (pass on_error='skip' to leave them out)")
            warnings.warn(ScadmWarning(f"{message}; left out"), stacklevel=3)
        self.names = sorted(images.keys() & labels.keys(), key=_sort_key)
        if not self.names:
            raise InputError(f"{self.root}: no image/label pairs (images/N.jpg with labels/N.png)")
        self._pairs = [(images[n], labels[n]) for n in self.names]

    @classmethod
    def from_config(cls, root: PathLike, config_path: PathLike, **kwargs) -> FaceFolder:
        """A folder of another dataset, its classes read by `load_label_config`.

        >>> ds = FaceFolder.from_config("data/fashion", "fashion.yaml", size=None)  # doctest: +SKIP
        """
        label_set, flip_pairs = load_label_config(config_path)
        return cls(root, label_set=label_set, flip_pairs=flip_pairs, **kwargs)

    def __len__(self) -> int:
        return len(self._pairs)

    def _read(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        # datasets store labels at their own resolution (CelebAMask-HQ: 1024 px images, 512 px labels)
        return read_pair(*self._pairs[j], label_set=self.label_set, size=self.size, scaled_mask=True)

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} pairs")
        mirror = self.flip and bool(torch.rand(()) < FLIP_PROBABILITY)
        for j in ((i + k) % n for k in range(n)):
            if j in self._bad:
                continue
            try:
                image, labels = self._read(j)
            except InputError as e:
                if self.on_error == "raise":
                    raise
                self._record(j, str(e))
                warnings.warn(ScadmWarning(f"skipping {self.names[j]}: {e}"), stacklevel=2)
                continue
            if mirror:
                image, labels = hflip(image, labels, self._flip_lut)
            return {"image": image, "labels": labels, "name": self.names[j]}
        raise InputError(f"{self.root}: no pair could be read; see .skipped")

    def _record(self, j: int, message: str) -> None:
        if j not in self._bad:
            self._bad.add(j)
            self.skipped.append(Problem(self.names[j], message))

    def validate(self, progress: bool = True) -> list[Problem]:
        """Read every pair (tqdm bar on stderr) and return the bad ones; never raises for them.

        With on_error="skip" they are also recorded, so reading later passes over them silently.
        """
        bad = []
        for j in tqdm(range(len(self)), desc=f"checking {self.root}", disable=not progress):
            try:
                self._read(j)
            except InputError as e:
                bad.append(Problem(self.names[j], str(e)))
                if self.on_error == "skip":
                    self._record(j, str(e))
        return bad


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: a hash of (seed, epoch), so epochs are independent."""
    if seed < 0 or epoch < 0:
        raise InputError(f"seed/epoch: {seed}/{epoch}; both must be >= 0")
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


class SeededSampler(Sampler[int]):
    """Indices 0..n-1 in an order that is a pure function of (seed, epoch).

    Epoch e is `torch.randperm(n)` under a generator seeded with `epoch_seed(seed, e)` (or
    0..n-1 with shuffle=False). Each pass advances `epoch` by one, so plain loops see a new order
    every epoch. To resume after k finished batches of epoch e, call `set_epoch(e, start=k *
    batch_size)`: the run continues with exactly the samples and batches it would have seen.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        epoch_seed(seed, 0)  # validates the seed
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if epoch < 0 or not 0 <= start <= self.n:
            raise InputError(f"set_epoch: epoch {epoch}, start {start}; need start in 0..{self.n}")
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> list[int]:
        """The full order of `epoch`."""
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        order, start = self.order(self.epoch), self.start
        self.epoch, self.start = self.epoch + 1, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.n - self.start


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker with base_seed + worker_id (base_seed drawn from the loader's
    # generator); derive numpy's and random's seeds from it so every RNG a transform might use
    # is reproducible and differs between workers.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def num_items(dataset: Dataset) -> int:
    """The length of a map-style dataset (torch's Dataset type declares no __len__)."""
    if not isinstance(dataset, Sized):
        raise InputError(f"data: {type(dataset).__name__} has no length; scadm reads map-style datasets")
    return len(dataset)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    drop_last: bool = True,
) -> DataLoader:
    """A DataLoader whose order is reproducible and resumable (see `SeededSampler`).

    `loader.sampler.set_epoch(e, start)` positions a resumed run. Worker RNGs (random flips)
    are seeded from `seed` too, so a run from scratch repeats exactly; a resumed run repeats the
    order but not the flips, which continue from the workers' RNG streams. Memory is pinned when
    CUDA is available; workers persist across epochs.

    >>> train = FaceFolder("data", split="train")  # doctest: +SKIP
    >>> loader = make_loader(train, 8, shuffle=True, num_workers=4, seed=0)  # doctest: +SKIP
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededSampler(num_items(dataset), seed, shuffle),
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker,
    )
