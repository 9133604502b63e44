import re

import numpy as np
import pytest
import torch
from PIL import Image

from scadm.data.folder import FaceFolder, flip_table, hflip, load_label_config, make_loader
from scadm.errors import InputError, ScadmWarning
from scadm.labels import CELEBAMASK_HQ, label_set_from_config

S = 16


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (S, S, 3), dtype=np.uint8)


def _write_pair(root, name, labels=None, image=None, image_ext=".png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    if image is not False:
        Image.fromarray(_image(int(name)) if image is None else image).save(root / "images" / f"{name}{image_ext}")
    if labels is not False:
        labels = np.full((S, S), int(name) % 19, np.uint8) if labels is None else labels
        Image.fromarray(labels.astype(np.uint8)).save(root / "labels" / f"{name}.png")


def test_items_have_documented_shapes_dtypes_and_ranges(tmp_path):
    _write_pair(tmp_path, "0", image=np.full((S, S, 3), 255, np.uint8))
    _write_pair(tmp_path, "1", image=np.zeros((S, S, 3), np.uint8), image_ext=".jpg")
    ds = FaceFolder(tmp_path, size=8)
    item = ds[0]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert item["labels"].shape == (8, 8) and item["labels"].dtype == torch.int64
    assert item["name"] == "0"
    assert torch.all(item["image"] == 1.0)  # white -> +1
    assert ds[1]["image"].min() >= -1.0 and ds[1]["image"].max() < -0.9  # black jpg -> ~-1


def test_split_selects_the_subfolder(tmp_path):
    _write_pair(tmp_path / "train", "0")
    _write_pair(tmp_path / "test", "28000")
    assert FaceFolder(tmp_path, split="test", size=None).names == ["28000"]


def test_pairs_are_matched_by_stem_in_numeric_order(tmp_path):
    for name in ("10", "2", "1"):
        _write_pair(tmp_path, name)
    _write_pair(tmp_path, "5", image=False)  # would shift a pairing by position
    with pytest.warns(ScadmWarning, match=r"1 \(5\) labels without images"):
        ds = FaceFolder(tmp_path, size=None, on_error="skip")
    assert ds.names == ["1", "2", "10"]
    for i, name in enumerate(ds.names):
        assert ds[i]["name"] == name
        assert torch.all(ds[i]["labels"] == int(name) % 19)
        expected = torch.from_numpy(_image(int(name))).permute(2, 0, 1) / 127.5 - 1
        torch.testing.assert_close(ds[i]["image"], expected, rtol=0, atol=1e-6)  # [-1, 1] float32: ~1 ulp
    assert ds.unmatched == {"images without labels": [], "labels without images": ["5"]}


def test_limit_keeps_the_first_pairs_in_numeric_order_and_refuses_too_few(tmp_path):
    for name in ("10", "2", "1", "30"):
        _write_pair(tmp_path, name)
    assert FaceFolder(tmp_path, size=None, limit=3).names == ["1", "2", "10"]
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: limit 5, but only 4 image/label pairs")):
        FaceFolder(tmp_path, size=None, limit=5)


def test_unmatched_files_raise_with_counts_and_names(tmp_path):
    _write_pair(tmp_path, "0")
    for name in ("3", "4", "5", "6", "7", "8"):
        _write_pair(tmp_path, name, labels=False)
    _write_pair(tmp_path, "9", image=False)
    with pytest.raises(InputError) as err:
        FaceFolder(tmp_path)
    message = str(err.value)
    assert "6 (3, 4, 5, 6, 7, ...) images without labels" in message
    assert "1 (9) labels without images" in message


def test_missing_labels_folder_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="labels: folder not found"):
        FaceFolder(tmp_path)


def _write_bad_pairs(root):
    """Pairs 0 and 5 are good; 1..4 each have one kind of bad file."""
    _write_pair(root, "0")
    _write_pair(root, "1", image=False)
    (root / "images" / "1.jpg").write_bytes(b"not a jpeg")
    _write_pair(root, "2", image=False)
    Image.new("L", (S, S), 128).save(root / "images" / "2.png")  # grayscale
    _write_pair(root, "3", labels=np.full((S, S), 19))  # 19 classes: 0..18
    _write_pair(root, "4", labels=False)
    Image.new("L", (S, S // 2)).save(root / "labels" / "4.png")  # other aspect than its image
    _write_pair(root, "5")
    return {"1": "1.jpg", "2": "2.png", "3": "3.png", "4": "4.png"}


@pytest.mark.parametrize("index, file", [(1, "1.jpg"), (2, "2.png"), (3, "3.png"), (4, "4.png")])
def test_bad_files_raise_naming_the_file(tmp_path, index, file):
    _write_bad_pairs(tmp_path)
    ds = FaceFolder(tmp_path)  # listing only: no file is read yet
    with pytest.raises(InputError, match=re.escape(file)):
        ds[index]


def test_bad_files_are_skipped_recorded_and_replaced_by_the_next_good_pair(tmp_path):
    bad = _write_bad_pairs(tmp_path)
    ds = FaceFolder(tmp_path, on_error="skip")
    with pytest.warns(ScadmWarning) as caught:
        assert ds[1]["name"] == "5"  # 1..4 are bad
    assert [str(w.message).split(":")[0] for w in caught] == [f"skipping {n}" for n in "1234"]
    assert [p.name for p in ds.skipped] == ["1", "2", "3", "4"]
    assert all(bad[p.name] in p.message for p in ds.skipped)
    assert ds[2]["name"] == "5"  # known bad pairs are passed over without another read


def test_validate_returns_every_bad_pair_without_raising(tmp_path):
    bad = _write_bad_pairs(tmp_path)
    problems = FaceFolder(tmp_path).validate(progress=False)
    assert [p.name for p in problems] == ["1", "2", "3", "4"]
    assert all(bad[p.name] in p.message for p in problems)
    skipping = FaceFolder(tmp_path, on_error="skip")
    skipping.validate(progress=False)
    assert len(skipping.skipped) == 4


def _two_eyes() -> np.ndarray:
    labels = np.ones((S, S), np.int64)  # skin
    labels[2:5, 1:4] = 4  # l_eye, image left
    labels[2:5, 10:14] = 5  # r_eye, image right, a different width
    labels[0, 0:6] = 6  # l_brow
    labels[8:, :] = 13  # hair is not swapped
    return labels


def test_hflip_mirrors_pixels_and_swaps_left_right_classes():
    labels = _two_eyes()
    image = torch.from_numpy(_image(0)).permute(2, 0, 1).float()
    lut = flip_table(CELEBAMASK_HQ, (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear")))
    flipped_image, flipped = hflip(image, torch.from_numpy(labels), lut)
    assert torch.equal(flipped_image, image.flip(-1))  # a flip moves values, exactly
    swap = {4: 5, 5: 4, 6: 7, 7: 6}
    expected = np.vectorize(lambda k: swap.get(k, k))(labels[:, ::-1])
    assert np.array_equal(flipped.numpy(), expected)
    assert (flipped[2:5, 12:15] == 5).all() and (flipped[0, 10:16] == 7).all()


def test_flip_augmentation_yields_plain_or_swapped_mirror(tmp_path):
    labels = _two_eyes()
    _write_pair(tmp_path, "0", labels=labels)
    plain = FaceFolder(tmp_path, size=None)[0]
    ds = FaceFolder(tmp_path, size=None, flip=True)
    mirrored = hflip(plain["image"], plain["labels"], flip_table(CELEBAMASK_HQ, ds.flip_pairs))
    seen = set()
    for _ in range(16):
        item = ds[0]
        if torch.equal(item["labels"], plain["labels"]):
            seen.add("plain")
            assert torch.equal(item["image"], plain["image"])
        else:
            seen.add("mirror")
            assert torch.equal(item["labels"], mirrored[1])
            assert torch.equal(item["image"], mirrored[0])
    assert seen == {"plain", "mirror"}


def test_config_defines_classes_palette_and_flip_pairs(tmp_path):
    config = tmp_path / "fashion.yaml"
    config.write_text(
        "classes: [bg, left_arm, right_arm, body]\n"
        "palette: [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]\n"
        "flip_pairs: [[left_arm, right_arm]]\n"
    )
    label_set, pairs = load_label_config(config)
    assert label_set.names == ("bg", "left_arm", "right_arm", "body")
    assert flip_table(label_set, pairs).tolist() == [0, 2, 1, 3]
    _write_pair(tmp_path / "data", "3", labels=np.full((S, S), 3))
    _write_pair(tmp_path / "data", "4", labels=np.full((S, S), 4))  # 4 classes: 0..3
    ds = FaceFolder.from_config(tmp_path / "data", config, size=None)
    assert ds[0]["labels"].max() == 3
    with pytest.raises(InputError, match="4.png"):
        ds[1]


def test_config_errors_name_the_file(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text('{"classes": ["a", "b"], "colours": []}')
    with pytest.raises(InputError, match=r"bad\.json: unknown keys \['colours'\]"):
        load_label_config(config)


def test_other_vocabularies_swap_nothing_by_default(tmp_path):
    _write_pair(tmp_path, "0", labels=np.zeros((S, S)))
    ds = FaceFolder(tmp_path, label_set=label_set_from_config(["bg", "l_eye", "r_eye"]))
    assert ds.flip_pairs == ()
    assert FaceFolder(tmp_path).flip_pairs == (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear"))


def _names(loader):
    return [list(batch["name"]) for batch in loader]


def test_loader_order_is_a_function_of_seed_and_epoch_and_resumes(tmp_path):
    for i in range(10):
        _write_pair(tmp_path, str(i), image=np.zeros((S, S, 3), np.uint8))
    ds = FaceFolder(tmp_path, size=4)
    loader = make_loader(ds, batch_size=2, shuffle=True, num_workers=0, seed=7)
    epochs = [_names(loader), _names(loader)]
    assert epochs[0] != epochs[1]  # each pass is a new epoch
    assert sorted(name for batch in epochs[0] for name in batch) == sorted(ds.names)
    again = make_loader(ds, batch_size=2, shuffle=True, num_workers=0, seed=7)
    assert [_names(again), _names(again)] == epochs
    assert _names(make_loader(ds, 2, True, 0, seed=8)) != epochs[0]
    resumed = make_loader(ds, batch_size=2, shuffle=True, num_workers=0, seed=7)
    resumed.sampler.set_epoch(1, start=2 * 2)  # two batches of epoch 1 were done
    assert _names(resumed) == epochs[1][2:]
    assert _names(make_loader(ds, 3, False, 0, seed=0)) == [
        ["0", "1", "2"],
        ["3", "4", "5"],
        ["6", "7", "8"],
    ]  # drop_last


def test_loader_with_workers_matches_single_process_order(tmp_path):
    for i in range(4):
        _write_pair(tmp_path, str(i), image=np.zeros((S, S, 3), np.uint8))
    ds = FaceFolder(tmp_path, size=4)
    single = make_loader(ds, 2, True, num_workers=0, seed=1)
    workers = make_loader(ds, 2, True, num_workers=1, seed=1)  # persistent across epochs
    assert [_names(workers), _names(workers)] == [_names(single), _names(single)]
