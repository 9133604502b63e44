"""Speed of scadm against the authors' execution, measured together: `python -m benchmarks.run`.

For each case (UNet step, style encoder, VQ decode, whole edit per sampler and step count,
training step) and batch size, every variant runs once per round, rounds interleaved, and the
median is kept: a machine shared with other work slows all variants alike, so the ratios to
"reference" (the authors' execution, see benchmarks/setups.py) stay honest. Also measured in the
same run: the device's bf16 matmul rate and the UNet's FLOPs per guided step (FlopCounterMode),
hence achieved TFLOP/s. Prints a table; writes JSON (device, torch, variants, the exact command).

    python -m benchmarks.run --config face --batches 1,2 --repeats 3 --out bench.json   # CPU
    bash benchmarks/gpu.sh                                                            # GPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
import traceback

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import setups
from scadm.errors import InputError
from scadm.evaluate.timing import timed


def matmul_tflops(device: torch.device, n: int, repeats: int, clock=timed) -> float:
    """bf16 n x n x n products on random data (never zeros), median over `repeats`; rotates among
    three operand pairs so that a cache does not hold them all."""
    pairs = [
        (torch.randn(n, n, device=device, dtype=torch.bfloat16), torch.randn(n, n, device=device, dtype=torch.bfloat16))
        for _ in range(3)
    ]
    for a, b in pairs:
        a @ b  # warm-up
    times = [clock(lambda a=pairs[i % 3][0], b=pairs[i % 3][1]: a @ b, device) for i in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e12


def count_flops(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with open("/proc/cpuinfo") as cpuinfo:
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor()
        )
    return f"{model}, {torch.get_num_threads()} torch threads"


def cpu_timed(fn, device) -> float:
    """CPU seconds of one call in this process: on a core shared with other work, what the call
    would take with the core to itself (torch at one thread; wall time counts the others' turns)."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(name, batch, makers: dict, device, repeats: int, warmup: int, extra=None, clock=timed) -> list[dict]:
    """Interleaved rounds over the variants of one case; a variant that fails is reported, not fatal."""
    fns, rows = {}, []
    # warm-up and timing in one grad mode: a compiled function guards on it and would recompile
    grad_mode = torch.enable_grad if name == "train step" else torch.no_grad
    for variant, make in makers.items():
        try:
            with grad_mode():
                fn = make()
                for _ in range(warmup):
                    fn()
            fns[variant] = fn
        except Exception as err:  # one broken variant must not lose the others' numbers
            rows.append(dict(case=name, batch=batch, variant=variant, error=f"{type(err).__name__}: {err}"))
            traceback.print_exc()
    times = {v: [] for v in fns}
    with grad_mode():
        for _ in range(repeats):
            for variant, fn in fns.items():
                times[variant].append(clock(fn, device))
    outputs = {}
    if name != "train step":  # every variant computes the same function: how far from the reference?
        with torch.no_grad():
            outputs = {v: fn().float() for v, fn in fns.items()}
    ref_out = outputs.get("reference")
    for variant, ts in times.items():
        row = dict(case=name, batch=batch, variant=variant, median_s=statistics.median(ts), times_s=ts, **(extra or {}))
        if ref_out is not None:
            out = outputs[variant]
            row["rel_err_vs_reference"] = float((out - ref_out).norm() / ref_out.norm())
            row["finite"] = bool(torch.isfinite(out).all())
        rows.append(row)
    ref = next((r["median_s"] for r in rows if r["variant"] == "reference" and "median_s" in r), None)
    for r in rows:
        if ref and "median_s" in r:
            r["speedup_vs_reference"] = ref / r["median_s"]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="face", choices=sorted(setups.CONFIGS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variants", default="reference,fp32,bf16", help=f"comma list of {', '.join(setups.VARIANTS)}")
    p.add_argument("--batches", default="1,2", help="batch sizes (masks per call; a guided UNet step runs 2x)")
    p.add_argument("--cases", default="unet,style,vq,edit,train")
    p.add_argument("--samplers", default="ddim,dpm++")
    p.add_argument("--edit-steps", default="2", help="sampler step counts of the whole-edit case")
    p.add_argument("--edit-batches", default="1")
    p.add_argument("--train-batches", default="1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--matmul-size", type=int, default=None, help="default 8192 on CUDA, 1024 on CPU")
    p.add_argument("--out", default="benchmark.json")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: process CPU time (one thread, CPU)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    names, cases = args.variants.split(","), args.cases.split(",")
    unknown = set(names) - set(setups.VARIANTS)
    if unknown:
        p.error(f"--variants: unknown {', '.join(sorted(unknown))}")
    if args.clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        p.error("--clock cpu: for a CPU device with one torch thread (OMP_NUM_THREADS=1)")
    clock = cpu_timed if args.clock == "cpu" else timed
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, in both executions
        torch.backends.cudnn.allow_tf32 = False

    record = dict(
        command="python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device_name(device),
        torch=torch.__version__,
        python=platform.python_version(),
        config=args.config,
        clock=args.clock,
        variants=names,
        rows=[],
    )
    n = args.matmul_size or (8192 if device.type == "cuda" else 1024)
    record["matmul_bf16_tflops"] = matmul_tflops(device, n, 20 if device.type == "cuda" else 5, clock)
    record["matmul_size"] = n
    print(
        f"# {record['device']}, torch {record['torch']}; bf16 matmul {n}^3: {record['matmul_bf16_tflops']:.3f} TFLOP/s",
        flush=True,
    )

    pipe = setups.build_pipeline(args.config)
    try:
        variants = setups.make_variants(names, pipe, device)
    except InputError as err:  # e.g. bf16+graphs off CUDA
        p.error(str(err))
    by_name = {v.name: v for v in variants}
    rows = record["rows"]

    if "unet" in cases:
        for v_name in ("reference", "fp32"):  # FLOPs per guided step at batch 1 (2 UNet rows)
            if v_name in by_name:
                record[f"unet_step_flops_{v_name}"] = count_flops(setups.unet_step_case(by_name[v_name], 1))
        executed = record.get("unet_step_flops_fp32")
        nominal = record.get("unet_step_flops_reference", executed)
        for b in ints(args.batches):
            found = measure(
                "unet step",
                b,
                {v.name: (lambda v=v, b=b: setups.unet_step_case(v, b)) for v in variants},
                device,
                args.repeats,
                args.warmup,
                clock=clock,
            )
            for r in found:
                if "median_s" in r:
                    flops = (nominal if r["variant"] == "reference" else executed) or nominal
                    r["tflops_achieved"] = flops * b / r["median_s"] / 1e12 if flops else None
                    r["tflops_model"] = nominal * b / r["median_s"] / 1e12 if nominal else None
            rows += found
            print_rows(found, record)
            save(record, args.out)
    for case, key, fn in (
        ("style encoder", "style", setups.style_encoder_case),
        ("VQ decode", "vq", setups.vq_decode_case),
    ):
        if key in cases:
            for b in ints(args.batches):
                found = measure(
                    case,
                    b,
                    {v.name: (lambda v=v, b=b, fn=fn: fn(v, b)) for v in variants},
                    device,
                    args.repeats,
                    args.warmup,
                    clock=clock,
                )
                rows += found
                print_rows(found, record)
                save(record, args.out)
    if "edit" in cases:
        for sampler in args.samplers.split(","):
            for steps in ints(args.edit_steps):
                for b in ints(args.edit_batches):
                    found = measure(
                        f"edit {sampler}-{steps}",
                        b,
                        {v.name: (lambda v=v, b=b, s=sampler, n=steps: setups.edit_case(v, b, s, n)) for v in variants},
                        device,
                        args.repeats,
                        args.warmup,
                        clock=clock,
                    )
                    rows += found
                    print_rows(found, record)
                    save(record, args.out)
    if "train" in cases:
        state = setups.TrainState(pipe, device)
        for b in ints(args.train_batches):
            makers = {
                v.name: (lambda v=v, b=b: setups.train_case(v, state, b)) for v in variants if v.name != "bf16+graphs"
            }
            found = measure("train step", b, makers, device, args.repeats, args.warmup, clock=clock)
            for r in found:
                if "median_s" in r:
                    r["images_per_s"] = b / r["median_s"]
            rows += found
            print_rows(found, record)
            save(record, args.out)

    save(record, args.out)
    print(f"\n# wrote {args.out}")
    print_rows(rows, record, header=True)
    return 0


def save(record: dict, path: str) -> None:
    """After every case, so that a run stopped by a time limit keeps what it measured."""
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


def print_rows(rows, record, header=False):
    if header:
        print(
            f"\n{'case':<16} {'batch':>5} {'variant':<14} {'median':>10} {'x ref':>7} {'TFLOP/s':>8} {'% mm':>6}"
            f" {'rel err':>8}"
        )
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<16} {r['batch']:>5} {r['variant']:<14} ERROR {r['error'][:60]}")
            continue
        tf = r.get("tflops_achieved")
        share = f"{100 * tf / record['matmul_bf16_tflops']:.1f}" if tf else ""
        print(
            f"{r['case']:<16} {r['batch']:>5} {r['variant']:<14} {r['median_s']:>9.4f}s "
            f"{r.get('speedup_vs_reference', float('nan')):>6.2f}x {tf or float('nan'):>8.3f} {share:>6}"
            f" {r.get('rel_err_vs_reference', float('nan')):>8.1e}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
