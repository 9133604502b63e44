"""RenderSettings: how a face is rendered (steps, guidance, sampler, eta, seed, precision).

The one owner of these defaults and of their validation: the pipeline call, `scadm sample / edit /
evaluate` (flags and settings files), the web editor and the demo all build a `RenderSettings`, so
a value refused in one place is refused everywhere, with the same words. Errors name the field;
callers add where it came from (a flag, a file's key).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from scadm.errors import InputError
from scadm.sampling import GUIDANCE_SCALE, SAMPLERS
from scadm.schedule import NUM_TRAIN_TIMESTEPS

#: network precisions by name (the sampler's state is float32, or float64 with fp64 networks)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}
#: what torch.Generator.manual_seed takes without wrapping around (it maps -1 to 2**64 - 1)
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides the model and the inputs that decides a rendered face.

    steps: the sampler's S (the authors' grid, stride T // S); guidance: classifier-free guidance
    g in the authors' code convention (1 = off; the paper's "s = 1.2" is g = 1.2, see
    `scadm.sampling.guide`); eta: DDIM's noise (0 deterministic .. 1 DDPM-like; ddpm and dpm++
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
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

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
            try:
                check_field(key, value)
            except InputError as err:
                raise InputError(f"{source}: {err}") from None
        return dataclasses.replace(base or cls(), **values)


def check_field(name: str, value) -> None:
    """Raise InputError("name: must be ..., got ...") unless `value` is valid for field `name`."""
    if name == "steps":
        if not _is_int(value) or not 1 <= value <= NUM_TRAIN_TIMESTEPS:
            raise InputError(f"steps: must be an integer in 1..{NUM_TRAIN_TIMESTEPS}, got {value!r}")
    elif name == "guidance":
        if not _is_real(value) or not math.isfinite(value) or value < 0:
            raise InputError(f"guidance: must be a finite number >= 0 (1 = no guidance), got {value!r}")
    elif name == "eta":
        if not _is_real(value) or not 0 <= value <= 1:  # NaN fails the comparison too
            raise InputError(f"eta: must be a number in [0, 1], got {value!r}")
    elif name == "seed":
        check_seed(value)
    elif name == "sampler":
        if value not in SAMPLERS:
            raise InputError(f"sampler: must be one of {', '.join(SAMPLERS)}, got {value!r}")
    elif name == "dtype":
        if value not in DTYPES:
            raise InputError(f"dtype: must be one of {', '.join(DTYPES)}, got {value!r}")
    else:
        raise InputError(f"{name}: not a render setting (those are {', '.join(FIELDS)})")


def check_seed(value, name: str = "seed") -> int:
    if not _is_int(value) or not 0 <= value <= MAX_SEED:
        raise InputError(f"{name}: must be an integer in 0..2**64-1, got {value!r}")
    return int(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


FIELDS = tuple(f.name for f in dataclasses.fields(RenderSettings))
#: the editor and the demo: a face in seconds on a CPU (the paper's 50 steps are the default)
INTERACTIVE = RenderSettings(steps=25)


def resolve_device(spec: str, what: str = "device") -> torch.device:
    """"auto" (CUDA when there is one, else the CPU), "cpu", "cuda", "cuda:N" or "mps", checked
    against this machine, so that a wrong device is one line before any model is loaded."""
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
