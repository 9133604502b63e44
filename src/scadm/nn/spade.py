"""SPADE normalisation: the semantic mask sets a per-pixel scale and shift (paper Sec. 3.4).

The mask enters the middle and decoder ResBlocks of the denoiser only through these layers (and
the masked cross-attention). Layer names follow the authors' `SPADEGroupNorm` so their checkpoints
load by name.
"""

import torch
import torch.nn.functional as F
from torch import nn

NORM_GROUPS = 32
SPADE_HIDDEN_CHANNELS = 128


#: How the full-resolution mask reaches a coarser feature grid: "nearest" keeps the top-left pixel
#: of each block (the authors' rule: one-hot stays one-hot, but a part smaller than the block can
#: vanish); "any" marks a class present in a cell if any of its pixels has it (multi-hot, so every
#: part reaches every grid and the attention mixes the styles of the parts that share a cell).
MASK_DOWNSAMPLING = ("nearest", "any")


def resize_mask(mask: torch.Tensor, size: tuple[int, int], rule: str = "nearest") -> torch.Tensor:
    """Resize a (B, C, H, W) mask to `size` by `rule` (see MASK_DOWNSAMPLING).

    For an integer factor f "nearest" keeps the top-left pixel of each f x f block, so a one-hot
    mask stays one-hot (or empty) at every resolution; "any" is the max over the block.
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if rule == "any":
        return F.adaptive_max_pool2d(mask, tuple(size))
    return F.interpolate(mask, size=tuple(size), mode="nearest")


class SPADEGroupNorm(nn.Module):
    """Parameter-free GroupNorm, then x * (1 + gamma(M)) + beta(M) with gamma, beta from the mask.

    The normalisation is plain nn.GroupNorm (eps 1e-5, no float32 upcast), as the authors'.
    """

    def __init__(self, channels: int, num_classes: int, hidden_channels: int = SPADE_HIDDEN_CHANNELS):
        super().__init__()
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, affine=False)
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(num_classes, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.mlp_gamma = nn.Conv2d(hidden_channels, channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden_channels, channels, kernel_size=3, padding=1)

    def modulation(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma(M), beta(M)) for a mask already at the feature resolution: they depend on the
        mask alone, so a sampler computes them once per edit instead of once per step."""
        hidden = self.mlp_shared(mask)
        return 1 + self.mlp_gamma(hidden), self.mlp_beta(hidden)

    def modulate(self, x: torch.Tensor, modulation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        scale, shift = modulation
        return self.norm(x) * scale + shift

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, channels, h, w); mask (B, num_classes, H, W) at any resolution."""
        return self.modulate(x, self.modulation(resize_mask(mask.to(x.dtype), (x.shape[-2], x.shape[-1]))))
