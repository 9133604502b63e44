from pathlib import Path

from PIL import Image

from scadm.demo import DEMO_MODEL, run_demo
from scadm.pipeline import SCADMPipeline
from scadm.settings import INTERACTIVE

MAX_SHIPPED_BYTES = 25 * 2**20


def test_shipped_model_is_complete_small_and_documented():
    files = [p for p in DEMO_MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_SHIPPED_BYTES
    assert (DEMO_MODEL / "MODEL_CARD.md").is_file()
    pipe = SCADMPipeline.from_pretrained(DEMO_MODEL)
    assert pipe.label_set.num_classes == 19 and pipe.image_size == 64
    assert next(pipe.unet.parameters()).dtype.is_floating_point


def test_demo_with_the_shipped_model_edits_locally(tmp_path: Path):
    summary = run_demo(tmp_path, settings=INTERACTIVE.replace(steps=10))
    assert Image.open(summary.figure).size[0] > 300
    for part in ("r_eye", "hair"):  # a swap changes its part, not the face around it
        inside, outside = summary.swaps[part]
        assert inside > 4 * outside, part
    assert summary.swaps["hair"][0] > 60  # /255: the demo's reference has hair of another colour
    # /255; a wrong face scores ~85 (DEMO.md), the eps-trained model before v-prediction 73.5
    assert summary.reconstruction_error < 25
