"""scadm's SSIM is the standard one: skimage's structural_similarity with the paper's settings."""

import numpy as np
import pytest

from scadm.errors import InputError

pytest.importorskip("torchmetrics", reason="SSIM needs torchmetrics (the metrics extra)")
from scadm.metrics.ssim import ssim

C1, C2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2
# Both sides compute in float64 on [0, 1]: 121-tap window sums (~1e-16 relative each), then
# variances as E[x^2] - E[x]^2, whose absolute error (~1e-16) is divided by at least C2 = 9e-4:
# ~1e-13 per pixel at worst. 1e-12 leaves room for any CPU and is ~1e10 below the bug it guards
# (the padded border moved SSIM by up to 2e-2).
FLOAT64_ATOL = 1e-12


def _constant(value: int, size: int = 16) -> np.ndarray:
    return np.full((1, size, size, 3), value, dtype=np.uint8)


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The reference: Wang et al.'s definition as skimage computes it (Gaussian sigma 1.5, 11 taps,
    population covariance, K 0.01/0.03, valid windows, mean over colour channels)."""
    metrics = pytest.importorskip("skimage.metrics", reason="the SSIM reference needs scikit-image (test extra)")
    return np.array(
        [
            metrics.structural_similarity(
                x.astype(np.float64) / 255,
                y.astype(np.float64) / 255,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                K1=0.01,
                K2=0.03,
                channel_axis=-1,
            )
            for x, y in zip(a, b, strict=True)
        ]
    )


def _degraded(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise, a box blur and a one-pixel shift: a reconstruction-like pair whose SSIM is mid-range."""
    x = image.astype(np.float64)
    blurred = sum(np.roll(x, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    shifted = np.roll(blurred, 1, axis=1) + rng.normal(0, 12, x.shape)
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def _real_images() -> list[np.ndarray]:
    data = pytest.importorskip("skimage.data", reason="the sample photos come with scikit-image (test extra)")
    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]


def test_ssim_equals_skimage_on_real_photos():
    rng = np.random.default_rng(0)
    for image in _real_images():
        a, b = image[None], _degraded(image, rng)[None]
        expected = _skimage_ssim(a, b)
        assert 0.2 < expected[0] < 0.95  # a mid-range pair, where a border term would show
        np.testing.assert_allclose(ssim(a, b), expected, rtol=0, atol=FLOAT64_ATOL)


def test_ssim_equals_skimage_across_two_different_photos():
    images = _real_images()
    a, b = images[0][:300, :400][None], images[1][:300, :400][None]
    np.testing.assert_allclose(ssim(a, b), _skimage_ssim(a, b), rtol=0, atol=FLOAT64_ATOL)


def test_ssim_equals_skimage_on_a_batch_of_64px_pairs():
    """Random, structured and face-sized pairs in one batch: each image gets its own value."""
    rng = np.random.default_rng(1)
    ramp = np.broadcast_to(np.linspace(0, 255, 64)[None, :, None], (64, 64, 3))
    checker = ((np.indices((64, 64)).sum(0) // 8) % 2 * 255)[..., None].repeat(3, -1)
    random_a = rng.integers(0, 256, (64, 64, 3))
    a = np.stack([random_a, ramp, checker, rng.integers(0, 256, (64, 64, 3))]).astype(np.uint8)
    b = np.stack(
        [
            np.clip(random_a + rng.normal(0, 30, random_a.shape), 0, 255),
            ramp[:, ::-1],
            np.roll(checker, 3, axis=0),
            rng.integers(0, 256, (64, 64, 3)),
        ]
    ).astype(np.uint8)
    expected = _skimage_ssim(a, b)
    np.testing.assert_allclose(ssim(a, b), expected, rtol=0, atol=FLOAT64_ATOL)
    assert len(np.unique(np.round(expected, 3))) == 4


def test_ssim_of_flat_images_is_the_luminance_term():
    # flat images have no variance: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1); float64 sums
    # of 121 equal taps are exact to ~1e-15
    a, b = 100 / 255, 180 / 255
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    assert ssim(_constant(100), _constant(180))[0] == pytest.approx(expected, rel=1e-12)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    noisy = np.clip(x + rng.normal(0, 40, x.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(x + rng.normal(0, 90, x.shape), 0, 255).astype(np.uint8)
    assert ssim(x, x) == pytest.approx([1.0, 1.0], rel=0, abs=FLOAT64_ATOL)
    assert (ssim(x, noisier) < ssim(x, noisy)).all() and (ssim(x, noisy) < 0.99).all()


def test_ssim_refuses_mismatched_or_tiny_images():
    with pytest.raises(InputError, match="shapes differ"):
        ssim(_constant(0, 16), _constant(0, 20))
    with pytest.raises(InputError, match="11x11"):
        ssim(_constant(0, 8), _constant(0, 8))
