"""Mask fidelity of generated faces: mIoU and pixel accuracy of a face parser's labels against
the mask the face was generated from (paper Table 1, after SPADE/SEAN/SDM).

Convention (the SPADE/SEAN evaluation, which SCA-DM's Table 1 follows; the authors' repository has
no mIoU code): one confusion matrix is accumulated over the whole test set, the IoU of class k is
TP / (TP + FP + FN) over all pixels of all images, and the mean runs over the classes that occur
in the ground truth or the prediction somewhere in the set (a class absent from both has no IoU
and is left out, not counted as 0 or 1). Pixel accuracy is correct pixels / all pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from scadm.errors import InputError


@dataclass
class SegmentationScores:
    """A confusion matrix (rows: ground truth, columns: prediction) and the scores it gives."""

    confusion: np.ndarray  # (C, C) int64

    @classmethod
    def empty(cls, num_classes: int) -> SegmentationScores:
        return cls(np.zeros((num_classes, num_classes), dtype=np.int64))

    @property
    def num_classes(self) -> int:
        return self.confusion.shape[0]

    def update(self, predicted, target) -> SegmentationScores:
        """Add label maps (N, H, W) or (H, W): predicted by the parser, target = the input mask."""
        p = torch.as_tensor(np.asarray(predicted)).long().reshape(-1)
        t = torch.as_tensor(np.asarray(target)).long().reshape(-1)
        if p.shape != t.shape:
            raise InputError(f"label maps: predicted has {p.numel()} pixels, target {t.numel()}")
        c = self.num_classes
        for name, labels in (("predicted", p), ("target", t)):
            if labels.numel() and (labels.min() < 0 or labels.max() >= c):
                raise InputError(f"{name} labels must be in [0, {c}), got {int(labels.min())}..{int(labels.max())}")
        self.confusion += torch.bincount(t * c + p, minlength=c * c).reshape(c, c).numpy()
        return self

    def class_iou(self) -> np.ndarray:
        """(C,) IoU per class; NaN for a class absent from both ground truth and prediction."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    @property
    def miou(self) -> float:
        iou = self.class_iou()
        if np.isnan(iou).all():
            raise InputError("no pixels: update() with label maps before asking for mIoU")
        return float(np.nanmean(iou))

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        if total == 0:
            raise InputError("no pixels: update() with label maps before asking for accuracy")
        return float(np.trace(self.confusion) / total)
