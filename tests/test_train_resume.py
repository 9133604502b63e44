"""A killed run, resumed from its last checkpoint, ends bit-identical to an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scadm.train import train_diffusion, train_vq
from scadm.train.checkpoint import latest_checkpoint
from scadm.train.config import build_vqvae, load_config

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
KILL_TIMEOUT_S = 120

# Runs `scadm train` in a child process that hangs inside the first training step after its
# first checkpoint (forward done, no optimizer step yet), so the SIGKILL lands mid-step.
CHILD = """
import sys, time, torch
torch.set_num_threads(1)
import scadm.train.checkpoint as checkpoint
from scadm.train.diffusion import DiffusionTask
from scadm.cli import main
saved, save, loss = [], checkpoint.save_checkpoint, DiffusionTask.loss
def save_and_note(*args, **kwargs):
    saved.append(save(*args, **kwargs))
    return saved[-1]
def loss_then_hang(self, batch, generator):
    value = loss(self, batch, generator)
    if saved:
        time.sleep(600)
    return value
checkpoint.save_checkpoint, DiffusionTask.loss = save_and_note, loss_then_hang
sys.exit(main(sys.argv[1:]))
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vq_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vq") / "vqvae"
    torch.manual_seed(0)
    build_vqvae(load_config(TINY)).save_pretrained(folder)
    return folder


def _weights(run: Path, names) -> dict:
    folder = latest_checkpoint(run)
    return {name: load_file(folder / f"{name}.safetensors") for name in names}


def _assert_identical(a: dict, b: dict) -> None:
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs"


def test_killed_diffusion_run_resumes_to_identical_weights(tmp_path, vq_dir):
    steps = load_config(TINY).train.max_steps
    straight = train_diffusion(TINY, tmp_path / "straight", vq=vq_dir, progress=False, cpu=True)
    assert straight.step == steps

    run = tmp_path / "killed"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            "train",
            str(TINY),
            "--out",
            str(run),
            "--vq",
            str(vq_dir),
            "--cpu",
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    latest = run / "checkpoints" / "latest"
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not latest.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert not (run / "checkpoints" / f"step_{steps:07d}").exists()

    resumed = train_diffusion(TINY, run, resume="auto", progress=False, cpu=True)
    assert resumed.resumed_from.name < f"step_{steps:07d}" and resumed.step == steps
    names = ("unet", "style_encoder", "ema_unet")
    _assert_identical(_weights(tmp_path / "straight", names), _weights(run, names))


def test_stopped_vq_run_resumes_to_identical_weights(tmp_path):
    train_vq(TINY, tmp_path / "straight", progress=False, cpu=True)
    train_vq(TINY, tmp_path / "split", max_steps=2, progress=False, cpu=True)
    resumed = train_vq(TINY, tmp_path / "split", resume="auto", progress=False, cpu=True)
    assert resumed.resumed_from.name == "step_0000002" and resumed.step == 4
    _assert_identical(_weights(tmp_path / "straight", ["vqvae"]), _weights(tmp_path / "split", ["vqvae"]))
