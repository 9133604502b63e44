"""Noise-based generation (paper §4.4, Fig. 8): every part's style random (the style of an all-zero
reference). FID and mask fidelity against the real faces at each step count (the paper's 50,
100, 200, 1000), time per image at each step count, and LPIPS diversity: the mean LPIPS between
samples of one mask drawn with different seeds (paper: SCA-DM 0.33, SDM 0.42)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from scadm.evaluate.context import Evaluation, Model, RenderItem
from scadm.evaluate.published import lpips_summary
from scadm.evaluate.report import ProtocolResult, Table, line_plot
from scadm.evaluate.timing import seconds_per_image
from scadm.figures import save_grid
from scadm.metrics.lpips import pairwise_diversity

DIVERSITY_SEED_STRIDE = 100_003  # sample k of face i uses seed + i + k * stride


def noise_samples(ev: Evaluation, model: Model, steps: int):
    code = ev.blank_styles(model)
    rs = replace(ev.options.render, steps=steps)
    return ev.render(model, "noise", ev.face_items(), lambda it: code.index(it.face), rs)


def diversity_groups(ev: Evaluation, model: Model):
    o = ev.options
    faces = range(min(o.diversity_masks, len(ev.faces)))
    items = [
        RenderItem(f"{ev.faces[i].name}-k{k}", i, o.render.seed + i + k * DIVERSITY_SEED_STRIDE)
        for i in faces
        for k in range(o.diversity_samples)
    ]
    code = ev.blank_styles(model)
    images = ev.render(model, "noise-diversity", items, lambda it: code.index(it.face))
    return [images[j * o.diversity_samples : (j + 1) * o.diversity_samples] for j in range(len(faces))]


def run_noise(ev: Evaluation, figures: Path) -> ProtocolResult:
    o = ev.options
    gpu = ev.models[0].pipe.device.type == "cuda"
    rows: list[list] = []
    metrics: dict[str, dict[str, Any]] = {}
    for model in ev.models:
        per_steps: dict[int, dict[str, Any]] = {}
        seconds_per_image(ev, model, o.render.sampler, 2, o.render.guidance, 1, batch=1)  # warm-up
        for steps in o.noise_steps:
            images = noise_samples(ev, model, steps)
            key = ev.render_key(model, "noise", replace(o.render, steps=steps))
            scores = ev.segmentation(images, key)
            seconds = seconds_per_image(ev, model, o.render.sampler, steps, o.render.guidance, 1, batch=1)
            per_steps[steps] = {
                "fid": ev.fid(images, key),
                "seconds_per_image": seconds,
                "miou": None if scores is None else 100 * scores.miou,
                "accuracy": None if scores is None else 100 * scores.pixel_accuracy,
            }
        groups = diversity_groups(ev, model)
        diversity = pairwise_diversity(ev.lpips(), groups)
        metrics[model.name] = {"steps": per_steps, "lpips_diversity": diversity}
        base = per_steps[min(o.noise_steps)]["seconds_per_image"]
        for steps, r in per_steps.items():
            rows.append(
                [
                    model.name,
                    steps,
                    r["fid"],
                    r["miou"],
                    r["accuracy"],
                    r["seconds_per_image"] if gpu else r["seconds_per_image"] / base,
                ]
            )
        save_grid(
            [[ev.faces[j].labels, *g] for j, g in enumerate(groups)],
            figures / f"noise-samples-{model.name}.png",
            label_set=ev.label_set,
            col_labels=["mask"] + [f"seed {k}" for k in range(o.diversity_samples)],
            title=f"{model.name}: random styles, {o.render.label()}",
        )
    step_counts = list(o.noise_steps)
    fastest = min(step_counts)
    figs = []
    for field, label in (
        ("fid", "FID"),
        ("seconds_per_image", "s / image" if gpu else f"time ÷ time at {fastest} steps"),
    ):
        name = f"noise-{field}-vs-steps.png"
        series = {
            m: [
                r["steps"][s][field] if gpu or field == "fid" else r["steps"][s][field] / r["steps"][fastest][field]
                for s in step_counts
            ]
            for m, r in metrics.items()
        }
        if field == "fid" and not o.fid:
            continue
        line_plot(
            figures / name, step_counts, series, "diffusion steps", label, f"{label} vs steps (Fig. 8)", logx=True
        )
        figs.append((name, f"{label} against the number of steps"))
    figs += [(f"noise-samples-{m.name}.png", f"{m.name}: {o.diversity_samples} samples per mask") for m in ev.models]
    time_col = "s / image" if gpu else f"time ÷ {fastest} steps"
    tables = [
        Table(
            "Noise-based generation vs steps",
            ["model", "steps", "FID ↓", "mIoU % ↑", "accuracy % ↑", time_col],
            rows,
            f"{o.render.sampler}, g={o.render.guidance:g}; FID on {len(ev.faces)} samples vs "
            f"{len(ev.faces)} real faces (small N: biased upwards). Time: one image alone (batch 1), "
            "whole pipeline." + ("" if gpu else " CPU: ratios only."),
        ),
        Table(
            f"LPIPS diversity ({o.lpips_net}), paper: {lpips_summary()}",
            ["model", "masks", "samples per mask", "LPIPS ↑"],
            [
                [m, min(o.diversity_masks, len(ev.faces)), o.diversity_samples, r["lpips_diversity"]]
                for m, r in metrics.items()
            ],
        ),
    ]
    return ProtocolResult(
        "noise",
        "Noise-based generation",
        "Every part random: quality, time and diversity against the number of diffusion steps.",
        metrics,
        tables,
        figs,
    )
