"""Training checkpoints that a kill at any moment cannot corrupt.

Layout of a run folder::

    DIR/checkpoints/step_0001000/   <name>.safetensors (weights), state.pt, manifest.json
    DIR/checkpoints/latest          "step_0001000": the newest complete checkpoint

A checkpoint is written into `step_NNNNNNN.tmp-XXXX/`, every file fsync'ed, the manifest (file
sizes) last; the folder is then renamed into place with os.replace, and `latest` is replaced the
same way. A folder is therefore complete or invisible: `*.tmp-*` leftovers of a killed writer are
ignored and removed. `state.pt` holds only tensors and plain Python values (optimizer, lr
scheduler, grad scaler, step, data position, EMA counters), so it loads with
`torch.load(weights_only=True)`: loading a checkpoint runs no pickled code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scadm.errors import CheckpointError
from scadm.models.loading import check_finite

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"
MANIFEST = "manifest.json"
FORMAT = "scadm-train-checkpoint"
VERSION = 1
FOLDER_MODE = 0o755  # mkdtemp makes 0700 folders; finished ones are readable like any other
_NAME = re.compile(r"^step_(\d{7,})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def save_checkpoint(
    run_dir: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict, keep: int
) -> Path:
    """Write weights (`tensors`: file stem -> state dict) and `state` atomically; keep the newest
    `keep` checkpoints. Returns the checkpoint folder."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    remove_leftovers(root)
    final = root / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=root))
    tmp.chmod(FOLDER_MODE)
    files = {}
    for stem, tensor_dict in tensors.items():
        path = tmp / f"{stem}.safetensors"
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensor_dict.items()}, path)
        files[path.name] = path
    torch.save(state, tmp / STATE_FILE)
    files[STATE_FILE] = tmp / STATE_FILE
    for path in files.values():
        _fsync(path)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "files": {name: path.stat().st_size for name, path in files.items()},
    }
    _write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    if final.exists():  # the same step written again (a resumed run that stopped right here)
        _discard(final)
    os.replace(tmp, final)
    _fsync(root)
    _write_text_atomic(root / LATEST, final.name + "\n")
    for old in complete_checkpoints(root)[:-keep]:
        _discard(old)
    return final


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder; renamed to a .tmp- name first so a half-deleted one is ignored."""
    doomed = folder.with_name(f"{folder.name}.tmp-deleting")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.replace(folder, doomed)
    shutil.rmtree(doomed)


def remove_leftovers(root: Path) -> None:
    """Remove `*.tmp-*` files and folders left by a killed writer."""
    for path in Path(root).glob("*.tmp-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def complete_checkpoints(root: Path) -> list[Path]:
    """Renamed-into-place checkpoint folders (those with a manifest), oldest first."""
    steps = {
        p: int(m.group(1))
        for p in (Path(root).iterdir() if Path(root).is_dir() else ())
        if p.is_dir() and (m := _NAME.match(p.name)) and (p / MANIFEST).is_file()
    }
    return sorted(steps, key=steps.__getitem__)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    `latest` names it; if a kill fell between renaming a folder and updating `latest`, the newer
    complete folder wins (it was fully written before the rename).
    """
    root = Path(run_dir) / CHECKPOINTS
    complete = complete_checkpoints(root)
    pointer = root / LATEST
    named = pointer.read_text().strip() if pointer.is_file() else ""
    # zero-padded names sort by step
    if (
        named
        and _NAME.match(named)
        and (root / named / MANIFEST).is_file()
        and (not complete or complete[-1].name <= named)
    ):
        return root / named
    return complete[-1] if complete else None


def verify_checkpoint(folder: Path) -> dict:
    """The manifest of `folder`, after checking every listed file has its recorded size."""
    folder = Path(folder)
    if ".tmp-" in folder.name:
        raise CheckpointError(f"{folder}: an unfinished checkpoint (a writer was killed); use another")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: not a checkpoint ({MANIFEST} missing)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder / MANIFEST}: corrupt ({e.msg})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(f"{folder}: not a {FORMAT} v{VERSION} checkpoint")
    for name, size in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; the checkpoint is incomplete, resume from an older one")
        if path.stat().st_size != size:
            raise CheckpointError(
                f"{path}: {path.stat().st_size} bytes, but the manifest says {size} "
                "(truncated or modified); resume from an older checkpoint"
            )
    return manifest


def load_checkpoint(folder: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """(weights by file stem, state) of a verified checkpoint, on the CPU.

    Weights or optimizer moments holding NaN/Inf are refused, naming the file and tensor: a run
    resumed from them would train on garbage (NaN stays NaN through every later step)."""
    folder = Path(folder)
    manifest = verify_checkpoint(folder)
    advice = _older_checkpoint_advice(folder)
    tensors = {}
    for name in manifest["files"]:
        if name.endswith(".safetensors"):
            try:
                tensors[name.removesuffix(".safetensors")] = load_file(folder / name)
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{folder / name}: unreadable ({e})") from None
            check_finite(tensors[name.removesuffix(".safetensors")].items(), folder / name, advice)
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{folder / STATE_FILE}: unreadable ({first})") from None
    check_finite(_nested_tensors(state), folder / STATE_FILE, advice)
    return tensors, state


def _nested_tensors(value, prefix: str = ""):
    """(dotted path, tensor) for every tensor in nested dicts and lists (an optimizer state)."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nested_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _nested_tensors(item, f"{prefix}.{i}" if prefix else str(i))


def _older_checkpoint_advice(folder: Path) -> str:
    complete = complete_checkpoints(folder.parent)  # oldest first
    names = [p.name for p in complete]
    older = complete[: names.index(folder.name)] if folder.name in names else []
    if older:
        return f"the run had diverged by then; resume from an older checkpoint (--resume {older[-1]})"
    return "the run had diverged by then and no older checkpoint of it is left; start a fresh run"


def replace_folder(folder: Path, write) -> None:
    """Write a folder (e.g. an exported pipeline) next to its target, then swap it into place, so
    readers see the old or the new folder, never a half-written one. `write(path)` fills it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
    tmp.chmod(FOLDER_MODE)
    write(tmp)
    for path in tmp.rglob("*"):
        if path.is_file():
            _fsync(path)
    if folder.exists():
        old = folder.with_name(f"{folder.name}.tmp-old")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
    else:
        os.replace(tmp, folder)
    _fsync(folder.parent)
