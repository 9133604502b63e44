"""Deterministic DDIM inversion of a face and region-preserving sampling (beyond the paper).

SCA-DM re-generates the whole face even for a partial swap, so every unedited pixel drifts. Here a
target's latent z_0 is walked UP the sampler's own grid (DDIM inversion, Song et al. 2021 Sec. 4.3;
Mokady et al. 2023 use it as the start of null-text inversion) under the target's own style and
mask, giving the latents x_{t_1}, ..., x_{t_n} that deterministic DDIM turns back into z_0. An edit
then samples from the inverted noise and, after every step, puts the target's own latent back
outside the edited region (Avrahami et al. 2023, "Blended latent diffusion", with the inverted
trajectory instead of re-noised copies), so the outside stays on the target's path.

Plain DDIM inversion evaluates eps at the point it starts from, not the one it lands on, and the
round trip drifts (by 15 % of the latent's spread on the demo model at 25 steps, at g = 1 and
g = 1.2 alike; guidance amplifies the mismatch in general). We solve each step's implicit
equation x_k = step^-1(x_{k-1}, eps(x_k, t_k)) by fixed-point iteration (Pan et al. 2023, "AIDI";
Garibi et al. 2024, "ReNoise"): exact in the limit, with the same eps_fn and guidance the sampler
uses, and no per-image optimisation (null-text) or coupled second chain (EDICT). The number of
refinements is measured in reports/inversion/README.md.

The inversion loop is hand-written on the DDIM coefficients: it runs the authors' grid upwards,
which no diffusers scheduler does (`DDIMInverseScheduler` has its own spacing and starts from
alpha_bar = 1, not alpha_bar_0 where scadm's DDIM ends). Sampling is the samplers' own, with the
blend as their `on_step`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from scadm.errors import InputError
from scadm.sampling import EpsFn, OnStep, Progress, _steps, ddim_coefficients

#: Fixed-point refinements per inversion step (each costs one more eps evaluation). Measured on the
#: demo model (reports/inversion/README.md), round trip error / latent std at g = 1.2: 0.155 with
#: none, 0.028 with 1, 0.009 with 2 at 25 steps (PSNR 23.9, 26.2, 26.4 dB; the autoencoder alone
#: 27.7); at 50 steps (4 faces, g = 1) 0.084, 0.010, 0.004. One buys almost all of it for one more
#: network call per step.
REFINE_STEPS = 1


@dataclass(frozen=True)
class Trajectory:
    """Latents of one target on the sampler's grid: latents[0] is z_0 (alpha_bar_0, where DDIM
    ends) and latents[k] the inverted x at timesteps[k - 1]; latents[-1] is the inverted noise."""

    latents: tuple[torch.Tensor, ...]
    timesteps: tuple[int, ...]

    @property
    def noise(self) -> torch.Tensor:
        return self.latents[-1]


def _check_grid(timesteps: Sequence[int]) -> None:
    if not timesteps or list(timesteps) != sorted(set(timesteps)) or timesteps[0] < 1:
        raise InputError(f"timesteps: expected an ascending grid of distinct steps >= 1, got {list(timesteps)[:5]}...")


@torch.no_grad()
def ddim_invert(
    eps_fn: EpsFn,
    z_0: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    refine: int = REFINE_STEPS,
    progress: Progress = False,
) -> Trajectory:
    """Walk `z_0` up `timesteps` (ascending) with deterministic DDIM: the latents that DDIM with
    `eps_fn` (eta = 0) walks back down to `z_0`.

    Step k solves x_k = sqrt(a_k) x0 + sqrt(1 - a_k) eps(x_k, t_k), x0 = (x_{k-1} - sqrt(1 - a_{k-1})
    eps) / sqrt(a_{k-1}): the sampler's step read backwards. eps is first taken at x_{k-1} (plain
    DDIM inversion), then `refine` times at the new x_k (fixed-point iteration).
    """
    if refine < 0:
        raise InputError(f"refine: must be >= 0, got {refine}")
    _check_grid(timesteps)
    x = z_0 if z_0.dtype == torch.float64 else z_0.float()  # the sampler's state dtype
    t = torch.tensor(list(timesteps))
    a = alphas_cumprod.cpu()
    coefs = ddim_coefficients(a[t], a[torch.cat([t.new_zeros(1), t[:-1]])], 0.0, x.dtype)  # the sampler's rows
    latents = [x]
    for k in _steps(list(range(len(timesteps))), progress, "DDIM inversion"):
        sqrt_a, sqrt_1ma, sqrt_ap, sqrt_dir, _ = coefs[k].to(x.device)
        step = torch.full((x.shape[0],), int(timesteps[k]), device=x.device)
        prev = x_k = x
        for _ in range(refine + 1):
            eps = eps_fn(x_k, step)
            x0 = (prev - sqrt_dir * eps) / sqrt_ap  # the sampler's step: x_prev = sqrt_ap x0 + sqrt_dir eps
            x_k = sqrt_a * x0 + sqrt_1ma * eps
        x = x_k
        latents.append(x)
    return Trajectory(tuple(latents), tuple(int(t) for t in timesteps))


def keep_target(trajectory: Trajectory, keep: torch.Tensor) -> tuple[Callable, OnStep]:
    """Blend the target's own latents into a sampler run where `keep` (B or 1, 1, h, w; 1 = the
    target's) says: returns `start(x_T)`, the initial noise with the target's inverted noise kept,
    and the `on_step` for `scadm.sampling.sample` that does the same after every step.

    Any sampler on the trajectory's grid may run with it: the kept latents are DDIM's (the ODE),
    the edited ones the sampler's own. With `keep` all 0 the run is the plain sampler's; all 1, z_0.
    """
    levels = len(trajectory.timesteps)

    def blend(x: torch.Tensor, level: int) -> torch.Tensor:
        kept = trajectory.latents[level].to(x.device)
        k = keep.to(x.device, x.dtype)
        return (1 - k) * x + k * kept.expand_as(x)

    def on_step(n: int, t: int, x: torch.Tensor) -> torch.Tensor:
        level = levels - 1 - n  # step n started from timesteps[level] and landed one level lower
        if not 0 <= level < levels or t != trajectory.timesteps[level]:
            raise InputError(f"preserve: the sampler's step {n} (t = {t}) is not on the inverted grid")
        return blend(x, level)

    return (lambda x_T: blend(x_T, levels)), on_step


def content_key(*tensors: torch.Tensor, **settings) -> str:
    """sha256 of the tensors' values, shapes and dtypes and of `settings`: a cache key that changes
    whenever the target or anything its inversion depends on changes."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


#: a number per live module object (`weights_key`): weak keys, so a dead module's number goes with it
_MODULE_TOKENS: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()
_NEXT_TOKEN = itertools.count()


def weights_key(*modules: torch.nn.Module) -> list[object]:
    """What `modules` compute with now, for a cache key: per module a number given to that object
    while it lives (id() is not one: a new module may reuse a collected one's id), and per
    parameter and buffer its storage, dtype, device, shape and version counter, which every
    in-place write bumps (load_state_dict, optimiser steps, copy_); `.to()` moves the storage.

    Not a hash of the values: that is a pass over every weight per edit (hundreds of MB for a
    256 px model, more than a GPU edit itself), where this reads a few numbers per tensor. Tensors
    made under `torch.inference_mode` have no version counter; their values are hashed instead.
    """
    key: list[object] = []
    for module in modules:
        if module not in _MODULE_TOKENS:
            _MODULE_TOKENS[module] = next(_NEXT_TOKEN)
        key.append(_MODULE_TOKENS[module])
        for t in itertools.chain(module.parameters(), module.buffers()):
            state = content_key(t) if t.is_inference() else t._version
            key.append((t.data_ptr(), str(t.dtype), str(t.device), tuple(t.shape), state))
    return key


class InversionCache:
    """The trajectories of the last `capacity` targets (least recently used dropped first), so
    several edits of one photo invert it once. `hits` / `misses` count the look-ups."""

    def __init__(self, capacity: int = 4):
        self.capacity, self.hits, self.misses = capacity, 0, 0
        self._items: OrderedDict[str, Trajectory] = OrderedDict()

    def get(self, key: str, compute: Callable[[], Trajectory]) -> Trajectory:
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = self._items[key] = compute()
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
