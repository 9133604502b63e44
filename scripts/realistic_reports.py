#!/usr/bin/env python3
"""The paper's experiments on realistic faces: `scadm evaluate` on held-out generated faces, written
up next to the paper's Table 1 and Fig. 8 (issue 12, items 2 and 4).

Runs reconstruction, total swap and partial swaps (one eye, lips, hair; plain and region-preserving)
on the first --num faces of DATA/test, then noise-based generation at the paper's 50/100/200/1000
steps with LPIPS diversity on the first --noise-num masks; scores masks with BiSeNet (the parser that
made them). Writes OUT/<protocol>.{md,json}, OUT/figures/, OUT/README.md (the summary, side by side
with the paper), OUT/model-card.md (the "measured" lines for the model's MODEL_CARD.md) and
OUT/run.json (commands and times). Renders are cached, so an interrupted run resumes.

Sized for one CPU core at 64 px: with an empty cache the demo model (the realistic model's
architecture) took 2.4 min of CPU for reconstruction and swaps on 8 faces and 2.5 min for noise on
4 masks; per face and mask that extrapolates to about 7.6 + 5.3 = 13 min at the defaults (32 faces,
12 masks). On a shared core the wall time is longer; the README records both.

    taskset -c 1 .venv/bin/python scripts/realistic_reports.py --model realistic --data data/stylegan-faces/64px

Needs `make setup` (metrics) and `make parse-extras` (BiSeNet). --report-only rebuilds the three
summary files from the JSON reports already in OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from scadm.data.stylegan_options import LICENCE
from scadm.errors import InputError
from scadm.evaluate.published import PAPER_SETTING
from scadm.evaluate.side_by_side import (
    fig8_side_by_side,
    load_records,
    locality_summary,
    model_card_lines,
    model_name,
    table1_side_by_side,
)

PROTOCOLS = ("reconstruction", "swap", "partial-swap", "noise")
PART_SETS = ("r_eye", "lips=u_lip,l_lip", "hair")
PARTS = ("reconstruction and swaps", "noise-based generation")  # what each of `commands` runs
FIGURES = (
    ("reconstruction-grid.png", "inputs, masks and reconstructions"),
    ("swap-grid.png", "targets, references and total swaps"),
    ("partial-swap-grid.png", "partial swaps (one eye, lips, hair), plain and region-preserving"),
    ("noise-fid-vs-steps.png", "noise-based generation: FID against the number of steps (Fig. 8)"),
)


def commands(args) -> list[list[str]]:
    common = ["--model", args.model, "--data", args.data, "--split", "test", "--parser", "bisenet"]
    common += ["--steps", str(args.steps), "--out", str(args.out), "--no-progress"]
    common += ["--cache", str(args.cache)] if args.cache else []
    swaps = ["--protocol", "reconstruction", "--protocol", "swap", "--protocol", "partial-swap"]
    swaps += [w for p in PART_SETS for w in ("--part-set", p)]
    noise = ["--protocol", "noise", "--noise-steps", "50,100,200,1000"]
    noise += ["--diversity-masks", "8", "--diversity-samples", "4"]
    return [
        [*args.scadm, "evaluate", *swaps, "--num", str(args.num), *common],
        [*args.scadm, "evaluate", *noise, "--num", str(args.noise_num), *common],
    ]


def run_all(args) -> dict:
    """Run the evaluations; their wall and CPU seconds (this process's children)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    steps = []
    for command in commands(args):
        print("+", shlex.join(command), flush=True)
        wall0, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        if subprocess.run(command, env=env).returncode != 0:
            raise SystemExit(f"realistic_reports: failed: {shlex.join(command)}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        shown = shlex.join(["scadm", *command[len(args.scadm) :]])  # as the reports record it
        steps.append({"command": shown, "wall_seconds": time.perf_counter() - wall0, "cpu_seconds": cpu})
    return {
        "invocation": shlex.join(["scripts/realistic_reports.py", *sys.argv[1:]]),
        "commands": steps,
        "wall_seconds": sum(s["wall_seconds"] for s in steps),
        "cpu_seconds": sum(s["cpu_seconds"] for s in steps),
        "threads": env["OMP_NUM_THREADS"],
    }


def licence() -> str:
    return (
        "> **Non-commercial research only.** The faces are MobileStyleGAN's (`scadm prepare stylegan-faces`). "
        f"{LICENCE}. Their masks come from BiSeNet weights trained on CelebAMask-HQ (non-commercial "
        "research only), and so do the masks the reports score. A model trained on these faces carries "
        "the same terms."
    )


def readme(records: dict[str, dict], run: dict) -> str:
    name = model_name(records)
    recon, noise = records["reconstruction"], records["noise"]
    model = recon["models"][name]
    o, env = recon["options"], recon["environment"]
    render = f"{o['render']['sampler']} {o['render']['steps']} steps, g={o['render']['guidance']:g}"
    minutes = f"{run['wall_seconds'] / 60:.1f} min wall, {run['cpu_seconds'] / 60:.1f} min CPU"
    each = "; ".join(f"{c['cpu_seconds'] / 60:.1f} for {p}" for c, p in zip(run["commands"], PARTS, strict=True))
    masks = min(noise["options"]["diversity_masks"], noise["data"]["num"])
    lines = [
        f"# `{name}` on held-out generated realistic faces: the paper's experiments",
        "",
        licence(),
        "",
        f"Model `{model['path']}` (fingerprint {model['fingerprint']}). Data: {recon['data_title']} "
        "(generated faces whose seeds are held out of training: i % 20 == 0); masks scored by BiSeNet "
        "(79999_iter.pth), the parser that made the masks, whose score on the real faces is the ceiling.",
        "",
        f"Sized for one CPU core at 64 px: reconstruction, total and partial swaps on {recon['data']['num']} "
        f"faces, noise-based generation on {noise['data']['num']} masks at 50/100/200/1000 steps, "
        f"LPIPS diversity on {masks} masks x {noise['options']['diversity_samples']} samples; renders "
        f"{render}. This run: {minutes} ({each}; {env['device']}, OMP_NUM_THREADS={run['threads']}; "
        "a warm render cache makes it faster). "
        "With so few images FID is strongly biased upwards: read it against the other rows only.",
        "",
        "## Side by side with the paper",
        "",
        f"The paper measured on {PAPER_SETTING}; these reports measure a small 64 px model on generated "
        "faces, so the numbers stand side by side, **not comparable**: different data, resolution, "
        "model size and number of faces.",
        "",
        table1_side_by_side(records).markdown(),
        "",
        fig8_side_by_side(records).markdown(),
        "",
        "## Partial swaps",
        "",
        "The paper shows partial swaps only as pictures (Figs. 5 and 7); scadm measures them.",
        "",
        locality_summary(records).markdown(),
        "",
        "## Figures",
        "",
    ]
    for file, caption in FIGURES:
        lines += [f"![{caption}](figures/{file})", "", f"*{caption}*", ""]
    lines += [f"![random styles](figures/noise-samples-{name}.png)", "", "*random styles, 4 seeds per mask*", ""]
    lines += ["## Reports", ""]
    lines += [f"- [{p}]({p}.md): every table of the protocol; every number in [{p}.json]({p}.json)" for p in PROTOCOLS]
    lines += ["", "## Regenerate", "", "```bash", run["invocation"], "```", "", "which runs:", "", "```bash"]
    lines += [*(c["command"] for c in run["commands"]), "```", ""]
    return "\n".join(lines)


def model_card(records: dict[str, dict]) -> str:
    name, render = model_name(records), records["reconstruction"]["options"]["render"]
    return "\n".join(
        [
            f"<!-- the model card's 'Measured' lines for {name}, written by scripts/realistic_reports.py -->",
            f"- **Measured** on held-out generated faces with DDIM {render['steps']} and g = {render['guidance']:g}, "
            "`reports/realistic/` "
            "(change inside vs outside as fractions of 255; transfer = how much of the way to the reference's "
            "part colours the swap went):",
            *("  " + line for line in model_card_lines(records)),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="realistic", help="a shipped model's name or a pipeline folder")
    p.add_argument("--data", default="data/stylegan-faces/64px", help="`scadm prepare stylegan-faces` size folder")
    p.add_argument("--out", type=Path, default=Path("reports/realistic"))
    p.add_argument("--cache", help="render cache (default scadm's)")
    p.add_argument("--num", type=int, default=32, help="faces for reconstruction and swaps (default 32)")
    p.add_argument("--noise-num", type=int, default=12, help="masks for noise-based generation (default 12)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps of every render but the noise protocol's")
    p.add_argument("--scadm", default=f"{sys.executable} -m scadm", help="how to call scadm")
    p.add_argument("--report-only", action="store_true", help="rebuild README/model card from OUT's JSON")
    args = p.parse_args(argv)
    args.scadm = shlex.split(args.scadm)
    run_file = args.out / "run.json"
    try:
        if args.report_only:
            run = json.loads(run_file.read_text())
        else:
            run = run_all(args)
            run_file.write_text(json.dumps(run, indent=2) + "\n")
        records = load_records(args.out, PROTOCOLS)
        (args.out / "README.md").write_text(readme(records, run))
        (args.out / "model-card.md").write_text(model_card(records))
    except (InputError, OSError, ValueError) as err:
        raise SystemExit(f"realistic_reports: {err}") from None
    print(f"wrote {args.out / 'README.md'} and {args.out / 'model-card.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
