"""CUDA graphs for fixed-shape sampling: every step of an edit launches the same kernels on the
same shapes, so one captured UNet step is replayed with the new x and t copied into its input
buffers (no Python or launch overhead per kernel). A new edit's condition of the same shapes is
copied into the captured one; other shapes or one-hot flags capture again.

CUDA only; exercised by benchmarks/gpu.sh (the CPU has no graphs to capture).
"""

from __future__ import annotations

import contextlib
import math
from unittest import mock

import torch
from torch import nn

from scadm.models import unet as unet_module
from scadm.models.unet import UNetCondition

WARMUP_ITERS = 3  # on a side stream before capture, as torch.cuda.graphs recommends


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    return []


def _flags(tree) -> list:
    """The non-tensor leaves (one-hot flags, empty slots): a graph is valid only for the same ones."""
    if isinstance(tree, (list, tuple)):
        return [f for item in tree for f in _flags(item)]
    return [] if isinstance(tree, torch.Tensor) else [tree]


@contextlib.contextmanager
def _device_frequencies(device):
    """The time embedding builds its frequencies on the CPU and copies them over (as the authors'
    does), and a copy from pageable memory cannot be captured. During capture the same float32
    frequencies, computed the same way once, already sit on the device."""
    original = unet_module.timestep_embedding
    cache = {}

    def embedding(timesteps, dim, max_period=10_000):
        if dim not in cache:
            half = dim // 2
            freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
            assert torch.equal(original(torch.ones(1), dim)[0, :half], torch.cos(freqs)), "formula changed"
            cache[dim] = freqs.to(device)
        args = timesteps.float()[:, None] * cache[dim][None]
        out = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return torch.nn.functional.pad(out, (0, dim % 2))

    with mock.patch.object(unet_module, "timestep_embedding", embedding):
        yield


class GraphedUNet(nn.Module):
    """Wraps a SCADMUNet; `forward(x, t, condition=...)` replays a captured step. Calls without a
    condition (training, reference) go to the UNet itself."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.graph = None

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    def condition(self, *args, **kwargs) -> UNetCondition:
        return self.unet.condition(*args, **kwargs)

    def forward(self, x, t, context=None, mask=None, *, condition: UNetCondition | None = None, hard=None):
        if condition is None:
            return self.unet(x, t, context, mask, hard=hard)
        key = (
            tuple(x.shape),
            x.dtype,
            tuple(t.shape),
            condition.size,
            [tuple(c.shape) for c in _tensors(condition.steps)],
            _flags(condition.steps),
        )
        if self.graph is None or key != self.key:
            self._capture(x, t, condition, key)
        elif condition is not self.condition_in:
            for dst, src in zip(
                _tensors([self.condition_in.context, self.condition_in.steps]),
                _tensors([condition.context, condition.steps]),
                strict=True,
            ):
                dst.copy_(src)
        self.x_in.copy_(x)
        self.t_in.copy_(t)
        self.graph.replay()
        return self.out.clone()

    def _capture(self, x, t, condition, key):
        self.x_in, self.t_in, self.key = x.clone(), t.clone(), key
        self.condition_in = condition
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with _device_frequencies(x.device):
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_ITERS):
                    self.unet(self.x_in, self.t_in, condition=condition)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.unet(self.x_in, self.t_in, condition=condition)
