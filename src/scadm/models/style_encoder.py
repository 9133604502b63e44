"""Multi-resolution style encoder E_s (paper §3.2, Eq. 5).

An image and its one-hot mask become one style row per semantic class, (B, C, L*D): a class-grouped
conv encoder-decoder whose channels are split into C groups, masked average pooling of group j over
class j's region after each of the L decoder layers (Eq. 5), and a grouped 1x1 conv + tanh that
lifts each pooled S_{i,j} to D numbers. The layers, their names and their order reproduce the
authors' `MultiScaleEffStyleEncoder`, so their `cond_stage_model.*` weights load after stripping
the prefix; two of their quirks are part of the model and are kept:

- after each skip concatenation the C conv groups no longer line up with classes (group g reads
  2*D/C contiguous channels of [x, skip]), so class separation holds in the encoder, in the first
  decoder layer and at every pooling step, but not through the later decoder layers;
- an absent class pools to 0, so its row is tanh(bias) of each output conv, a constant, not 0.

`class_order` lets weights trained under another class numbering serve this one: weight slot s
(channel group s, output row s) holds label class class_order[s]. The first quirk is why this is
a setting and not a permutation of the weights: the groups after a skip concatenation read two
neighbouring class slots (of [x, skip]), so reordering the classes changes which slots meet, and
no reordering of the weights computes the same function. Permuting the mask on the way in and the
rows on the way out does, bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from scadm.errors import InputError

#: Added to each class's pixel count so that an absent class pools to 0 instead of 0/0.
POOL_EPS = 1e-5


def present_classes(mask: torch.Tensor) -> torch.Tensor:
    """Which classes have at least one pixel: one-hot mask (B, C, H, W) -> (B, C) bool."""
    return mask.flatten(2).sum(-1) > 0


def _conv_norm_relu(
    in_ch: int, out_ch: int, kernel_size: int, groups: int, norm_groups: int, stride: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups),
        nn.GroupNorm(norm_groups, out_ch),
        nn.ReLU(),
    ]


class StyleEncoderConfig(FrozenDict):
    """What `StyleEncoder.config` holds (diffusers records the constructor's arguments and serves
    them as attributes): declared for the type checker, which sees only a dict[str, Any]."""

    in_channels: int
    num_classes: int
    num_downsample: int
    num_upsample: int
    num_feat: int
    style_dim: int
    kernel_size: int
    class_order: list[int] | None


# diffusers declares config_name as str in ModelMixin and None in ConfigMixin; its own models mix both.
class StyleEncoder(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """E_s(x, M_x) -> S, the per-class multi-scale style (B, num_classes, num_upsample*style_dim).

    Widths: level i has num_classes*num_feat*2**i channels (i = 0 at full resolution, num_feat
    per class). The encoder halves the resolution num_downsample times; the decoder doubles it
    num_upsample times, and each decoder output is pooled per class into one style scale, coarse
    to fine (face config: 8, 16, 32, 64, 128 px for a 256 px image, 5 x 256 = 1280 per class).

    Example:
        >>> enc = StyleEncoder(num_classes=5, num_feat=1, num_downsample=3, num_upsample=2, style_dim=8)
        >>> labels = torch.randint(0, 5, (1, 32, 32))
        >>> mask = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float()
        >>> enc(torch.zeros(1, 3, 32, 32), mask).shape
        torch.Size([1, 5, 16])
    """

    if TYPE_CHECKING:

        @property
        def config(self) -> StyleEncoderConfig: ...

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 19,
        num_downsample: int = 6,
        num_upsample: int = 5,
        num_feat: int = 4,
        style_dim: int = 256,
        kernel_size: int = 3,
        class_order: list[int] | None = None,
    ):
        super().__init__()
        if class_order is not None and sorted(class_order) != list(range(num_classes)):
            raise InputError(f"class_order: {class_order} is not a permutation of 0..{num_classes - 1}")
        # Output row k is slot _rows[k] (the inverse of class_order); None: slot k is class k.
        self._rows = None if class_order is None else [class_order.index(k) for k in range(num_classes)]
        if not 1 <= num_upsample < num_downsample:
            raise InputError(
                f"num_upsample: must be in [1, num_downsample - 1] = [1, {num_downsample - 1}], got {num_upsample}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise InputError(f"kernel_size: must be odd and positive, got {kernel_size}")
        C = num_classes
        width = [C * num_feat * 2**i for i in range(num_downsample + 1)]

        # The first conv sees all RGB channels (not grouped); from there on group j is class j.
        self.Encoder = nn.ModuleDict()
        self.Encoder["first_layer"] = nn.Sequential(
            *_conv_norm_relu(in_channels, width[0], kernel_size, groups=1, norm_groups=C)
        )
        for i in range(num_downsample):
            self.Encoder[f"enc_layer_{i}"] = nn.Sequential(
                *_conv_norm_relu(width[i], width[i + 1], kernel_size, C, C, stride=2)
            )

        # Decoder layer j works at level i = num_downsample-1-j; from j = 1 on, its input is the
        # previous output concatenated with the encoder skip of the same size (twice the width).
        self.Decoder = nn.ModuleDict()
        self.out = nn.ModuleDict()
        for j in range(num_upsample):
            i = num_downsample - 1 - j
            in_ch = width[i + 1] * (1 if j == 0 else 2)
            self.Decoder[f"dec_layer_{j}"] = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                *_conv_norm_relu(in_ch, width[i], kernel_size, C, C),
            )
        for j in range(num_upsample):
            # S_{i,j} (width/C numbers per class) -> D per class: a 1x1 conv with one group per class.
            width_j = width[num_downsample - 1 - j]
            self.out[f"out_{j}"] = nn.Sequential(nn.Conv1d(width_j, C * style_dim, 1, groups=C), nn.Tanh())

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) in [-1, 1], one-hot mask (B, C, H, W) -> style S (B, C, L*D)."""
        self._check_inputs(image, mask)
        if self._rows is not None:
            mask = mask[:, self.config.class_order]  # slot s pools class class_order[s]
        n_down = self.config.num_downsample
        x = self.Encoder["first_layer"](image)
        skips = []
        for i in range(n_down):
            x = self.Encoder[f"enc_layer_{i}"](x)
            skips.append(x)

        scales = []
        for j in range(self.config.num_upsample):
            if j > 0:
                # The grouped conv that follows mixes classes here: see the module docstring.
                x = torch.cat((x, skips[n_down - 1 - j]), dim=1)
            x = self.Decoder[f"dec_layer_{j}"](x)
            pooled = self._masked_average(x, mask)  # (B, C, D_i/C): S_{i,j} of Eq. 5
            style = self.out[f"out_{j}"](pooled.flatten(1).unsqueeze(-1))  # (B, C*D, 1)
            scales.append(style.view(x.shape[0], self.config.num_classes, -1))
        rows = torch.cat(scales, dim=2)
        return rows if self._rows is None else rows[:, self._rows]

    def _masked_average(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 5, all classes at once: mean of channel group j over class j's (resized) region."""
        B, D, H, W = features.shape
        C = self.config.num_classes
        region = F.interpolate(mask, size=(H, W), mode="nearest")  # (B, C, H, W)
        grouped = features.view(B, C, D // C, H, W)
        total = (grouped * region.unsqueeze(2)).sum(dim=(-2, -1))  # (B, C, D/C)
        count = region.sum(dim=(-2, -1)).unsqueeze(-1)  # (B, C, 1)
        return total / (count + POOL_EPS)

    def _check_inputs(self, image: torch.Tensor, mask: torch.Tensor) -> None:
        cfg = self.config
        if image.ndim != 4 or image.shape[1] != cfg.in_channels:
            raise InputError(f"image: expected shape (B, {cfg.in_channels}, H, W), got {tuple(image.shape)}")
        B, _, H, W = image.shape
        if mask.ndim != 4 or mask.shape != (B, cfg.num_classes, H, W):
            raise InputError(f"mask: expected one-hot shape {(B, cfg.num_classes, H, W)}, got {tuple(mask.shape)}")
        for side in (H, W):
            if not self._skips_fit(side):
                raise InputError(
                    f"image: size {H}x{W} does not survive {cfg.num_downsample} halvings and "
                    f"doublings; use multiples of {2**cfg.num_downsample}"
                )

    def _skips_fit(self, side: int) -> bool:
        """Whether every skip concatenation sees equal sizes (stride-2 convs round up)."""
        sizes = [side]
        for _ in range(self.config.num_downsample):
            sizes.append((sizes[-1] + 1) // 2)
        bottom = sizes[-1]
        # Before decoder layer j the upsampled map has bottom * 2**j pixels; the skip has sizes[-1-j].
        return all(sizes[-1 - j] == bottom * 2**j for j in range(1, self.config.num_upsample))
