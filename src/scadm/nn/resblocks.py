"""Residual blocks, resampling and the timestep embedding of the SCA-DM denoiser (paper Fig. 2).

The encoder uses plain `ResBlock`s; the middle block and the decoder use `SPADEResBlock`s, whose
normalisations are modulated by the semantic mask (Sec. 3.4, after SDM). Child names and indices
(in_layers.2, out_layers.3, emb_layers.1, ...) reproduce the authors' parameter names.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from scadm.errors import InputError
from scadm.nn.spade import NORM_GROUPS, SPADE_HIDDEN_CHANNELS, SPADEGroupNorm, resize_mask

MAX_PERIOD = 10_000


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = MAX_PERIOD, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (B,) timesteps -> (B, dim), computed in at least float32.

    Frequencies run from 1 down to 1/max_period geometrically; an odd `dim` gets a zero column.
    `dtype` is the model's: float32 and lower precisions get the authors' float32 embedding (their
    checkpoints' parity depends on it); float64 gets a float64 one, so that a float64 model carries
    no float32 error (~1e-7 relative in its output).
    """
    dtype = torch.promote_types(dtype, torch.float32)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype) / half)
    args = timesteps.to(dtype)[:, None] * freqs.to(timesteps.device)[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class UpcastGroupNorm(nn.GroupNorm):
    """GroupNorm computed in at least float32, result in the input's dtype (the authors' GroupNorm32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        weight = None if self.weight is None else self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        out = F.group_norm(x.to(dtype), self.num_groups, weight, bias, self.eps)
        return out.to(x.dtype)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero every parameter: a residual branch starts as the identity, the output head as 0."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _skip(channels: int, out_channels: int) -> nn.Module:
    if channels == out_channels:
        return nn.Identity()
    return nn.Conv2d(channels, out_channels, kernel_size=1)


def _conv3x3(channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)


class ResBlock(nn.Module):
    """norm-SiLU-conv, + time embedding, norm-SiLU-dropout-conv (zero-init), + skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            UpcastGroupNorm(NORM_GROUPS, channels), nn.SiLU(), _conv3x3(channels, out_channels)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            UpcastGroupNorm(NORM_GROUPS, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_init(_conv3x3(out_channels, out_channels)),
        )
        self.skip_connection = _skip(channels, out_channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (B, channels, h, w), emb (B, emb_channels)."""
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class SPADEResBlock(nn.Module):
    """ResBlock whose two norms are SPADE norms of the mask (the authors' SDMResBlock).

    in_norm acts on the block input, which in the decoder is the concatenation [h, skip].
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        num_classes: int,
        out_channels: int | None = None,
        dropout: float = 0.0,
        spade_hidden_channels: int = SPADE_HIDDEN_CHANNELS,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.in_norm = SPADEGroupNorm(channels, num_classes, spade_hidden_channels)
        self.in_layers = nn.Sequential(nn.SiLU(), _conv3x3(channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_norm = SPADEGroupNorm(out_channels, num_classes, spade_hidden_channels)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero_init(_conv3x3(out_channels, out_channels)))
        self.skip_connection = _skip(channels, out_channels)

    def condition(self, mask: torch.Tensor) -> tuple:
        """Both norms' modulations for a mask at the block's resolution (see SPADEGroupNorm)."""
        return self.in_norm.modulation(mask), self.out_norm.modulation(mask)

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor | None = None, condition: tuple | None = None
    ) -> torch.Tensor:
        """x (B, channels, h, w), emb (B, emb_channels), mask (B, num_classes, H, W), or instead
        `condition`, what `condition(mask at (h, w))` returned."""
        if condition is None:
            if mask is None:
                raise InputError("mask: required by a SPADE block (or its condition)")
            condition = self.condition(resize_mask(mask.to(x.dtype), (x.shape[-2], x.shape[-1])))
        h = self.in_norm.modulate(x, condition[0])
        h = self.in_layers(h) + self.emb_layers(emb)[:, :, None, None]
        h = self.out_layers(self.out_norm.modulate(h, condition[1]))
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (halves h and w)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
