"""Timing protocol (paper Fig. 8, right): seconds per image and per step for each sampler and step
count, with and without classifier-free guidance (guidance doubles the UNet batch).

On a GPU, CUDA events around each call after a warm-up; on a CPU, perf_counter; the best of
several calls is kept. Absolute times
are reported only from a GPU: a CPU's (often shared) figures are given as ratios to a baseline,
DDIM without guidance at the largest step count measured, per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scadm.evaluate.context import Evaluation, Model
from scadm.evaluate.report import ProtocolResult, Table, line_plot


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of `fn`, measured with CUDA events on a GPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def seconds_per_image(
    ev: Evaluation, model: Model, sampler: str, steps: int, guidance: float, repeats: int, batch: int | None = None
) -> float:
    """Best of `repeats` calls (timeit's rule: the fastest run is the one least disturbed by other
    processes) of one batch of noise-based codes of the first faces, divided by the batch."""
    b = min(batch or ev.options.batch, len(ev.faces))
    labels = torch.from_numpy(ev.labels[:b])
    code = ev.blank_styles(model).to(model.pipe.device)
    code = type(code).cat([code.index(i) for i in range(b)])

    def call():
        model.pipe(
            labels,
            code,
            num_inference_steps=steps,
            guidance_scale=guidance,
            sampler=sampler,
            seed=ev.options.render.seed,
        )

    return min(timed(call, model.pipe.device) for _ in range(repeats)) / b


def run_timing(ev: Evaluation, figures: Path) -> ProtocolResult:
    o = ev.options
    gpu = ev.models[0].pipe.device.type == "cuda"
    guidances = sorted({1.0, o.render.guidance})
    rows: list[dict[str, Any]] = []
    for model in ev.models:
        for sampler in o.timing_samplers:
            seconds_per_image(ev, model, sampler, min(o.timing_steps), o.render.guidance, 1)  # warm-up
            for steps in o.timing_steps:
                for g in guidances:
                    s = seconds_per_image(ev, model, sampler, steps, g, o.timing_repeats)
                    rows.append(
                        {
                            "model": model.name,
                            "sampler": sampler,
                            "steps": steps,
                            "guidance": g,
                            "seconds_per_image": s,
                            "seconds_per_step": s / steps,
                        }
                    )
    for model in ev.models:
        base = (
            next(
                r
                for r in rows
                if r["model"] == model.name
                and r["sampler"] == "ddim"
                and r["guidance"] == 1.0
                and r["steps"] == max(o.timing_steps)
            )
            if "ddim" in o.timing_samplers
            else rows[0]
        )
        for r in rows:
            if r["model"] == model.name:
                r["step_ratio"] = r["seconds_per_step"] / base["seconds_per_step"]
    unit = "per image s" if gpu else "per-step ratio"
    body = [
        [r["model"], r["sampler"], r["steps"], r["guidance"]]
        + ([r["seconds_per_image"], 1000 * r["seconds_per_step"]] if gpu else [r["step_ratio"]])
        for r in rows
    ]
    columns = ["model", "sampler", "steps", "g"] + (["s / image", "ms / step"] if gpu else ["time per step ÷ baseline"])
    note = (
        f"Batch of {min(o.batch, len(ev.faces))} masks, best of {o.timing_repeats} calls after a warm-up, "
        "whole pipeline (noise, sampler, decoder)."
        + (
            ""
            if gpu
            else " CPU: times shown only as ratios to DDIM without guidance at the largest step count "
            "(the raw seconds, in the JSON, depend on the machine's load)."
        )
    )
    name = "timing-vs-steps.png"
    series = {
        f"{r0['model']}: {r0['sampler']} g={r0['guidance']:g}"
        if len(ev.models) > 1
        else f"{r0['sampler']} g={r0['guidance']:g}": [
            r["seconds_per_image"] if gpu else r["step_ratio"] * r["steps"]
            for r in rows
            if (r["model"], r["sampler"], r["guidance"]) == (r0["model"], r0["sampler"], r0["guidance"])
        ]
        for r0 in rows
        if r0["steps"] == o.timing_steps[0]
    }
    line_plot(
        figures / name,
        list(o.timing_steps),
        series,
        "steps",
        "seconds per image" if gpu else "time per image (÷ baseline per-step time)",
        "inference time vs steps",
        logx=True,
    )
    return ProtocolResult(
        "timing",
        f"Timing ({unit})",
        f"Time per image and per step of every sampler, with and without guidance ({unit}).",
        {"rows": rows, "gpu": gpu},
        [Table("Sampling time", columns, body, note)],
        [(name, "time per image vs steps")],
    )
