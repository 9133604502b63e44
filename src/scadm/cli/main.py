"""The `scadm` parser, its entry point and the face commands (demo, sample, edit, convert)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..editing import EDIT_MODES
from ..errors import ScadmError, ScadmWarning
from ..settings import INTERACTIVE, RenderSettings, check_seed
from ..shipped import model_domain, model_help, resolve_model
from .evaluate import add_evaluate_commands
from .options import add_render_flags, render_settings
from .parse import add_parse_commands
from .prepare import add_prepare_commands
from .serve import add_serve_commands
from .train import add_train_commands


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=model_help())
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    add_render_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scadm",
        description="Controllable face synthesis and editing with semantic latent diffusion (SCA-DM). "
        "Inputs are an RGB image and its semantic mask: a label PNG (pixel = class index) "
        "or a CelebAMask-HQ colour PNG.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="edit held-out procedural faces (or two photos, for a photo model); save a figure",
        description="Reconstruct, swap (all, hair, one eye, lips), mix reference and random "
        "hair, generate from noise and interpolate, on procedural faces the shipped "
        "demo model never saw; save one labelled figure and print a summary. A photo model "
        "(--model realistic) instead edits two public-domain photos, aligned and parsed "
        "automatically (needs `make parse-extras`): reconstruction, hair and lips swapped "
        "between them, random hair, the edits keeping the rest of each photo (as `scadm edit "
        "--preserve`). Any other pipeline folder gets the procedural demo.",
    )
    p.add_argument("--out", default="out/demo", help="output folder (default ./out/demo)")
    p.add_argument("--model", help=model_help())
    p.add_argument("--seed", type=int, help=f"(default {INTERACTIVE.seed})")
    p.add_argument("--steps", type=int, help=f"DDIM steps (default {INTERACTIVE.steps})")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "sample",
        help="generate faces for one or more masks (random or from a reference)",
        description="Noise-based generation: every part of each mask gets a random style, "
        "or the styles of --reference when given.",
    )
    p.add_argument("masks", nargs="+", help="mask PNG(s): label or CelebAMask-HQ colour")
    p.add_argument("--num", type=int, default=4, help="samples per mask (default 4)")
    p.add_argument("--reference", help="reference image whose styles to use (total swap)")
    p.add_argument("--reference-mask", help="the reference's mask")
    _add_render_options(p)
    p.set_defaults(func=_sample)

    p = sub.add_parser(
        "edit",
        help="reconstruct, swap, mix or interpolate the styles of a face",
        description="Edit a target face. Modes:\n" + "\n".join(f"  {k:12s} {v}" for k, v in EDIT_MODES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", required=True, help="target RGB image")
    p.add_argument(
        "--mask",
        required=True,
        help="target mask, or 'auto': align the photo and parse it (scadm parse; needs the parse extra)",
    )
    p.add_argument("--mode", default="reconstruct", choices=tuple(EDIT_MODES))
    p.add_argument("--reference", help="reference RGB image (swap, partial, mix, interpolate)")
    p.add_argument("--reference-mask", help="the reference's mask, or 'auto' (as --mask)")
    p.add_argument("--parts", help="classes to edit, e.g. hair,l_eye or eyes,lips (names, aliases or indices)")
    p.add_argument("--edited-mask", help="render on this (user-edited) mask instead of --mask")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="interpolation weights (interpolate)")
    p.add_argument("--num", type=int, default=1, help="samples (different seeds) per result")
    p.add_argument(
        "--settings",
        help="settings.json saved by `scadm serve`: per-part sources and weights, "
        "steps, guidance, sampler, eta, seed and dtype (a flag given too wins)",
    )
    p.add_argument(
        "--preserve",
        nargs="?",
        const="default",
        metavar="MARGIN",
        help="keep the target's own pixels outside the edited parts grown by MARGIN pixels "
        "(default: image size / 16); the target is DDIM-inverted once (about 3x a plain edit)",
    )
    _add_render_options(p)
    p.set_defaults(func=_edit)

    p = sub.add_parser(
        "convert",
        help="import the authors' SCA-DM checkpoint into a scadm model folder",
        description="Convert the authors' YAML config + Lightning checkpoint (and/or CompVis's "
        "vq-f4 model.ckpt) into a scadm pipeline folder. No pickled code is run.",
    )
    p.add_argument(
        "--config",
        required=True,
        help="the authors' YAML, e.g. configs/latent-diffusion/diffusion-sem-with_uc-mask-attn.yaml",
    )
    p.add_argument("--ckpt", help="the authors' checkpoint (.ckpt or .safetensors)")
    p.add_argument("--vq-ckpt", help="CompVis vq-f4 model.ckpt (overrides first_stage_model.* of --ckpt)")
    p.add_argument(
        "--weights",
        default="ema",
        choices=("ema", "raw"),
        help="UNet weights: ema (their FID numbers) or raw (their demo); default ema",
    )
    p.add_argument("--out", required=True, help="output pipeline folder")
    p.set_defaults(func=_convert)

    add_prepare_commands(sub)
    add_train_commands(sub)
    add_evaluate_commands(sub)
    add_parse_commands(sub)
    add_serve_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
        try:
            return args.func(args) or 0
        except ScadmError as err:
            print(f"scadm {args.command}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            hint = "; continue with --resume auto" if args.command.startswith("train") else ""
            print(f"scadm {args.command}: interrupted{hint}", file=sys.stderr)
            return 130


def _one_line_warnings(command: str, default):
    """The library's own warnings (ScadmWarning) as one line like the errors; others unchanged."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ScadmWarning):
            print(f"scadm {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


# ---------------------------------------------------------------- commands


def _demo(args) -> int:
    from ..demo import run_demo
    from ..photo_demo import run_photo_demo

    settings, _ = render_settings(args, INTERACTIVE)
    folder = resolve_model(args.model)
    run = run_photo_demo if model_domain(folder) == "photos" else run_demo
    summary = run(Path(args.out), model=folder, settings=settings)
    print(summary)
    return 0


def _convert(args) -> int:
    from ..convert import convert

    pipe = convert(args.config, args.ckpt, args.vq_ckpt, weights=args.weights)
    pipe.save_pretrained(args.out)
    n = sum(p.numel() for m in pipe.models() for p in m.parameters())
    print(f"wrote {args.out}: {n:,} parameters, UNet weights: {args.weights}")
    return 0


def _load_pipeline(args, settings: RenderSettings):
    from ..pipeline import SCADMPipeline
    from ..settings import resolve_device

    if args.num < 1:
        raise ScadmError(f"--num must be >= 1, got {args.num}")
    device = resolve_device(args.device, "--device")
    return SCADMPipeline.from_pretrained(resolve_model(args.model), device=device, dtype=settings.torch_dtype)


def _render(pipe, labels, code, settings: RenderSettings, num=1, preserve=None):
    """`num` samples per code (seeds settings.seed, settings.seed+1, ...), as a list of rows."""
    last = settings.seed + num * len(code) - 1
    check_seed(last, f"--seed {settings.seed} with {num * len(code)} images: the last image's seed")
    rows = []
    for i in range(num):
        seeds = [settings.seed + i * len(code) + j for j in range(len(code))]
        images = pipe(labels.expand(len(code), -1, -1), code, settings, seed=seeds, progress=True, preserve=preserve)
        rows.append(list(images))
    return rows


def _read_face(pipe, image_path, mask_path, flag):
    from ..io import read_pair

    if not image_path or not mask_path:
        raise ScadmError(f"{flag} and {flag}-mask go together: give both")
    if mask_path == "auto":
        from ..parsing import auto_mask_face

        image, labels = auto_mask_face(image_path, pipe.image_size, pipe.label_set)
        return image[None], labels[None]
    notes = []
    image, labels = read_pair(image_path, mask_path, pipe.label_set, size=pipe.image_size, notes=notes)
    _print_notes(notes)
    return image[None], labels[None]


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {note}")


def _sample(args) -> int:
    from ..figures import save_grid
    from ..io import mask_to_rgb, read_mask, save_image

    settings, _ = render_settings(args)
    pipe = _load_pipeline(args, settings)
    reference = None
    if args.reference or args.reference_mask:
        reference = pipe.encode_style(*_read_face(pipe, args.reference, args.reference_mask, "--reference"))
    out = Path(args.out)
    for mask_path in args.masks:
        notes: list[str] = []
        labels = read_mask(mask_path, pipe.label_set, size=pipe.image_size, notes=notes)[None]
        _print_notes(notes)
        code = reference if reference is not None else pipe.blank_style(labels)
        rows = _render(pipe, labels, code, settings, num=args.num)
        images = [row[0] for row in rows]
        stem = Path(mask_path).stem
        for i, image in enumerate(images):
            save_image(image, out / f"{stem}_seed{settings.seed + i}.png")
        grid = out / f"{stem}_grid.png"
        save_grid(
            [[mask_to_rgb(labels[0], pipe.label_set), *images]],
            grid,
            col_labels=["mask"] + [f"seed {settings.seed + i}" for i in range(len(images))],
            title=f"{stem}: {'reference style' if reference is not None else 'random style'}, {settings.label()}",
        )
        print(f"{mask_path}: wrote {len(images)} samples and {grid}")
    return 0


def _edit(args) -> int:
    from ..editing import EditSettings, absent_parts, edit_codes, read_settings_file
    from ..figures import save_grid
    from ..io import mask_to_rgb, read_mask, save_image

    edit_settings: EditSettings | None = None
    file_keys: set[str] = set()
    if args.settings:
        data = read_settings_file(args.settings)
        edit_settings, file_keys = EditSettings.from_json(data, source=args.settings), set(data)
        args.mode = "settings"
    base = edit_settings.render if edit_settings is not None else RenderSettings()
    settings, note = render_settings(args, base, file_keys, args.settings)
    if note:
        print(note, file=sys.stderr)
    pipe = _load_pipeline(args, settings)
    if edit_settings is not None:
        edit_settings.check(pipe.label_set, source=args.settings)
    image, labels = _read_face(pipe, args.image, args.mask, "--image")
    target = pipe.encode_style(image, labels)
    reference = ref_image = ref_labels = None
    if args.reference or args.reference_mask:
        ref_image, ref_labels = _read_face(pipe, args.reference, args.reference_mask, "--reference")
        reference = pipe.encode_style(ref_image, ref_labels)
    parts = pipe.label_set.parse_parts(args.parts, "--parts") if args.parts else None
    try:
        alphas = [float(a) for a in args.alphas.split(",")]
    except ValueError:
        raise ScadmError(f"--alphas must be comma-separated numbers, got {args.alphas!r}") from None
    if edit_settings is not None:
        code, captions = edit_settings.style_code(target, reference, pipe.label_set), ["settings"]
    else:
        code, captions = edit_codes(args.mode, target, reference, parts, alphas)
    if reference is not None and parts and args.mode in ("partial", "interpolate"):
        missing = absent_parts(reference, parts)
        if missing:
            absent = ", ".join(pipe.label_set.names[p] for p in missing)
            print(f"note: the reference has no {absent}; those parts get the encoder's absent-class style")
    preserve = _preserve(args, image, labels)
    if preserve is None and edit_settings is not None and edit_settings.preserve:  # replay the editor's choice
        from ..regions import Preserve

        preserve = Preserve(image, labels, edit_settings.margin)
    if args.edited_mask:
        notes: list[str] = []
        labels = read_mask(args.edited_mask, pipe.label_set, size=pipe.image_size, notes=notes)[None]
        _print_notes(notes)

    rows = _render(pipe, labels, code, settings, num=args.num, preserve=preserve)
    out = Path(args.out)
    stem = f"{Path(args.image).stem}_{args.mode}"
    for r, row in enumerate(rows):
        for c, result in enumerate(row):
            save_image(result, out / f"{stem}_{c}_seed{settings.seed + r * len(code) + c}.png")
    inputs = [image[0], mask_to_rgb(labels[0], pipe.label_set)]
    names = ["target", "mask" + (" (edited)" if args.edited_mask else "")]
    if ref_image is not None:
        inputs += [ref_image[0]]
        names += ["reference"]
    grid = out / f"{stem}_grid.png"
    title = (
        f"{args.mode}"
        + (f" of {args.parts}" if parts else "")
        + (" (preserved)" if preserve else "")
        + f" - {settings.label()}, seed {settings.seed}"
    )
    save_grid(
        [inputs, *rows],
        grid,
        col_labels=None,
        row_labels=["inputs"] + [f"seed {settings.seed + r * len(code)}" for r in range(len(rows))],
        title=title + " | " + ", ".join(names) + " | " + ", ".join(captions),
    )
    print(f"wrote {len(code) * len(rows)} images and {grid}")
    return 0


def _preserve(args, image, labels):
    """`--preserve [MARGIN]` as the pipeline's option (None without the flag)."""
    from ..regions import Preserve

    if args.preserve is None:
        return None
    if args.preserve == "default":
        return Preserve(image, labels)
    if not args.preserve.isdigit():
        raise ScadmError(f"--preserve: MARGIN must be a whole number of pixels >= 0, got {args.preserve!r}")
    return Preserve(image, labels, int(args.preserve))
