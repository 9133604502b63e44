"""RenderSettings: one owner of the render defaults and of their validation; device checks."""

import dataclasses

import pytest
import torch

from scadm.errors import InputError
from scadm.settings import (
    DTYPES,
    FIELDS,
    INTERACTIVE,
    MAX_SEED,
    RenderSettings,
    check_field,
    resolve_device,
)


def test_defaults_are_the_papers_and_frozen():
    s = RenderSettings()
    assert (s.steps, s.guidance, s.sampler, s.eta, s.seed, s.dtype) == (50, 1.2, "ddim", 0.0, 0, "fp32")
    assert s.replace(steps=25) == INTERACTIVE
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3
    assert s.replace(steps=None, seed=7) == RenderSettings(seed=7)  # None = keep
    assert s.torch_dtype == torch.float32 and set(DTYPES) >= {"fp32", "bf16"}


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("steps", 1001),
        ("steps", 2.0),
        ("steps", True),
        ("guidance", float("nan")),
        ("guidance", float("inf")),
        ("guidance", -0.5),
        ("guidance", "1.2"),
        ("eta", float("nan")),
        ("eta", 1.5),
        ("eta", -0.1),
        ("seed", -1),
        ("seed", 2**64),
        ("seed", 2**70),
        ("seed", 1.0),
        ("sampler", "euler"),
        ("dtype", "fp8"),
    ],
)
def test_bad_values_are_refused_naming_the_field(field, value):
    with pytest.raises(InputError, match=f"^{field}: must be"):
        RenderSettings(**{field: value})
    with pytest.raises(InputError, match=f"^{field}: must be"):
        check_field(field, value)


def test_the_extremes_that_torch_accepts_are_accepted():
    s = RenderSettings(steps=1000, seed=MAX_SEED, eta=1.0, guidance=0.0)
    torch.Generator().manual_seed(s.seed)  # the largest seed is one manual_seed takes
    with pytest.raises((ValueError, RuntimeError, OverflowError)):
        torch.Generator().manual_seed(MAX_SEED + 1)


def test_from_dict_names_the_source_and_keeps_the_base():
    base = INTERACTIVE
    assert RenderSettings.from_dict({"seed": 3, "parts": {}}, base) == base.replace(seed=3)
    with pytest.raises(InputError, match=r"^s\.json: steps: must be"):
        RenderSettings.from_dict({"steps": 0}, source="s.json")
    assert set(FIELDS) == {"steps", "guidance", "sampler", "eta", "seed", "dtype"}


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("tpu:7", "not a device"),
        ("banana", "not a device"),
        ("cpu:3", "one CPU"),
    ],
)
def test_bad_devices_are_one_line(spec, needle):
    with pytest.raises(InputError, match=f"--device {spec}: .*{needle}"):
        resolve_device(spec, "--device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused():
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device(spec, "--device")
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
