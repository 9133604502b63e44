"""The optimisation loop both trainers share: accumulation, logging, checkpoints, exact resume.

Exact resume: everything random in step s (the batch, and every draw of the task's loss and of
modules such as dropout) is a pure function of (seed, s, micro-batch, rank): the global torch RNG
and the task's generator are re-seeded from that tuple before each micro-batch, and the data
order comes from `BatchStream`'s (epoch, position). A checkpoint holds the weights, the optimizer,
lr-scheduler and grad-scaler states, the data position and the task's extra state (EMA), so a
killed run resumed from its last checkpoint reaches bit-identical weights (same hardware, same
thread count, deterministic kernels).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration
from torch import nn
from tqdm.auto import tqdm

from scadm.errors import InputError, ScadmWarning, TrainingError
from scadm.models.loading import non_finite
from scadm.train import checkpoint as ckpt
from scadm.train.config import OptimConfig
from scadm.train.data import BatchStream

LOG_DIR = "logs"
SUMMARY_FILE = "training.json"
AUTO = "auto"


def step_seed(seed: int, step: int, micro: int, rank: int, purpose: int = 0) -> int:
    """A 63-bit seed that depends on nothing but its arguments (hashed, so nearby steps differ)."""
    state = np.random.SeedSequence([seed, step, micro, rank, purpose]).generate_state(1, np.uint64)
    return int(state[0] >> 1)


def make_accelerator(
    cfg: OptimConfig, out: Path, cpu: bool = False, find_unused_parameters: bool = False
) -> Accelerator:
    """An Accelerator for one run: precision and accumulation from `cfg`, TensorBoard under
    out/logs. `find_unused_parameters` is needed under DDP when some parameters get no gradient."""
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(Path(out) / LOG_DIR)),
        cpu=cpu,
        kwargs_handlers=handlers,
    )


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the configured lr over `warmup_steps` optimizer steps, then constant."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))


class Task:
    """What a trainer plugs into `fit`: its trained modules and its loss, plus optional hooks."""

    name: str = "train"  # TensorBoard run and progress-bar label
    export_name: str = "model"  # the folder under the run folder that `export` writes
    models: dict[str, nn.Module]  # prepared (possibly DDP-wrapped); saved by their unwrapped state

    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to minimise, named detached terms to log) for one micro-batch."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after every optimizer step (EMA updates)."""

    def extra_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra(self, tensors: dict[str, dict[str, torch.Tensor]], state: dict) -> None:
        """Restore what extra_tensors / extra_state saved."""

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out metrics and pictures; runs on the main process only."""
        return {}

    def export(self) -> None:
        """Write the usable model into out/export_name (main process only)."""
        raise NotImplementedError


@dataclass
class TrainResult:
    out: Path
    step: int
    export: Path
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: Path | None = None
    train_seconds: float = 0.0


INIT_RECORD = "init.json"  # in a run folder: the weights a fresh run started from (--init)


def record_init(out: Path, init: str | Path) -> None:
    """Write down in the run folder `out` that its fresh run started from the weights in `init`."""
    (Path(out) / INIT_RECORD).write_text(json.dumps({"init": str(init)}) + "\n")


def recorded_init(out: Path) -> str | None:
    """What `record_init` wrote in `out`, or None for a run started from scratch."""
    path = Path(out) / INIT_RECORD
    return json.loads(path.read_text())["init"] if path.is_file() else None


def resolve_resume(out: Path, resume: str | Path | None) -> Path | None:
    """None: a fresh run (refused if `out` already holds checkpoints); "auto": the newest complete
    checkpoint, or a fresh run if there is none; a path: that checkpoint folder."""
    root = Path(out) / ckpt.CHECKPOINTS
    if resume is None:
        if ckpt.complete_checkpoints(root):
            raise InputError(
                f"--out {out}: holds checkpoints of an earlier run; pass --resume auto to "
                "continue it, or choose another folder"
            )
        return None
    if str(resume) == AUTO:
        return ckpt.latest_checkpoint(out)
    return Path(resume)


def fit(
    accelerator: Accelerator,
    task: Task,
    optimizer,
    cfg: OptimConfig,
    stream: BatchStream,
    out: Path,
    max_steps: int,
    start: Path | None,
    progress: bool = True,
    max_minutes: float | None = None,
) -> TrainResult:
    """Train `task` to `max_steps` optimizer steps from checkpoint `start` (None: from scratch;
    see `resolve_resume`), checkpointing and exporting every `cfg.checkpoint_every` steps and at
    the end. `max_minutes` ends this invocation early, at the first logging step after that much
    wall-clock time, exactly as if max_steps had been that step (a time-boxed job's last
    checkpoint; `--max-steps` with the step reached repeats it)."""
    out = Path(out)
    scheduler = warmup_schedule(optimizer, cfg.warmup_steps)
    step, train_seconds = 0, 0.0
    if start is not None:
        step, train_seconds = _load(accelerator, task, optimizer, scheduler, stream, start)
    accelerator.init_trackers(task.name)
    rank = accelerator.process_index
    params = [p for m in task.models.values() for p in m.parameters() if p.requires_grad]
    bar = tqdm(
        total=max_steps,
        initial=step,
        desc=task.name,
        dynamic_ncols=True,
        disable=not (progress and accelerator.is_local_main_process),
    )
    metrics: dict[str, float] = {}
    window, tick, began = [], time.perf_counter(), time.perf_counter()
    trained = False

    def elapsed() -> float:
        return train_seconds + time.perf_counter() - began

    while step < max_steps:
        for micro in range(cfg.grad_accum):
            torch.manual_seed(step_seed(cfg.seed, step, micro, rank))  # data transforms, dropout
            batch = stream.next()
            generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, micro, rank, 1))
            with accelerator.accumulate(*task.models.values()):
                loss, terms = task.loss(batch, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            window.append({"loss": loss.detach(), **terms})
        scheduler.step()
        task.after_step()
        step, trained = step + 1, True
        bar.update(1)

        if step % cfg.log_every == 0 or step == max_steps:
            names = list(window[0])
            local = torch.stack([torch.stack([w[k].float() for w in window]).mean() for k in names])
            means = accelerator.reduce(local, "mean").tolist()  # over ranks
            now = time.perf_counter()
            steps_per_s = len(window) / cfg.grad_accum / (now - tick)
            metrics = {
                **dict(zip(names, means, strict=True)),
                "lr": float(scheduler.get_last_lr()[0]),
                "steps_per_s": steps_per_s,
                "images_per_s": steps_per_s * cfg.grad_accum * stream.batches.per_step,
            }
            accelerator.log(metrics, step=step)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            window, tick = [], now
            if not np.isfinite(metrics["loss"]):
                _stop_if_diverged(accelerator, task, out, step, f"the loss is {metrics['loss']}, ")
                skipped = " (the fp16 grad scaler skipped those steps)" if accelerator.scaler is not None else ""
                warnings.warn(
                    ScadmWarning(f"step {step}: the loss is {metrics['loss']} but the weights are finite{skipped}"),
                    stacklevel=2,
                )
            if max_minutes is not None and _out_of_time(accelerator, began, max_minutes):
                max_steps = step
        paused = time.perf_counter()
        evaluate, save = (step % every == 0 or step == max_steps for every in (cfg.sample_every, cfg.checkpoint_every))
        if evaluate or save:
            _stop_if_diverged(accelerator, task, out, step)
        if evaluate:
            if accelerator.is_main_process:
                metrics.update(_evaluate(accelerator, task, step))
            accelerator.wait_for_everyone()
        if save:
            _save(accelerator, task, optimizer, scheduler, stream, out, step, elapsed(), cfg)
        tick += time.perf_counter() - paused  # steps_per_s counts training only
    bar.close()
    if not trained and accelerator.is_main_process:
        task.export()  # resumed at max_steps: nothing to train, but the model folder must exist
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(
        out=out,
        step=step,
        export=out / task.export_name,
        metrics=metrics,
        resumed_from=start,
        train_seconds=elapsed() if trained else train_seconds,
    )


def _out_of_time(accelerator: Accelerator, began: float, max_minutes: float) -> bool:
    """Whether any rank has run `max_minutes`: all ranks stop at the same step."""
    late = torch.tensor(float(time.perf_counter() - began > 60 * max_minutes), device=accelerator.device)
    return bool(accelerator.reduce(late, "sum").item() > 0)


def _evaluate(accelerator: Accelerator, task: Task, step: int) -> dict[str, float]:
    values = task.evaluate(step)
    if values:
        accelerator.log(values, step=step)
    return values


def _stop_if_diverged(accelerator: Accelerator, task: Task, out: Path, step: int, cause: str = "") -> None:
    """TrainingError, before anything is written, if a trained weight holds NaN/Inf: a diverged
    run never recovers (NaN stays NaN) and its checkpoints would push out the last good ones.
    Every rank checks its own copy (DDP keeps them equal), so all stop at the same step."""
    for name, model in task.models.items():
        bad = non_finite(accelerator.unwrap_model(model).state_dict().items())
        if bad:
            last = ckpt.latest_checkpoint(out)
            restart = f"resume from {last} with a lower lr" if last else "start again with a lower lr"
            raise TrainingError(
                f"step {step}: {cause}training diverged ({name} tensor {bad[0]} holds NaN or infinite "
                f"values); stopped without writing a checkpoint; {restart} (or set max_grad_norm)"
            )


def _save(accelerator, task, optimizer, scheduler, stream, out, step, seconds, cfg) -> None:
    """Checkpoint + exported model, written by the main process while the others wait."""
    if accelerator.is_main_process:
        tensors = {name: accelerator.unwrap_model(m).state_dict() for name, m in task.models.items()}
        tensors.update(task.extra_tensors())
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        state = {
            "step": step,
            "data": stream.state(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler,
            "task": task.extra_state(),
            "train_seconds": seconds,
            "world_size": accelerator.num_processes,
        }
        ckpt.save_checkpoint(out, step, tensors, state, cfg.keep_checkpoints)
        task.export()
        summary = {
            "step": step,
            "train_seconds": round(seconds, 1),
            "export": task.export_name,
            "samples_seen": step * cfg.grad_accum * stream.batches.per_step,
            "world_size": accelerator.num_processes,
        }
        (Path(out) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()


def _load(accelerator, task, optimizer, scheduler, stream, folder: Path) -> tuple[int, float]:
    tensors, state = ckpt.load_checkpoint(folder)
    for name, model in task.models.items():
        if name not in tensors:
            raise ckpt.CheckpointError(f"{folder}: has no {name} weights; is it a checkpoint of this trainer?")
        try:
            accelerator.unwrap_model(model).load_state_dict(tensors[name])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:200]
            raise ckpt.CheckpointError(f"{folder}: {name} does not match the config ({first})") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if accelerator.scaler is not None and state["scaler"] is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    stream.load_state(state["data"])
    task.load_extra(tensors, state["task"])
    if state["world_size"] != accelerator.num_processes:
        warnings.warn(
            ScadmWarning(
                f"{folder}: written by {state['world_size']} processes, resumed on "
                f"{accelerator.num_processes}: the effective batch changes and the run will not "
                "repeat the original exactly"
            ),
            stacklevel=2,
        )
    return int(state["step"]), float(state["train_seconds"])
