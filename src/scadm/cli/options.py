"""The render flags of `scadm sample`, `edit` and `evaluate`, declared once, and how they combine
with a settings file.

Every flag defaults to None, so that "not given" differs from "given the default value": a flag
the user typed wins over the settings file (and the command says which file values it replaced),
a file value wins over `RenderSettings`' default. Values are checked by `scadm.settings`, the same
check that files and the library use; an error names the flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from ..settings import DTYPES, FIELDS, SAMPLERS, RenderSettings, check_field

DEFAULT = RenderSettings()


def add_render_flags(p: argparse.ArgumentParser) -> None:
    """--steps, --guidance, --sampler, --eta, --seed, --dtype and --device."""
    g = p.add_argument_group("rendering")
    g.add_argument("--steps", type=int, help=f"sampler steps (default {DEFAULT.steps})")
    g.add_argument(
        "--guidance",
        type=float,
        help="classifier-free guidance g: eps_u + g(eps_c - eps_u); 1 = off "
        f"(default {DEFAULT.guidance:g}, the paper's s)",
    )
    g.add_argument("--sampler", help=f"{' | '.join(SAMPLERS)} (default {DEFAULT.sampler})")
    g.add_argument(
        "--eta", type=float, help=f"DDIM eta in [0, 1]: 0 deterministic, 1 DDPM-like noise (default {DEFAULT.eta:g})"
    )
    g.add_argument("--seed", type=int, help=f"seed of the first sample; sample i uses seed+i (default {DEFAULT.seed})")
    g.add_argument("--dtype", help=f"network precision: {' | '.join(DTYPES)} (default {DEFAULT.dtype})")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")


def render_settings(
    args: argparse.Namespace, base: RenderSettings = DEFAULT, file_keys: Iterable[str] = (), source: str | None = None
) -> tuple[RenderSettings, str | None]:
    """`base` (a settings file's, or the defaults) with the flags the user gave (a command may
    declare only some of them); and a one-line note naming the file values that a flag replaced
    (None when none did)."""
    given = {}
    for name in FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            check_field(name, value, f"--{name}")
            given[name] = value
    replaced = [n for n in given if n in set(file_keys) and given[n] != getattr(base, n)]
    note = None
    if replaced:
        flags = ", ".join(f"--{n} {given[n]}" for n in replaced)
        values = ", ".join(f"{n} {getattr(base, n)}" for n in replaced)
        note = f"note: {flags} replace{'s' if len(replaced) == 1 else ''} {source}'s {values}"
    return base.replace(**given), note
