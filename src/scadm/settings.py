"""RenderSettings: how a face is rendered (steps, guidance, sampler, eta, seed, precision).

The one owner of these defaults and of their validation: the pipeline call, `scadm sample / edit /
evaluate` (flags and settings files), the web editor and the demo all build a `RenderSettings`, so
a value refused in one place is refused everywhere, with the same words. Errors name the field;
callers add where it came from (a flag, a file's key).

Imports no torch (only `torch_dtype` and `resolve_device` do, when called), so that the command
line can declare its flags from these defaults without slowing `scadm --help`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from scadm.errors import InputError

SAMPLERS = ("ddim", "ddpm", "dpm++", "unipc")  # scadm.sampling runs them
GUIDANCE_SCALE = 1.2  # the paper's "s = 1.2" in the code's convention (see `scadm.sampling.guide`)
#: the most steps a sampler can take: one per training timestep of the authors' schedule (T = 1000;
#: the sampler checks against the model's own T)
MAX_STEPS = 1000
#: network precisions by name -> torch attribute (the sampler's state is float32, or float64 with
#: fp64 networks)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp64": "float64"}
#: what torch.Generator.manual_seed takes without wrapping around (it maps -1 to 2**64 - 1)
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides the model and the inputs that decides a rendered face.

    steps: the sampler's S (the authors' grid, stride T // S); guidance: classifier-free guidance
    g in the authors' code convention (1 = off; the paper's "s = 1.2" is g = 1.2, see
    `scadm.sampling.guide`); eta: DDIM's noise (0 deterministic .. 1 DDPM-like; the other samplers
    ignore it); seed: of the first sample, sample i uses seed + i; dtype: the networks' precision.
    """

    steps: int = 50
    guidance: float = GUIDANCE_SCALE
    sampler: str = "ddim"
    eta: float = 0.0
    seed: int = 0
    dtype: str = "fp32"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_field(f.name, getattr(self, f.name))

    def replace(self, **changes) -> RenderSettings:
        """A copy with `changes` (None values are ignored), validated."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, DTYPES[self.dtype])

    def label(self) -> str:
        """A short caption for figures and reports, e.g. "ddim 50 steps, g=1.2"."""
        return f"{self.sampler} {self.steps} steps, g={self.guidance:g}" + (f", eta={self.eta:g}" if self.eta else "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping, base: RenderSettings | None = None, source: str = "settings") -> RenderSettings:
        """`base` (default: the defaults) with the render keys of `data`; other keys are ignored
        (callers that own the rest of the mapping refuse unknown ones). Errors say `source: key: ...`."""
        values = {k: data[k] for k in FIELDS if k in data}
        for key, value in values.items():
            check_field(key, value, f"{source}: {key}")
        return dataclasses.replace(base or cls(), **values)


def check_field(name: str, value, where: str | None = None) -> None:
    """Raise InputError("<where>: must be ..., got ...") unless `value` is valid for field `name`;
    `where` (default: the field's name) says where the value came from: "--steps", "file.json: steps"."""
    problem = _problem(name, value)
    if problem:
        raise InputError(f"{where or name}: {problem}, got {value!r}")


def _problem(name: str, value) -> str | None:
    if name == "steps":
        ok = _is_int(value) and 1 <= value <= MAX_STEPS
        return None if ok else f"must be an integer in 1..{MAX_STEPS}"
    if name == "guidance":
        ok = _is_real(value) and math.isfinite(value) and value >= 0
        return None if ok else "must be a finite number >= 0 (1 = no guidance)"
    if name == "eta":
        ok = _is_real(value) and 0 <= value <= 1  # NaN fails the comparison
        return None if ok else "must be a number in [0, 1]"
    if name == "seed":
        ok = _is_int(value) and 0 <= value <= MAX_SEED
        return None if ok else "must be an integer in 0..2**64-1"
    if name == "sampler":
        return None if value in SAMPLERS else f"must be one of {', '.join(SAMPLERS)}"
    if name == "dtype":
        return None if value in DTYPES else f"must be one of {', '.join(DTYPES)}"
    return f"not a render setting (those are {', '.join(FIELDS)})"


def check_seed(value, where: str = "seed") -> int:
    check_field("seed", value, where)
    return int(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


FIELDS = tuple(f.name for f in dataclasses.fields(RenderSettings))
#: the editor and the demo: a face in seconds on a CPU (the paper's 50 steps are the default)
INTERACTIVE = RenderSettings(steps=25)


def dtype_name(dtype) -> str | None:
    """The name in DTYPES of a torch dtype (None when it has none)."""
    return next((name for name, attr in DTYPES.items() if str(dtype) == f"torch.{attr}"), None)


def resolve_device(spec: str, what: str = "device"):
    """ "auto" (CUDA when there is one, else the CPU), "cpu", "cuda", "cuda:N" or "mps" -> a
    torch.device checked against this machine: a wrong device is one line before any model loads."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"{what} {spec}: not a device; use cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{what} {spec}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"{what} {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{what} {spec}: MPS is not available on this machine")
    if device.type == "cpu" and device.index not in (None, 0):
        raise InputError(f"{what} {spec}: there is one CPU device; use cpu")
    return device
