"""Disentanglement of partial swaps, beyond the paper: for each part set K (one eye, the lips, the
hair, all parts), how much K moves toward the reference and how much the rest leaks, with the
guidance scale and the number of steps as axes, for every model given (e.g. with and without
mask-conditioned attention: the paper's ablation, measured)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scadm.data.synthetic import swap_parts
from scadm.evaluate.context import Evaluation
from scadm.evaluate.data import reference_index
from scadm.evaluate.paper import (
    against_target,
    before_swap,
    locality,
    locality_columns,
    modes,
    partial_swaps,
    reconstructions,
)
from scadm.evaluate.report import ProtocolResult, Table, line_plot
from scadm.figures import save_grid

DIFF_GAIN = 4  # |result - reconstruction| x 4 in the difference maps, so small leaks are visible


def _diff_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(-1) * DIFF_GAIN
    return np.repeat(np.clip(d, 0, 255).astype(np.uint8)[..., None], 3, -1)


def run_disentanglement(ev: Evaluation, figures: Path) -> ProtocolResult:
    o = ev.options
    base = o.render
    axes = [base.replace(steps=s, guidance=g) for s in o.axis_steps for g in o.axis_guidance]
    rows, table_rows, columns = [], [], locality_columns(ev)
    for model in ev.models:
        for rs in axes:
            for set_name, names in o.part_sets.items():
                parts = ev.parts(names)
                for mode, kept in modes(ev, parts):
                    result = partial_swaps(ev, model, parts, rs, preserve=kept)
                    loc = {
                        **locality(ev, result, before_swap(ev, model, kept, rs), parts),
                        **against_target(ev, result, parts),
                    }
                    rows.append(
                        {
                            "model": model.name,
                            "parts": set_name,
                            "mode": mode,
                            "steps": rs.steps,
                            "guidance": rs.guidance,
                            **loc,
                        }
                    )
                    table_rows.append(
                        [model.name, set_name, mode, rs.steps, rs.guidance, loc["count"]] + [loc[f] for f in columns]
                    )
    figs = _plots(ev, rows, figures)
    figs.append(_grid(ev, figures))
    table = Table(
        "Locality of partial swaps (means over faces showing the parts)",
        [
            "model",
            "parts",
            "mode",
            "steps",
            "g",
            "faces",
            *columns.values(),
        ],
        table_rows,
        "inside / leakage: mean |swap - reconstruction| inside / outside the parts (same seed and "
        "sampler); for mode 'preserve' (region-preserving edits, beyond the paper) against the target "
        "itself. outside vs target: mean |swap - target| beyond the margin around the parts; inside vs "
        "truth: mean |swap - true swap| over the parts (procedural faces). transfer: "
        "1 - d(swap)/d(reconstruction) of the parts' mean colours to the reference's; GT transfer: "
        "the same to the true swap (procedural faces only); GT leakage: how much worse the other parts "
        "match the truth than in the reconstruction. "
        "'all' swaps every class, so nothing lies outside it.",
    )
    tables = [table]
    if len(ev.models) > 1:
        tables.insert(0, _comparison(ev, rows))
    return ProtocolResult(
        "disentanglement",
        "Disentanglement of partial swaps",
        "For a swap of parts K: change inside K, leakage outside K, colour transfer toward "
        "the reference and, on procedural faces, against the ground-truth swap.",
        {"rows": rows},
        tables,
        figs,
    )


def _comparison(ev: Evaluation, rows: list[dict]) -> Table:
    """Models side by side at the main render settings (the ablation table)."""
    rs, columns = ev.options.render, locality_columns(ev)
    at = [r for r in rows if r["steps"] == rs.steps and r["guidance"] == rs.guidance] or rows
    steps, g = at[0]["steps"], at[0]["guidance"]
    body = [
        [r["parts"], r["model"], r["mode"]] + [r[f] for f in columns]
        for r in at
        if r["steps"] == steps and r["guidance"] == g
    ]
    body.sort(key=lambda row: row[0])
    return Table(
        f"Models compared at {steps} steps, g={g:g}",
        [
            "parts",
            "model",
            "mode",
            *columns.values(),
        ],
        body,
    )


def _plots(ev: Evaluation, rows: list[dict], figures: Path) -> list[tuple[str, str]]:
    o, out = ev.options, []
    steps = max(o.axis_steps)
    for field, label in (("leakage", "leakage outside K (0-1)"), ("transfer", "transfer toward reference")):
        series = {}
        for model in ev.models:
            for set_name in o.part_sets:
                for mode, _ in modes(ev, ev.parts(o.part_sets[set_name])):
                    ys = [
                        next(
                            (
                                r[field]
                                for r in rows
                                if r["model"] == model.name
                                and r["parts"] == set_name
                                and r["mode"] == mode
                                and r["steps"] == steps
                                and r["guidance"] == g
                            ),
                            None,
                        )
                        for g in o.axis_guidance
                    ]
                    name = (
                        (f"{model.name}: " if len(ev.models) > 1 else "")
                        + set_name
                        + (f" ({mode})" if mode != "plain" else "")
                    )
                    if any(y is not None for y in ys):
                        series[name] = ys
        name = f"disentanglement-{field}-vs-guidance.png"
        line_plot(figures / name, list(o.axis_guidance), series, "guidance scale g", label, f"{label} ({steps} steps)")
        out.append((name, f"{label} against the guidance scale, {steps} steps"))
    return out


def _grid(ev: Evaluation, figures: Path) -> tuple[str, str]:
    """Per part set: target, reference, reconstruction, swap, difference map (x4), the preserved swap
    and its difference to the target (when preserving), true swap."""
    model, n = ev.models[0], len(ev.faces)
    sets = {name: ev.parts(names) for name, names in ev.options.part_sets.items()}
    shows_all = [
        all(
            np.isin(f.labels, parts).any() and np.isin(ev.faces[reference_index(i, n)].labels, parts).any()
            for parts in sets.values()
        )
        for i, f in enumerate(ev.faces)
    ]
    i = shows_all.index(True) if any(shows_all) else 0  # a face (and reference) showing every part set
    recon = reconstructions(ev, model)
    rows, labels = [], []
    for set_name, parts in sets.items():
        result = partial_swaps(ev, model, parts)
        face, ref = ev.faces[i], ev.faces[reference_index(i, n)]
        truth = None
        if face.truth is not None and ref.truth is not None:
            truth = swap_parts(face.truth, ref.truth, [ev.label_set.names[k] for k in parts]).image
        kept = []
        if ev.options.preserve:
            preserved = partial_swaps(ev, model, parts, preserve=True)[i] if len(modes(ev, parts)) > 1 else None
            kept = [preserved, None if preserved is None else _diff_map(preserved, face.image)]
        rows.append([face.image, ref.image, recon[i], result[i], _diff_map(result[i], recon[i]), *kept, truth])
        labels.append(set_name)
    name = "disentanglement-grid.png"
    kept_labels = ["preserved", f"|diff target| x{DIFF_GAIN}"] if ev.options.preserve else []
    save_grid(
        rows,
        figures / name,
        row_labels=labels,
        col_labels=["target", "reference", "recon", "swap", f"|diff| x{DIFF_GAIN}", *kept_labels, "truth"],
        title=f"{model.name}, {ev.options.render.label()}",
    )
    return name, f"{model.name}: partial swaps of {ev.faces[i].name} with the difference to its reconstruction"
