"""How local a partial style swap is (paper §4.3 shows it; scadm measures it).

A partial swap of parts K renders the target's mask with the reference's styles for K and the
target's own for the rest. Measured against the reconstruction (same mask, seed and sampler, no
swap), a local edit changes pixels inside K and leaves the rest alone:

* `inside`: mean |result - reconstruction| over the pixels of K, in grey levels / 255 (0-1): how much K moved.
* `leakage`: the same over the pixels outside K: what should not have moved.
* `transfer`: how far K's colours moved toward the reference's, 1 - d(result) / d(reconstruction)
  (over a set of faces: 1 - mean d(result) / mean d(reconstruction)),
  where d is the mean over parts k in K of the L1 distance (/255, over RGB / 3) between part k's
  mean colour and the reference's mean colour of part k (in the reference's own image and mask).
  1 = reached the reference, 0 = did not move, < 0 = moved away. Works on any dataset.

On procedural faces the true result is known (`scadm.data.synthetic.swap_parts`), so:

* `gt_transfer`: the same ratio against the ground-truth swap's part colours;
* `gt_leakage`: how much worse the parts outside K match the ground truth (which there equals the
  target) after the swap than in the reconstruction (part colour distance, /255; 0 = no harm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scadm.errors import InputError


def part_colour(image: np.ndarray, labels: np.ndarray, part: int) -> np.ndarray:
    """Mean RGB (3,) of `image` (H, W, 3) over the pixels of class `part`."""
    region = labels == part
    if not region.any():
        raise InputError(f"class {part} has no pixels in this mask")
    return image[region].astype(np.float64).mean(0)


def colour_distance(image: np.ndarray, labels: np.ndarray, colours: dict[int, np.ndarray]) -> float:
    """Mean over parts k of |mean colour of k in `image` - colours[k]| (L1 over RGB / 3, /255)."""
    return float(np.mean([np.abs(part_colour(image, labels, k) - c).mean() / 255 for k, c in colours.items()]))


def region_change(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> tuple[float, float | None]:
    """Mean |a - b| (/255) inside `region` and outside it (None when nothing lies outside)."""
    if a.shape != b.shape or region.shape != a.shape[:2]:
        raise InputError(f"images {a.shape}, {b.shape} and region {region.shape} do not match")
    if not region.any():
        raise InputError("region: no pixels inside; pick parts the target shows")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(-1) / 255
    return float(diff[region].mean()), float(diff[~region].mean()) if (~region).any() else None


def _moved(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None or before == 0 else 1 - after / before


@dataclass(frozen=True)
class SwapLocality:
    """One swap's numbers; distances are the colour distances behind `transfer` (d before = in
    the reconstruction, after = in the swap), kept so that means over faces are ratios of means."""

    inside: float
    leakage: float | None
    ref_before: float | None = None
    ref_after: float | None = None
    gt_before: float | None = None
    gt_after: float | None = None
    gt_leakage: float | None = None

    @property
    def transfer(self) -> float | None:
        return _moved(self.ref_before, self.ref_after)

    @property
    def gt_transfer(self) -> float | None:
        return _moved(self.gt_before, self.gt_after)


def swap_locality(
    result: np.ndarray,
    reconstruction: np.ndarray,
    labels: np.ndarray,
    parts: Sequence[int],
    reference: np.ndarray,
    reference_labels: np.ndarray,
    truth: np.ndarray | None = None,
) -> SwapLocality:
    """Locality of one partial swap of `parts` on a target with mask `labels` (H, W).

    result, reconstruction, reference, truth: uint8 (H, W, 3); `truth` the true swap if known.
    """
    parts = [int(k) for k in parts]
    inside, leakage = region_change(result, reconstruction, np.isin(labels, parts))
    shown = [k for k in parts if (labels == k).any() and (reference_labels == k).any()]
    target = {k: part_colour(reference, reference_labels, k) for k in shown}
    ref_before, ref_after = (
        (colour_distance(reconstruction, labels, target), colour_distance(result, labels, target))
        if target
        else (None, None)
    )
    if truth is None:
        return SwapLocality(inside, leakage, ref_before, ref_after)
    inside_truth = {k: part_colour(truth, labels, k) for k in parts if (labels == k).any()}
    others = {k: part_colour(truth, labels, k) for k in np.unique(labels) if k not in parts}
    gt_leakage = None
    if others:
        gt_leakage = colour_distance(result, labels, others) - colour_distance(reconstruction, labels, others)
    return SwapLocality(
        inside,
        leakage,
        ref_before,
        ref_after,
        colour_distance(reconstruction, labels, inside_truth),
        colour_distance(result, labels, inside_truth),
        gt_leakage,
    )


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def mean_locality(items: Sequence[SwapLocality]) -> dict[str, float | int | None]:
    """Means over swaps, skipping undefined (None) entries; transfers as 1 - mean(d after) /
    mean(d before), so a face whose reconstruction already had the reference's colour (d before
    near 0) cannot dominate the mean with a huge ratio."""
    out: dict[str, float | int | None] = {"count": len(items)}
    for field in ("inside", "leakage", "gt_leakage"):
        out[field] = _mean(getattr(s, field) for s in items)
    for name, before, after in (("transfer", "ref_before", "ref_after"), ("gt_transfer", "gt_before", "gt_after")):
        pairs = [(getattr(s, before), getattr(s, after)) for s in items if getattr(s, before) is not None]
        out[name] = _moved(_mean(b for b, _ in pairs), _mean(a for _, a in pairs)) if pairs else None
    return out
