"""Multi-process training as the README promises it: `accelerate launch` with 2 CPU processes (gloo).

Each rank must train on its own share of every step's samples (together: every sample once per
epoch), and DDP must keep the weights bit-identical across ranks. The diffusion trainer runs (the
first stage's trainer shares its loop, data stream and Accelerator), with grad accumulation.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scadm
from scadm.train.config import build_vqvae, load_config

TESTS = Path(__file__).resolve().parent
TINY = TESTS.parent / "configs" / "tiny.yaml"
NUM_SAMPLES = 16  # tiny.yaml: data.num
LAUNCH_TIMEOUT_S = 300  # two process start-ups and 2 tiny steps: ~20 s on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per rank: world size, backend, the index batches it trained on, weights before and after."""
    out = tmp_path_factory.mktemp("distributed")
    torch.manual_seed(0)
    build_vqvae(load_config(TINY)).save_pretrained(out / "vqvae")  # untrained: the loop is what is tested
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(out / "hf"),  # no user accelerate config
        "PYTHONPATH": os.pathsep.join(
            [str(Path(scadm.__file__).parents[1]), str(TESTS), os.environ.get("PYTHONPATH", "")]
        ),
    }
    # --multi_gpu is accelerate's name for its torchrun launcher; without CUDA and with cpu=True
    # each process runs as MULTI_CPU over gloo
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        str(TESTS / "distributed_train.py"),
        str(TINY),
        str(out / "vqvae"),
        str(out),
    ]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"accelerate launch did not finish in {LAUNCH_TIMEOUT_S} s:\n{e.stderr}")
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"diffusion-rank{r}.pt") for r in (0, 1)]


def test_two_processes_share_every_epoch_between_them(runs):
    assert [r["world"] for r in runs] == [2, 2] and [r["backend"] for r in runs] == ["gloo", "gloo"]
    zero, one = runs[0]["seen"], runs[1]["seen"]
    assert len(zero) == len(one) > 0
    # batch i of every rank together is the step's slice of the epoch's order
    slices = [a + b for a, b in zip(zero, one, strict=True)]
    assert all(not set(a) & set(b) for a, b in zip(zero, one, strict=True))  # different samples on each rank
    per_epoch = NUM_SAMPLES // len(slices[0])
    epochs = [[i for s in slices[e : e + per_epoch] for i in s] for e in range(0, len(slices), per_epoch)]
    assert epochs and all(sorted(epoch) == list(range(NUM_SAMPLES)) for epoch in epochs)  # together, all


def test_weights_stay_identical_across_ranks(runs):
    zero, one = runs
    assert zero["after"].keys() == one["after"].keys()
    for name in zero["after"]:
        assert torch.equal(zero["before"][name], one["before"][name]), name
        assert torch.equal(zero["after"][name], one["after"][name]), name  # all-reduced gradients
    changed = [n for n in zero["after"] if not torch.equal(zero["after"][n], zero["before"][n])]
    assert len(changed) > len(zero["after"]) // 2  # and they did train
