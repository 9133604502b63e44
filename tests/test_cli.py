import pytest
import torch
from PIL import Image

from authors_layout import authors_checkpoint, authors_yaml
from scadm.cli import main
from tiny_models import face
from scadm.io import save_image, save_mask
from scadm.labels import CELEBAMASK_HQ


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_pipe):
    """The tiny pipeline written in the authors' layout, then converted by `scadm convert`."""
    root = tmp_path_factory.mktemp("cli")
    (root / "authors.yaml").write_text(authors_yaml(tiny_pipe))
    torch.save(authors_checkpoint(tiny_pipe), root / "authors.ckpt")
    assert main(["convert", "--config", str(root / "authors.yaml"), "--ckpt", str(root / "authors.ckpt"),
                 "--out", str(root / "model")]) == 0
    for name, seed in (("target", 1), ("reference", 2)):
        image, labels = face(seed=seed)
        save_image(image, root / f"{name}.png")
        save_mask(labels, root / f"{name}_mask.png")
    save_mask(face(seed=2)[1], root / "reference_colour_mask.png", label_set=CELEBAMASK_HQ, color=True)
    return root


def _edit(root, *extra):
    return main(["edit", "--model", str(root / "model"), "--image", str(root / "target.png"),
                 "--mask", str(root / "target_mask.png"), "--steps", "2", "--out", str(root / "out"), *extra])


@pytest.mark.parametrize("mode, extra", [
    ("reconstruct", []),
    ("swap", ["--reference", "reference.png", "--reference-mask", "reference_colour_mask.png"]),
    ("partial", ["--reference", "reference.png", "--reference-mask", "reference_mask.png", "--parts", "hair,l_eye"]),
    ("mix", ["--parts", "lips"]),
    ("random", ["--num", "2"]),
    ("interpolate", ["--reference", "reference.png", "--reference-mask", "reference_mask.png",
                     "--alphas", "0,1", "--edited-mask", "reference_mask.png"]),
])
def test_edit_modes_end_to_end(converted, mode, extra):
    extra = [str(converted / e) if e.endswith(".png") else e for e in extra]
    assert _edit(converted, "--mode", mode, *extra) == 0
    grid = converted / "out" / f"target_{mode}_grid.png"
    assert grid.is_file() and Image.open(grid).size[0] > 64


def test_edit_preserve_keeps_the_target_outside_the_parts(converted):
    import numpy as np

    from scadm.regions import distance

    assert _edit(converted, "--mode", "partial", "--reference", str(converted / "reference.png"),
                 "--reference-mask", str(converted / "reference_mask.png"), "--parts", "hair",
                 "--preserve", "4", "--out", str(converted / "kept")) == 0
    result = np.asarray(Image.open(converted / "kept" / "target_partial_0_seed0.png"))
    target = np.asarray(Image.open(converted / "target.png"))
    labels = face(seed=1)[1]
    outside = (distance((labels == CELEBAMASK_HQ.names.index("hair"))[None], 4)[0] > 4).numpy()
    assert outside.mean() > 0.3 and np.array_equal(result[outside], target[outside])
    assert not np.array_equal(result, target)


def test_sample_writes_one_image_per_seed(converted):
    assert main(["sample", str(converted / "target_mask.png"), "--model", str(converted / "model"),
                 "--num", "2", "--steps", "2", "--seed", "5", "--out", str(converted / "s")]) == 0
    assert {p.name for p in (converted / "s").iterdir()} == {
        "target_mask_seed5.png", "target_mask_seed6.png", "target_mask_grid.png"}


@pytest.mark.parametrize("args, needle", [
    (["--mode", "partial", "--reference", "reference.png", "--reference-mask", "reference_mask.png"], "--parts"),
    (["--mode", "swap"], "reference"),
    (["--mode", "partial", "--parts", "tail", "--reference", "reference.png",
      "--reference-mask", "reference_mask.png"], "tail"),
    (["--reference", "reference.png"], "--reference-mask"),
    (["--edited-mask", "missing.png"], "missing.png"),
    (["--preserve", "-3"], "--preserve"),
])
def test_bad_edit_arguments_give_one_line(converted, capsys, args, needle):
    args = [str(converted / a) if a.endswith(".png") else a for a in args]
    assert _edit(converted, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_grayscale_target_is_refused(converted, capsys):
    Image.new("L", (64, 64)).save(converted / "gray.png")
    code = main(["edit", "--model", str(converted / "model"), "--image", str(converted / "gray.png"),
                 "--mask", str(converted / "target_mask.png"), "--out", str(converted / "out")])
    assert code == 2 and "gray.png" in capsys.readouterr().err


def test_wrong_model_folder(tmp_path, converted, capsys):
    assert main(["sample", str(converted / "target_mask.png"), "--model", str(tmp_path)]) == 2
    assert "not a scadm model folder" in capsys.readouterr().err


def test_demo_writes_its_figure_and_summary(converted, tmp_path, capsys):
    assert main(["demo", "--model", str(converted / "model"), "--steps", "2", "--out", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "demo.png").size[0] > 200
    summary = capsys.readouterr().out
    assert "reconstruction: mean per-part colour error" in summary and "swap r_eye" in summary


def test_help_mentions_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "sample", "edit", "convert"):
        assert command in text
