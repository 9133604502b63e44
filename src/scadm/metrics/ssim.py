"""SSIM (Wang et al. 2004) between a reconstruction and its reference, per image (paper Table 1).

torchmetrics' implementation with the paper defaults of SSIM: an 11 x 11 Gaussian window,
sigma 1.5, K1 = 0.01, K2 = 0.03, on RGB in [0, 1] (data range 1), valid windows only, the mean
over channels and pixels. Inputs are uint8, as saved images are, so a number does not depend on
whether an image went through a file.
"""

from __future__ import annotations

import numpy as np
import torch

from scadm.errors import InputError


def _unit_range(images: np.ndarray) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images: expected uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).double() / 255


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair of uint8 images (N, H, W, 3) -> (N,) float64 in [-1, 1]."""
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError:
        raise InputError('SSIM needs torchmetrics: pip install "scadm[metrics]"') from None

    x, y = _unit_range(a), _unit_range(b)
    if x.shape != y.shape:
        raise InputError(f"images: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < 11:
        raise InputError(f"images: SSIM's 11x11 window needs at least 11x11 pixels, got {tuple(x.shape[-2:])}")
    values = structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0,
        k1=0.01, k2=0.03, reduction="none")
    return values.numpy()
