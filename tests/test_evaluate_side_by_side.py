"""scadm evaluate on a folder of faces (the realistic reports' case) and the side-by-side summary
built from its JSON: the right numbers in the right rows, the paper's beside them."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_evaluate import needs_metrics, run, tiny_options

from scadm.data.synthetic import render_face
from scadm.errors import InputError
from scadm.evaluate.data import DataSpec
from scadm.evaluate.published import TABLE1, table1
from scadm.evaluate.side_by_side import (
    REAL_ROW,
    fig8_side_by_side,
    load_records,
    locality_summary,
    model_card_lines,
    table1_side_by_side,
)

PROTOCOLS = ("reconstruction", "swap", "partial-swap", "noise")


def _folder(root: Path, count: int = 3) -> Path:
    """Procedural faces saved as a plain folder: no ground truth travels with them."""
    for sub in ("images", "labels"):
        (root / "test" / sub).mkdir(parents=True)
    for i in range(count):
        face = render_face(i, 64)
        Image.fromarray(face.image).save(root / "test" / "images" / f"{20 * i}.png")
        Image.fromarray(face.labels.astype("uint8")).save(root / "test" / "labels" / f"{20 * i}.png")
    return root


@pytest.fixture(scope="module")
def out(tiny_pipe, tmp_path_factory):
    """One tiny evaluation for the whole module, on one thread (see conftest's one_thread)."""
    tmp_path, threads = tmp_path_factory.mktemp("folder-eval"), torch.get_num_threads()
    torch.set_num_threads(1)
    options = tiny_options(part_sets={"hair": ("hair",)})
    options.data = DataSpec.parse(str(_folder(tmp_path / "faces")), 3, "test")
    run(tiny_pipe, list(PROTOCOLS), tmp_path, options=options, names=("tiny",))
    torch.set_num_threads(threads)
    return tmp_path / "out"


@pytest.fixture()
def records(out):
    return load_records(out, PROTOCOLS)


@needs_metrics
def test_folder_reports_leave_out_the_ground_truth_columns(out):
    text = (out / "partial-swap.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| parts |"))
    assert "| preserve |" in text and "transfer ↑" in header
    assert "GT transfer" not in header and "inside vs truth" not in header  # folder faces carry no true swap
    assert "ground truth" not in (out / "swap.md").read_text()


@needs_metrics
def test_side_by_side_puts_each_number_in_its_row(records):
    recon = records["reconstruction"]["metrics"]
    table = table1_side_by_side(records)
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["SCA-DM (paper)"] == [0.54, 16.85, 81.78, 94.67] and len(rows) == len(TABLE1) + 2
    ours = rows["tiny (this report, 3 faces)"]
    assert ours == [recon["tiny"][k] for k in ("ssim", "fid", "miou", "accuracy")]
    assert rows["face parser on the real faces (ceiling)"][2:] == [recon[REAL_ROW]["miou"], recon[REAL_ROW]["accuracy"]]

    fig8 = fig8_side_by_side(records)
    noise = records["noise"]["metrics"]["tiny"]
    assert fig8.columns[1:3] == ["2 steps", "3 steps"]  # tiny_options' noise steps, in order
    fid_row = next(r for r in fig8.rows if r[0].startswith("tiny: FID"))
    assert fid_row[1:] == [noise["steps"]["2"]["fid"], noise["steps"]["3"]["fid"], noise["lpips_diversity"]]
    time_row = next(r for r in fig8.rows if r[0].startswith("tiny: time"))
    assert time_row[1] == 1.0  # ratio to the fewest steps

    swaps = {(r[0], r[1]): r for r in locality_summary(records).rows}
    assert set(swaps) == {("hair", "plain"), ("hair", "preserve"), ("all (total swap)", "plain")}
    hair = records["partial-swap"]["metrics"]["tiny/hair"]
    assert swaps["hair", "plain"][3:6] == [hair["inside"], hair["leakage"], hair["inside"] / hair["leakage"]]


@needs_metrics
def test_model_card_lines_quote_the_reports(records):
    lines = model_card_lines(records)
    recon = records["reconstruction"]["metrics"]["tiny"]
    assert f"SSIM {recon['ssim']:.3g}" in lines[0] and f"SSIM {table1()['ssim']}" in lines[0]
    assert any(line.startswith("- hair swap (") for line in lines)
    assert any("region-preserving" in line for line in lines)
    assert "LPIPS diversity" in lines[-1] and lines[-1].index(" at 2") < lines[-1].index(" at 3")  # step order


def test_load_records_names_the_missing_report(tmp_path):
    (tmp_path / "reconstruction.json").write_text(json.dumps({"models": {}}))
    with pytest.raises(InputError, match=r"noise\.json: not found"):
        load_records(tmp_path, ("reconstruction", "noise"))


@needs_metrics
def test_the_recipe_writes_readme_and_model_card_from_the_reports(out):
    """scripts/realistic_reports.py --report-only: the summary files, with no hand editing."""
    path = Path(__file__).parents[1] / "scripts" / "realistic_reports.py"
    spec = importlib.util.spec_from_file_location("realistic_reports", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    steps = [{"command": f"scadm evaluate {k}", "wall_seconds": 60.0, "cpu_seconds": 30.0} for k in range(2)]
    run = {"invocation": "scripts/realistic_reports.py", "commands": steps, "threads": "1"}
    (out / "run.json").write_text(json.dumps({**run, "wall_seconds": 120.0, "cpu_seconds": 60.0}))
    assert script.main(["--report-only", "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "Non-commercial research only" in readme and "CelebAMask-HQ" in readme and "FFHQ" in readme
    assert "1.0 min CPU (0.5 for reconstruction and swaps; 0.5 for noise-based generation" in readme
    assert "| SCA-DM (paper) | 0.54 | 16.85 | 81.78 | 94.67 |" in readme and "not comparable" in readme
    card = (out / "model-card.md").read_text()
    assert card.count("\n  - ") == 4  # reconstruction, hair, total swap, noise
    assert "\n    - region-preserving" in card and "LPIPS diversity" in card
