"""The paper's edit modes as style codes to render (§4.1-4.4, Figs. 1, 4-6, 9), and the web
editor's per-part edits with their settings file.

Each mode maps a target code (and a reference code) to a batch of codes plus a caption per
code; the pipeline renders them all on one mask, the target's or a user-edited one.

`EditSettings` is what the editor (`scadm serve`) saves and `scadm edit --settings` replays: per
part, the style source is the target (keep), the reference (part transfer, paper §4.3) or random
(the style of an all-zero image, §4.4), and a weight in [0, 1] mixes the target's style toward that
source (interpolation, §4.2); plus the `RenderSettings`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .settings import FIELDS, RenderSettings

if TYPE_CHECKING:  # the style codes need torch; the settings file does not
    from .labels import LabelSet
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
    if mode == "random":
        return target.randomize(range(target.tokens.shape[1])), ["random"]
    if mode == "mix":
        source = reference if reference is not None else target
        return source.randomize(parts or ()), ["random parts"]
    assert reference is not None  # swap, partial and interpolate need one: refused above
    if mode == "swap":
        return reference, ["total swap"]
    if mode == "partial":
        return target.swap(reference, parts or ()), ["partial swap"]
    codes = [target.interpolate(reference, a, parts) for a in alphas]
    return type(target).cat(codes), [f"alpha={a:g}" for a in alphas]


def absent_parts(code: StyleCode, parts: Sequence[int]) -> list[int]:
    """Parts with no pixel in the image the code was taken from: their code is the encoder's
    default for absent classes, so swapping them in carries no style of that image."""
    return [p for p in parts if not bool(code.present[0, p])]


# ------------------------------------------------------------------ the editor's per-part edits

SOURCES = ("target", "reference", "random")
SETTINGS_FORMAT = "scadm-edit-settings/1"
#: keys of a settings file besides the render settings ("command": the replay line, informative)
SETTINGS_KEYS = ("format", "parts", "global_weight", "preserve", "margin", "command")


@dataclass(frozen=True)
class PartChoice:
    source: str = "target"
    weight: float = 1.0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise InputError(f"source: must be one of {', '.join(SOURCES)}, got {self.source!r}")
        _check_unit("weight", self.weight)


@dataclass(frozen=True)
class EditSettings:
    """Everything besides the input files that decides an edited face."""

    parts: Mapping[str, PartChoice] = field(default_factory=dict)  # class name -> choice; others: target
    global_weight: float = 1.0
    render: RenderSettings = field(default_factory=RenderSettings)
    preserve: bool = True  # keep the target's own pixels outside the edited parts (scadm.regions)
    margin: int | None = None  # of the preserved region, in pixels (None: the default)

    def __post_init__(self):
        _check_unit("global_weight", self.global_weight)
        if not isinstance(self.preserve, bool):
            raise InputError(f"preserve: must be true or false, got {self.preserve!r}")
        if self.margin is not None:
            from .regions import check_margin  # needs torch; the settings file alone does not

            check_margin(self.margin)

    def check(self, label_set: LabelSet, source: str = "settings") -> EditSettings:
        """Refuse part names that `label_set` does not have (errors start with `source`)."""
        for name in self.parts:
            label_set.index(name, f"{source}: parts.{name}")
        return self

    def edited_parts(self) -> dict[str, tuple[str, float]]:
        """Parts whose style moves away from the target: name -> (source, effective weight)."""
        out = {}
        for name, choice in self.parts.items():
            weight = choice.weight * self.global_weight
            if choice.source != "target" and weight > 0:
                out[name] = (choice.source, weight)
        return out

    def style_code(self, target: StyleCode, reference: StyleCode | None, label_set: LabelSet) -> StyleCode:
        """Part by part: (1 - w) * target + w * source on that part's row, where w = the part's
        weight times the global weight and source is the reference's row or the random row."""
        self.check(label_set)
        code = target
        for name, (source, weight) in self.edited_parts().items():
            k = label_set.index(name)
            if source == "reference":
                if reference is None:
                    raise InputError(f"parts.{name}: source 'reference' needs a reference image and mask")
                other = reference
            else:
                other = target.randomize([k])
            code = code.interpolate(other, weight, [k])
        return code

    def to_json(self) -> dict:
        return {
            "format": SETTINGS_FORMAT,
            "parts": {n: {"source": c.source, "weight": c.weight} for n, c in self.parts.items()},
            "global_weight": self.global_weight,
            **self.render.to_dict(),
            "preserve": self.preserve,
            "margin": self.margin,
        }

    @classmethod
    def from_json(cls, data, source: str = "settings") -> EditSettings:
        """From a settings file's JSON; errors say `source: key: what is wrong`; render keys the
        file leaves out take `RenderSettings`' defaults."""
        if not isinstance(data, dict) or data.get("format") != SETTINGS_FORMAT:
            raise InputError(f'{source}: not a scadm settings file (expected "format": "{SETTINGS_FORMAT}")')
        unknown = [k for k in data if k not in SETTINGS_KEYS + FIELDS]
        if unknown:
            raise InputError(f"{source}: unknown key {unknown[0]!r}; the keys are {', '.join(SETTINGS_KEYS + FIELDS)}")
        parts = data.get("parts", {})
        if not isinstance(parts, dict):
            raise InputError(f'{source}: parts: must map class names to {{"source": ..., "weight": ...}}')
        choices = {}
        for name, choice in parts.items():
            if not isinstance(choice, dict) or set(choice) - {"source", "weight"}:
                raise InputError(f'{source}: parts.{name}: must be {{"source": ..., "weight": ...}}, got {choice!r}')
            try:
                choices[str(name)] = PartChoice(**choice)
            except InputError as err:
                raise InputError(f"{source}: parts.{name}.{err}") from None
        render = RenderSettings.from_dict(data, source=source)
        try:  # files written before region-preserving edits existed were rendered without them
            return cls(choices, data.get("global_weight", 1.0), render, data.get("preserve", False), data.get("margin"))
        except InputError as err:
            raise InputError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> EditSettings:
        return cls.from_json(read_settings_file(path), source=str(path))


def read_settings_file(path: str | Path) -> dict:
    """The JSON of a settings file; errors name the file."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


def _check_unit(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"{name}: must be a number in [0, 1], got {value!r}")
