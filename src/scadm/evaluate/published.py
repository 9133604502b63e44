"""The paper's published numbers (Ergasti et al., SCA-DM), the one place the reports quote them from.

Table 1: reconstruction on CelebAMask-HQ's 2,000 test faces at 256 px (SSIM, FID, the face
parser's mIoU and pixel accuracy, in %). Fig. 8: noise-based generation at 50, 100, 200 and 1000
steps; its FID and time curves are only plotted (the text gives no values: SCA-DM's FID is below
SDM's at every step count but 1000, and SDM takes about 5x longer per step), while its LPIPS
diversity is given in the text.
"""

from __future__ import annotations

#: Table 1, row by row: (SSIM ↑, FID ↓, mIoU % ↑, accuracy % ↑)
TABLE1 = {
    "MaskGAN": (0.51, 59.91, 76.3, 87.8),
    "SEAN": (0.49, 20.82, 82.4, 95.0),
    "V-INADE": (0.29, 17.49, 78.0, 93.5),
    "SemanticStyleGAN": (0.52, 26.83, 69.8, 90.2),
    "SCA-DM": (0.54, 16.85, 81.78, 94.67),
}
TABLE1_COLUMNS = ("ssim", "fid", "miou", "accuracy")
#: Fig. 8 (text): mean LPIPS between random-style samples of one mask
LPIPS_DIVERSITY = {"SCA-DM": 0.33, "SDM": 0.42}
#: the step counts of Fig. 8
FIG8_STEPS = (50, 100, 200, 1000)
#: what the paper measured on
PAPER_SETTING = "CelebAMask-HQ, 2,000 test faces, 256 px, the authors' full-size model"


def table1(model: str = "SCA-DM") -> dict[str, float]:
    """One row of Table 1 by column name."""
    return dict(zip(TABLE1_COLUMNS, TABLE1[model], strict=True))


def table1_summary() -> str:
    """SCA-DM's row in words, for report titles."""
    r = table1()
    return f"SSIM {r['ssim']}, FID {r['fid']}, mIoU {r['miou']}, acc. {r['accuracy']} on CelebAMask-HQ"


def lpips_summary() -> str:
    return ", ".join(f"{name} {value}" for name, value in LPIPS_DIVERSITY.items())
