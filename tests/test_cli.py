import ast
import json
from pathlib import Path

import pytest
import torch
from authors_layout import authors_checkpoint, authors_yaml
from PIL import Image
from tiny_models import face

from scadm.cli import main
from scadm.cli.main import build_parser
from scadm.data.synthetic import render_face
from scadm.io import save_image, save_mask
from scadm.labels import CELEBAMASK_HQ


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_pipe):
    """The tiny pipeline written in the authors' layout, then converted by `scadm convert`."""
    root = tmp_path_factory.mktemp("cli")
    (root / "authors.yaml").write_text(authors_yaml(tiny_pipe))
    torch.save(authors_checkpoint(tiny_pipe), root / "authors.ckpt")
    assert (
        main(
            [
                "convert",
                "--config",
                str(root / "authors.yaml"),
                "--ckpt",
                str(root / "authors.ckpt"),
                "--out",
                str(root / "model"),
            ]
        )
        == 0
    )
    for name, seed in (("target", 1), ("reference", 2)):
        image, labels = face(seed=seed)
        save_image(image, root / f"{name}.png")
        save_mask(labels, root / f"{name}_mask.png")
    save_mask(face(seed=2)[1], root / "reference_colour_mask.png", label_set=CELEBAMASK_HQ, color=True)
    return root


def _edit(root, *extra):
    return main(
        [
            "edit",
            "--model",
            str(root / "model"),
            "--image",
            str(root / "target.png"),
            "--mask",
            str(root / "target_mask.png"),
            "--steps",
            "2",
            "--out",
            str(root / "out"),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "mode, extra",
    [
        ("reconstruct", []),
        ("swap", ["--reference", "reference.png", "--reference-mask", "reference_colour_mask.png"]),
        (
            "partial",
            ["--reference", "reference.png", "--reference-mask", "reference_mask.png", "--parts", "hair,l_eye"],
        ),
        ("mix", ["--parts", "lips"]),
        ("random", ["--num", "2"]),
        (
            "interpolate",
            [
                "--reference",
                "reference.png",
                "--reference-mask",
                "reference_mask.png",
                "--alphas",
                "0,1",
                "--edited-mask",
                "reference_mask.png",
            ],
        ),
    ],
)
def test_edit_modes_end_to_end(converted, mode, extra):
    extra = [str(converted / e) if e.endswith(".png") else e for e in extra]
    assert _edit(converted, "--mode", mode, *extra) == 0
    grid = converted / "out" / f"target_{mode}_grid.png"
    assert grid.is_file() and Image.open(grid).size[0] > 64


def test_edit_preserve_keeps_the_target_outside_the_parts(converted):
    import numpy as np

    from scadm.regions import distance

    assert (
        _edit(
            converted,
            "--mode",
            "partial",
            "--reference",
            str(converted / "reference.png"),
            "--reference-mask",
            str(converted / "reference_mask.png"),
            "--parts",
            "hair",
            "--preserve",
            "4",
            "--out",
            str(converted / "kept"),
        )
        == 0
    )
    result = np.asarray(Image.open(converted / "kept" / "target_partial_0_seed0.png"))
    target = np.asarray(Image.open(converted / "target.png"))
    labels = face(seed=1)[1]
    outside = (distance((labels == CELEBAMASK_HQ.names.index("hair"))[None], 4)[0] > 4).numpy()
    assert outside.mean() > 0.3 and np.array_equal(result[outside], target[outside])
    assert not np.array_equal(result, target)


def test_sample_writes_one_image_per_seed(converted):
    assert (
        main(
            [
                "sample",
                str(converted / "target_mask.png"),
                "--model",
                str(converted / "model"),
                "--num",
                "2",
                "--steps",
                "2",
                "--seed",
                "5",
                "--out",
                str(converted / "s"),
            ]
        )
        == 0
    )
    assert {p.name for p in (converted / "s").iterdir()} == {
        "target_mask_seed5.png",
        "target_mask_seed6.png",
        "target_mask_grid.png",
    }


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mode", "partial", "--reference", "reference.png", "--reference-mask", "reference_mask.png"], "--parts"),
        (["--mode", "swap"], "reference"),
        (
            [
                "--mode",
                "partial",
                "--parts",
                "tail",
                "--reference",
                "reference.png",
                "--reference-mask",
                "reference_mask.png",
            ],
            "tail",
        ),
        (["--reference", "reference.png"], "--reference-mask"),
        (["--edited-mask", "missing.png"], "missing.png"),
        (["--preserve", "-3"], "--preserve"),
    ],
)
def test_bad_edit_arguments_give_one_line(converted, capsys, args, needle):
    args = [str(converted / a) if a.endswith(".png") else a for a in args]
    assert _edit(converted, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_grayscale_target_is_refused(converted, capsys):
    Image.new("L", (64, 64)).save(converted / "gray.png")
    code = main(
        [
            "edit",
            "--model",
            str(converted / "model"),
            "--image",
            str(converted / "gray.png"),
            "--mask",
            str(converted / "target_mask.png"),
            "--out",
            str(converted / "out"),
        ]
    )
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


# ---------------------------------------------------------------- render flags, settings files, devices


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _sample(root, *extra):
    return main(
        [
            "sample",
            str(root / "target_mask.png"),
            "--model",
            str(root / "model"),
            "--steps",
            "1",
            "--num",
            "1",
            "--out",
            str(root / "s"),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "flag, value, needle",
    [
        ("--device", "tpu:7", "--device tpu:7: not a device"),
        ("--seed", str(2**70), "--seed: must be an integer in 0..2**64-1, got 1180591620717411303424"),
        ("--seed", "-1", "--seed: must be an integer in 0..2**64-1, got -1"),
        ("--guidance", "nan", "--guidance: must be a finite number"),
        ("--guidance", "inf", "--guidance: must be a finite number"),
        ("--eta", "2", "--eta: must be a number in [0, 1]"),
        ("--steps", "0", "--steps: must be an integer in 1..1000"),
        ("--sampler", "euler", "--sampler: must be one of ddim, ddpm, dpm++, unipc"),
        ("--dtype", "fp8", "--dtype: must be one of"),
    ],
)
def test_bad_render_flags_are_one_line_naming_the_flag(converted, capsys, flag, value, needle):
    assert _edit(converted, flag, value) == 2
    assert needle in _one_line(capsys)
    assert _sample(converted, flag, value) == 2
    assert needle in _one_line(capsys)


@pytest.mark.parametrize("device, needle", [("tpu:7", "not a device"), ("cuda", "CUDA is not available")])
def test_evaluate_refuses_a_bad_device_in_one_line(capsys, device, needle):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["evaluate", "--protocol", "noise", "--no-fid", "--device", device]) == 2
    assert f"--device {device}: {needle}" in _one_line(capsys)


def test_cuda_without_cuda_is_refused_by_edit_and_sample(converted, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert _edit(converted, "--device", "cuda") == 2 and "CUDA is not available" in _one_line(capsys)
    assert _sample(converted, "--device", "cuda:1") == 2 and "CUDA is not available" in _one_line(capsys)


def _settings_file(path, **values):
    data = {
        "format": "scadm-edit-settings/1",
        "parts": {"hair": {"source": "random", "weight": 1.0}},
        "global_weight": 1.0,
        "steps": 2,
        "guidance": 1.2,
        "sampler": "ddim",
        "eta": 0.0,
        "seed": 11,
        "dtype": "fp32",
        **values,
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"stpes": 3}, "unknown key 'stpes'"),
        ({"steps": 0}, ": steps: must be an integer in 1..1000, got 0"),
        ({"seed": -1}, ": seed: must be an integer in 0..2**64-1, got -1"),
        ({"guidance": float("nan")}, ": guidance: must be a finite number"),
        ({"parts": {"unicorn": {"source": "random", "weight": 1}}}, ": parts.unicorn: unknown class 'unicorn'"),
        ({"parts": {"hair": {"source": "random", "weight": 2}}}, ": parts.hair.weight: must be a number in [0, 1]"),
    ],
)
def test_settings_file_errors_name_the_file_and_its_key(converted, tmp_path, capsys, values, needle):
    path = _settings_file(tmp_path / "my-settings.json", **values)
    assert _edit(converted, "--settings", str(path)) == 2
    err = _one_line(capsys)
    assert str(path) in err and needle in err
    assert "--steps" not in err and "--seed" not in err  # flags the user did not pass are not blamed


def test_flags_given_explicitly_win_over_the_settings_file_and_say_so(converted, tmp_path, capsys):
    path = _settings_file(tmp_path / "s.json")
    out = tmp_path / "out"
    assert (
        main(
            [
                "edit",
                "--model",
                str(converted / "model"),
                "--image",
                str(converted / "target.png"),
                "--mask",
                str(converted / "target_mask.png"),
                "--settings",
                str(path),
                "--seed",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "target_settings_0_seed5.png").is_file()
    assert f"note: --seed 5 replaces {path}'s seed 11" in capsys.readouterr().err
    assert (
        main(
            [
                "edit",
                "--model",
                str(converted / "model"),
                "--image",
                str(converted / "target.png"),
                "--mask",
                str(converted / "target_mask.png"),
                "--settings",
                str(path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "target_settings_0_seed11.png").is_file()
    assert "note:" not in capsys.readouterr().err  # no flag given: the file's values, silently


def test_unknown_parts_name_the_option_and_the_valid_names(converted, capsys):
    assert _edit(converted, "--mode", "mix", "--parts", "unicorn") == 2
    err = _one_line(capsys)
    assert err.startswith("scadm edit: error: --parts: unknown class 'unicorn'")
    assert "hair" in err and "eyes" in err


def test_edit_and_sample_default_to_the_shipped_model(tmp_path):
    labels = render_face(900_000_001, 64).labels
    save_mask(labels, tmp_path / "mask.png")
    save_image(torch.zeros(3, 64, 64), tmp_path / "face.png")
    assert main(["sample", str(tmp_path / "mask.png"), "--steps", "1", "--num", "1", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "mask_seed0.png").is_file()
    assert (
        main(
            [
                "edit",
                "--image",
                str(tmp_path / "face.png"),
                "--mask",
                str(tmp_path / "mask.png"),
                "--steps",
                "1",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    assert (tmp_path / "e" / "face_reconstruct_0_seed0.png").is_file()


def test_sample_edit_and_evaluate_share_one_set_of_render_flags():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    flags = {
        name: {o for a in commands[name]._actions for o in a.option_strings} for name in ("sample", "edit", "evaluate")
    }
    render = {"--steps", "--guidance", "--sampler", "--eta", "--seed", "--dtype", "--device"}
    for name, options in flags.items():
        assert render <= options, name
        assert all(commands[name].get_default(f[2:]) is None for f in render - {"--device"}), name


def test_the_command_line_uses_only_the_library_layer():
    """cli/serve.py starts the web editor; no other command imports scadm.serve."""
    cli = Path(__file__).parents[1] / "src" / "scadm" / "cli"
    for module in cli.glob("*.py"):
        if module.name == "serve.py":
            continue
        tree = ast.parse(module.read_text())
        # absolute names of what it imports: `from ..serve import x` is scadm.serve, `.serve` scadm.cli.serve
        imported = [
            {0: "", 1: "scadm.cli.", 2: "scadm."}[n.level] + (n.module or "")
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom)
        ]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith("scadm.serve")], module.name


# ---------------------------------------------------------------- inputs that used to pass silently


def test_a_mask_of_another_size_is_refused_naming_both_files(converted, capsys):
    save_mask(face(seed=1, size=128)[1], converted / "mask128.png")
    assert _edit(converted, "--mask", str(converted / "mask128.png")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "target.png is 64x64 but" in err and "mask128.png is 128x128" in err


def test_resizing_a_matching_pair_is_said_in_one_line(converted, capsys):
    image, labels = face(seed=1, size=128)
    save_image(image, converted / "big.png")
    save_mask(labels, converted / "big_mask.png")
    assert _edit(converted, "--image", str(converted / "big.png"), "--mask", str(converted / "big_mask.png")) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "resized from 128x128 to 64x64" in notes[0] and "big_mask.png" in notes[0]


@pytest.fixture(scope="module")
def overflowing(converted, tiny_pipe):
    """A model with finite weights whose renders overflow to inf (a decoder of 3e38 weights)."""
    from scadm.pipeline import SCADMPipeline

    pipe = SCADMPipeline.from_pretrained(converted / "model")
    with torch.no_grad():
        pipe.vqvae.decoder.conv_out.weight.fill_(3e38)
    pipe.save_pretrained(converted / "overflowing")
    return converted / "overflowing"


def test_sample_refuses_a_non_finite_render_and_writes_nothing(converted, overflowing, tmp_path, capsys):
    assert (
        main(
            [
                "sample",
                str(converted / "target_mask.png"),
                "--model",
                str(overflowing),
                "--steps",
                "2",
                "--num",
                "1",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "NaN or infinite values in sample 0 (seed 0)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_evaluate_writes_no_report_on_a_non_finite_render(overflowing, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "--protocol",
                "reconstruction",
                "--model",
                str(overflowing),
                "--num",
                "2",
                "--steps",
                "2",
                "--no-fid",
                "--parser",
                "none",
                "--out",
                str(tmp_path / "report"),
                "--cache",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "NaN or infinite values" in capsys.readouterr().err
    assert not list((tmp_path / "report").rglob("*.json"))


def test_a_model_with_nan_weights_is_refused_by_every_command(converted, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(converted / "model", tmp_path / "nan")
    weights = tmp_path / "nan" / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["out.2.bias"] = torch.full_like(state["out.2.bias"], float("nan"))
    save_file(state, weights)
    for argv in (
        ["sample", str(converted / "target_mask.png"), "--model", str(tmp_path / "nan")],
        [
            "evaluate",
            "--protocol",
            "reconstruction",
            "--model",
            str(tmp_path / "nan"),
            "--num",
            "2",
            "--no-fid",
            "--parser",
            "none",
            "--out",
            str(tmp_path / "report"),
        ],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err.endswith(
                "tensor out.2.bias holds NaN or infinite values; the weights are corrupt or come "
                "from a diverged training run"
            )
            and str(weights) in err
        )
    assert not (tmp_path / "report").exists()


def test_convert_warns_about_unknown_settings_in_one_line(converted, tmp_path, capsys):
    import yaml

    raw = yaml.safe_load((converted / "authors.yaml").read_text())
    raw["model"]["params"]["unet_config"]["params"]["frobnicate"] = 3
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(raw))
    assert (
        main(
            [
                "convert",
                "--config",
                str(tmp_path / "odd.yaml"),
                "--ckpt",
                str(converted / "authors.ckpt"),
                "--out",
                str(tmp_path / "model"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.strip()
    assert err == (
        f"scadm convert: warning: {tmp_path / 'odd.yaml'}: unknown setting(s) unet_config.frobnicate "
        "ignored; scadm does not implement them, check the converted model"
    )


def test_seeds_past_the_generators_range_are_refused_before_rendering(converted, capsys, monkeypatch):
    monkeypatch.setattr("scadm.pipeline.SCADMPipeline.__call__", lambda *a, **k: pytest.fail("rendered"))
    assert _sample(converted, "--seed", str(2**64 - 1), "--num", "2") == 2
    assert "--seed 18446744073709551615 with 2 images: the last image's seed: must be" in _one_line(capsys)


def test_demo_checks_its_flags_like_the_other_commands(capsys):
    assert main(["demo", "--seed", "-1"]) == 2
    assert "--seed: must be an integer in 0..2**64-1, got -1" in _one_line(capsys)
