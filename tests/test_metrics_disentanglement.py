import numpy as np
import pytest

from scadm.errors import InputError
from scadm.metrics.disentanglement import SwapLocality, mean_locality, region_change, swap_locality

LABELS = np.zeros((8, 8), int)
LABELS[2:4, 2:4] = 4  # a 2x2 "eye"
LABELS[5:, :] = 18  # "cloth"


def _image(bg, eye, cloth) -> np.ndarray:
    colours = {0: bg, 4: eye, 18: cloth}
    return np.stack([[colours[k] for k in row] for row in LABELS]).astype(np.uint8)


RECON = _image((100, 100, 100), (20, 20, 20), (50, 60, 70))
REFERENCE = _image((0, 0, 0), (200, 120, 40), (0, 0, 0))


# Every expected value below is a float64 ratio of small uint8 sums: exact to ~1e-16 relative, so
# pytest.approx's default (1e-6 relative, 1e-12 absolute at 0) only absorbs that rounding.


def test_a_perfectly_local_swap_changes_only_the_part_and_reaches_the_reference():
    result = RECON.copy()
    result[LABELS == 4] = (200, 120, 40)
    loc = swap_locality(result, RECON, LABELS, [4], REFERENCE, LABELS, truth=result)
    assert loc.inside == pytest.approx(((180 + 100 + 20) / 3) / 255)
    assert loc.leakage == 0
    assert loc.transfer == pytest.approx(1.0) and loc.gt_transfer == pytest.approx(1.0)
    assert loc.gt_leakage == pytest.approx(0.0)


def test_leakage_counts_change_outside_the_part_and_gt_leakage_the_harm_it_does():
    result = RECON.copy()
    result[LABELS == 18] += 30  # the swap repainted the cloth, too, and did nothing to the eye
    loc = swap_locality(result, RECON, LABELS, [4], REFERENCE, LABELS, truth=RECON)
    outside = (LABELS != 4).sum()
    assert loc.inside == 0 and loc.transfer == pytest.approx(0.0)
    assert loc.leakage == pytest.approx(30 / 255 * (LABELS == 18).sum() / outside)
    # cloth is 30 off the truth, bg exact: mean over the two outside parts
    assert loc.gt_leakage == pytest.approx((30 / 255 + 0) / 2)


def test_moving_halfway_gives_half_transfer():
    result = RECON.copy()
    result[LABELS == 4] = (110, 70, 30)  # halfway from (20, 20, 20) to (200, 120, 40)
    loc = swap_locality(result, RECON, LABELS, [4], REFERENCE, LABELS)
    assert loc.transfer == pytest.approx(0.5)
    assert loc.gt_transfer is None and loc.gt_leakage is None


def test_swapping_everything_has_no_outside():
    assert region_change(RECON, RECON, np.ones((8, 8), bool)) == (0.0, None)
    with pytest.raises(InputError, match="no pixels"):
        region_change(RECON, RECON, np.zeros((8, 8), bool))


def test_mean_locality_skips_undefined_values():
    a = swap_locality(RECON, RECON, LABELS, [4], REFERENCE, LABELS)
    b = swap_locality(RECON, RECON, LABELS, list(np.unique(LABELS)), REFERENCE, LABELS)
    mean = mean_locality([a, b])
    assert mean["count"] == 2 and mean["leakage"] == 0.0 and mean["gt_transfer"] is None


def test_mean_transfer_is_a_ratio_of_mean_distances():
    near = SwapLocality(0.1, 0.0, ref_before=0.001, ref_after=0.01)  # alone: transfer -9
    far = SwapLocality(0.1, 0.0, ref_before=0.5, ref_after=0.1)  # alone: transfer 0.8
    assert near.transfer == pytest.approx(-9) and far.transfer == pytest.approx(0.8)
    assert mean_locality([near, far])["transfer"] == pytest.approx(1 - 0.055 / 0.2505)
