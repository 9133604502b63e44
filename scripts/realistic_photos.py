"""The README's real-photo figure, end to end through the CLI, with a shipped model by name.

`scadm parse` and `scadm edit --mask auto` (align with dlib, parse with BiSeNet) on two public-domain
photos, the astronaut (scikit-image, NASA) and Grace Hopper (matplotlib, US Navy): each
reconstructed; hair, lips and eyes swapped both ways; random hair; random everything; every swap
plain and with --preserve. Writes OUT/<model>-photos.png (the labelled figure), .json and .md (the
commands run, and per swap the mean change inside the swapped parts vs outside them: the issue's
locality bar is inside >= 5x outside). Plain edits are compared with the plain reconstruction,
preserved ones with the aligned photo (what --preserve keeps outside the edit).

    taskset -c 1 python scripts/realistic_photos.py --model realistic        # docs/realistic-photos.*
    taskset -c 1 python scripts/realistic_photos.py --model demo --out /tmp/photos   # a dry run

About 5 minutes on one CPU core at 64 px. Needs `make parse-extras` (BiSeNet, dlib) and the photos'
packages (scikit-image, matplotlib). The BiSeNet weights were trained on CelebAMask-HQ
(non-commercial), and so are the masks; the realistic model is non-commercial too (its card).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scadm.cli import main as scadm
from scadm.demo import change_inside_outside
from scadm.errors import ScadmError
from scadm.io import read_mask
from scadm.labels import CELEBAMASK_HQ
from scadm.sample_photos import PARSER_TERMS, SOURCES, write_sample_photos
from scadm.shipped import SHIPPED, resolve_model

SWAPS = ("hair", "lips", "eyes")  # --parts, swapped from the other photo
BAR = 5.0  # issue 12: a swap is local when the change inside is >= 5x the change outside
COLUMNS = ["photo", "parsed mask", "reconstruction", *(f"{p} <- other" for p in SWAPS), "random hair", "random all"]


class Runner:
    """Runs `scadm` commands in this process (the parser's weights load once) and records them."""

    def __init__(self, model: str, seed: int, steps: int | None):
        self.common = ["--model", model, "--seed", str(seed), *(["--steps", str(steps)] if steps else [])]
        self.seed, self.commands = seed, []

    def __call__(self, *argv: str) -> None:
        self.commands.append(shlex.join(["scadm", *argv]))
        print(f"$ {self.commands[-1]}", flush=True)
        if scadm(list(argv)) != 0:
            sys.exit(f"realistic_photos: `{self.commands[-1]}` failed (its message is above)")

    def edit(self, out: Path, target: Path, mode: str, *extra: str) -> np.ndarray:
        """One `scadm edit --mask auto` into the folder `out`; its first result as uint8 (H, W, 3)."""
        self("edit", "--image", str(target), "--mask", "auto", "--mode", mode, *extra, *self.common, "--out", str(out))
        return np.asarray(Image.open(out / f"{target.stem}_{mode}_0_seed{self.seed}.png").convert("RGB"))


def model_size(folder: Path) -> int:
    from scadm.pipeline import SCADMPipeline

    return SCADMPipeline.from_pretrained(folder).image_size


def _measure(result: np.ndarray, base: np.ndarray, region: np.ndarray) -> dict:
    if not region.any():
        return {"inside": None, "outside": None, "ratio": None, "local": None, "note": "part absent from the mask"}
    inside, outside = change_inside_outside(result, base, region)
    ratio = inside / outside if outside > 0 else float("inf")
    return {"inside": round(inside, 2), "outside": round(outside, 2), "ratio": round(ratio, 2), "local": ratio >= BAR}


def save_figure(rows: list[list], row_labels: list[str], path: Path, title: str, zoom: int) -> None:
    """The grid with every cell enlarged `zoom` times (nearest: the model's pixels stay visible)."""
    from scadm.figures import enlarge, save_grid

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[None if c is None else enlarge(c, zoom) for c in row] for row in rows]
    save_grid(rows, path, row_labels=row_labels, col_labels=COLUMNS, title=title)


def run(args) -> dict:
    folder = resolve_model(args.model)
    label = args.model if args.model in SHIPPED else folder.name
    work = Path(args.work or Path("out") / f"{label}-photos")
    photos = write_sample_photos(work / "photos")
    size = model_size(folder)
    run_cli = Runner(args.model, args.seed, args.steps)
    run_cli("parse", *map(str, photos.values()), "--size", str(size), "--out", str(work / "parse"))
    aligned = {
        n: np.asarray(Image.open(work / "parse" / f"{p.stem}_aligned.png").convert("RGB")) for n, p in photos.items()
    }
    labels = {n: read_mask(work / "parse" / f"{p.stem}_labels.png").numpy() for n, p in photos.items()}

    rows: list[list] = []
    row_labels: list[str] = []
    swaps = []
    for name, target in photos.items():
        other_name = next(n for n in photos if n != name)
        other = ["--reference", str(photos[other_name]), "--reference-mask", "auto"]
        recon = run_cli.edit(work / f"{name}-reconstruct", target, "reconstruct")
        plain, kept = [aligned[name], labels[name], recon], [None, None, None]
        edits = [(f"{part} <- {other_name}", part, ("partial", *other, "--parts", part)) for part in SWAPS]
        edits.append(("random hair", "hair", ("mix", "--parts", "hair")))
        for title, part, argv in edits:
            for preserve in (False, True):
                edit_dir = work / f"{name}-{title.replace(' <- ', '-from-').replace(' ', '-')}{'-preserve' * preserve}"
                image = run_cli.edit(edit_dir, target, *argv, *(["--preserve"] if preserve else []))
                (kept if preserve else plain).append(image)
                base = aligned[name] if preserve else recon
                swaps.append(
                    {"target": name, "edit": title, "preserve": preserve}
                    | _measure(image, base, np.isin(labels[name], CELEBAMASK_HQ.parse_parts(part)))
                )
        plain.append(run_cli.edit(work / f"{name}-random", target, "random"))
        kept.append(None)  # --preserve keeps nothing of a face whose every part is restyled
        rows += [plain, kept]
        row_labels += [f"{name} (other: {other_name})", f"{name}, --preserve"]

    figure = Path(args.out) / f"{label}-photos.png"
    title = f"scadm edit --mask auto with --model {label} ({size} px, seed {args.seed})"
    save_figure(rows, row_labels, figure, title, max(1, args.zoom // max(1, size // 64)))
    terms = SHIPPED[label].summary if label in SHIPPED else f"see {folder}/MODEL_CARD.md"
    return {
        "model": label,
        "model_terms": terms,
        "photos": SOURCES,
        "masks": PARSER_TERMS,
        "size": size,
        "figure": figure.name,
        "bar": f"local when the mean change inside the swapped parts is >= {BAR:g}x the mean change outside",
        "baselines": "plain edits vs the plain reconstruction; --preserve edits vs the aligned photo",
        "swaps": swaps,
        "commands": run_cli.commands,
    }


def markdown(report: dict, seconds: float) -> str:
    lines = [
        f"# Real photos with `--model {report['model']}`",
        "",
        f"![real photos]({report['figure']})",
        "",
        f"- Model: {report['model_terms']}.",
        f"- Photos: {report['photos']}.",
        f"- Masks: {report['masks']}.",
        f"- Locality: {report['bar']} (mean |change| /255 over RGB; {report['baselines']}).",
        f"- Made by `scripts/realistic_photos.py --model {report['model']}` in {seconds / 60:.1f} min; "
        "its commands are in the JSON.",
        "",
        "| target | edit | --preserve | inside | outside | ratio | local |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for s in report["swaps"]:
        cells = ["-" if s[k] is None else f"{s[k]:.2f}" for k in ("inside", "outside", "ratio")]
        local = s.get("note") or ("yes" if s["local"] else "no")
        lines.append(
            f"| {s['target']} | {s['edit']} | {'yes' if s['preserve'] else 'no'} | {' | '.join(cells)} | {local} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default="realistic", help="a shipped model's name or a pipeline folder (default realistic)"
    )
    ap.add_argument("--out", default="docs", help="where the figure, JSON and markdown go (default docs)")
    ap.add_argument("--work", help="intermediate files (default ./out/<model>-photos, ignored by git)")
    ap.add_argument("--seed", type=int, default=0, help="render seed (default 0)")
    ap.add_argument("--steps", type=int, help="sampler steps (default: scadm edit's)")
    ap.add_argument("--zoom", type=int, default=3, help="enlarge 64 px cells this many times in the figure (default 3)")
    args = ap.parse_args(argv)
    start = time.monotonic()
    try:
        report = run(args)
    except ScadmError as err:  # e.g. --model realistic before its weights are installed
        sys.exit(f"realistic_photos: error: {err}")
    seconds = time.monotonic() - start
    report["seconds"] = round(seconds, 1)
    out = Path(args.out)
    stem = out / f"{report['model']}-photos"
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{stem}.md").write_text(markdown(report, seconds))
    local = [s["local"] for s in report["swaps"] if s["local"] is not None]
    print(f"wrote {stem}.png, .json, .md in {seconds:.0f} s: {sum(local)} of {len(local)} swaps local (>= {BAR:g}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
