"""CUDA graphs against the eager path, on a GPU: `python -m benchmarks.cuda_graphs`.

`SCADMPipeline.enable_cuda_graphs` (scadm.models.cuda_graphs) must render what the eager pipeline
renders. For each sampler: the same edit (styles, mask, seed) eager and graphed; a second edit of
the same shapes (other mask and styles: the captured graph replays with the new condition copied
in, no capture); an edit of another batch size (captures again). Each compared with its eager
render: the same kernels replayed give the same numbers (expected: identical; allowed: the
dtype's rounding, in case a library picks other kernels under capture). Also timed: capture, and
an edit eager vs graphed (median of `--repeats`, after a warm-up). Exit status 1 if a render
differs beyond the tolerance. A CPU is refused by the library, in one line.

    python -m benchmarks.cuda_graphs --config face --out graphs.json      # in benchmarks/gpu.sh
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from benchmarks import setups
from scadm.errors import InputError
from scadm.evaluate.timing import timed

# relative L2 error allowed between graphed and eager renders: float32 ~ a few ulp per op over a
# sampler run; bf16 as its fast-path tests (tests/test_fast_paths.py BF16_REL). Expected: 0.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 3e-2}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cuda_graphs", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="face", choices=sorted(setups.CONFIGS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--samplers", default="ddim,dpm++,unipc")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="cuda_graphs.json")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    pipe = setups.build_pipeline(args.config).to(device, dtype)
    try:
        pipe.enable_cuda_graphs()
    except InputError as err:
        print(err)
        return 2
    record = dict(command="python -m benchmarks.cuda_graphs " + " ".join(argv or sys.argv[1:]), rows=[])
    record["device"] = torch.cuda.get_device_name(device)
    edits = {
        name: edit(pipe, batch, seed) for name, batch, seed in (("first", 1, 0), ("second", 1, 1), ("batch 2", 2, 2))
    }
    failed = False
    for sampler in args.samplers.split(","):

        def render(name, sampler=sampler):
            labels, style = edits[name]
            return pipe(labels, style, num_inference_steps=args.steps, sampler=sampler, seed=0, output_type="latent")

        row: dict = dict(sampler=sampler, steps=args.steps, dtype=args.dtype)
        pipe.disable_cuda_graphs()
        eager = {name: render(name).float() for name in edits}
        pipe.enable_cuda_graphs()
        row["capture_and_first_edit_s"] = timed(lambda: render("first"), device)
        graph = pipe._graphs.graph
        for name in edits:
            out = render(name).float()
            err = float((out - eager[name]).norm() / eager[name].norm())
            row[f"{name}: rel err"], row[f"{name}: identical"] = err, bool(torch.equal(out, eager[name]))
            failed |= not err <= TOLERANCE[dtype]
            if name == "second":  # same shapes: the first edit's graph, replayed
                row["second: reused the graph"] = pipe._graphs.graph is graph
                failed |= pipe._graphs.graph is not graph
        for mode in ("eager", "graphs"):
            pipe.enable_cuda_graphs() if mode == "graphs" else pipe.disable_cuda_graphs()
            render("first")  # warm-up (the capture, for graphs)
            row[f"{mode}_edit_s"] = statistics.median(
                timed(lambda: render("first"), device) for _ in range(args.repeats)
            )
        row["speedup"] = row["eager_edit_s"] / row["graphs_edit_s"]
        record["rows"].append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    print("FAILED: a graphed render differs from the eager one" if failed else "ok: graphed renders equal eager ones")
    return int(failed)


def edit(pipe, batch: int, seed: int):
    """Labels and the styles of a random image under them: one edit's inputs."""
    labels, image = setups.inputs(pipe, batch, pipe.device, seed)
    return labels, pipe.encode_style(image, labels)


if __name__ == "__main__":
    sys.exit(main())
