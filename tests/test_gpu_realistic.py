"""scripts/gpu_realistic.py: what a GPU call would send (the device's 64 MiB limit on the working
tree) and the faces packed for it, on tiny fake files."""

import argparse
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scadm.data.stylegan_faces import face_paths

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.fixture(scope="module")
def script():
    path = Path(__file__).parents[1] / "scripts" / "gpu_realistic.py"
    spec = importlib.util.spec_from_file_location("gpu_realistic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_counts_tracked_untracked_shared_and_carried_files_once(script, tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    ignore = "/.gpu/\n/shared/\n*.log\n"  # .gitignore: untracked, not ignored
    (tmp_path / ".gitignore").write_text(ignore)
    _write(tmp_path / "src" / "a.py", 100)
    _write(tmp_path / "gone.bin", 7)
    subprocess.run(["git", "-C", str(tmp_path), "add", "src/a.py", "gone.bin"], check=True)
    (tmp_path / "gone.bin").unlink()  # tracked but absent: nothing to send
    _write(tmp_path / "notes.txt", 50)  # untracked, not ignored: travels
    _write(tmp_path / "run.log", 1000)  # ignored: stays
    _write(tmp_path / "shared" / "doc.md", 20)  # ignored, but shared/ travels
    _write(tmp_path / ".gpu" / "wheels" / "w.whl", 30)
    parts = script.travel_bytes(tmp_path, [tmp_path / ".gpu", tmp_path / "notes.txt"])
    assert parts == {"repository files": 100 + 50 + len(ignore), "shared/": 20, ".gpu": 30, "notes.txt": 0}


def test_refuses_over_the_limit_naming_sizes_and_prints_the_margin_under(script):
    parts = {"repository files": 44 * 2**20, ".gpu": 19 * 2**20}
    assert script.check_fits(parts).endswith("1.0 MiB under its 64.0 MiB limit")
    parts[".gpu"] += 2 * 2**20
    with pytest.raises(
        SystemExit, match=r"65\.0 MiB, over its 64\.0 MiB limit \(repository files 44\.0 MiB, \.gpu 21\.0 MiB\).*--num"
    ):
        script.check_fits(parts)


@pytest.fixture
def faces(tmp_path):
    """A prepared folder of 3 faces at 8 px (face 0 held out), random pixels and classes."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"psi": 0.8, "test_every": 2}))
    rng = np.random.default_rng(0)
    for i in range(3):
        label, image = face_paths(data, i, [8], 2)
        for path in (label, image):
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 19, (8, 8), dtype=np.uint8)).save(label)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(image)
    return data


def test_packed_faces_unpack_to_the_same_pixels(script, faces, tmp_path):
    bundle, count, full = script.pack_faces(faces, [8], budget=10**6)
    assert (count, full) == (3, False)
    np.savez_compressed(tmp_path / "faces.npz", **bundle)
    out = tmp_path / "unpacked"
    assert script.unpack_faces(tmp_path / "faces.npz", out, 8) == (3, 2, 0.8)
    for i in range(3):
        for unpacked, original in zip(face_paths(out, i, [8], 2), face_paths(faces, i, [8], 2), strict=True):
            assert np.array_equal(np.asarray(Image.open(unpacked)), np.asarray(Image.open(original)))
    assert script.unpack_faces(tmp_path / "faces.npz", tmp_path / "two", 8, num=2)[0] == 2
    with pytest.raises(SystemExit, match="no 16 px faces"):
        script.unpack_faces(tmp_path / "faces.npz", out, 16)


def test_a_pillow_without_webp_is_told_to_pack_jpeg(script, faces, tmp_path, monkeypatch):
    from PIL import features

    np.savez_compressed(tmp_path / "faces.npz", **script.pack_faces(faces, [8], budget=10**6)[0])
    monkeypatch.setattr(features, "check", lambda name: name != "webp")
    with pytest.raises(SystemExit, match="cannot read the WebP.*--quality 95"):
        script.unpack_faces(tmp_path / "faces.npz", tmp_path / "out", 8)
    monkeypatch.undo()
    bundle = script.pack_faces(faces, [8], budget=10**6, quality=95)[0]
    np.savez_compressed(tmp_path / "jpeg.npz", **bundle)
    assert script.unpack_faces(tmp_path / "jpeg.npz", tmp_path / "out", 8)[0] == 3
    assert sorted(p.name for p in (tmp_path / "out" / "8px" / "train" / "images").iterdir()) == ["1.jpg"]


def test_packing_stops_at_the_budget(script, faces):
    one = len(script.pack_faces(faces, [8], budget=10**6, num=1)[0]["images_8"])
    bundle, count, full = script.pack_faces(faces, [8], budget=2 * one + 10)  # masks cost a few bytes
    assert full and 1 <= count < 3 and len(bundle["ends_8"]) == count == len(bundle["labels_8"])


def _pack_args(out: Path, data: Path, **options) -> argparse.Namespace:
    """`gpu_realistic.py pack`'s arguments, its defaults but for `options`."""
    defaults = {"size": [8], "num": None, "reserve_mib": 3.0, "quality": None, "wheels": False}
    return argparse.Namespace(out=str(out), data=str(data), **(defaults | options))


def test_pack_refuses_an_out_folder_no_call_could_carry(script, faces, tmp_path):
    """carry names paths inside the checkout: assets packed elsewhere would never reach the GPU."""
    args = _pack_args(tmp_path / "assets", faces)
    with pytest.raises(SystemExit, match="outside the checkout"):
        script.pack(args)
    assert not (tmp_path / "assets").exists()


def test_pack_says_when_the_faces_are_missing_not_that_they_do_not_fit(script, faces, tmp_path, monkeypatch):
    """Faces prepared at 8 px, packed at 16: the folder lacks them, whatever room is left."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.setattr(script, "ROOT", tmp_path)
    args = _pack_args(tmp_path / ".gpu", faces, size=[16])
    with pytest.raises(SystemExit, match="has no face 0 at 16 px"):
        script.pack(args)
    args.size, args.num = [8], 0
    with pytest.raises(SystemExit, match="--num 0: pack at least one face"):
        script.pack(args)
    args.num = None
    script.pack(args)
    assert script.unpack_faces(tmp_path / ".gpu" / "faces.npz", tmp_path / "out", 8)[0] == 3
