"""A photo model's demo and editor examples: `scadm demo --model realistic` edits the two
public-domain photos (auto-masked), `scadm serve --model realistic` offers them as its examples.

The realistic model need not be installed: the demo model stands in for it, linked into a temporary
asset root under the realistic name (its domain, not its weights, is what these tests exercise).
The tests that parse photos need `make parse-extras` and are skipped without it.
"""

import numpy as np
import pytest

from scadm import sample_photos, shipped
from scadm.cli import main
from scadm.labels import CELEBAMASK_HQ
from scadm.shipped import DOMAINS, SHIPPED, model_domain, resolve_model

MISSING = sample_photos.missing_photo_modules()
needs_photos = pytest.mark.skipif(
    bool(MISSING), reason=f"parse extras not installed ({', '.join(MISSING)}): run `make parse-extras`"
)


@pytest.fixture()
def realistic(tmp_path, monkeypatch):
    """An asset root whose 'realistic' model is the demo model's networks (linked, not copied)."""
    demo = resolve_model("demo")
    folder = tmp_path / "assets" / SHIPPED["realistic"].folder
    folder.mkdir(parents=True)
    for item in demo.iterdir():
        (folder / item.name).symlink_to(item)
    monkeypatch.setattr(shipped, "ASSETS", tmp_path / "assets")
    return folder


def test_every_shipped_model_declares_a_domain_and_other_folders_are_procedural(realistic, tmp_path):
    assert {m.domain for m in SHIPPED.values()} <= set(DOMAINS)
    assert SHIPPED["demo"].domain == "procedural" and SHIPPED["realistic"].domain == "photos"
    assert model_domain(resolve_model("realistic")) == "photos"
    assert model_domain(tmp_path) == "procedural", "a user folder is procedural (shipped.model_domain)"


def test_the_photo_demo_without_the_parse_extras_is_one_line(realistic, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sample_photos, "missing_photo_modules", lambda: ["dlib"])
    assert main(["demo", "--model", "realistic", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "(dlib not installed): run `make parse-extras`" in err
    assert not (tmp_path / "out").exists()


def test_serve_with_a_photo_model_refuses_to_start_without_the_parse_extras(realistic, monkeypatch):
    from scadm.errors import InputError
    from scadm.serve.examples import Examples

    monkeypatch.setattr(sample_photos, "missing_photo_modules", lambda: ["skimage"])
    with pytest.raises(
        InputError,
        match=r"^the editor of a photo model \(its examples\) aligns and parses two photos.*make parse-extras",
    ):
        Examples("photos", 64, CELEBAMASK_HQ)
    assert Examples("procedural", 64, CELEBAMASK_HQ).choices[0] == "face 0", "procedural examples need nothing"


def test_the_photo_demos_edits_keep_the_photo_outside_the_edited_part(tiny_pipe, one_thread):
    """Two procedural faces stand in for the parsed photos (no parser needed): every edit must keep
    the face's own pixels beyond the preserve margin around its part; a plain edit re-renders them."""
    import torch

    from scadm.data.synthetic import render_face
    from scadm.io import to_uint8
    from scadm.photo_demo import RANDOM_HAIR, SWAPS, render_photo_edits
    from scadm.regions import default_margin, distance
    from scadm.settings import RenderSettings

    faces = {}
    for name, seed in (("a", 1), ("b", 2)):
        face = render_face(seed, 64)
        faces[name] = (torch.from_numpy(face.image).permute(2, 0, 1).float() / 127.5 - 1, torch.from_numpy(face.labels))
    rendered = render_photo_edits(tiny_pipe, faces, RenderSettings(steps=2))
    margin = default_margin(64)
    for name, (x, labels) in faces.items():
        photo, images = to_uint8(x), rendered[name]
        assert len(images) == 1 + len(SWAPS) + RANDOM_HAIR
        assert (images[0] != photo).any(), "the reconstruction is a plain render, not the photo"
        for part, image in zip((*SWAPS, *["hair"] * RANDOM_HAIR), images[1:], strict=True):
            region = np.isin(labels.numpy(), CELEBAMASK_HQ.parse_parts(part))
            far = distance(torch.from_numpy(region)[None], margin)[0].numpy() > margin
            assert far.any() and (image[far] == photo[far]).all(), f"{name}, {part}: the rest of the face is kept"
            assert (image[region] != photo[region]).any(), f"{name}, {part}: the part itself is edited"


@needs_photos
def test_demo_of_a_photo_model_edits_the_two_photos(realistic, tmp_path, capsys):
    from PIL import Image

    assert main(["demo", "--model", "realistic", "--steps", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for swap in ("hair Hopper -> astronaut", "lips Hopper -> astronaut", "hair astronaut -> Hopper"):
        assert f"swap {swap}" in out
    assert "public domain" in out and "CelebAMask-HQ: non-commercial" in out
    assert "edits keep the rest of the photo (scadm edit --preserve); change against the aligned photo" in out
    width, height = Image.open(tmp_path / "demo.png").size
    assert height > 2 * 128 and width > 7 * 128, "two rows of seven 128 px cells"


@needs_photos
def test_a_photo_model_serves_the_photos_auto_masked(realistic):
    from scadm.serve.app import Models, build_app

    app = build_app(Models(resolve_model("realistic"), "cpu"))
    blocks = {b.elem_id: b for b in app.blocks.values() if getattr(b, "elem_id", None)}
    assert blocks["auto-mask"].value is True, "photos without a mask: on for a photo model"
    assert [c[0] for c in blocks["target-example"].choices] == ["astronaut", "Hopper"]
    assert blocks["target-example"].value == "astronaut" and blocks["reference-example"].value == "Hopper"
    assert not blocks["target-new"].visible, "no random procedural face for a photo model"

    from scadm.serve.examples import Examples

    face, choice = Examples("photos", 64, CELEBAMASK_HQ).face("Hopper")
    assert choice == "Hopper" and face.image.shape == (64, 64, 3) and face.labels.shape == (64, 64)
    present = set(np.unique(face.labels))
    assert {CELEBAMASK_HQ.index(n) for n in ("skin", "nose", "u_lip", "hat")} <= present, "her face and cap"
