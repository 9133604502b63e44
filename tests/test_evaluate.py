import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from authors_layout import authors_checkpoint, authors_yaml
from PIL import Image

from scadm.cli import main
from scadm.data.synthetic import render_face
from scadm.errors import InputError
from scadm.evaluate import PROTOCOLS, evaluate
from scadm.evaluate.context import Model, Options, model_fingerprint
from scadm.evaluate.data import DataSpec
from scadm.metrics.fid import InceptionFeatures
from scadm.metrics.lpips import LPIPS
from scadm.pipeline import SCADMPipeline
from scadm.settings import RenderSettings

# reports compute SSIM (torchmetrics) and draw figures (matplotlib): the metrics extra
needs_metrics = pytest.mark.skipif(
    find_spec("torchmetrics") is None or find_spec("matplotlib") is None,
    reason="scadm evaluate needs the metrics extra (torchmetrics, matplotlib): pip install -e '.[metrics]'",
)

SKIN = 1


def all_skin_parser(images: torch.Tensor) -> torch.Tensor:
    """Stand-in face parser: every pixel is skin, so accuracy = the masks' share of skin."""
    return torch.full((images.shape[0], *images.shape[-2:]), SKIN, dtype=torch.long)


def small_features() -> InceptionFeatures:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 9, stride=8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return InceptionFeatures(net, batch_size=4)


def positive_lpips() -> LPIPS:
    """Stand-in LPIPS: random backbone, non-negative heads (as trained LPIPS heads are)."""
    torch.manual_seed(0)
    metric = LPIPS("alex")
    with torch.no_grad():
        for head in metric.heads:
            head.weight.abs_()
    return metric


def tiny_options(num=3, steps=2, **kw) -> Options:
    settings = dict(
        batch=3,
        noise_steps=(2, 3),
        diversity_masks=2,
        diversity_samples=2,
        axis_guidance=(1.0, 1.5),
        axis_steps=(2,),
        timing_steps=(2, 3),
        timing_repeats=1,
        progress=False,
        part_sets={"l_eye": ("l_eye",), "all": ("all",)},
    )
    return Options(DataSpec.parse("procedural", num), RenderSettings(steps=steps), **{**settings, **kw})


def run(pipe, protocols, tmp_path, options=None, names=("tiny-a",)):
    models = [Model(n, Path(n), pipe, f"fingerprint-{n}") for n in names]
    return evaluate(
        protocols,
        models,
        options or tiny_options(),
        tmp_path / "out",
        "scadm evaluate (test)",
        tmp_path / "cache",
        parser=all_skin_parser,
        features=small_features(),
        lpips=positive_lpips(),
    )


@needs_metrics
def test_every_protocol_writes_json_markdown_and_figures(tiny_pipe, tmp_path, one_thread):
    written = run(tiny_pipe, list(PROTOCOLS), tmp_path, options=tiny_options(timing_samplers=("ddim",)))
    out = tmp_path / "out"
    assert [p.name for p in written] == [f"{p}.md" for p in PROTOCOLS]
    for md in written:
        text = md.read_text()
        assert "scadm evaluate (test)" in text and "tiny-a" in text
        for figure in [line.split("(figures/")[1].rstrip(")") for line in text.splitlines() if "(figures/" in line]:
            assert (out / "figures" / figure).stat().st_size > 0
    faces = [render_face(900_000_000 + i, 64).labels for i in range(3)]
    skin_share = float(np.mean([f == SKIN for f in faces]))
    recon = json.loads((out / "reconstruction.json").read_text())
    assert recon["metrics"]["tiny-a"]["accuracy"] == pytest.approx(100 * skin_share, rel=1e-9)  # pixel counts
    assert 0 < recon["metrics"]["tiny-a"]["ssim"] < 1 and recon["metrics"]["tiny-a"]["fid"] > 0
    assert recon["environment"]["command"] == "scadm evaluate (test)"
    noise = json.loads((out / "noise.json").read_text())["metrics"]["tiny-a"]
    assert set(noise["steps"]) == {"2", "3"} and noise["lpips_diversity"] > 0
    timing = json.loads((out / "timing.json").read_text())["metrics"]["rows"]
    assert len(timing) == 2 * 2  # steps x (with, without guidance)
    base = [r for r in timing if (r["steps"], r["guidance"]) == (3, 1.0)]
    assert base[0]["step_ratio"] == 1.0
    assert "ratio" in (out / "timing.md").read_text()  # CPU: no absolute times in the report


@needs_metrics
def test_disentanglement_compares_models_over_the_axes(tiny_pipe, tmp_path, one_thread):
    run(tiny_pipe, ["disentanglement"], tmp_path, names=("with-attn", "without-attn"))
    out = tmp_path / "out"
    rows = json.loads((out / "disentanglement.json").read_text())["metrics"]["rows"]
    assert {(r["model"], r["parts"], r["mode"], r["guidance"]) for r in rows} == {
        (m, p, mode, g)
        for m in ("with-attn", "without-attn")
        for p, mode in (("l_eye", "plain"), ("l_eye", "preserve"), ("all", "plain"))
        for g in (1.0, 1.5)
    }
    assert all(r["outside_target"] == 0 for r in rows if r["mode"] == "preserve")
    assert all(r["leakage"] is None for r in rows if r["parts"] == "all")
    assert all(r["leakage"] > 0 and r["gt_transfer"] is not None for r in rows if r["parts"] == "l_eye")
    assert "Models compared" in (out / "disentanglement.md").read_text()


@needs_metrics
def test_partial_swap_reports_plain_and_preserved_side_by_side(tiny_pipe, tmp_path, one_thread):
    run(
        tiny_pipe,
        ["partial-swap"],
        tmp_path,
        options=tiny_options(num=2, part_sets={"hair": ("hair",), "all": ("all",)}),
    )
    metrics = json.loads((tmp_path / "out" / "partial-swap.json").read_text())["metrics"]
    assert set(metrics) == {"tiny-a/hair", "tiny-a/hair/preserve", "tiny-a/all"}  # 'all' keeps nothing
    plain, kept = metrics["tiny-a/hair"], metrics["tiny-a/hair/preserve"]
    assert kept["outside_target"] == 0 < plain["outside_target"]  # beyond the margin: the target's pixels
    assert kept["inside"] > 0.02 and kept["inside_truth"] is not None  # the hair itself was re-rendered
    assert "| preserve |" in (tmp_path / "out" / "partial-swap.md").read_text()


@needs_metrics
def test_a_rerun_renders_nothing_and_a_new_setting_renders_again(tiny_pipe, tmp_path, monkeypatch, one_thread):
    calls = []
    original = SCADMPipeline.__call__
    monkeypatch.setattr(SCADMPipeline, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    run(tiny_pipe, ["reconstruction"], tmp_path)
    first = (tmp_path / "out" / "reconstruction.json").read_text()
    assert len(calls) == 1  # 3 faces, batch 3
    run(tiny_pipe, ["reconstruction"], tmp_path)
    assert len(calls) == 1
    assert json.loads((tmp_path / "out" / "reconstruction.json").read_text())["metrics"] == json.loads(first)["metrics"]
    run(tiny_pipe, ["reconstruction"], tmp_path, options=tiny_options(steps=3))
    assert len(calls) == 2


@needs_metrics
def test_an_interrupted_render_resumes_with_the_missing_images_only(tiny_pipe, tmp_path, one_thread):
    run(tiny_pipe, ["reconstruction"], tmp_path)
    pngs = sorted((tmp_path / "cache" / "images").rglob("*.png"))
    assert len(pngs) == 3
    kept = np.asarray(Image.open(pngs[0]))
    pngs[1].unlink()
    run(tiny_pipe, ["reconstruction"], tmp_path)
    assert pngs[1].is_file() and (np.asarray(Image.open(pngs[0])) == kept).all()


def test_model_fingerprint_follows_the_weights(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "m")
    before = model_fingerprint(tmp_path / "m")
    assert model_fingerprint(tmp_path / "m") == before
    weights = tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert model_fingerprint(tmp_path / "m") != before


def _official_release(src: Path, ids) -> None:
    """CelebAMask-HQ's own layout: CelebA-HQ-img/N.jpg and one PNG per part, from procedural faces."""
    names = [
        "bg",
        "skin",
        "nose",
        "eye_g",
        "l_eye",
        "r_eye",
        "l_brow",
        "r_brow",
        "l_ear",
        "r_ear",
        "mouth",
        "u_lip",
        "l_lip",
        "hair",
        "hat",
        "ear_r",
        "neck_l",
        "neck",
        "cloth",
    ]
    (src / "CelebA-HQ-img").mkdir(parents=True)
    for face in ids:
        f = render_face(face, 64)
        Image.fromarray(f.image).save(src / "CelebA-HQ-img" / f"{face}.jpg", quality=95)
        folder = src / "CelebAMask-HQ-mask-anno" / str(face // 2000)
        folder.mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(names[1:], start=1):
            if (f.labels == k).any():
                Image.fromarray((f.labels == k).astype(np.uint8) * 255).save(folder / f"{face:05d}_{name}.png")


@needs_metrics
def test_cli_evaluates_a_converted_checkpoint_on_the_celebamask_hq_test_split(tiny_pipe, tmp_path, one_thread):
    _official_release(tmp_path / "release", [27999, 28000, 28001])
    assert main(["prepare", "celebamask-hq", str(tmp_path / "release"), str(tmp_path / "data")]) == 0
    config, ckpt = tmp_path / "authors.yaml", tmp_path / "authors.ckpt"
    config.write_text(authors_yaml(tiny_pipe))
    torch.save(authors_checkpoint(tiny_pipe), ckpt)
    assert main(["convert", "--config", str(config), "--ckpt", str(ckpt), "--out", str(tmp_path / "model")]) == 0
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--protocol",
                "reconstruction",
                "--protocol",
                "partial-swap",
                "--model",
                str(tmp_path / "model"),
                "--data",
                f"celebamask-hq:{tmp_path / 'data'}",
                "--num",
                "2",
                "--steps",
                "2",
                "--no-fid",
                "--parser",
                "none",
                "--part-set",
                "hair",
                "--out",
                str(out),
                "--cache",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 0
    )
    record = json.loads((out / "reconstruction.json").read_text())
    assert record["data"]["split"] == "test" and record["data"]["num"] == 2
    assert "--data celebamask-hq:" in record["environment"]["command"]
    assert 0 < record["metrics"]["model"]["ssim"] < 1 and record["metrics"]["model"]["fid"] is None
    assert "hair" in (out / "partial-swap.md").read_text()


def test_celebamask_hq_data_refuses_training_ids(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / "test" / sub).mkdir(parents=True)
    f = render_face(1, 64)
    Image.fromarray(f.image).save(tmp_path / "test" / "images" / "5.jpg")
    Image.fromarray(f.labels.astype(np.uint8)).save(tmp_path / "test" / "labels" / "5.png")
    spec = DataSpec.parse(f"celebamask-hq:{tmp_path}", 1)
    from scadm.evaluate.data import load_faces
    from scadm.labels import CELEBAMASK_HQ

    with pytest.raises(InputError, match="not CelebAMask-HQ test ids"):
        load_faces(spec, 64, CELEBAMASK_HQ)


def test_cli_names_bad_settings(capsys):
    assert main(["evaluate", "--protocol", "noise", "--noise-steps", "50,x"]) == 2
    assert "--noise-steps" in capsys.readouterr().err
    assert main(["evaluate", "--protocol", "noise", "--diversity-samples", "1"]) == 2
