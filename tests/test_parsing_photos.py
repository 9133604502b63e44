"""Parsing real photos: the installed BiSeNet weights and dlib landmarks on the public-domain
astronaut (scikit-image) and Grace Hopper (matplotlib) photos; `scadm parse` and `--mask auto`.

Needs `make parse-extras` (the parse and photos extras plus two --no-deps packages); skipped
otherwise.
"""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from scadm.cli import main
from scadm.errors import InputError, ScadmWarning
from scadm.io import read_mask
from scadm.labels import CELEBAMASK_HQ
from scadm.sample_photos import missing_photo_modules, write_sample_photos

MISSING = missing_photo_modules()
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"parse extras not installed ({', '.join(MISSING)}): run `make parse-extras`"
)
FACE = ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "l_lip", "eye_g")
EYE_TOLERANCE = 12  # pixels at 512: the landmark centre vs. the parsed eye's centroid


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_sample_photos(root)
    return root


@pytest.fixture(scope="module")
def parsed(photos):
    from scadm.parsing import parse_photo

    return {name: parse_photo(photos / name) for name in ("astronaut.png", "grace_hopper.jpg")}


def _share(labels, names):
    return np.isin(labels, [CELEBAMASK_HQ.index(n) for n in names]).mean()


def _centroid(labels, name):
    ys, xs = np.nonzero(labels == CELEBAMASK_HQ.index(name))
    return np.array([xs.mean(), ys.mean()]) if len(xs) else None


def _in_crop(point, quad, size=512):
    """Where an image point lands in the aligned crop of `quad`."""
    x_axis, y_axis = quad[3] - quad[0], quad[1] - quad[0]
    rel = point - quad[0]
    return np.array([rel @ x_axis / (x_axis @ x_axis), rel @ y_axis / (y_axis @ y_axis)]) * size


def test_real_weights_load_strictly_and_match_the_known_file():
    from scadm.parsing.weights import BISENET_SHA256, find_bisenet_weights, load_bisenet, sha256_of

    assert sha256_of(find_bisenet_weights()) == BISENET_SHA256
    assert not load_bisenet().training


def test_astronaut_mask_is_a_face_with_eyes_where_the_landmarks_are(photos, parsed):
    from scadm.parsing.align import quad_for
    from scadm.parsing.landmarks import detect_landmarks

    rgb, labels = parsed["astronaut.png"]
    assert rgb.shape == (512, 512, 3) and labels.shape == (512, 512)
    assert _share(labels, (*FACE, "hair")) > 0.45
    assert _share(labels, ("hair",)) > 0.15 and _share(labels, ("skin",)) > 0.1
    found = detect_landmarks(np.asarray(Image.open(photos / "astronaut.png").convert("RGB")))
    quad = quad_for(found)
    # CelebAMask-HQ's l_eye is the subject's left eye: the one on the image's right
    for name, point in (("r_eye", found.eye_left), ("l_eye", found.eye_right)):
        centroid = _centroid(labels, name)
        assert centroid is not None, f"no {name} in the astronaut mask"
        assert np.linalg.norm(centroid - _in_crop(point, quad)) < EYE_TOLERANCE, name


def test_grace_hopper_mask_has_her_glasses_and_hat(parsed):
    _rgb, labels = parsed["grace_hopper.jpg"]
    assert _share(labels, ("eye_g",)) > 0.03 and _share(labels, ("hat",)) > 0.08
    glasses, nose = _centroid(labels, "eye_g"), _centroid(labels, "nose")
    assert glasses[1] < nose[1] and abs(glasses[0] - 256) < 30
    assert _share(labels, FACE) > 0.2


def test_parse_command_writes_crop_labels_and_overlay(photos, parsed, tmp_path, capsys):
    assert main(["parse", str(photos / "astronaut.png"), "--out", str(tmp_path)]) == 0
    assert "astronaut_overlay.png" in capsys.readouterr().out
    rgb, labels = parsed["astronaut.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "astronaut_aligned.png")), rgb)
    assert np.array_equal(read_mask(tmp_path / "astronaut_labels.png").numpy(), labels)
    assert Image.open(tmp_path / "astronaut_overlay.png").size == (512, 512)


def test_parse_command_reports_a_photo_without_a_face(tmp_path, capsys):
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    assert main(["parse", str(tmp_path / "grey.png"), "--out", str(tmp_path)]) == 2
    assert "grey.png: no face found" in capsys.readouterr().err


def _scaled(photos, tmp_path, scale):
    grace = Image.open(photos / "grace_hopper.jpg")  # her face's crop square: 327 px
    path = tmp_path / f"grace_{scale}.png"
    grace.resize((round(grace.width * scale), round(grace.height * scale)), Image.Resampling.LANCZOS).save(path)
    return path


def _no_parser(x, size):
    return torch.zeros(1, size, size, dtype=torch.int64)


def test_a_small_face_is_announced_and_a_tiny_one_refused(photos, tmp_path):
    from scadm.parsing import parse_photo

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_photo(_scaled(photos, tmp_path, 2), parser=_no_parser)  # 654 px: no upsampling, no notice
    small = _scaled(photos, tmp_path, 0.5)
    with pytest.warns(ScadmWarning, match=r"grace_0\.5\.png: the face's crop square is 16\d px .* upsampled 3\.\dx"):
        parse_photo(small, parser=_no_parser)
    tiny = _scaled(photos, tmp_path, 0.15)
    with pytest.raises(InputError, match=r"grace_0\.15\.png: the face's crop square is 5\d px .* at least 64 px"):
        parse_photo(tiny, parser=_no_parser)


def test_parse_command_announces_an_upsampled_face_on_one_line(photos, tmp_path, capsys):
    assert main(["parse", str(_scaled(photos, tmp_path, 0.5)), "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scadm parse: warning: ") and "upsampled 3." in err[0]


def test_edit_with_an_automatic_mask(photos, tiny_pipe, tmp_path, capsys):
    tiny_pipe.save_pretrained(tmp_path / "model")
    assert (
        main(
            [
                "edit",
                "--model",
                str(tmp_path / "model"),
                "--image",
                str(photos / "astronaut.png"),
                "--mask",
                "auto",
                "--steps",
                "1",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert (tmp_path / "out" / "astronaut_reconstruct_grid.png").is_file()
    assert "scadm edit: warning: " in capsys.readouterr().err  # the same notice: her face is 174 px


def test_web_editor_masks_an_uploaded_photo_automatically(photos):
    from scadm.labels import LabelSet
    from scadm.serve.editor import auto_mask_upload

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the page shows the small-face notice; the server log gets nothing
        face, notes = auto_mask_upload(photos / "astronaut.png", CELEBAMASK_HQ, 64, "target")
    assert face.image.shape == (64, 64, 3) and face.image.dtype == np.uint8 and face.labels.shape == (64, 64)
    present = {CELEBAMASK_HQ.names[k] for k in np.unique(face.labels)}
    assert {"skin", "hair", "nose"} <= present and "automatic" in face.name
    assert notes[1].startswith("target image astronaut.png: the face's crop square is 174 px in the photo")
    other = LabelSet(names=("bg", "person"), palette=((0, 0, 0), (255, 255, 255)))
    with pytest.raises(InputError, match="CelebAMask-HQ"):
        auto_mask_upload(photos / "astronaut.png", other, 64, "target")
