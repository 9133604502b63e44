"""Does data loading keep up with training? `python -m benchmarks.data_loading`.

Reads an image/label folder in the authors' layout as training reads it (`FaceFolder` with flips,
through the trainer's `BatchStream`) and prints images/s. With `--workers 0` on one core that is
the rate of one core (images per CPU second, which a core shared with other work does not
change; the wall-clock rate is printed too); a training run that consumes R images/s needs about R / rate loader workers
(DataLoader processes), each on a core of its own. Files are read once before timing (warm page
cache: the decode and resize, not the disk, are measured).

`--make-from DIR` first writes a temporary folder: DIR's pairs resized to `--file-size` (images
bicubic, labels nearest), as PNG, or as CelebAMask-HQ's files are (`--celeba`: JPEG images, labels
at half the size), for resolutions no prepared folder has:

    python -m benchmarks.data_loading --root data/stylegan-faces/64px/train --size 64
    python -m benchmarks.data_loading --make-from data/stylegan-faces/128px/train --file-size 256 --size 256
    python -m benchmarks.data_loading --make-from data/stylegan-faces/128px/train --file-size 1024 --celeba --size 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from scadm.data.folder import FaceFolder
from scadm.train.data import BatchStream


def make_folder(source: Path, out: Path, num: int, size: int, celeba: bool) -> None:
    """`num` pairs of `source` resized to `size` into out/images and out/labels."""
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    names = sorted(p.stem for p in (source / "labels").glob("*.png"))[:num]
    if len(names) < num:
        raise SystemExit(f"--make-from {source}: {len(names)} pairs, fewer than --num {num}")
    for name in names:
        image = Image.open(next((source / "images").glob(f"{name}.*"))).convert("RGB")
        labels = Image.open(source / "labels" / f"{name}.png")
        image = image.resize((size, size), Image.Resampling.BICUBIC)
        label_size = size // 2 if celeba else size  # CelebAMask-HQ: 1024 px JPEG, 512 px label PNG
        labels = labels.resize((label_size, label_size), Image.Resampling.NEAREST)
        if celeba:
            image.save(out / "images" / f"{name}.jpg", quality=95)
        else:
            image.save(out / "images" / f"{name}.png")
        labels.save(out / "labels" / f"{name}.png")


def images_per_second(root: Path, size: int, batch: int, batches: int, workers: int) -> dict:
    dataset = FaceFolder(root, size=size, flip=True)
    for i in range(len(dataset)):  # warm the page cache and check every file once
        dataset[i]
    stream = BatchStream(dataset, batch, seed=0, num_workers=workers)
    stream.next()  # workers started, first batch out
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        out = stream.next()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert out["image"].shape == (batch, 3, size, size)
    n = batch * batches
    # per CPU second: what one core of its own gives (the wall rate also counts other processes' turns)
    return dict(images=n, seconds=seconds, images_per_s=n / seconds, images_per_cpu_s=n / cpu if cpu else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_loading", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, help="an images/ + labels/ folder to read")
    p.add_argument("--make-from", type=Path, help="write a temporary folder from this one's pairs instead")
    p.add_argument("--file-size", type=int, default=256, help="the written files' size (with --make-from)")
    p.add_argument("--celeba", action="store_true", help="write JPEG images and half-size labels")
    p.add_argument("--num", type=int, default=256, help="pairs in the folder written (with --make-from)")
    p.add_argument("--size", type=int, default=256, help="the size training reads at (FaceFolder's)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--out", default=None, help="append the result as one JSON line")
    args = p.parse_args(argv)
    if (args.root is None) == (args.make_from is None):
        p.error("give one of --root and --make-from")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp)
            make_folder(args.make_from, root, args.num, args.file_size, args.celeba)
        result = images_per_second(root, args.size, args.batch, args.batches, args.workers)
    result.update(command="python -m benchmarks.data_loading " + " ".join(argv or sys.argv[1:]))
    print(json.dumps(result))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
