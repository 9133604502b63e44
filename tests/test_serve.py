"""The editor's logic (no browser): per-part style codes, uploads, painting, settings replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_uploads import png_header
from PIL import Image

from scadm.cli import main
from scadm.editing import EditSettings, PartChoice
from scadm.errors import InputError
from scadm.io import save_image, save_mask
from scadm.labels import CELEBAMASK_HQ
from scadm.pipeline import SCADMPipeline
from scadm.serve import editor
from scadm.settings import RenderSettings

HAIR, SKIN, HAT = (CELEBAMASK_HQ.index(n) for n in ("hair", "skin", "hat"))


@pytest.fixture(scope="module")
def faces():
    return editor.procedural_face(3, 64), editor.procedural_face(4, 64)


@pytest.fixture(scope="module")
def codes(tiny_pipe, faces):
    target, reference = faces
    return tiny_pipe.encode_style(*target.tensors()), tiny_pipe.encode_style(*reference.tensors())


def test_swapping_hair_changes_only_the_hair_row(codes):
    target, reference = codes
    code = EditSettings({"hair": PartChoice("reference")}).style_code(target, reference, CELEBAMASK_HQ)
    assert torch.equal(code.tokens[:, HAIR], reference.tokens[:, HAIR])
    others = [k for k in range(CELEBAMASK_HQ.num_classes) if k != HAIR]
    assert torch.equal(code.tokens[:, others], target.tokens[:, others])
    assert torch.equal(code.tokens, target.swap(reference, [HAIR]).tokens)  # = `scadm edit --mode partial`


def test_part_weights_and_random_source_mix_rows(codes):
    target, reference = codes
    settings = EditSettings(
        {"hair": PartChoice("reference", 0.5), "skin": PartChoice("random", 1.0)}, global_weight=0.5
    )
    code = settings.style_code(target, reference, CELEBAMASK_HQ)
    expected_hair = 0.75 * target.tokens[:, HAIR] + 0.25 * reference.tokens[:, HAIR]
    # style tokens |x| < 1 in float32: a mix in another op order is a few ulp (1e-7) off
    torch.testing.assert_close(code.tokens[:, HAIR], expected_hair, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        code.tokens[:, SKIN], 0.5 * target.tokens[:, SKIN] + 0.5 * target.blank[:, SKIN], rtol=0, atol=1e-6
    )
    assert settings.edited_parts() == {"hair": ("reference", 0.25), "skin": ("random", 0.5)}


def test_reference_source_without_reference_is_refused(codes):
    with pytest.raises(InputError, match="hair.*needs a reference"):
        EditSettings({"hair": PartChoice("reference")}).style_code(codes[0], None, CELEBAMASK_HQ)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: EditSettings(render=RenderSettings(steps=0)), "steps"),
        (lambda: EditSettings(render=RenderSettings(sampler="euler")), "sampler"),
        (lambda: EditSettings(global_weight=1.5), "global_weight"),
        (lambda: EditSettings({"hiar": PartChoice("reference")}), "parts.hiar: unknown class 'hiar'"),
        (lambda: EditSettings({"hair": PartChoice("theirs")}), "source"),
        (lambda: EditSettings(render=RenderSettings(seed=-1)), "seed"),
        (lambda: EditSettings(render=RenderSettings(dtype="fp8")), "dtype"),
        (lambda: EditSettings(preserve="yes"), "preserve"),
        (lambda: EditSettings(margin=-2), "margin"),
    ],
)
def test_bad_settings_name_the_field(make, needle):
    with pytest.raises(InputError, match=needle):
        make().check(CELEBAMASK_HQ)


def test_settings_json_round_trip(tmp_path):
    settings = EditSettings(
        {"hair": PartChoice("reference", 0.4)},
        0.9,
        RenderSettings(7, 2.0, "dpm++", 0.0, 42, "bf16"),
        preserve=True,
        margin=3,
    )
    path = tmp_path / "s.json"
    path.write_text(json.dumps(settings.to_json()))
    assert EditSettings.load(path) == settings
    older = {k: v for k, v in settings.to_json().items() if k not in ("preserve", "margin")}
    path.write_text(json.dumps(older))
    assert EditSettings.load(path).preserve is False  # rendered before region-preserving edits existed
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        EditSettings.load(path)
    path.write_text(json.dumps({"parts": {}}))
    with pytest.raises(InputError, match="not a scadm settings file"):
        EditSettings.load(path)


def _write_face(face, folder, stem):
    save_image(face.image, folder / f"{stem}.png")
    save_mask(face.labels, folder / f"{stem}_mask.png", CELEBAMASK_HQ)
    return folder / f"{stem}.png", folder / f"{stem}_mask.png"


def test_upload_is_validated_and_resized(tmp_path, faces):
    big = editor.procedural_face(3, 128)
    face, notes = editor.load_upload(*_write_face(big, tmp_path, "big"), CELEBAMASK_HQ, 64, "target")
    assert face.image.shape == (64, 64, 3) and face.labels.shape == (64, 64)
    assert notes and "resized 128x128" in notes[0]
    image, mask = _write_face(faces[0], tmp_path, "t")
    Image.fromarray(faces[0].image).convert("RGBA").save(tmp_path / "rgba.png")
    rgba = np.asarray(Image.open(tmp_path / "rgba.png")).copy()
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "transparent.png")
    Image.fromarray(faces[0].image).convert("L").save(tmp_path / "grey.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    Image.new("RGB", (32, 48)).save(tmp_path / "tall.png")
    Image.new("L", (32, 48)).save(tmp_path / "tall_mask.png")
    Image.new("RGB", (editor.MAX_UPLOAD_SIDE + 1, 8)).save(tmp_path / "huge.png")
    cases = [
        ("transparent.png", mask, "transparent"),
        ("grey.png", mask, "grayscale"),
        ("corrupt.png", mask, "not an image or corrupt"),
        ("tall.png", tmp_path / "tall_mask.png", "square"),
        ("tall.png", mask, "same size"),
        (image, tmp_path / "big_mask.png", "is 128x128: an image and its mask must be the same size"),
        ("huge.png", mask, "4096 px limit"),
        (image, None, "upload both"),
    ]
    for bad_image, bad_mask, needle in cases:
        with pytest.raises(InputError, match=needle):
            editor.load_upload(tmp_path / bad_image, bad_mask, CELEBAMASK_HQ, 64, "target")


def test_upload_errors_name_the_file_not_its_server_path(tmp_path, faces):
    """A gradio upload lives in a temporary folder; the page shows the user's file name only."""
    image, mask = _write_face(faces[0], tmp_path, "t")
    Image.fromarray(faces[0].image).convert("L").save(tmp_path / "grey photo.png")
    (tmp_path / "bomb.png").write_bytes(png_header(100_000, 100_000))
    Image.fromarray(faces[0].labels[::2, ::2].astype(np.uint8)).save(tmp_path / "small_mask.png")
    cases = [
        (tmp_path / "grey photo.png", mask, "target image grey photo.png: is grayscale"),
        (tmp_path / "bomb.png", mask, "target image bomb.png: too large, over the 4096 px limit"),
        (
            image,
            tmp_path / "small_mask.png",
            "target image t.png is 64x64 but target mask small_mask.png is 32x32: .* same size",
        ),
    ]
    for bad_image, bad_mask, needle in cases:
        with pytest.raises(InputError, match=needle) as err:
            editor.load_upload(str(bad_image), str(bad_mask), CELEBAMASK_HQ, 64, "target")
        assert str(tmp_path) not in str(err.value)
    Image.fromarray(np.full((8, 8), 99, np.uint8)).save(tmp_path / "bad_mask.png")
    with pytest.raises(InputError, match="^reference mask bad_mask.png: .*99"):  # one half, on its own
        editor.check_upload(str(tmp_path / "bad_mask.png"), "mask", CELEBAMASK_HQ, 64, "reference")
    with pytest.raises(InputError, match="^reference image bomb.png: too large"):
        editor.check_upload(str(tmp_path / "bomb.png"), "image", CELEBAMASK_HQ, 64, "reference")
    editor.check_upload(str(image), "image", CELEBAMASK_HQ, 64, "target")  # a good half passes


def test_a_reference_without_the_swapped_part_is_reported(faces):
    target, reference = faces
    bald = editor.Face(reference.image, np.where(reference.labels == HAIR, SKIN, reference.labels), "bald")
    hair_swap = EditSettings({"hair": PartChoice("reference"), "skin": PartChoice("reference")})
    assert (target.labels == HAIR).any() and (reference.labels == HAIR).any()
    assert editor.missing_parts(hair_swap, bald, target.labels, CELEBAMASK_HQ) == ["hair"]
    assert editor.missing_parts(hair_swap, reference, target.labels, CELEBAMASK_HQ) == []
    hairless_target = np.where(target.labels == HAIR, SKIN, target.labels)  # nothing to swap: no warning
    assert editor.missing_parts(hair_swap, bald, hairless_target, CELEBAMASK_HQ) == []
    random_hair = EditSettings({"hair": PartChoice("random")})  # the random style needs no reference
    assert editor.missing_parts(random_hair, bald, target.labels, CELEBAMASK_HQ) == []


# In a fresh interpreter: record the two variables when gradio or huggingface_hub is first looked
# for, then stop the import there (no gradio loaded: milliseconds, and no serve extra needed).
_FIRST_IMPORT = """
import json, os, sys
seen = {}
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in ("gradio", "huggingface_hub") and name not in seen:
            seen[name] = [os.environ.get(v) for v in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE")]
        if name == "gradio":
            raise ImportError("stopped here")
sys.meta_path.insert(0, Watch())
try:
    import scadm.serve.callbacks
except ImportError:
    pass
print(json.dumps(seen))
"""


def test_importing_the_callbacks_alone_sets_gradios_environment_first():
    """No telemetry, no Hub downloads, whichever serve module is imported first (not only app)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", _FIRST_IMPORT], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(result.stdout)
    assert seen["gradio"] == ["False", "1"]
    assert seen.get("huggingface_hub", ["False", "1"]) == ["False", "1"]


def test_page_messages_carry_no_server_paths():
    pytest.importorskip("scadm.serve.app", reason="the serve extra (gradio) is not installed")
    from scadm.serve.callbacks import without_paths

    message = "/tmp/gradio/3f2a/my face.png is 64x64 but /tmp/gradio/77b/mask.png is 32x32 (see ./x.png, 1/2)"
    assert without_paths(message) == "my face.png is 64x64 but mask.png is 32x32 (see ./x.png, 1/2)"


def test_painted_strokes_become_labels_only_where_fully_opaque():
    labels = np.zeros((8, 8), dtype=np.int64)
    scale = 4
    layer = np.zeros((8 * scale, 8 * scale, 4), dtype=np.uint8)
    layer[0:8, 0:8] = (*CELEBAMASK_HQ.palette[HAT], 255)  # model pixels (0,0),(0,1),(1,0),(1,1)
    layer[0:8, 8:16] = (250, 60, 150, 255)  # off by a few levels: snaps to hat's (255, 51, 153)
    layer[16:24, 16:24] = (*CELEBAMASK_HQ.palette[HAIR], 128)  # half-transparent edge: ignored
    layer[28:30, 28:32] = (*CELEBAMASK_HQ.palette[HAIR], 255)  # half of one model pixel: repainted
    layer[24:25, 0:4] = (*CELEBAMASK_HQ.palette[HAIR], 255)  # a quarter: not enough
    out = editor.labels_from_strokes(layer, labels, CELEBAMASK_HQ)
    expected = np.zeros_like(labels)
    expected[0:2, 0:4] = HAT
    expected[7, 7] = HAIR
    np.testing.assert_array_equal(out, expected)
    assert labels.sum() == 0, "the input mask is not modified"
    with pytest.raises(InputError, match="RGBA"):
        editor.labels_from_strokes(layer[..., :3], labels, CELEBAMASK_HQ)


def test_cli_replays_the_editor_bit_for_bit(tiny_pipe, faces, tmp_path, one_thread):
    """Settings saved by the page + the files of its bundle -> `scadm edit --settings` gives the
    same pixels."""
    target, reference = faces
    labels = target.labels.copy()
    labels[:6, 20:40] = HAT  # a painted hat
    settings = EditSettings(
        {"hair": PartChoice("reference", 0.7), "skin": PartChoice("random")},
        0.9,
        RenderSettings(steps=3, guidance=1.5, sampler="ddim", seed=11),
    )
    model = tmp_path / "model"
    tiny_pipe.save_pretrained(model)
    pipe = SCADMPipeline.from_pretrained(model)  # what the page runs: the folder the CLI loads too
    result = editor.render(pipe, target, reference, labels, settings)
    paths = editor.write_bundle(
        tmp_path / "bundle", result, target, reference, labels, settings, CELEBAMASK_HQ, model=str(model)
    )
    assert "--settings settings.json" in json.loads(paths["settings"].read_text())["command"]
    f = paths
    rc = main(
        [
            "edit",
            "--model",
            str(model),
            "--image",
            str(f["target"]),
            "--mask",
            str(f["target_mask"]),
            "--reference",
            str(f["reference"]),
            "--reference-mask",
            str(f["reference_mask"]),
            "--edited-mask",
            str(f["mask"]),
            "--settings",
            str(f["settings"]),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    replayed = np.asarray(Image.open(tmp_path / "out" / "target_settings_0_seed11.png"))
    np.testing.assert_array_equal(replayed, result)
    other = editor.render(pipe, target, reference, target.labels, settings)
    assert not np.array_equal(other, result), "the painted mask must matter"
    assert settings.preserve  # the page's default: the target's own pixels away from the edits
    assert np.array_equal(result[40:, :8], target.image[40:, :8])


def test_the_page_reads_and_answers_the_components_its_callbacks_mean(tiny_pipe, tmp_path, one_thread):
    """The wiring (app) and the callbacks agree on every place: a picked target lands in the state
    that Generate reads as the target, its mask in the one it reads as the mask; Generate reads
    each part's source and the options from their own controls, and answers the result and seed."""
    app = pytest.importorskip("scadm.serve.app", reason="the serve extra (gradio) is not installed")
    from gradio.helpers import Progress, special_args

    class RecordedProgress(Progress):
        """gradio's progress tracker, recording what the callback reports instead of sending it."""

        def __init__(self):
            super().__init__()
            self.calls: list = []

        def __call__(self, progress, desc=None, total=None, unit="steps", _tqdm=None):
            self.calls.append(progress)

    tiny_pipe.save_pretrained(tmp_path / "model")
    demo = app.build_app(app.Models(tmp_path / "model", "cpu"))
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}

    def event(name: str, elem_id: str | None = None):
        """The function run on event `name` of component `elem_id` (None: the page's load)."""
        for f in demo.fns.values():
            for block, e in f.targets:
                if e == name and (elem_id is None or demo.blocks.get(block) is by_id[elem_id]):
                    return f
        raise KeyError(f"{elem_id}.{name}")

    generate = event("click", "generate")
    target_state, reference_state, mask_state = generate.inputs[:3]
    pick = event("load")
    target = dict(zip(pick.outputs, pick.fn("face 2"), strict=True))
    face = editor.procedural_face(2, 64)
    assert target[target_state].name == face.name and np.array_equal(target[mask_state], face.labels)
    assert np.array_equal(target[by_id["target-view"]][:, :64], face.image)
    assert target[by_id["target-files"]] == "target: procedural face 2, 64x64"
    pick = event("input", "reference-example")
    reference = dict(zip(pick.outputs, pick.fn("face 4"), strict=True))
    assert reference[reference_state].name == "procedural face 4" and mask_state not in reference

    reset = event("click", "reset-mask")
    assert set(reset.outputs) == {mask_state, by_id["painter"], by_id["legend-box"]}
    values = {c: getattr(c, "value", None) for c in generate.inputs}
    values |= {target_state: target[target_state], reference_state: reference[reference_state]}
    values |= {mask_state: face.labels, by_id["painter"]: None, by_id["steps"]: 2, by_id["src-hair"]: "reference"}
    # as gradio calls it: its own tracker injected where the signature declares gr.Progress
    assert generate.tracks_progress, "gradio found no gr.Progress parameter: the page would show no bar"
    assert generate.show_progress_on == [by_id["result"]]
    args, at, _, _ = special_args(generate.fn, [values[c] for c in generate.inputs])
    bar = RecordedProgress()
    args[at] = bar
    answer = dict(zip(generate.outputs, generate.fn(*args), strict=True))
    # the bar at 0, then each step of the target's inversion and of the sampler (preserve is on)
    assert bar.calls == [(0, 2), (1, 2), (2, 2), (1, 2), (2, 2)]
    assert np.asarray(Image.open(answer[by_id["result"]])).shape == (64, 64, 3)
    assert answer[by_id["seed"]] == 0 and answer[by_id["status"]].endswith("seed 0): hair<-reference.")
    settings = json.loads(Path(next(f for f in answer[by_id["downloads"]] if f.endswith(".json"))).read_text())
    assert settings["parts"] == {"hair": {"source": "reference", "weight": 1.0}} and settings["steps"] == 2
