"""Model folders that cannot work are refused at load, each with one line naming the file."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from scadm.errors import CheckpointError
from scadm.models.loading import WEIGHTS_FILE, non_finite
from scadm.pipeline import SCADMPipeline


@pytest.fixture()
def folder(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _load_error(folder) -> str:
    with pytest.raises(CheckpointError) as e:
        SCADMPipeline.from_pretrained(folder)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _poison(path, key, value):
    state = load_file(path)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = value
    save_file(state, path)


@pytest.mark.parametrize(
    "part, key, value",
    [
        ("unet", "input_blocks.1.0.in_layers.0.weight", float("nan")),
        ("vqvae", "decoder.conv_out.bias", float("-inf")),
    ],
)
def test_non_finite_weights_are_refused_naming_file_and_tensor(folder, part, key, value):
    _poison(folder / part / WEIGHTS_FILE, key, value)
    msg = _load_error(folder)
    assert f"{folder / part / WEIGHTS_FILE}: tensor {key} holds NaN or infinite values" in msg


def test_missing_weights_name_the_safetensors_file(folder):
    (folder / "unet" / WEIGHTS_FILE).unlink()
    msg = _load_error(folder)
    assert msg.startswith(f"{folder / 'unet' / WEIGHTS_FILE}: missing") and ".bin" not in msg


def test_truncated_weights_are_named(folder):
    path = folder / "style_encoder" / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:1000])
    assert _load_error(folder).startswith(f"{path}: truncated or corrupt safetensors file (")


def test_a_pickle_in_a_model_folder_is_never_unpickled(folder, tmp_path):
    witness = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    (folder / "unet" / WEIGHTS_FILE).unlink()
    torch.save({"x": Payload()}, folder / "unet" / "diffusion_pytorch_model.bin")
    msg = _load_error(folder)
    assert "diffusion_pytorch_model.bin, a pickle, which scadm never loads" in msg
    assert not witness.exists()


def test_non_finite_screen_matches_the_element_wise_check():
    """The sum screen is a fast path: it must flag exactly the tensors isfinite(t).all() flags,
    including finite tensors whose sum overflows (3e38 * 4 > float32 max)."""
    tensors = {
        "finite": torch.randn(100),
        "nan": torch.tensor([1.0, float("nan")]),
        "inf": torch.tensor([float("inf"), 1.0]),
        "both_infs": torch.tensor([float("inf"), float("-inf")]),
        "overflowing_sum": torch.full((4,), 3e38),
        "bf16_nan": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16),
        "integers": torch.arange(5),
    }
    reference = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    assert non_finite(tensors.items()) == reference == ["nan", "inf", "both_infs", "bf16_nan"]
