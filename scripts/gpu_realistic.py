"""A realistic SCA-DM model in one call on a lent GPU machine (torch, no OpenVINO, no network).

Two steps (see scripts/gpu_realistic.sh and the README's "Realistic model on one GPU call"):

  pack  (here, once): writes .gpu/ to be carried: the faces made by `scadm prepare stylegan-faces`
        (images as lossless WebP, ~6.3 KB a face at 64 px; masks, ~0.3 KB) and the diffusers wheel
        without the modules scadm never imports. A device call sends the repository's own files
        too (44 MiB) and at most 64 MiB in all, so pack counts what would travel and packs as many
        faces as fit under that limit less --reserve-mib; it refuses, naming the sizes, when even
        the repository and the wheel leave no room.
  run   (there): those faces in the folder layout, then `scadm train-vq` and `scadm train` on
        configs/realistic-64.yaml in bf16, time-boxed to fit --minutes; then OUT gets pipeline.tar
        (fp16 weights, split in 15 MB parts if larger), logs.tar.gz and summary.json.

Why the faces and not the generator: its weights are 25 MB even in fp16 (41 in float32), and
8-bit synthesis weights move the 64 px faces by up to 71 of 255 levels away from the masks made
from them (measured on 12 faces), while the images of 2,000+ faces fit in what is left.

--toy runs the same path on a CPU in about a minute (after pack): 4 faces, 2 steps per stage, tiny batches.
Generated faces and anything trained on them are non-commercial (StyleGAN2-FFHQ, FFHQ, and
CelebAMask-HQ for the masks).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "realistic-64.yaml"
PART_BYTES = 15 * 2**20  # each file brought back is at most 16 MB
RESERVE_S = 60  # export and packing after training
# What one device call may send: the checkout's tracked and untracked-not-ignored files, its
# shared/ folder and the carried paths, together (the device tool's documented limit).
LIMIT_BYTES = 64 * 2**20
DIFFUSERS = "diffusers==0.42.1"
# 4.1 MB of the wheel's 6.4: other models' pipelines, which scadm never imports (their packages'
# __init__.py stay, since diffusers' own __init__ names them for lazy import).
UNUSED = ("diffusers/pipelines/", "diffusers/modular_pipelines/")
TOY_SETTINGS = (
    "data.batch_size=2",
    "train_vq.batch_size=2",
    "data.num_workers=0",
    "train.mixed_precision='no'",
    "train_vq.mixed_precision='no'",
    "train.sample_every=2",
    "train_vq.sample_every=2",
    "train.sample_steps=2",
    "train.checkpoint_every=2",
    "train_vq.checkpoint_every=2",
    "train.warmup_steps=0",
    "train.log_every=1",
    "train_vq.log_every=1",
)
TOY = [arg for setting in TOY_SETTINGS for arg in ("--set", setting)]


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _files(top: Path) -> Iterable[Path]:
    if top.is_dir() and not top.is_symlink():
        return (p for p in top.rglob("*") if p.is_symlink() or not p.is_dir())
    return [top] if os.path.lexists(top) else []


def travel_bytes(root: Path, carried: Sequence[Path]) -> dict[str, int]:
    """Bytes a device call from the checkout `root` would send, by part: the files git lists as
    tracked or untracked-not-ignored (those present), shared/, then each carried path; a file
    is counted once, under the first part that holds it."""
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    seen: set[Path] = set()
    parts: dict[str, int] = {}
    tops = [("shared/", root / "shared")] + [(os.path.relpath(c, root), Path(c)) for c in carried]
    groups = [("repository files", (root / os.fsdecode(n) for n in listed.split(b"\0") if n))]
    for name, paths in groups + [(name, _files(top)) for name, top in tops]:
        total = 0
        for path in paths:
            if path not in seen and os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
                seen.add(path)
                total += path.lstat().st_size
        parts[name] = parts.get(name, 0) + total
    return parts


def describe(parts: dict[str, int]) -> str:
    return ", ".join(f"{name} {mib(n)}" for name, n in parts.items() if n)


def check_fits(parts: dict[str, int], limit: int = LIMIT_BYTES) -> str:
    """One line: the margin under `limit`; over it, SystemExit naming the sizes and what to drop."""
    total = sum(parts.values())
    if total > limit:
        raise SystemExit(
            f"pack: a GPU call would send {mib(total)}, over its {mib(limit)} limit ({describe(parts)}): "
            "pack fewer faces (--num, or a larger --reserve-mib), drop a --size, or move untracked files "
            "out of the checkout"
        )
    return f"a GPU call would send {mib(total)} ({describe(parts)}): {mib(limit - total)} under its {mib(limit)} limit"


def _encode(path: Path, quality: int | None) -> bytes:
    """A face's image as lossless WebP (exact; 23% smaller than the PNG) or, with `quality`,
    as JPEG without chroma subsampling."""
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as image:
        if quality is None:
            image.convert("RGB").save(buf, format="WEBP", lossless=True, quality=100)
        else:
            image.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def pack_faces(
    data: Path, sizes: Sequence[int], budget: int, num: int | None = None, quality: int | None = None
) -> tuple[dict[str, np.ndarray], int, bool]:
    """Faces 0, 1, ... of a `scadm prepare stylegan-faces` folder while they fit in `budget`
    bytes: ({images_S: their encoded images end to end, ends_S, labels_S: (N, S, S) uint8, ...},
    N, whether the budget stopped it)."""
    from PIL import Image

    from scadm.data.stylegan_faces import face_paths

    meta = json.loads((data / "dataset.json").read_text())
    images: dict[int, list[bytes]] = {s: [] for s in sizes}
    labels: dict[int, list[np.ndarray]] = {s: [] for s in sizes}
    used, count, full = 0, 0, False
    while num is None or count < num:
        paths = face_paths(data, count, sizes, meta["test_every"])
        if not all(p.is_file() for p in paths):
            break
        encoded = [_encode(paths[2 * j + 1], quality) for j in range(len(sizes))]
        masks = [np.asarray(Image.open(paths[2 * j]), np.uint8) for j in range(len(sizes))]
        cost = sum(map(len, encoded)) + sum(len(zlib.compress(m.tobytes())) for m in masks)
        if used + cost > budget:
            full = True
            break
        for s, image, mask in zip(sizes, encoded, masks, strict=True):
            images[s].append(image)
            labels[s].append(mask)
        used, count = used + cost, count + 1
    bundle = {
        "psi": np.array(meta["psi"]),
        "test_every": np.array(meta["test_every"]),
        "format": np.array("webp" if quality is None else "jpeg"),
    }
    for s in sizes if count else ():
        bundle[f"images_{s}"] = np.frombuffer(b"".join(images[s]), np.uint8)
        bundle[f"ends_{s}"] = np.cumsum([len(b) for b in images[s]])
        bundle[f"labels_{s}"] = np.stack(labels[s])
    return bundle, count, full


def unpack_faces(path: Path, out: Path, size: int, num: int | None = None) -> tuple[int, int, float]:
    """Faces 0..num-1 of a packed faces.npz into out/{size}px/{train,test}/{images,labels}, the
    folder layout of `scadm prepare stylegan-faces`; returns (faces, test_every, psi)."""
    from PIL import Image, features

    from scadm.data.stylegan_faces import face_paths

    with np.load(path) as bundle:
        if f"labels_{size}" not in bundle:
            raise SystemExit(f"run: {path} has no {size} px faces; pack with --size {size}")
        labels, images, ends = (bundle[f"{k}_{size}"] for k in ("labels", "images", "ends"))
        kind, test_every, psi = str(bundle["format"]), int(bundle["test_every"]), float(bundle["psi"])
    if kind == "webp" and not features.check("webp"):
        raise SystemExit(f"run: this Pillow cannot read the WebP faces of {path}; pack with --quality 95 (JPEG)")
    num = len(labels) if num is None else min(num, len(labels))
    for i in range(num):
        label_path, image_path = face_paths(out, i, [size], test_every)
        for folder in (label_path.parent, image_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels[i]).save(label_path)
        encoded = images[ends[i - 1] if i else 0 : ends[i]].tobytes()
        if kind == "jpeg":  # the folder dataset reads .jpg as it is
            image_path.with_suffix(".jpg").write_bytes(encoded)
        else:
            Image.open(io.BytesIO(encoded)).save(image_path)
    return num, test_every, psi


def _unused(name: str) -> bool:
    return name.startswith(UNUSED) and name not in {f"{u}__init__.py" for u in UNUSED}


def download_wheel(out: Path) -> Path:
    """diffusers' wheel, less the UNUSED modules (also out of its RECORD), into out/wheels."""
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*pip, "--python-version", "3.12", "--dest", tmp, DIFFUSERS], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        dest = out / "wheels" / wheel.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(dest, "w") as trimmed:
            for item in source.infolist():
                if _unused(item.filename):
                    continue
                content = source.read(item)
                if item.filename.endswith(".dist-info/RECORD"):
                    lines = content.decode().splitlines(keepends=True)
                    content = "".join(line for line in lines if not _unused(line.split(",")[0])).encode()
                trimmed.writestr(item, content)
    return dest


def pack(args) -> None:
    """Write the carried assets to args.out: as many faces as fit (see the module docstring)."""
    out, data = Path(args.out).resolve(), Path(args.data)
    if args.num is not None and args.num < 1:
        sys.exit(f"pack: --num {args.num}: pack at least one face")
    if not out.is_relative_to(ROOT):  # carry names paths in the checkout; anything else stays here
        sys.exit(f"pack: --out {out} is outside the checkout {ROOT}, so no device call could carry it")
    if not (data / "dataset.json").is_file():
        sys.exit(f"pack: {data}: no dataset.json; not a `scadm prepare stylegan-faces` folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("generator", "labels.npz", "faces.npz"):  # earlier packs' files would travel too
        shutil.rmtree(out / stale) if (out / stale).is_dir() else (out / stale).unlink(missing_ok=True)
    if args.wheels:
        shutil.rmtree(out / "wheels", ignore_errors=True)
        download_wheel(out)
    reserve = int(args.reserve_mib * 2**20)
    before = travel_bytes(ROOT, [out])
    bundle, count, full = pack_faces(
        data, args.size, LIMIT_BYTES - reserve - sum(before.values()), args.num, args.quality
    )
    if not count and not full:  # the loop found no face 0 to pack: not a question of room
        sizes = " and ".join(f"{s} px" for s in args.size)
        sys.exit(f"pack: {data} has no face 0 at {sizes}; make them with `scadm prepare stylegan-faces --size`")
    if not count:
        sys.exit(
            f"pack: no face fits: without them a GPU call would send {mib(sum(before.values()))} "
            f"({describe(before)}) of its {mib(LIMIT_BYTES)}, less the {args.reserve_mib} MiB reserve"
        )
    np.savez_compressed(out / "faces.npz", **bundle)
    try:
        fits = check_fits(travel_bytes(ROOT, [out]))
    except SystemExit:
        (out / "faces.npz").unlink()
        raise
    stop = f"; more do not fit with a {args.reserve_mib} MiB reserve" if full else ""
    print(f"wrote {out}: faces 0-{count - 1} at {args.size} px ({bundle['format']}){stop}")
    print(fits)


def _stage(name: str, command: list[str], logs: Path) -> float:
    """Run one scadm command, its output into logs/NAME.log and ours; returns seconds."""
    start = time.time()
    with open(logs / f"{name}.log", "w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            print(line, end="", flush=True)
        if proc.wait():
            raise SystemExit(f"{name} failed (exit {proc.returncode}); see {logs / (name + '.log')}")
    return time.time() - start


def _bring_back(work: Path, out: Path, summary: dict) -> None:
    import torch

    from scadm.pipeline import SCADMPipeline

    fp16 = work / "pipeline-fp16"
    SCADMPipeline.from_pretrained(work / "diffusion" / "pipeline").to(dtype=torch.float16).save_pretrained(fp16)
    tar = work / "pipeline.tar"
    with tarfile.open(tar, "w") as t:
        t.add(fp16, arcname="pipeline")
    data = tar.read_bytes()
    parts = [data[k : k + PART_BYTES] for k in range(0, len(data), PART_BYTES)]
    for k, part in enumerate(parts):
        name = "pipeline.tar" if len(parts) == 1 else f"pipeline.tar.{k:02d}"
        (out / name).write_bytes(part)
    summary["pipeline_tar_bytes"] = len(data)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as t:
        t.add(work / "logs", arcname="logs")
        for run in ("vq", "diffusion"):
            for sub in ("logs", "samples", "config.yaml"):
                if (work / run / sub).exists():
                    t.add(work / run / sub, arcname=f"{run}/{sub}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def run(args) -> None:
    import torch

    start = time.time()
    work, out, bundle = Path(args.work), Path(args.out), Path(args.assets) / "faces.npz"
    if not bundle.is_file():
        raise SystemExit(
            f"run: {bundle} is missing; here, first: python scripts/gpu_realistic.py pack --data DIR --wheels"
        )
    (work / "logs").mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)  # an earlier run's faces beyond --num would be trained on
    num, test_every, psi = unpack_faces(bundle, data, args.size, 4 if args.toy else args.num)
    unpack_s = time.time() - start

    held_out = sum(1 for i in range(num) if i % test_every == 0)
    common = [
        str(CONFIG),
        "--no-progress",
        "--set",
        f"data.root={data / f'{args.size}px'}",
        "--set",
        f"data.size={args.size}",
        "--set",
        f"data.holdout_num={min(8, held_out)}",
    ] + (TOY if args.toy else [])
    left_min = (args.minutes * 60 - (time.time() - start) - RESERVE_S) / 60
    if not args.toy and left_min < 2:
        raise SystemExit(f"only {left_min:.1f} min left for training after unpacking")
    box = (
        (["--max-steps", "2"], ["--max-steps", "2"])
        if args.toy
        else (["--max-minutes", f"{left_min * args.vq_share:.2f}"], None)
    )
    scadm = [sys.executable, "-m", "scadm.cli"]
    vq_s = _stage("train-vq", [*scadm, "train-vq", *common, "--out", str(work / "vq"), *box[0]], work / "logs")
    if box[1] is None:
        box = (box[0], ["--max-minutes", f"{(args.minutes * 60 - (time.time() - start) - RESERVE_S) / 60:.2f}"])
    diff_s = _stage(
        "train",
        [*scadm, "train", *common, "--out", str(work / "diffusion"), "--vq", str(work / "vq"), *box[1]],
        work / "logs",
    )
    summary = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "faces": num,
        "size": args.size,
        "psi": psi,
        "test_every": test_every,
        "unpack_s": round(unpack_s, 1),
        "train_vq_s": round(vq_s, 1),
        "train_s": round(diff_s, 1),
        "toy": args.toy,
    }
    _bring_back(work, out, summary)
    summary["total_s"] = round(time.time() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the carried assets (run here)")
    p.add_argument("--data", required=True, help="a `scadm prepare stylegan-faces` folder")
    p.add_argument("--out", default=str(ROOT / ".gpu"), help="assets folder (default .gpu)")
    p.add_argument("--size", type=int, action="append", default=None, help="face sizes (default 64)")
    p.add_argument("--num", type=int, help="at most this many faces (default: as many as fit)")
    p.add_argument(
        "--reserve-mib", type=float, default=3.0, help="room left under the 64 MiB for files landed later (default 3)"
    )
    p.add_argument("--quality", type=int, help="JPEG quality (4:4:4) instead of lossless WebP: more faces fit")
    p.add_argument("--wheels", action="store_true", help="also download the diffusers wheel")
    p.set_defaults(func=pack)
    p = sub.add_parser("run", help="unpack, train, bring back (run on the GPU machine)")
    p.add_argument("--assets", default=str(ROOT / ".gpu"))
    p.add_argument("--out", required=True, help="where weights, logs and summary.json go")
    p.add_argument("--work", default="/tmp/realistic-run", help="scratch folder")
    p.add_argument("--num", type=int, help="faces (default: all those faces.npz has)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument(
        "--minutes",
        type=float,
        default=8.5,
        help="whole-call budget (default 8.5: a 600 s device call with room to spare)",
    )
    p.add_argument("--vq-share", type=float, default=0.35, help="share of training time for the VQ")
    p.add_argument("--toy", action="store_true", help="CPU-sized: 4 faces, 2 steps per stage")
    p.set_defaults(func=run)
    args = parser.parse_args()
    if args.command == "pack" and args.size is None:
        args.size = [64]
    args.func(args)


if __name__ == "__main__":
    main()
