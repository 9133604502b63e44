"""`scadm evaluate`: the paper's protocols and scadm's own, on any dataset scadm loads.

>>> from scadm.evaluate import PROTOCOLS, evaluate                       # doctest: +SKIP
>>> evaluate(["reconstruction"], [load_model(DEMO_MODEL)], Options(DataSpec("procedural")),
...          out=Path("reports/eval"), command="...")                   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from scadm.evaluate.cache import EvalCache
from scadm.evaluate.context import Evaluation, FaceParser, Model, Options
from scadm.evaluate.disentanglement import run_disentanglement
from scadm.evaluate.noise import run_noise
from scadm.evaluate.paper import run_partial_swap, run_reconstruction, run_swap
from scadm.evaluate.report import environment, write_report
from scadm.evaluate.timing import run_timing

PROTOCOLS = {
    "reconstruction": run_reconstruction,
    "swap": run_swap,
    "partial-swap": run_partial_swap,
    "noise": run_noise,
    "timing": run_timing,
    "disentanglement": run_disentanglement,
}


def evaluate(
    protocols: list[str],
    models: list[Model],
    options: Options,
    out: Path,
    command: str,
    cache: Path,
    parser: FaceParser | None = None,
    features=None,
    lpips=None,
) -> list[Path]:
    """Run `protocols` and write OUT/<protocol>.{json,md} and OUT/figures/; returns the .md paths."""
    ev = Evaluation(models, options, EvalCache(cache), parser=parser, features=features, lpips=lpips)
    env = environment(options.device, command)
    written = []
    for name in protocols:
        result = PROTOCOLS[name](ev, out / "figures")
        written.append(write_report(result, out, ev.describe(), env)[1])
    return written
