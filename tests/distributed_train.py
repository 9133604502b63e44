"""Run by test_train_distributed under `accelerate launch` with 2 CPU processes: trains the tiny
diffusion model (`scadm train`'s trainer) 2 steps on a given first stage and writes, per rank, the
sample indices the rank trained on and its weights before and after (OUT/diffusion-rank<r>.pt).
One trainer per process, as the CLI runs them: `fit` ends the process group when it is done.

Usage: distributed_train.py CONFIG VQ_FOLDER OUT
"""

import sys
from pathlib import Path

import torch

from scadm.train import data as train_data
from scadm.train import diffusion
from scadm.train.config import load_config

seen: list[list[int]] = []
_batches = train_data.ShardedBatches.__iter__


def _recording(self):
    for batch in _batches(self):  # num_workers 0: drawn in this process, one batch per step
        seen.append([int(i) for i in batch])
        yield batch


def _recording_fit(module, out: Path):
    original = module.fit

    def fit(accelerator, task, *args, **kwargs):
        def weights():
            return {
                f"{name}.{k}": v.detach().clone()
                for name, model in task.models.items()
                for k, v in accelerator.unwrap_model(model).state_dict().items()
            }

        seen.clear()
        before, backend = weights(), torch.distributed.get_backend()  # `fit` ends the process group
        result = original(accelerator, task, *args, **kwargs)
        torch.save(
            {
                "world": accelerator.num_processes,
                "backend": backend,
                "seen": list(seen),
                "before": before,
                "after": weights(),
            },
            out / f"{task.name}-rank{accelerator.process_index}.pt",
        )
        return result

    module.fit = fit


def main(config_path: str, vq: str, out: str) -> None:
    out = Path(out)
    train_data.ShardedBatches.__iter__ = _recording
    _recording_fit(diffusion, out)
    diffusion.train_diffusion(load_config(config_path), out / "run", vq=vq, max_steps=2, progress=False, cpu=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
