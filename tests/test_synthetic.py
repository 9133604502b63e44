"""The procedural face domain: deterministic, exact labels, styles that explain the pixels."""

import numpy as np
import pytest
import torch

from scadm.data.synthetic import (
    CLASS_NAMES,
    EYE_COLOUR_MATCH_RATE,
    OPTIONAL_PART_RATES,
    PartStyle,
    SyntheticFaces,
    render_face,
    swap_parts,
)
from scadm.data.synthetic_raster import TEXTURE_CONTRAST
from scadm.errors import InputError

NUM_FACES = 300
K = {name: k for k, name in enumerate(CLASS_NAMES)}


@pytest.fixture(scope="module")
def faces():
    return [render_face(seed) for seed in range(NUM_FACES)]


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose whole 3x3 neighbourhood is in `mask`."""
    h, w = mask.shape
    pad = np.pad(mask, 1)
    out = mask.copy()
    for dy in range(3):
        for dx in range(3):
            out &= pad[dy : dy + h, dx : dx + w]
    return out


def _dilate(mask: np.ndarray) -> np.ndarray:
    return ~_erode(~mask)


def test_same_seed_renders_identical_bytes_and_different_seeds_differ():
    a, b, c = render_face(11), render_face(11), render_face(12)
    assert a.image.dtype == np.uint8 and a.image.shape == (64, 64, 3)
    assert a.labels.dtype == np.int64 and a.labels.shape == (64, 64)
    assert a.image.tobytes() == b.image.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    assert a.styles == b.styles
    assert a.image.tobytes() != c.image.tobytes() and a.labels.tobytes() != c.labels.tobytes()


def test_every_class_appears_within_300_faces(faces):
    seen = set()
    for face in faces:
        seen.update(np.unique(face.labels).tolist())
    assert seen == set(range(len(CLASS_NAMES)))


def test_optional_parts_appear_at_their_configured_rates(faces):
    for name, rate in OPTIONAL_PART_RATES.items():
        shown = np.mean([(face.labels == K[name]).any() for face in faces])
        assert abs(shown - rate) < 0.07, (name, shown, rate)


def test_small_parts_stay_visible_at_64_px(faces):
    eye_boxes, lip_heights = [], []
    for face in faces:
        for part in ("l_eye", "r_eye"):
            rows, cols = np.nonzero(face.labels == K[part])
            eye_boxes.append((np.ptp(cols) + 1, np.ptp(rows) + 1) if rows.size else (0, 0))
        for part in ("u_lip", "l_lip"):
            lip_heights.append((face.labels == K[part]).sum(axis=0).max())
    eye_boxes = np.array(eye_boxes)
    assert np.mean((eye_boxes[:, 0] >= 8) & (eye_boxes[:, 1] >= 5)) > 0.95
    assert np.min(lip_heights) >= 2 and np.median(lip_heights) >= 3


def test_styles_are_entangled_like_real_faces(faces):
    styles = [face.styles for face in faces]
    same_eyes = np.mean([s["l_eye"].colour == s["r_eye"].colour for s in styles])
    assert abs(same_eyes - EYE_COLOUR_MATCH_RATE) < 0.06
    for s in styles:  # nose and ears follow the skin, the nose a little darker
        skin = np.array(s["skin"].colour, float)
        assert np.all(np.array(s["nose"].colour) <= skin + 1)
        assert np.abs(np.array(s["l_ear"].colour) - skin).max() <= 0.1 * skin.max() + 2
    hair = np.array([np.mean(s["hair"].colour) for s in styles])
    brow = np.array([np.mean(s["l_brow"].colour) for s in styles])
    assert np.corrcoef(hair, brow)[0, 1] > 0.6


def _explained(face, name: str) -> np.ndarray:
    """For each interior pixel of `name`: is its colour the part's base colour times a factor
    that the part's shading and texture allow (within 12/255)?"""
    style = face.styles[name]
    pixels = face.image[_erode(face.labels == K[name])].astype(float)
    base = np.array(style.colour, float)
    contrast = TEXTURE_CONTRAST if style.texture != "none" else 0.0
    lo, hi = (1 - style.shading) * (1 - contrast) - 0.02, 1 + contrast + 0.02
    factor = np.clip(pixels @ base / max(base @ base, 1.0), lo, hi)
    return np.abs(pixels - factor[:, None] * base).max(axis=1) <= 12


def test_interior_pixels_match_their_part_style():
    # Parts with inner details (iris and sclera, teeth, nostrils, ear folds, the shadow under
    # the chin) are only partly their base colour; all others are explained almost entirely.
    least = {"l_eye": 0.25, "r_eye": 0.25, "mouth": 0.35, "nose": 0.7, "l_ear": 0.4, "r_ear": 0.4, "neck": 0.45}
    explained = {name: [] for name in CLASS_NAMES}
    for seed in range(40):
        face = render_face(seed, 128)
        for name in CLASS_NAMES:
            explained[name].extend(_explained(face, name).tolist())
    for name, flags in explained.items():
        assert len(flags) > 20, name
        assert np.mean(flags) >= least.get(name, 0.95), (name, np.mean(flags))


def test_label_maps_agree_across_resolutions():
    for seed in range(6):
        small = render_face(seed, 64).labels
        # Pixel 3i + 1 at 192 px has exactly the centre of pixel i at 64 px.
        assert np.array_equal(render_face(seed, 192).labels[1::3, 1::3], small)
        assert np.mean(render_face(seed, 256).labels[2::4, 2::4] == small) > 0.97


def test_style_override_changes_only_that_part():
    target, reference = render_face(5), render_face(6)
    for name in ("l_eye", "hair", "u_lip"):
        new_style = PartStyle(colour=tuple(255 - c for c in target.styles[name].colour))
        edited = render_face(5, style_overrides={name: new_style})
        assert np.array_equal(edited.labels, target.labels)
        region = target.labels == K[name]
        outside = ~_dilate(region)
        assert np.array_equal(edited.image[outside], target.image[outside]), name
        assert np.abs(edited.image[region].astype(int) - target.image[region]).mean() > 20, name
    swapped = swap_parts(target, reference, ["l_eye"])
    assert swapped.styles["l_eye"] == reference.styles["l_eye"]
    assert swapped.styles["r_eye"] == target.styles["r_eye"]
    assert np.array_equal(swapped.labels, target.labels)


def test_dataset_items_are_normalised_and_deterministic():
    data = SyntheticFaces(4, size=64, seed=3)
    item = data[2]
    assert len(data) == 4 and item["index"] == 2
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["labels"].shape == (64, 64) and item["labels"].dtype == torch.int64
    assert item["image"].min() >= -1.0 and item["image"].max() <= 1.0
    assert torch.equal(item["image"], data[2]["image"])
    face = render_face(data.face_seed(2))
    assert torch.equal(item["labels"], torch.from_numpy(face.labels))
    assert not torch.equal(item["image"], SyntheticFaces(4, seed=4)[2]["image"])


@pytest.mark.parametrize(
    "call",
    [
        lambda: render_face(-1),
        lambda: render_face(1, size=8),
        lambda: render_face(1, style_overrides={"beard": PartStyle((0, 0, 0))}),
        lambda: PartStyle((0, 0, 0), texture="plaid"),
        lambda: SyntheticFaces(-2),
    ],
)
def test_bad_arguments_raise_input_error(call):
    with pytest.raises(InputError):
        call()
