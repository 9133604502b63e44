import numpy as np
import pytest

from scadm.errors import InputError
from scadm.metrics.segmentation import SegmentationScores


def test_miou_and_accuracy_of_a_hand_worked_example():
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    predicted = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 2, 0], [2, 2, 2, 2]])
    s = SegmentationScores.empty(5).update(predicted, target)
    # class 0: TP 3, FP 1, FN 1 -> 3/5; class 1: TP 4, FP 1 -> 4/5; class 2: TP 7, FN 1 -> 7/8
    # ratios of small pixel counts in float64: exact to ~1e-16
    assert s.class_iou()[:3] == pytest.approx([3 / 5, 4 / 5, 7 / 8], rel=1e-12)
    assert np.isnan(s.class_iou()[3:]).all()  # absent from both: no IoU, left out of the mean
    assert s.miou == pytest.approx((3 / 5 + 4 / 5 + 7 / 8) / 3, rel=1e-12)
    assert s.pixel_accuracy == pytest.approx(14 / 16, rel=1e-12)


def test_miou_accumulates_over_the_set_not_per_image():
    a_t, a_p = np.zeros((2, 2), int), np.zeros((2, 2), int)
    b_t = np.array([[1, 1], [1, 1]])
    b_p = np.array([[1, 0], [0, 0]])
    s = SegmentationScores.empty(2).update(np.stack([a_p, b_p]), np.stack([a_t, b_t]))
    # set-level: class 0 TP 4, FP 3 -> 4/7; class 1 TP 1, FN 3 -> 1/4 (per-image means would differ)
    assert s.miou == pytest.approx((4 / 7 + 1 / 4) / 2, rel=1e-12)  # float64 ratios of counts
    assert s.confusion.sum() == 8


def test_a_class_predicted_but_absent_from_the_truth_counts_as_zero():
    s = SegmentationScores.empty(3).update(np.array([2, 0]), np.array([0, 0]))
    assert s.class_iou()[2] == 0 and s.miou == pytest.approx((1 / 2 + 0) / 2, rel=1e-12)


def test_segmentation_refuses_bad_labels_and_empty_scores():
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        SegmentationScores.empty(3).update(np.array([3]), np.array([0]))
    with pytest.raises(InputError, match="pixels"):
        SegmentationScores.empty(3).update(np.zeros(4), np.zeros(5))
    with pytest.raises(InputError, match="no pixels"):
        _ = SegmentationScores.empty(3).miou
