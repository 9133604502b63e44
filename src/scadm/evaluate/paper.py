"""The paper's reconstruction and style-swap protocols (Table 1, Sec. 4.1-4.3), on any dataset.

reconstruction: render each face's mask with its own styles; SSIM to the face, FID to the real
faces, mIoU / pixel accuracy of a face parser's labels of the result against the mask.
swap: every part styled like the reference face (face i + 1); FID, mIoU, accuracy, and how far the
parts' colours moved toward the reference's. partial-swap: the same for each part set alone,
with the locality numbers of `scadm.metrics.disentanglement` (the paper shows these only as
pictures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scadm.data.synthetic import CLASS_NAMES, swap_parts
from scadm.evaluate.context import Evaluation, Model
from scadm.evaluate.data import reference_index
from scadm.evaluate.published import table1_summary
from scadm.evaluate.report import ProtocolResult, Table
from scadm.figures import save_grid
from scadm.metrics.disentanglement import mean_locality, swap_locality
from scadm.metrics.ssim import ssim
from scadm.regions import default_margin, distance

GRID_FACES = 6


def reconstructions(ev: Evaluation, model: Model, settings=None) -> np.ndarray:
    code = ev.styles(model)
    return ev.render(model, "reconstruction", ev.face_items(), lambda it: code.index(it.face), settings)


def partial_swaps(
    ev: Evaluation, model: Model, parts: list[int] | None, settings=None, preserve: bool = False
) -> np.ndarray:
    """Face i with the styles of `parts` (all if None) from face i + 1; `preserve`: region-preserving
    (beyond the paper: the target's own pixels outside the parts plus the default margin)."""
    code, n = ev.styles(model), len(ev.faces)
    job = "swap" if parts is None else "partial:" + ",".join(map(str, parts))
    margin = default_margin(ev.size) if preserve else None
    if parts is None:
        return ev.render(
            model, job, ev.face_items(), lambda it: code.index(reference_index(it.face, n)), settings, margin
        )
    return ev.render(
        model,
        job,
        ev.face_items(),
        lambda it: code.index(it.face).swap(code.index(reference_index(it.face, n)), parts),
        settings,
        margin,
    )


def modes(ev: Evaluation, parts: list[int]) -> list[tuple[str, bool]]:
    """The swap modes a protocol reports for `parts`: the paper's, and region-preserving unless
    switched off or every class is swapped (nothing would be kept)."""
    kept = ev.options.preserve and len(set(parts)) < ev.label_set.num_classes
    return [("plain", False)] + ([("preserve", True)] if kept else [])


def before_swap(ev: Evaluation, model: Model, preserve: bool, settings=None) -> np.ndarray:
    """What a swap is compared with: the reconstruction (plain), or the target itself (preserve:
    a preserved edit that changes nothing returns the target)."""
    return ev.real if preserve else reconstructions(ev, model, settings)


def against_target(ev: Evaluation, result: np.ndarray, parts: list[int]) -> dict:
    """outside: mean |result - target| (0-1) beyond the default margin around the parts;
    inside_truth: mean |result - true swap| (0-1) over the parts (procedural faces only)."""
    names, n, margin = ev.label_set.names, len(ev.faces), default_margin(ev.size)
    outside, inside = [], []
    for i, face in enumerate(ev.faces):
        region = np.isin(face.labels, parts)
        if not region.any():
            continue
        far = distance(torch.from_numpy(region)[None], margin)[0].numpy() > margin
        diff = np.abs(result[i].astype(np.float64) - face.image).mean(-1) / 255
        if far.any():
            outside.append(diff[far].mean())
        ref = ev.faces[reference_index(i, n)]
        if face.truth is not None and ref.truth is not None:
            truth = swap_parts(face.truth, ref.truth, [names[k] for k in parts if names[k] in CLASS_NAMES]).image
            inside.append((np.abs(result[i].astype(np.float64) - truth).mean(-1) / 255)[region].mean())
    return {
        "outside_target": float(np.mean(outside)) if outside else None,
        "inside_truth": float(np.mean(inside)) if inside else None,
    }


def quality(ev: Evaluation, images: np.ndarray, key: dict) -> dict:
    """FID to the real faces and the parser's mIoU / accuracy against the input masks."""
    scores = ev.segmentation(images, key)
    return {
        "fid": ev.fid(images, key),
        "miou": None if scores is None else 100 * scores.miou,
        "accuracy": None if scores is None else 100 * scores.pixel_accuracy,
        "class_iou": None
        if scores is None
        else dict(zip(ev.label_set.names, (100 * scores.class_iou()).tolist(), strict=True)),
    }


#: the locality numbers of a partial swap (`locality` + `against_target`) and their column headings
LOCALITY_COLUMNS = {
    "inside": "inside (0-1)",
    "leakage": "leakage (0-1) ↓",
    "outside_target": "outside vs target (0-1) ↓",
    "inside_truth": "inside vs truth (0-1) ↓",
    "transfer": "transfer ↑",
    "gt_transfer": "GT transfer ↑",
    "gt_leakage": "GT leakage ↓",
}


#: the columns that need the true swap (procedural faces' ground truth)
TRUTH_COLUMNS = ("inside_truth", "gt_transfer", "gt_leakage")


def locality_columns(ev: Evaluation) -> dict[str, str]:
    """LOCALITY_COLUMNS, less the ground-truth ones when no face has a true swap (folder data:
    they would be columns of dashes)."""
    if any(f.truth is not None for f in ev.faces):
        return dict(LOCALITY_COLUMNS)
    return {k: v for k, v in LOCALITY_COLUMNS.items() if k not in TRUTH_COLUMNS}


def locality(ev: Evaluation, result: np.ndarray, recon: np.ndarray, parts: list[int]) -> dict:
    """Mean `swap_locality` over the faces that show at least one of `parts`."""
    names, n, items = ev.label_set.names, len(ev.faces), []
    for i, face in enumerate(ev.faces):
        if not np.isin(face.labels, parts).any():
            continue
        ref = ev.faces[reference_index(i, n)]
        truth = None
        if face.truth is not None and ref.truth is not None:
            truth = swap_parts(face.truth, ref.truth, [names[k] for k in parts if names[k] in CLASS_NAMES]).image
        items.append(swap_locality(result[i], recon[i], face.labels, parts, ref.image, ref.labels, truth))
    return mean_locality(items)


def _quality_table(title: str, rows: dict[str, dict], note: str = "") -> Table:
    columns = ["images", "FID ↓", "mIoU % ↑", "accuracy % ↑"]
    extra = [c for c in ("ssim",) if any(r.get(c) is not None for r in rows.values())]
    columns += ["SSIM ↑" for _ in extra]
    body = [
        [name, r.get("fid"), r.get("miou"), r.get("accuracy")] + [r.get(c) for c in extra] for name, r in rows.items()
    ]
    return Table(title, columns, body, note)


def _class_table(rows: dict[str, dict]) -> Table | None:
    named = {k: r["class_iou"] for k, r in rows.items() if r.get("class_iou")}
    if not named:
        return None
    classes = [c for c in next(iter(named.values())) if any(not np.isnan(v[c]) for v in named.values())]
    return Table(
        "Per-class IoU % (classes present in the masks or the parser's output)",
        ["class", *named],
        [[c] + [v[c] for v in named.values()] for c in classes],
    )


def _notes(ev: Evaluation) -> str:
    notes = [f"Rendering: {ev.options.render.label()}, seed {ev.options.render.seed} + face index."]
    if ev.options.fid:
        notes.append(
            f"FID on {len(ev.faces)} images against the {len(ev.faces)} real faces: with so few "
            "images FID is biased upwards; compare rows of one report, not with the paper."
        )
    if ev.parser is None:
        notes.append("No face parser (--parser none): no mIoU / accuracy.")
    return " ".join(notes)


def run_reconstruction(ev: Evaluation, figures: Path) -> ProtocolResult:
    rows, grid = {}, [[f.image for f in ev.faces[:GRID_FACES]], [f.labels for f in ev.faces[:GRID_FACES]]]
    if ev.parser is not None:
        real = quality(ev, ev.real, {"real": ev.options.data.describe()})
        rows["real faces (parser on the inputs)"] = {**real, "fid": None}
    for model in ev.models:
        images = reconstructions(ev, model)
        values = ssim(images, ev.real)
        rows[model.name] = {
            **quality(ev, images, ev.render_key(model, "reconstruction")),
            "ssim": float(values.mean()),
            "ssim_std": float(values.std()),
        }
        grid.append(list(images[:GRID_FACES]))
    save_grid(
        grid,
        figures / "reconstruction-grid.png",
        row_labels=["input", "mask"] + [m.name for m in ev.models],
        title=f"reconstruction, {ev.options.render.label()}",
        label_set=ev.label_set,
    )
    tables = [
        _quality_table(
            f"Reconstruction (paper Table 1: {table1_summary()})",
            rows,
            _notes(ev),
        )
    ]
    tables += [t for t in [_class_table(rows)] if t]
    return ProtocolResult(
        "reconstruction",
        "Reconstruction (reference = the face itself)",
        "Each face's mask rendered with the styles encoded from the face itself.",
        rows,
        tables,
        [("reconstruction-grid.png", "inputs, masks and reconstructions")],
    )


def run_swap(ev: Evaluation, figures: Path) -> ProtocolResult:
    rows, n = {}, len(ev.faces)
    refs = [ev.faces[reference_index(i, n)].image for i in range(min(GRID_FACES, n))]
    grid = [[f.image for f in ev.faces[:GRID_FACES]], refs]
    all_parts = list(range(ev.label_set.num_classes))
    for model in ev.models:
        images, recon = partial_swaps(ev, model, None), reconstructions(ev, model)
        rows[model.name] = {
            **quality(ev, images, ev.render_key(model, "swap")),
            **{f"loc_{k}": v for k, v in locality(ev, images, recon, all_parts).items()},
        }
        grid.append(list(images[:GRID_FACES]))
    save_grid(
        grid,
        figures / "swap-grid.png",
        row_labels=["target", "reference"] + [m.name for m in ev.models],
        title=f"total style swap, {ev.options.render.label()}",
    )
    table = _quality_table("Total style swap (target mask, all styles from the reference)", rows, _notes(ev))
    truth = "gt_transfer" in locality_columns(ev)
    transfer = Table(
        "Colour transfer toward the reference (1 = reached it, 0 = unchanged)",
        ["model", "faces", "change vs reconstruction (0-1)", "transfer"] + ["transfer (ground truth)"] * truth,
        [
            [k, r["loc_count"], r["loc_inside"], r["loc_transfer"]] + [r["loc_gt_transfer"]] * truth
            for k, r in rows.items()
        ],
    )
    return ProtocolResult(
        "swap",
        "Total style swap",
        "Target i's mask with every style of face i + 1.",
        rows,
        [table, transfer],
        [("swap-grid.png", "targets, references and total swaps")],
    )


def run_partial_swap(ev: Evaluation, figures: Path) -> ProtocolResult:
    rows, table_rows, grid, labels = {}, [], [[f.image for f in ev.faces[:GRID_FACES]]], ["target"]
    n, columns = len(ev.faces), locality_columns(ev)
    grid.append([ev.faces[reference_index(i, n)].image for i in range(min(GRID_FACES, n))])
    labels.append("reference")
    for model in ev.models:
        grid.append(list(reconstructions(ev, model)[:GRID_FACES]))
        labels.append(f"{model.name}: reconstruction")
    for set_name, names in ev.options.part_sets.items():
        parts = ev.parts(names)
        for model in ev.models:
            for mode, kept in modes(ev, parts):
                images = partial_swaps(ev, model, parts, preserve=kept)
                key = ev.render_key(
                    model, "partial:" + ",".join(map(str, parts)), preserve=default_margin(ev.size) if kept else None
                )
                r = {
                    **quality(ev, images, key),
                    **locality(ev, images, before_swap(ev, model, kept), parts),
                    **against_target(ev, images, parts),
                }
                rows[f"{model.name}/{set_name}" + ("/preserve" if kept else "")] = r
                table_rows.append(
                    [
                        set_name,
                        model.name,
                        mode,
                        r["count"],
                        r["fid"],
                        r["miou"],
                        *(r[f] for f in columns),
                    ]
                )
                grid.append(list(images[:GRID_FACES]))
                labels.append(f"{model.name}: {set_name}" + (" (preserve)" if kept else ""))
    save_grid(
        grid,
        figures / "partial-swap-grid.png",
        row_labels=labels,
        title=f"partial style swaps, {ev.options.render.label()}",
    )
    table = Table(
        "Partial swaps per part set",
        [
            "parts",
            "model",
            "mode",
            "faces",
            "FID ↓",
            "mIoU % ↑",
            *columns.values(),
        ],
        table_rows,
        _notes(ev) + " Inside / leakage: mean change inside / outside the swapped parts vs "
        "the reconstruction (plain) or the target itself (preserve: region-preserving edit, beyond the "
        f"paper, margin {default_margin(ev.size)} px); outside vs target: mean change vs the target beyond "
        "the margin; inside vs truth: mean error against the true swap over the parts (procedural faces); "
        "transfer: 1 - d(result)/d(before) of the parts' mean colours to the reference's (GT: to the true "
        "swap); GT leakage: extra colour error of the other parts.",
    )
    return ProtocolResult(
        "partial-swap",
        "Partial style swap",
        "Target i keeps its styles except for one part set, taken from face i + 1.",
        rows,
        [table],
        [("partial-swap-grid.png", "partial swaps per part set")],
    )
