"""A realistic SCA-DM model in one call on a lent GPU machine (torch, no OpenVINO, no network).

Two steps (see scripts/gpu_realistic.sh and the README's "Realistic model on one GPU call"):

  pack  (here, once): writes .gpu/ to be carried: the generator as .xml + .safetensors
        (25 MB, synthesis weights in fp16, instead of 41), the masks of the faces made by `scadm prepare
        stylegan-faces` (a few MB: BiSeNet's 53 MB of weights do not fit the 64 MiB that travels),
        and the diffusers wheel the machine lacks.
  run   (there): faces 0..N-1 from their seeds with scadm's torch interpreter of the generator,
        written with those masks (or parsed by BiSeNet where its weights are installed) in the
        folder layout; then `scadm train-vq` and `scadm train` on configs/realistic-64.yaml in
        bf16, time-boxed to fit --minutes; then OUT gets pipeline.tar (fp16 weights, split in
        15 MB parts if larger), logs.tar.gz and summary.json.

--toy runs the same path on a CPU in about a minute: 4 faces, 2 steps per stage, tiny batches.
Generated faces and anything trained on them are non-commercial (StyleGAN2-FFHQ, FFHQ, and
CelebAMask-HQ for the masks).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "realistic-64.yaml"
PART_BYTES = 15 * 2**20  # each file brought back is at most 16 MB
RESERVE_S = 60  # export and packing after training
TOY = [
    "--set",
    "data.batch_size=2",
    "--set",
    "train_vq.batch_size=2",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.mixed_precision='no'",
    "--set",
    "train_vq.mixed_precision='no'",
    "--set",
    "train.sample_every=2",
    "--set",
    "train_vq.sample_every=2",
    "--set",
    "train.sample_steps=2",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "train_vq.checkpoint_every=2",
    "--set",
    "train.warmup_steps=0",
    "--set",
    "train.log_every=1",
    "--set",
    "train_vq.log_every=1",
]


def pack(args) -> None:
    """Write the carried assets to args.out."""
    from PIL import Image

    from scadm.data.mobilestylegan import save_compact
    from scadm.data.stylegan_faces import face_paths

    out = Path(args.out)
    save_compact(out / "generator")
    faces, masks = [], {s: [] for s in args.size}
    meta = json.loads((Path(args.data) / "dataset.json").read_text())
    while args.num is None or len(faces) < args.num:
        i = len(faces)
        paths = face_paths(Path(args.data), i, args.size, meta["test_every"])
        if not all(p.is_file() for p in paths):
            break
        for j, s in enumerate(args.size):
            masks[s].append(np.asarray(Image.open(paths[2 * j]), np.uint8))
        faces.append(i)
    if not faces:
        sys.exit(f"pack: no complete faces in {args.data} at sizes {args.size}")
    np.savez_compressed(
        out / "labels.npz",
        psi=meta["psi"],
        test_every=meta["test_every"],
        **{f"labels_{s}": np.stack(m) for s, m in masks.items()},
    )
    if args.wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--dest",
                str(out / "wheels"),
                "diffusers==0.42.1",
            ],
            check=True,
        )
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {len(faces)} faces' masks at {args.size} px, {total / 2**20:.1f} MiB")


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

    from scadm.data.mobilestylegan import FaceGenerator
    from scadm.data.stylegan_faces import prepare_stylegan_faces

    start = time.time()
    work, out, assets = Path(args.work), Path(args.out), Path(args.assets)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    num = 4 if args.toy else args.num
    labels, psi, test_every = None, 0.8, 20
    if (assets / "labels.npz").is_file():
        bundle = np.load(assets / "labels.npz")
        psi, test_every = float(bundle["psi"]), int(bundle["test_every"])
        if f"labels_{args.size}" not in bundle:
            raise SystemExit(f"run: labels.npz has no {args.size} px masks; pack with --size {args.size}")
        stored = bundle[f"labels_{args.size}"]
        num = min(num or len(stored), len(stored))
        labels = {i: {args.size: stored[i]} for i in range(num)}
    elif num is None:
        raise SystemExit("run: give --num (no labels.npz in the assets: faces are parsed here)")
    generator = FaceGenerator("torch", device, folder=assets / "generator" if (assets / "generator").is_dir() else None)
    data, t, done = work / "data", time.time(), 0
    chunk = 4 if args.toy else 16 * args.batch
    while done < num and (done == 0 or time.time() - t < args.gen_minutes * 60):
        done = min(num, done + chunk)  # the dataset grows chunk by chunk (prepare resumes)
        report = prepare_stylegan_faces(
            data,
            done,
            [args.size],
            psi=psi,
            test_every=test_every,
            progress=False,
            batch_size=2 if device == "cpu" else args.batch,
            device=device,
            generator=generator,
            labels=labels,
            workers=1 if args.toy else 8,
        )
        print(f"{done} faces after {time.time() - t:.0f} s ({report.summary()})", flush=True)
    num, gen_s = done, time.time() - t
    del generator
    if device == "cuda":
        torch.cuda.empty_cache()

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
        raise SystemExit(f"only {left_min:.1f} min left for training after generation")
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
        "labels": "carried (labels.npz)" if labels else "parsed here (BiSeNet)",
        "generate_s": round(gen_s, 1),
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
    p.add_argument("--size", type=int, action="append", default=None, help="mask sizes (default 64)")
    p.add_argument("--num", type=int, help="at most this many faces (default: all complete ones)")
    p.add_argument("--wheels", action="store_true", help="also download the diffusers wheel")
    p.set_defaults(func=pack)
    p = sub.add_parser("run", help="generate, train, bring back (run on the GPU machine)")
    p.add_argument("--assets", default=str(ROOT / ".gpu"))
    p.add_argument("--out", required=True, help="where weights, logs and summary.json go")
    p.add_argument("--work", default="/tmp/realistic-run", help="scratch folder")
    p.add_argument("--num", type=int, help="faces (default: all those labels.npz has)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32, help="faces per generator batch on the GPU")
    p.add_argument(
        "--minutes",
        type=float,
        default=8.5,
        help="whole-call budget (default 8.5: a 600 s device call with room to spare)",
    )
    p.add_argument(
        "--gen-minutes", type=float, default=2.5, help="stop adding faces after this long (default 2.5; whole chunks)"
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
