"""The paper's edit modes as style codes to render (§4.1-4.4, Figs. 1, 4-6, 9).

Each mode maps a target code (and a reference code) to a batch of codes plus a caption per
code; the pipeline renders them all on one mask, the target's or a user-edited one.
"""

from __future__ import annotations

from typing import Sequence

from .errors import InputError
from .style import StyleCode

EDIT_MODES = {
    "reconstruct": "render the target's mask with the target's own styles",
    "swap": "total style swap: every part styled like the reference",
    "partial": "partial swap: only --parts come from the reference",
    "mix": "keep the reference's styles (or the target's) but make --parts random",
    "random": "noise-based generation: every part random",
    "interpolate": "a strip from target to reference styles (only --parts if given)",
}
NEEDS_REFERENCE = {"swap", "partial", "interpolate"}
NEEDS_PARTS = {"partial", "mix"}


def edit_codes(
    mode: str,
    target: StyleCode,
    reference: StyleCode | None = None,
    parts: Sequence[int] | None = None,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> tuple[StyleCode, list[str]]:
    """Codes to render for `mode` and a caption for each (batch-1 target and reference)."""
    if mode not in EDIT_MODES:
        raise InputError(f"mode must be one of {', '.join(EDIT_MODES)}, got {mode!r}")
    if mode in NEEDS_REFERENCE and reference is None:
        raise InputError(f"mode '{mode}' needs a reference image and mask")
    if mode in NEEDS_PARTS and not parts:
        raise InputError(f"mode '{mode}' needs --parts (e.g. hair or l_eye,r_eye)")
    if mode == "reconstruct":
        return target, ["reconstruction"]
    if mode == "swap":
        return reference, ["total swap"]
    if mode == "partial":
        return target.swap(reference, parts), ["partial swap"]
    if mode == "mix":
        source = reference if reference is not None else target
        return source.randomize(parts), ["random parts"]
    if mode == "random":
        return target.randomize(range(target.tokens.shape[1])), ["random"]
    codes = [target.interpolate(reference, a, parts) for a in alphas]
    return StyleCode.cat(codes), [f"alpha={a:g}" for a in alphas]


def absent_parts(code: StyleCode, parts: Sequence[int]) -> list[int]:
    """Parts with no pixel in the image the code was taken from: their code is the encoder's
    default for absent classes, so swapping them in carries no style of that image."""
    return [p for p in parts if not bool(code.present[0, p])]
