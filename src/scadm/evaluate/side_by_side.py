"""One evaluated model's numbers next to the paper's, read back from a report folder's JSON.

`scadm evaluate` writes OUT/<protocol>.json; these functions turn a finished folder into the
tables of its summary (Table 1 and Fig. 8 side by side with the paper, the locality of partial
swaps) and into the "measured" lines of a model card, so that neither is typed by hand. The
paper's numbers come from `scadm.evaluate.published`; they were measured on other data, at
another resolution and with a far larger model, so they stand beside ours, not against them.
"""

from __future__ import annotations

import json
from pathlib import Path

from scadm.errors import InputError
from scadm.evaluate.published import FIG8_STEPS, LPIPS_DIVERSITY, TABLE1, table1
from scadm.evaluate.report import Table

#: the row of the face parser on the real faces in reconstruction.json (the mIoU ceiling)
REAL_ROW = "real faces (parser on the inputs)"
DASH = "\N{EN DASH}"


def load_records(out: Path, protocols: tuple[str, ...]) -> dict[str, dict]:
    """OUT/<protocol>.json of each protocol; InputError naming the first missing or unreadable one."""
    records = {}
    for name in protocols:
        path = Path(out) / f"{name}.json"
        try:
            records[name] = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: not found; run `scadm evaluate --protocol {name}` first") from None
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: not a readable report ({err})") from None
    return records


def model_name(records: dict[str, dict]) -> str:
    """The one model every record evaluated (a side-by-side summary is about one model)."""
    names = {tuple(r["models"]) for r in records.values()}
    if len(names) != 1 or len(next(iter(names))) != 1:
        raise InputError(f"reports: expected one and the same model in every report, got {sorted(names)}")
    return next(iter(names))[0]


def _num(record: dict) -> int:
    return int(record["data"]["num"])


def table1_side_by_side(records: dict[str, dict]) -> Table:
    """Paper Table 1 as printed, then this model's reconstruction and the parser's ceiling."""
    name, recon = model_name(records), records["reconstruction"]
    ours, real = recon["metrics"][name], recon["metrics"].get(REAL_ROW, {})
    rows = [[f"{m} (paper)", *TABLE1[m]] for m in TABLE1]
    rows.append(
        [f"{name} (this report, {_num(recon)} faces)", ours["ssim"], ours["fid"], ours["miou"], ours["accuracy"]]
    )
    rows.append(["face parser on the real faces (ceiling)", None, None, real.get("miou"), real.get("accuracy")])
    return Table(
        "Reconstruction next to paper Table 1 (side by side, not comparable)",
        ["model", "SSIM ↑", "FID ↓", "mIoU % ↑", "accuracy % ↑"],
        rows,
    )


def fig8_side_by_side(records: dict[str, dict]) -> Table:
    """Noise-based generation at the paper's step counts, and LPIPS diversity, next to Fig. 8."""
    name, noise = model_name(records), records["noise"]
    ours = noise["metrics"][name]
    steps = sorted(int(s) for s in ours["steps"])
    fastest = ours["steps"][str(steps[0])]["seconds_per_image"]

    def at(field: str, scale: float = 1.0) -> list:
        return [None if ours["steps"][str(s)][field] is None else ours["steps"][str(s)][field] / scale for s in steps]

    plotted = ["plotted only" if s in FIG8_STEPS else DASH for s in steps]
    rows = [
        ["SCA-DM (paper): FID ↓", *plotted, LPIPS_DIVERSITY["SCA-DM"]],
        ["SDM (paper): FID ↓", *plotted, LPIPS_DIVERSITY["SDM"]],
        [f"{name}: FID ↓ ({_num(noise)} samples)", *at("fid"), ours["lpips_diversity"]],
        [f"{name}: mIoU % ↑", *at("miou"), None],
        [f"{name}: time ÷ time at {steps[0]} steps", *at("seconds_per_image", fastest), None],
    ]
    return Table(
        "Noise-based generation next to paper Fig. 8 (side by side, not comparable)",
        ["", *(f"{s} steps" for s in steps), "LPIPS diversity ↑"],
        rows,
        "Fig. 8 plots FID and time against the steps without printing the values (SCA-DM's FID "
        "is below SDM's at 50, 100 and 200 steps, not at 1000; SDM takes about 5x longer per "
        "step); its LPIPS diversity is given in the text. Times on a CPU are ratios, and only rough "
        "when the core is shared.",
    )


def _ratio(inside, leakage):
    return None if inside is None or not leakage else inside / leakage


def locality_summary(records: dict[str, dict]) -> Table:
    """Partial swaps (plain and region-preserving) and the total swap: change inside vs outside
    the swapped parts and colour transfer toward the reference."""
    name, metrics = model_name(records), records["partial-swap"]["metrics"]
    rows = []
    for key, r in metrics.items():
        model, part, *mode = key.split("/")
        if model != name:
            continue
        rows.append(
            [
                part,
                mode[0] if mode else "plain",
                r["count"],
                r["inside"],
                r["leakage"],
                _ratio(r["inside"], r["leakage"]),
                r["outside_target"],
                r["transfer"],
            ]
        )
    if "swap" in records:
        s = records["swap"]["metrics"][name]
        rows.append(["all (total swap)", "plain", s["loc_count"], s["loc_inside"], None, None, None, s["loc_transfer"]])
    return Table(
        "Partial swaps: locality and transfer",
        [
            "parts",
            "mode",
            "faces",
            "inside (0-1)",
            "leakage (0-1) ↓",
            "inside ÷ leakage ↑",
            "outside vs target (0-1) ↓",
            "transfer ↑",
        ],
        rows,
        "inside / leakage: mean change inside / outside the swapped parts against the reconstruction "
        "(plain) or the target itself (preserve); transfer: how far the parts' mean colours moved "
        "toward the reference's (1 = reached them, 0 = unchanged).",
    )


def _f(value, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}g}"


def model_card_lines(records: dict[str, dict]) -> list[str]:
    """The 'measured' bullets of a model card: every number the card quotes, from the reports."""
    name = model_name(records)
    recon, noise = records["reconstruction"], records["noise"]
    r, real = recon["metrics"][name], recon["metrics"].get(REAL_ROW, {})
    paper = table1()
    lines = [
        f"- reconstruction ({_num(recon)} held-out faces): SSIM {_f(r['ssim'])} (± {_f(r['ssim_std'], 2)}), "
        f"FID {_f(r['fid'])} ({_num(recon)} images: read it only against the other rows), parser mIoU "
        f"{_f(r['miou'])} % and pixel accuracy {_f(r['accuracy'])} % (the parser scores {_f(real.get('miou'))} % "
        f"and {_f(real.get('accuracy'))} % on the real faces; the paper's SCA-DM: SSIM {paper['ssim']}, "
        f"mIoU {paper['miou']} % on CelebAMask-HQ at 256 px);",
    ]
    for row in locality_summary(records).rows:
        part, mode, count, inside, leakage, ratio, outside, transfer = row
        if part.startswith("all"):
            lines.append(f"- total swap: change {_f(inside)}, transfer {_f(transfer, 2)};")
        elif mode == "plain":
            lines.append(
                f"- {part} swap ({count} faces): {_f(inside)} inside vs {_f(leakage)} outside "
                f"({_f(ratio, 2)}x), transfer {_f(transfer, 2)};"
            )
        else:
            lines.append(
                f"  - region-preserving: {_f(inside)} inside, {_f(outside)} outside vs the target, "
                f"transfer {_f(transfer, 2)};"
            )
    n = noise["metrics"][name]
    fids = ", ".join(f"{_f(v['fid'])} at {s}" for s, v in sorted(n["steps"].items(), key=lambda kv: int(kv[0])))
    o, masks = noise["options"], min(noise["options"]["diversity_masks"], _num(noise))
    lines.append(
        f"- noise-based generation ({_num(noise)} masks): FID {fids} steps; LPIPS diversity "
        f"{_f(n['lpips_diversity'], 2)} ({masks} masks x {o['diversity_samples']} samples; "
        f"the paper's SCA-DM {LPIPS_DIVERSITY['SCA-DM']})."
    )
    return lines
