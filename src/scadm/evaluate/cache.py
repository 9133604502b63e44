"""A disk cache of generated images and features, keyed by every setting that changes them, so an
interrupted evaluation resumes where it stopped and a rerun with other metrics renders nothing.

Layout: ROOT/<kind>/<key>/ with settings.json (what the key hashes) and one PNG per image (uint8,
lossless: a metric reads the same pixels whether they came from the sampler or from the cache),
or one features.npy. Files appear atomically, so a killed run never leaves a half-written one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

KEY_CHARS = 20


def settings_key(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    write(tmp)
    os.replace(tmp, path)


def _save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, format="PNG")


def _save_npy(path: Path, value: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
        np.save(f, value)


class EvalCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _folder(self, kind: str, settings: dict) -> Path:
        folder = self.root / kind / settings_key(settings)
        folder.mkdir(parents=True, exist_ok=True)
        info = folder / "settings.json"
        if not info.is_file():
            _atomic(info, lambda p: p.write_text(json.dumps(settings, indent=2, sort_keys=True, default=str)))
        return folder

    def images(
        self,
        settings: dict,
        names: Sequence[str],
        render: Callable[[list[int]], np.ndarray],
        batch: int,
        desc: str = "render",
        progress: bool = True,
    ) -> np.ndarray:
        """uint8 (N, H, W, 3) for `names`: read from the cache, rendering only what is missing.

        `render(indices)` returns the images of names[i] for i in indices, in that order.
        """
        folder = self._folder("images", settings)
        paths = [folder / f"{name}.png" for name in names]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        batches = [missing[s : s + batch] for s in range(0, len(missing), batch)]
        for chunk in tqdm(batches, desc=desc, disable=not progress or not batches, leave=False):
            for i, image in zip(chunk, render(chunk), strict=True):
                _atomic(paths[i], functools.partial(_save_png, image))
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])

    def array(self, settings: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """A feature array, computed once per settings."""
        path = self._folder("arrays", settings) / "array.npy"
        if not path.is_file():
            value = np.asarray(compute())
            _atomic(path, lambda p: _save_npy(p, value))
        return np.load(path)
