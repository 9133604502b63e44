import numpy as np
import pytest
from PIL import Image

from scadm.data.celebamask_hq import prepare
from scadm.data.folder import FaceFolder
from scadm.errors import InputError

IMAGE, MASK = 64, 32


def _regions(face: int) -> dict[str, np.ndarray]:
    """Overlapping parts, so the result depends on which is painted last."""
    masks = {name: np.zeros((MASK, MASK), bool) for name in ("skin", "nose", "hair", "cloth")}
    masks["skin"][4:28, 4:28] = True
    masks["nose"][12:20, 12 + face % 3 : 20] = True  # inside the skin
    masks["hair"][0:14, :] = True  # over the skin's top and the nose's upper rows
    masks["cloth"][24:, :] = True  # over the skin's bottom
    return masks


def _expected(face: int) -> np.ndarray:
    """Painter's order written out by hand: skin 1, nose 2, hair 13, cloth 18."""
    m = _regions(face)
    labels = np.zeros((MASK, MASK), np.uint8)
    labels[m["skin"]] = 1
    labels[m["nose"]] = 2
    labels[m["hair"]] = 13
    labels[m["cloth"]] = 18
    return labels


def _write_face(src, face, image=True, parts=True):
    if image:
        (src / "CelebA-HQ-img").mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(face).integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / "CelebA-HQ-img" / f"{face}.jpg", quality=90)
    if parts:
        folder = src / "CelebAMask-HQ-mask-anno" / str(face // 2000)
        folder.mkdir(parents=True, exist_ok=True)
        for k, (name, mask) in enumerate(_regions(face).items()):
            grey = Image.fromarray(mask.astype(np.uint8) * 255)
            (grey.convert("RGB") if k % 2 else grey).save(folder / f"{face:05d}_{name}.png")


def _release(src, faces=range(6)):
    for face in faces:
        _write_face(src, face)
    return src


def _label(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.asarray(img)


def test_prepare_writes_the_authors_layout_and_split(tmp_path):
    src, dst = _release(tmp_path / "src"), tmp_path / "dst"
    report = prepare(src, dst, progress=False, test_start=4)
    assert (report.train, report.test, report.written, report.problems) == (4, 2, 6, 0)
    for split, faces in (("train", range(4)), ("test", range(4, 6))):
        assert sorted(p.name for p in (dst / split / "images").iterdir()) == sorted(f"{f}.jpg" for f in faces)
        for face in faces:
            copied = (dst / split / "images" / f"{face}.jpg").read_bytes()
            assert copied == (src / "CelebA-HQ-img" / f"{face}.jpg").read_bytes()  # no re-encode
            assert np.array_equal(_label(dst / split / "labels" / f"{face}.png"), _expected(face))
    assert len(FaceFolder(dst, split="train", size=None)) == 4  # mask 32 vs image 64: resize
    assert FaceFolder(dst, split="test", size=16)[1]["labels"].shape == (16, 16)


def test_prepare_resizes_images_and_labels_when_size_is_given(tmp_path):
    src, dst = _release(tmp_path / "src", faces=[0]), tmp_path / "dst"
    prepare(src, dst, size=16, progress=False)
    with Image.open(dst / "train" / "images" / "0.jpg") as img:
        assert (img.format, img.size) == ("JPEG", (16, 16))
    assert np.array_equal(_label(dst / "train" / "labels" / "0.png"), _expected(0)[::2, ::2])


def test_prepare_reports_missing_and_corrupt_inputs_and_goes_on(tmp_path):
    src, dst = _release(tmp_path / "src"), tmp_path / "dst"
    _write_face(src, 6, image=False)  # masks but no image
    _write_face(src, 2001, parts=False)  # its mask folder "1" does not exist
    for p in (src / "CelebAMask-HQ-mask-anno" / "0").glob("00002_*.png"):
        p.unlink()  # image 2 has no part masks at all
    (src / "CelebAMask-HQ-mask-anno" / "0" / "00003_hair.png").write_bytes(b"\x89PNG broken")
    jpeg = src / "CelebA-HQ-img" / "4.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])  # truncated
    report = prepare(src, dst, progress=False)
    assert report.missing_images == [6]
    assert report.missing_mask_dirs == [str(src / "CelebAMask-HQ-mask-anno" / "1")]
    assert report.missing_masks == [2]
    assert len(report.unreadable) == 2
    assert "00003_hair.png" in report.unreadable[0] and "4.jpg" in report.unreadable[1]
    assert (report.train, report.written) == (3, 3)  # 0, 1, 5
    assert sorted(p.name for p in (dst / "train" / "labels").iterdir()) == ["0.png", "1.png", "5.png"]
    assert "missing" in report.summary() and "4.jpg" in report.summary()


def test_prepare_again_is_a_no_op_and_resumes_an_interrupted_run(tmp_path):
    src, dst = _release(tmp_path / "src"), tmp_path / "dst"
    prepare(src, dst, progress=False, test_start=4)
    outputs = sorted(dst.rglob("*.*"))
    stamps = [p.stat().st_mtime_ns for p in outputs]
    report = prepare(src, dst, progress=False, test_start=4)
    assert (report.written, report.up_to_date, report.train, report.test) == (0, 6, 4, 2)
    assert [p.stat().st_mtime_ns for p in outputs] == stamps
    (dst / "test" / "labels" / "5.png").unlink()  # as if killed before this file was written
    (dst / "train" / "images" / "1.jpg").write_bytes(b"")  # or a damaged output
    report = prepare(src, dst, progress=False, test_start=4, workers=2)
    assert (report.written, report.up_to_date) == (2, 4)
    assert np.array_equal(_label(dst / "test" / "labels" / "5.png"), _expected(5))
    assert not list(dst.rglob("*.part"))


def test_prepare_names_a_missing_source_folder(tmp_path):
    with pytest.raises(InputError, match="CelebA-HQ-img: folder not found"):
        prepare(tmp_path, tmp_path / "dst", progress=False)


def test_prepare_lists_every_skipped_entry_in_a_file(tmp_path):
    """The summary shows the first ten of each kind; the file keeps them all, one per line."""
    src, dst = _release(tmp_path / "src", faces=[0]), tmp_path / "dst"
    for face in range(100, 112):  # part masks without their images
        _write_face(src, face, image=False)
    (src / "CelebA-HQ-img" / "0.jpg").write_bytes(b"\xff\xd8 broken")
    report = prepare(src, dst, progress=False)
    listed = (dst / "prepare_problems.txt").read_text().splitlines()
    assert report.problems_file == dst / "prepare_problems.txt" and len(listed) == report.problems == 13
    assert listed[:12] == [f"images missing for ids: {face}" for face in range(100, 112)]
    assert "0.jpg: cannot read" in listed[12]
    assert "111" not in report.summary() and str(dst / "prepare_problems.txt") in report.summary()
    for face in [0, *range(100, 112)]:  # every entry repaired
        _write_face(src, face)
    assert prepare(src, dst, progress=False).problems == 0
    assert not (dst / "prepare_problems.txt").exists()  # no stale list from the earlier run
