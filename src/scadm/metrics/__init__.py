"""Metrics of the paper (FID, SSIM, mIoU, pixel accuracy, LPIPS diversity) and of scadm's own
disentanglement protocol (inside/outside change and ground-truth transfer of partial swaps).

Each module reads uint8 images (N, H, W, 3), as saved to disk. The pretrained networks come from
optional packages (`scadm.metrics.weights.METRICS_INSTALL`); nothing is downloaded.
"""
