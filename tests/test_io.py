import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from scadm.errors import InputError
from scadm.figures import save_grid
from scadm.io import (
    mask_to_rgb,
    read_image,
    read_mask,
    read_pair,
    save_image,
    save_mask,
    to_uint8,
)
from scadm.labels import CELEBAMASK_HQ, colorize, label_set_from_config


def rgb_array(h=16, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def label_array(h=16, w=16, seed=0, num_classes=19):
    return np.random.default_rng(seed).integers(0, num_classes, (h, w)).astype(np.uint8)


def write_png16(path, arr):
    """A 16-bit-per-channel RGB(A) PNG, which PIL can read but not write."""
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def expect_error(fn, path, *keywords):
    with pytest.raises(InputError) as e:
        fn(path)
    msg = str(e.value)
    assert path.name in msg and "\n" not in msg
    for k in keywords:
        assert k in msg.lower(), msg
    return msg


# ---------------------------------------------------------------- images


def test_read_image_of_saved_image_round_trips_within_quantisation(tmp_path):
    x = torch.rand(3, 16, 16) * 2 - 1
    save_image(x, tmp_path / "a.png")
    y = read_image(tmp_path / "a.png")
    assert y.shape == (3, 16, 16) and y.dtype == torch.float32
    assert (x - y).abs().max() <= 1 / 255 + 1e-6  # half a uint8 step is 1/255 in [-1, 1]; + float32 rounding
    assert np.array_equal(to_uint8(y), to_uint8(x))


def test_read_image_scales_like_the_authors(tmp_path):
    arr = rgb_array()
    Image.fromarray(arr).save(tmp_path / "a.png")
    expected = (arr.astype(np.float64) / 127.5 - 1.0).astype(np.float32).transpose(2, 0, 1)
    assert np.array_equal(read_image(tmp_path / "a.png").numpy(), expected)


def test_read_image_resizes_square_images_bicubic(tmp_path):
    arr = rgb_array(32, 32)
    Image.fromarray(arr).save(tmp_path / "a.png")
    expected = np.asarray(Image.fromarray(arr).resize((16, 16), Image.Resampling.BICUBIC))
    assert np.array_equal(to_uint8(read_image(tmp_path / "a.png", size=16)), expected)


def test_read_image_accepts_palette_and_opaque_alpha(tmp_path):
    arr = rgb_array()
    Image.fromarray(arr).quantize(8).save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (3, 16, 16)
    Image.fromarray(arr).convert("RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(to_uint8(read_image(tmp_path / "opaque.png")), arr)


@pytest.mark.parametrize(
    "name, make, keywords",
    [
        ("gray.png", lambda p: Image.fromarray(label_array()).save(p), ["grayscale", "rgb"]),
        ("bw.png", lambda p: Image.fromarray(label_array()).convert("1").save(p), ["grayscale"]),
        ("gray16.png", lambda p: Image.fromarray(np.zeros((4, 4), np.uint16)).save(p), ["16-bit", "grayscale"]),
        ("rgb48.png", lambda p: write_png16(p, np.zeros((4, 4, 3), np.uint16)), ["16-bit"]),
        ("rgba.png", lambda p: Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(p), ["alpha", "flatten"]),
        (
            "la.png",
            lambda p: Image.fromarray(np.zeros((4, 4), np.uint8)).convert("LA").save(p),
            ["grayscale"],
        ),  # an opaque alpha channel is dropped, leaving a grayscale image
        ("cmyk.jpg", lambda p: Image.new("CMYK", (4, 4)).save(p), ["cmyk"]),
        ("nonsquare.png", lambda p: Image.new("RGB", (30, 20)).save(p), ["30x20", "aspect"]),
        ("text.png", lambda p: p.write_text("not an image"), ["cannot read", "corrupt"]),
    ],
)
def test_read_image_refuses_bad_files_with_one_line(tmp_path, name, make, keywords):
    path = tmp_path / name
    make(path)
    expect_error(lambda p: read_image(p, size=16), path, *keywords)


def test_read_image_refuses_truncated_and_missing_files(tmp_path):
    Image.fromarray(rgb_array(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    expect_error(read_image, tmp_path / "cut.png", "cannot read")
    expect_error(read_image, tmp_path / "missing.png", "not found")


def test_read_image_refuses_transparent_palette_image(tmp_path):
    img = Image.fromarray(rgb_array()).quantize(4)
    img.save(tmp_path / "pt.png", transparency=0)
    expect_error(read_image, tmp_path / "pt.png", "alpha")


def test_read_image_turns_exif_rotated_files_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be rotated 90 degrees clockwise
    Image.fromarray(rgb_array(2, 4)).save(tmp_path / "r.png", exif=exif)
    assert read_image(tmp_path / "r.png").shape == (3, 4, 2)


# ---------------------------------------------------------------- masks


def test_label_png_round_trips(tmp_path):
    labels = torch.from_numpy(label_array()).long()
    save_mask(labels, tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "L"
    assert torch.equal(read_mask(tmp_path / "m.png"), labels)


def test_palette_png_round_trips_and_shows_class_colours(tmp_path):
    labels = torch.from_numpy(label_array()).long()
    save_mask(labels, tmp_path / "m.png", CELEBAMASK_HQ, color=True)
    img = Image.open(tmp_path / "m.png")
    assert img.mode == "P"
    assert np.array_equal(np.asarray(img.convert("RGB")), colorize(labels))
    assert np.array_equal(np.asarray(img), labels.numpy())  # the authors' loader sees labels
    assert torch.equal(read_mask(tmp_path / "m.png"), labels)


def test_colour_png_round_trips(tmp_path):
    labels = label_array()
    Image.fromarray(colorize(labels)).save(tmp_path / "c.png")
    assert np.array_equal(read_mask(tmp_path / "c.png").numpy(), labels)


def test_colour_png_accepts_the_published_r_brow_variant(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1, 1] = (51, 255, 255)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_mask(tmp_path / "c.png")[1, 1] == CELEBAMASK_HQ.index("r_brow")


def test_palette_png_with_foreign_palette_is_read_by_index(tmp_path):
    labels = label_array()
    img = Image.fromarray(labels)
    img.putpalette([v for k in range(256) for v in (k, 255 - k, 7)])  # VOC style: display only
    img.save(tmp_path / "voc.png")
    assert np.array_equal(read_mask(tmp_path / "voc.png").numpy(), labels)


def test_quantised_colour_mask_is_read_by_colour(tmp_path):
    labels = label_array()
    img = Image.fromarray(colorize(labels)).quantize(colors=32, method=Image.Quantize.MAXCOVERAGE)
    assert not np.array_equal(np.asarray(img), labels)  # the indices are not the labels
    img.save(tmp_path / "q.png")
    assert np.array_equal(read_mask(tmp_path / "q.png").numpy(), labels)


def test_grey_rgb_label_map_and_16bit_labels_are_accepted(tmp_path):
    labels = label_array()
    Image.fromarray(np.repeat(labels[..., None], 3, axis=2)).save(tmp_path / "grey.png")
    assert np.array_equal(read_mask(tmp_path / "grey.png").numpy(), labels)
    Image.fromarray(labels.astype(np.uint16)).save(tmp_path / "l16.png")
    assert np.array_equal(read_mask(tmp_path / "l16.png").numpy(), labels)


def test_mask_resize_is_nearest(tmp_path):
    labels = np.zeros((512, 512), np.uint8)
    labels[:, 256:] = 13
    labels[100:300:2, 100:300:2] = 4  # a checkerboard: any blending filter would invent labels
    save_mask(labels, tmp_path / "m.png")
    small = read_mask(tmp_path / "m.png", size=256)
    expected = Image.fromarray(labels).resize((256, 256), Image.Resampling.NEAREST)
    assert small.shape == (256, 256)
    assert set(small.unique().tolist()) <= {0, 4, 13}
    assert np.array_equal(small.numpy(), np.asarray(expected))


def test_read_mask_refuses_off_palette_colours_naming_an_example(tmp_path):
    rgb = colorize(label_array())
    rgb[3, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    msg = expect_error(read_mask, tmp_path / "bad.png", "colour", "1 pixel(s)", "lossless")
    assert "(1, 2, 3)" in msg and "x=5" in msg and "y=3" in msg


def test_read_mask_refuses_jpeg(tmp_path):
    Image.fromarray(colorize(label_array())).save(tmp_path / "m.jpg")
    expect_error(read_mask, tmp_path / "m.jpg", "jpeg", "lossless png")


def test_read_mask_refuses_labels_beyond_the_class_count(tmp_path):
    labels = label_array()
    labels[2, 2] = 25
    Image.fromarray(labels).save(tmp_path / "big.png")
    expect_error(read_mask, tmp_path / "big.png", "25", "< 19", "classes")
    small_set = label_set_from_config(["bg", "a", "b"])
    expect_error(lambda p: read_mask(p, small_set), tmp_path / "big.png", "< 3")


@pytest.mark.parametrize(
    "name, make, keywords",
    [
        ("rgba.png", lambda p: Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(p), ["alpha"]),
        ("rgb48.png", lambda p: write_png16(p, np.zeros((4, 4, 3), np.uint16)), ["16-bit"]),
        ("nonsquare.png", lambda p: Image.new("L", (20, 30)).save(p), ["aspect"]),
        ("text.png", lambda p: p.write_bytes(b"\x89PNG garbage"), ["cannot read"]),
    ],
)
def test_read_mask_refuses_bad_files_with_one_line(tmp_path, name, make, keywords):
    path = tmp_path / name
    make(path)
    expect_error(lambda p: read_mask(p, size=16), path, *keywords)


# ---------------------------------------------------------------- pairs


def test_read_pair_resizes_a_matching_pair_and_says_so(tmp_path):
    Image.fromarray(rgb_array(32, 32)).save(tmp_path / "i.png")
    save_mask(label_array(32, 32), tmp_path / "m.png")
    notes = []
    image, labels = read_pair(tmp_path / "i.png", tmp_path / "m.png", size=16, notes=notes)
    assert image.shape == (3, 16, 16) and labels.shape == (16, 16)
    assert labels.dtype == torch.int64
    assert len(notes) == 1 and all(s in notes[0] for s in ("i.png", "m.png", "32x32", "16x16"))
    read_pair(tmp_path / "i.png", tmp_path / "m.png", size=32, notes=notes)
    assert len(notes) == 1  # nothing resized, nothing said


@pytest.mark.parametrize("size", [16, None])
def test_read_pair_refuses_a_mask_of_another_size_naming_both_files(tmp_path, size):
    """A 64 px mask for a 32 px image has the right aspect but is almost always another
    image's mask: resizing it silently would render garbage."""
    Image.fromarray(rgb_array(32, 32)).save(tmp_path / "face.png")
    save_mask(label_array(64, 64), tmp_path / "labels.png")
    with pytest.raises(InputError) as e:
        read_pair(tmp_path / "face.png", tmp_path / "labels.png", size=size)
    msg = str(e.value)
    assert "\n" not in msg and "same size" in msg
    assert "face.png is 32x32" in msg and "labels.png is 64x64" in msg


def test_read_pair_of_a_dataset_accepts_labels_at_another_resolution(tmp_path):
    """CelebAMask-HQ keeps 1024 px images with 512 px labels: datasets opt in with scaled_mask."""
    Image.fromarray(rgb_array(32, 32)).save(tmp_path / "i.png")
    save_mask(label_array(64, 64), tmp_path / "m.png")
    image, labels = read_pair(tmp_path / "i.png", tmp_path / "m.png", size=16, scaled_mask=True)
    assert image.shape == (3, 16, 16) and labels.shape == (16, 16)


def test_read_pair_refuses_mismatched_aspect_naming_both_files(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "face.png")
    Image.new("L", (32, 16)).save(tmp_path / "labels.png")
    with pytest.raises(InputError) as e:
        read_pair(tmp_path / "face.png", tmp_path / "labels.png", size=16, scaled_mask=True)
    msg = str(e.value)
    assert "face.png" in msg and "labels.png" in msg and "aspect" in msg
    assert "32x32" in msg and "32x16" in msg


def test_read_mask_says_when_it_resizes(tmp_path):
    save_mask(label_array(64, 64), tmp_path / "m.png")
    notes = []
    assert read_mask(tmp_path / "m.png", size=16, notes=notes).shape == (16, 16)
    assert notes == [f"{tmp_path / 'm.png'}: resized from 64x64 to 16x16 (nearest)"]
    read_mask(tmp_path / "m.png", size=64, notes=notes)
    assert len(notes) == 1


def test_read_pair_without_size_needs_equal_sizes(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "face.png")
    Image.new("L", (16, 16)).save(tmp_path / "labels.png")
    with pytest.raises(InputError, match="same size"):
        read_pair(tmp_path / "face.png", tmp_path / "labels.png", size=None)
    Image.new("L", (32, 32)).save(tmp_path / "labels32.png")
    image, labels = read_pair(tmp_path / "face.png", tmp_path / "labels32.png", size=None)
    assert image.shape == (3, 32, 32) and labels.shape == (32, 32)


# ---------------------------------------------------------------- writing


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 5).expand(3, 1, 5)
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 128, 255, 255]
    assert to_uint8(x[None]).shape == (1, 1, 5, 3)


def test_save_mask_refuses_lossy_formats(tmp_path):
    with pytest.raises(InputError, match="png"):
        save_mask(label_array(), tmp_path / "m.jpg")


def test_save_grid_lays_out_rows_of_different_lengths(tmp_path):
    image = torch.rand(3, 32, 32) * 2 - 1
    labels = torch.from_numpy(label_array(32, 32)).long()
    rows = [[image, mask_to_rgb(labels), labels], [rgb_array(32, 32)]]
    save_grid(
        rows, tmp_path / "g.png", row_labels=["first", "second"], col_labels=["image", "mask", "labels"], title="a grid"
    )
    grid = Image.open(tmp_path / "g.png")
    assert grid.mode == "RGB"
    w, h = grid.size
    assert 3 * 32 < w < 3 * 32 + 200 and 2 * 32 < h < 2 * 32 + 120
    pixels = np.asarray(grid)
    assert tuple(pixels[-1, -1]) == (255, 255, 255)  # white background, second row is short
    colours = {tuple(c) for c in pixels.reshape(-1, 3)}
    assert set(CELEBAMASK_HQ.palette[1:]) & colours  # the label maps were colourised


def test_save_grid_refuses_bad_cells_and_label_counts(tmp_path):
    with pytest.raises(InputError):
        save_grid([[np.zeros((4, 4), np.float32)]], tmp_path / "g.png")
    with pytest.raises(InputError, match="row_labels"):
        save_grid([[rgb_array()]], tmp_path / "g.png", row_labels=["a", "b"])
