import numpy as np
import pytest

from scadm.errors import InputError
from scadm.metrics.segmentation import SegmentationScores
from scadm.metrics.ssim import ssim

C1, C2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2


def _constant(value: int, size: int = 16) -> np.ndarray:
    return np.full((1, size, size, 3), value, dtype=np.uint8)


def test_ssim_of_flat_images_is_the_luminance_term():
    # flat images have no variance: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    a, b = 100 / 255, 180 / 255
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    assert ssim(_constant(100), _constant(180))[0] == pytest.approx(expected, rel=1e-6)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    noisy = np.clip(x + rng.normal(0, 40, x.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(x + rng.normal(0, 90, x.shape), 0, 255).astype(np.uint8)
    assert ssim(x, x) == pytest.approx([1.0, 1.0])
    assert (ssim(x, noisier) < ssim(x, noisy)).all() and (ssim(x, noisy) < 0.99).all()


def test_ssim_refuses_mismatched_or_tiny_images():
    with pytest.raises(InputError, match="shapes differ"):
        ssim(_constant(0, 16), _constant(0, 20))
    with pytest.raises(InputError, match="11x11"):
        ssim(_constant(0, 8), _constant(0, 8))


def test_miou_and_accuracy_of_a_hand_worked_example():
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    predicted = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 2, 0], [2, 2, 2, 2]])
    s = SegmentationScores.empty(5).update(predicted, target)
    # class 0: TP 3, FP 1, FN 1 -> 3/5; class 1: TP 4, FP 1 -> 4/5; class 2: TP 7, FN 1 -> 7/8
    assert s.class_iou()[:3] == pytest.approx([3 / 5, 4 / 5, 7 / 8])
    assert np.isnan(s.class_iou()[3:]).all()  # absent from both: no IoU, left out of the mean
    assert s.miou == pytest.approx((3 / 5 + 4 / 5 + 7 / 8) / 3)
    assert s.pixel_accuracy == pytest.approx(14 / 16)


def test_miou_accumulates_over_the_set_not_per_image():
    a_t, a_p = np.zeros((2, 2), int), np.zeros((2, 2), int)
    b_t = np.array([[1, 1], [1, 1]])
    b_p = np.array([[1, 0], [0, 0]])
    s = SegmentationScores.empty(2).update(np.stack([a_p, b_p]), np.stack([a_t, b_t]))
    # set-level: class 0 TP 4, FP 3 -> 4/7; class 1 TP 1, FN 3 -> 1/4 (per-image means would differ)
    assert s.miou == pytest.approx((4 / 7 + 1 / 4) / 2)
    assert s.confusion.sum() == 8


def test_a_class_predicted_but_absent_from_the_truth_counts_as_zero():
    s = SegmentationScores.empty(3).update(np.array([2, 0]), np.array([0, 0]))
    assert s.class_iou()[2] == 0 and s.miou == pytest.approx((1 / 2 + 0) / 2)


def test_segmentation_refuses_bad_labels_and_empty_scores():
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        SegmentationScores.empty(3).update(np.array([3]), np.array([0]))
    with pytest.raises(InputError, match="pixels"):
        SegmentationScores.empty(3).update(np.zeros(4), np.zeros(5))
    with pytest.raises(InputError, match="no pixels"):
        SegmentationScores.empty(3).miou
