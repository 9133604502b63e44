"""`scadm prepare`: write a face dataset (CelebAMask-HQ, or StyleGAN faces from seeds) in the
train/ + test/ layout that training and evaluation read.

`add_prepare_commands(subparsers)` registers it on the scadm parser (`scadm.cli`).
"""

from __future__ import annotations


def add_prepare_commands(subparsers) -> None:
    """Add `prepare` and its datasets to an argparse subparsers object (from add_subparsers)."""
    p = subparsers.add_parser(
        "prepare",
        help="make a dataset in scadm's training layout",
        description="Write a face dataset in the train/ + test/ layout that training and evaluation read.",
    )
    datasets = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    q = datasets.add_parser(
        "celebamask-hq",
        help="convert the official CelebAMask-HQ release",
        description="SRC is the official CelebAMask-HQ release (CelebA-HQ-img/, "
        "CelebAMask-HQ-mask-anno/); DST gets train/ and test/ (ids >= 28000, the "
        "authors' 2k test split), each with images/N.jpg and labels/N.png.",
    )
    q.add_argument("src", help="the unpacked release")
    q.add_argument("dst", help="output folder")
    q.add_argument("--size", type=int, help="resize images and labels to SIZE (default: keep 1024 JPEG / 512 labels)")
    q.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    q.set_defaults(func=_prepare)
    add_stylegan_faces_command(datasets)


def add_stylegan_faces_command(datasets) -> None:
    from ..data.stylegan_options import BACKENDS, DEFAULT_BATCH, DEFAULT_PSI, LICENCE, TEST_EVERY

    q = datasets.add_parser(
        "stylegan-faces",
        help="generate photo-realistic faces + BiSeNet masks from seeds (non-commercial)",
        description="Face i = MobileStyleGAN's face for seed i (PyPI random-face==2021.7.21.1), its "
        "19-class mask from BiSeNet at 512 px, both shrunk to each --size; written to "
        "OUT/<S>px/{train,test}/{images,labels} (test: i % TEST_EVERY == 0) with "
        "faces.jsonl (seed, psi, split). Resumable. Needs `make stylegan-extras` and "
        f"`make parse-extras`. Licence: {LICENCE}.",
    )
    q.add_argument("out", help="output folder")
    q.add_argument("--num", type=int, required=True, help="number of faces (seeds 0 .. NUM-1)")
    q.add_argument(
        "--size",
        type=int,
        action="append",
        required=True,
        help="output size in pixels; repeat for several (e.g. --size 64 --size 128)",
    )
    q.add_argument("--psi", type=float, default=DEFAULT_PSI, help=f"truncation (default {DEFAULT_PSI})")
    q.add_argument(
        "--test-every",
        type=int,
        default=TEST_EVERY,
        help=f"hold out seeds divisible by this (default {TEST_EVERY}: 5 %%)",
    )
    q.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"faces per batch (default {DEFAULT_BATCH})")
    q.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="openvino (CPU) or torch (any device); auto: openvino when installed",
    )
    q.add_argument("--device", default="cpu", help="torch device for --backend torch and the parser")
    q.add_argument("--workers", type=int, default=1, help="threads that shrink and write faces (default 1)")
    q.add_argument(
        "--generator",
        metavar="DIR",
        help="a folder holding a copy of the generator's four files (MappingNetwork and SynthesisNetwork "
        ".xml + .bin, checked by SHA-256) instead of the installed random-face package",
    )
    q.set_defaults(func=_prepare_stylegan_faces)


def _prepare_stylegan_faces(args) -> int:
    from ..data.stylegan_faces import prepare_stylegan_faces

    report = prepare_stylegan_faces(
        args.out,
        args.num,
        args.size,
        psi=args.psi,
        batch_size=args.batch_size,
        test_every=args.test_every,
        backend=args.backend,
        device=args.device,
        workers=args.workers,
        generator_dir=args.generator,
    )
    print(report.summary())
    return 0


def _prepare(args) -> int:
    from ..data.celebamask_hq import prepare

    report = prepare(args.src, args.dst, size=args.size, workers=args.workers)
    print(report.summary())
    return 0 if report.train + report.test else 2
