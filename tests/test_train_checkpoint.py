import json
from pathlib import Path

import pytest
import torch

from scadm.errors import CheckpointError, InputError, TrainingError
from scadm.train import checkpoint as ckpt
from scadm.train import train_vq
from scadm.train.autoencoder import VQTask
from scadm.train.loop import resolve_resume

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _save(run, step, keep=3, value=1.0, moment=1.0):
    weights = {"unet": {"w": torch.full((3, 2), value), "b": torch.arange(4.0)}}
    state = {
        "step": step,
        "optimizer": {"state": {0: {"exp_avg": torch.full((2,), moment)}}, "param_groups": [{"lr": 0.1}]},
        "data": {"epoch": 1, "position": 8},
        "scaler": None,
    }
    return ckpt.save_checkpoint(run, step, weights, state, keep)


def test_checkpoint_round_trips_weights_and_plain_state(tmp_path):
    folder = _save(tmp_path, 10, value=2.5)
    assert folder.name == "step_0000010"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000010"
    tensors, state = ckpt.load_checkpoint(folder)
    assert torch.equal(tensors["unet"]["w"], torch.full((3, 2), 2.5))
    assert state["data"] == {"epoch": 1, "position": 8}
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    torch.load(folder / ckpt.STATE_FILE, weights_only=True)  # no pickled classes inside


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep=2)
    names = [p.name for p in ckpt.complete_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_0000003", "step_0000004"]


def test_leftover_temporary_folder_is_ignored_and_cleaned(tmp_path):
    _save(tmp_path, 2)
    leftover = tmp_path / "checkpoints" / "step_0000004.tmp-abcd"  # a writer killed mid-way
    leftover.mkdir()
    (leftover / "unet.safetensors").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000002"
    with pytest.raises(CheckpointError, match="unfinished checkpoint"):
        ckpt.load_checkpoint(leftover)
    _save(tmp_path, 6)
    assert not leftover.exists()


def test_truncated_file_is_refused_with_a_clear_message(tmp_path):
    folder = _save(tmp_path, 2)
    weights = folder / "unet.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match=r"unet\.safetensors: \d+ bytes, but the manifest says \d+ \(truncated"):
        ckpt.load_checkpoint(folder)


def test_missing_file_is_refused(tmp_path):
    folder = _save(tmp_path, 2)
    (folder / ckpt.STATE_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"state\.pt: missing"):
        ckpt.load_checkpoint(folder)


def test_newer_complete_folder_wins_over_a_stale_latest_pointer(tmp_path):
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    # a kill between renaming step 4 into place and updating `latest`
    (tmp_path / "checkpoints" / "latest").write_text("step_0000002\n")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000004"
    (tmp_path / "checkpoints" / "latest").unlink()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000004"


def test_folder_without_manifest_is_not_a_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / "step_0000009").mkdir(parents=True)
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_fresh_run_into_a_folder_with_checkpoints_is_refused(tmp_path):
    _save(tmp_path, 2)
    with pytest.raises(InputError, match="--resume auto"):
        resolve_resume(tmp_path, None)
    assert resolve_resume(tmp_path, "auto").name == "step_0000002"
    assert resolve_resume(tmp_path / "empty", "auto") is None


def test_replace_folder_swaps_the_whole_folder(tmp_path):
    def writer(text):
        return lambda folder: (folder / "a.json").write_text(json.dumps(text))

    ckpt.replace_folder(tmp_path / "model", writer("old"))
    ckpt.replace_folder(tmp_path / "model", writer("new"))
    assert json.loads((tmp_path / "model" / "a.json").read_text()) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_resuming_from_non_finite_weights_is_refused_naming_file_and_tensor(tmp_path, value):
    older = _save(tmp_path, 2)
    folder = _save(tmp_path, 4, value=value)
    with pytest.raises(CheckpointError, match=r"unet\.safetensors: tensor w holds NaN or infinite") as err:
        ckpt.load_checkpoint(folder)
    assert f"--resume {older}" in str(err.value) and "\n" not in str(err.value)


def test_resuming_from_a_non_finite_optimizer_state_is_refused_naming_it(tmp_path):
    folder = _save(tmp_path, 2, moment=float("nan"))
    with pytest.raises(CheckpointError, match=r"state\.pt: tensor optimizer\.state\.0\.exp_avg holds NaN") as err:
        ckpt.load_checkpoint(folder)
    assert "no older checkpoint" in str(err.value)


def test_a_diverging_run_stops_before_writing_a_non_finite_checkpoint(tmp_path, monkeypatch, one_thread):
    """tiny.yaml's train_vq: 4 steps, logged and checkpointed every 2. The loss turns NaN in step 3,
    so the optimizer makes the weights NaN: the run must stop at step 4 and keep step 2 loadable."""
    loss, calls = VQTask.loss, []

    def diverging(self, batch, generator):
        value, terms = loss(self, batch, generator)
        calls.append(None)
        return (value * float("nan"), terms) if len(calls) > 2 else (value, terms)

    monkeypatch.setattr(VQTask, "loss", diverging)
    with pytest.raises(TrainingError, match=r"step 4: the loss is nan, training diverged \(vqvae tensor") as err:
        train_vq(TINY, tmp_path, progress=False, cpu=True)
    assert "step_0000002" in str(err.value)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / ckpt.CHECKPOINTS)] == ["step_0000002"]
    ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))  # the good one is still there, and finite
