"""SSIM (Wang et al. 2004) between a reconstruction and its reference, per image (paper Table 1).

The standard definition, as `skimage.metrics.structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1)` computes it: an 11 x 11 Gaussian window,
sigma 1.5, K1 = 0.01, K2 = 0.03, on RGB in [0, 1], the mean over channels and over the valid
windows only (those that lie wholly inside the image). Inputs are uint8, as saved images are, so a
number does not depend on whether an image went through a file.

torchmetrics computes the map; which part of it its mean covers changed between versions (up to
1.6.0 the valid windows; from 1.6.1, its PR #2721, the whole map including the reflect-padded
border, which moves SSIM by up to ~0.02 on 64 px faces). So scadm takes torchmetrics' full map
(the same in every version: one value per pixel, the border ones from padded windows) and averages
the valid windows itself.
"""

from __future__ import annotations

import numpy as np
import torch

from scadm.errors import InputError

WINDOW = 11  # torchmetrics derives the Gaussian's taps from sigma: 2 * int(3.5 * 1.5 + 0.5) + 1


def _unit_range(images: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"images: expected uint8 (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).double() / 255


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair of uint8 images (N, H, W, 3) -> (N,) float64 in [-1, 1]."""
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError:
        raise InputError('SSIM needs torchmetrics: pip install "scadm[metrics]"') from None

    x, y = _unit_range(a), _unit_range(b)
    if x.shape != y.shape:
        raise InputError(f"images: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < WINDOW:
        raise InputError(f"images: SSIM's 11x11 window needs at least 11x11 pixels, got {tuple(x.shape[-2:])}")
    _, full = structural_similarity_index_measure(
        x,
        y,
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=WINDOW,
        data_range=1.0,
        k1=0.01,
        k2=0.03,
        reduction="none",
        return_full_image=True,
    )
    if full.shape != x.shape:  # a future torchmetrics that crops itself must not be cropped twice
        raise RuntimeError(f"torchmetrics returned an SSIM map of {tuple(full.shape)} for {tuple(x.shape)}")
    border = (WINDOW - 1) // 2
    return full[..., border:-border, border:-border].mean(dim=(1, 2, 3)).numpy()
