"""`scadm train-vq` and `scadm train`: parse, call scadm.train, print a short summary.

`add_train_commands(subparsers)` registers both on the scadm parser (`scadm.cli`), which is also
what `accelerate launch -m scadm.cli train ...` runs on every process.
"""

from __future__ import annotations

import argparse

from ..errors import InputError

RESUME_HELP = (
    "'auto': continue from the newest complete checkpoint in --out (start fresh if there "
    "is none); or the path of one checkpoint folder (DIR/checkpoints/step_NNNNNNN)"
)
LAUNCH_NOTE = (
    "Runs on the GPU when there is one, else the CPU. For several GPUs or machines: "
    "accelerate launch [--multi_gpu --num_processes N ...] -m scadm.cli %s CONFIG --out DIR ..."
)


def add_train_commands(subparsers) -> None:
    """Add `train-vq` and `train` to an argparse subparsers object (from add_subparsers)."""
    p = subparsers.add_parser(
        "train-vq",
        help="train the VQ-f4 first stage (autoencoder) on a training config",
        description="Train the first stage: the image autoencoder whose latent space the diffusion "
        "model works in. Writes checkpoints to DIR/checkpoints, TensorBoard logs to "
        "DIR/logs, reconstruction grids to DIR/samples and the model to DIR/vqvae. " + LAUNCH_NOTE % "train-vq",
    )
    _common(p)
    p.add_argument(
        "--init",
        metavar="DIR",
        help="start a fresh run from this first stage (a train-vq run, pipeline or VQModel "
        "folder): fine-tuning, e.g. on another domain; the optimizer starts afresh",
    )
    p.set_defaults(func=run_train_vq)

    p = subparsers.add_parser(
        "train",
        help="train the SCA-DM diffusion model and style encoder on a training config",
        description="Train the denoiser and the style encoder (paper Eq. 2) on top of a frozen first "
        "stage. Writes checkpoints to DIR/checkpoints, TensorBoard logs to DIR/logs, "
        "sample grids to DIR/samples and the model (EMA UNet) to DIR/pipeline, ready for "
        "`scadm sample/edit --model DIR/pipeline`. " + LAUNCH_NOTE % "train",
    )
    _common(p)
    p.add_argument(
        "--vq",
        metavar="DIR",
        help="the first stage: a `scadm train-vq` output folder, or a pipeline folder (e.g. "
        "from `scadm convert`); on --resume it defaults to the run's own copy",
    )
    p.add_argument(
        "--init",
        metavar="DIR",
        help="start a fresh run from the UNet and style encoder of this pipeline folder "
        "(fine-tuning; optimizer and EMA start afresh)",
    )
    p.set_defaults(func=run_train)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training YAML, e.g. configs/demo-procedural-64.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (created if missing)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps (overrides the config)")
    p.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="end this run after about M minutes of training, checkpointed and exported as if "
        "max_steps were the step reached (for time-boxed jobs)",
    )
    p.add_argument("--resume", metavar="auto|CHECKPOINT", help=RESUME_HELP)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one config value (YAML syntax), e.g. --set model.unet.mask_attention=false; repeatable",
    )
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def _check(args) -> None:
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise InputError(f"--max-minutes must be > 0, got {args.max_minutes}")


def _config(args):
    from ..train import load_config

    return load_config(args.config, args.overrides)


def _summary(command: str, result, what: str) -> None:
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    from ..train.loop import recorded_init

    init = recorded_init(result.out)
    if result.resumed_from:
        origin = f"resumed from {result.resumed_from.name}"
    elif init is not None:
        origin = f"fine-tuned from {init}"
    else:
        origin = "from scratch"
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items() if k == "loss" or k.startswith("eval/"))
    seconds = result.train_seconds
    duration = f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"
    print(
        f"{command}: step {result.step} ({origin}), {duration} of training in total"
        + (f"; {metrics}" if metrics else "")
    )
    print(f"wrote {result.export} ({what}); checkpoints in {result.out / 'checkpoints'}")


def run_train_vq(args) -> int:
    from ..train import train_vq

    _check(args)
    result = train_vq(
        _config(args),
        args.out,
        max_steps=args.max_steps,
        resume=args.resume,
        progress=not args.no_progress,
        cpu=args.cpu,
        max_minutes=args.max_minutes,
        init=args.init,
    )
    _summary("train-vq", result, "diffusers VQModel")
    return 0


def run_train(args) -> int:
    from ..train import train_diffusion

    _check(args)
    result = train_diffusion(
        _config(args),
        args.out,
        vq=args.vq,
        max_steps=args.max_steps,
        resume=args.resume,
        progress=not args.no_progress,
        cpu=args.cpu,
        max_minutes=args.max_minutes,
        init=args.init,
    )
    _summary("train", result, "scadm pipeline")
    return 0
