"""Classifier-free guidance (paper Eq. 4) and the samplers, on the authors' schedule.

Samplers run over the denoiser contract `eps_fn(x_t, t) -> eps` (k-diffusion's `CompVisDenoiser`
idea): `t` is an int64 tensor (B,) of 0-indexed training timesteps and eps is shaped like `x_t`;
the UNet enters only through `guided_eps_fn`. All walk the authors' grid (`ddim_timesteps`) over
their float32 `alphas_cumprod` (`scadm.schedule.NoiseSchedule`):

* "ddim": our own DDIM (Song et al. 2021), the authors' `DDIMSampler` step for step; ends at
  alpha_bar_0 = 0.9985, as theirs does.
* "ddpm": ancestral sampling with the full posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 6-7)
  via diffusers' `DDPMScheduler`; its last step lands on alpha_bar = 1 (the clean sample).
* "dpm++": DPM-Solver++(2M) (Lu et al. 2022) via diffusers' `DPMSolverMultistepScheduler`; ends at
  alpha_bar_0, as DDIM does (at order 1 it is DDIM).
* "unipc": UniPC (Zhao et al. 2023; data prediction, B(h) = e^h - 1, order 2 with its corrector)
  via diffusers' `UniPCMultistepScheduler`; ends at alpha_bar_0 too. Like DPM-Solver++ it solves the
  probability-flow ODE from eps alone, so an eps or a v model (whose v the pipeline turns into eps)
  fits it exactly.
"""

from collections.abc import Callable, Iterable, Sequence

import torch
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from tqdm.auto import tqdm

from scadm.errors import InputError
from scadm.schedule import NUM_TRAIN_TIMESTEPS, NoiseSchedule
from scadm.settings import GUIDANCE_SCALE, SAMPLERS, RenderSettings

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = bool | Callable[[int, int], None]  # tqdm on/off, or a callback(steps_done, total)
#: after each step: on_step(step_index, t, x) -> x (the same tensor or a replacement), where t is the
#: timestep the step started from; the pipeline's `callback_on_step_end` runs through it
OnStep = Callable[[int, int, torch.Tensor], torch.Tensor]
# The diffusers schedulers make_scheduler builds (SchedulerMixin declares neither step nor set_timesteps).
Scheduler = DDPMScheduler | DPMSolverMultistepScheduler | UniPCMultistepScheduler

DEFAULT = RenderSettings()


def randn(
    shape: Sequence[int],
    generators: Sequence[torch.Generator] | None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise, row i drawn from `generators[i]` (on its own device), then moved.

    A sample then depends on its own seed only, not on the batch it shares or on the device. With
    `generators=None` the global RNG is used.
    """
    if generators is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    if len(generators) != shape[0]:
        raise InputError(f"generators: need one per batch item ({shape[0]}), got {len(generators)}")
    row = (1, *shape[1:])
    rows = [torch.randn(row, generator=g, device=g.device, dtype=dtype) for g in generators]
    return torch.cat(rows).to(device)


def guide(eps_u: torch.Tensor, eps_c: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """eps = eps_u + g (eps_c - eps_u): classifier-free guidance (Ho & Salimans 2021; paper Eq. 4).

    `g` has the authors' CODE meaning (their `unconditional_guidance_scale`): g = 1 is the plain
    conditional model, g = 0 the unconditional one. The paper's Eq. 4 read literally is
    eps_c + s (eps_c - eps_u) = eps_u + (1 + s)(eps_c - eps_u), i.e. g = 1 + s; but the authors' demo
    passes its slider "s" (minimum 1 = no guidance) straight to the code scale, so the paper's
    "s = 1.2" is g = 1.2 and Eq. 4 is off by one. Hence the default `GUIDANCE_SCALE = 1.2`.
    """
    return eps_u + guidance_scale * (eps_c - eps_u)


def guided_eps_fn(
    unet: Callable[..., torch.Tensor],
    cond: tuple[torch.Tensor, torch.Tensor],
    uncond: tuple[torch.Tensor, torch.Tensor] | None = None,
    guidance_scale: float = GUIDANCE_SCALE,
    prepare: Callable[[torch.Tensor, torch.Tensor], object] | None = None,
) -> EpsFn:
    """The denoiser `eps_fn(x_t, t)` of `unet(x, t, context, mask) -> eps` under guidance (Eq. 4).

    `cond` and `uncond` are (context (B, C, L*D), mask (B, C, H, W)) pairs. For g != 1 the
    unconditional and conditional inputs go through the UNet as ONE batch of 2B, unconditional
    first (the authors' order), and are combined by `guide`. For g == 1 only the conditional pass
    runs (batch B) and `uncond` may be None. `prepare(context, mask)`, when given, runs once here
    and every step then calls `unet(x, t, condition=prepared)` (SCADMUNet.condition: the mask's
    share of the UNet is the same at every step).
    """
    context, mask = cond
    if guidance_scale != 1:
        if uncond is None:
            raise InputError("uncond: needed when guidance_scale != 1")
        if uncond[0].shape != context.shape or uncond[1].shape != mask.shape:
            raise InputError("uncond: context and mask must have the shapes of cond's")
        context = torch.cat([uncond[0], context])  # (2B, C, L*D)
        mask = torch.cat([uncond[1], mask])  # (2B, C, H, W)
    if prepare is not None:
        condition = prepare(context, mask)

        def denoise(x, t):
            return unet(x, t, condition=condition)
    else:

        def denoise(x, t):
            return unet(x, t, context, mask)

    if guidance_scale == 1:
        return denoise

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_u, eps_c = denoise(torch.cat([x, x]), torch.cat([t, t])).chunk(2)
        return guide(eps_u, eps_c, guidance_scale)

    return eps_fn


def ddim_timesteps(num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The authors' "uniform" grid, ascending: every (T // S)-th timestep, starting at t = 1.

    Theirs is `range(0, T, T // S) + 1`. That runs MORE than S steps when S does not divide T
    (S = 60 runs 63) and, whenever 999 is a multiple of T // S (S = 3, 9, 27, 36, 37, 101-111,
    251-333, 501-1000), ends with t = T, which indexes past `alphas_cumprod` and crashes. We keep
    their grid and drop that one out-of-range step: `range(1, T, T // S)`. This is identical to
    theirs wherever theirs runs, runs len(range(1, T, T // S)) steps (S = 101 runs 111, S = 1000
    runs 999, t = 999..1), and always starts within T // S of t = T - 1.
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise InputError(f"num_steps: must be in 1..{num_train_timesteps}, got {num_steps}")
    return list(range(1, num_train_timesteps, num_train_timesteps // num_steps))


def ddim_sigmas(a_t: torch.Tensor, a_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev) (Song et al. 2021, Eq. 16).

    From float32 alpha_bars, in float64 except for 1 / (1 - a_t), which the authors' code computes
    in float32 (a side effect of dividing a NumPy array by a tensor); kept, so that sigma equals
    theirs bit for bit (for two or more steps). Returned in float32.
    """
    inv_1ma = (1 - a_t).reciprocal().double()
    a_t, a_prev = a_t.double(), a_prev.double()
    return (eta * torch.sqrt(inv_1ma * (1 - a_prev) * (1 - a_t / a_prev))).float()


def ddim_coefficients(
    a_t: torch.Tensor, a_prev: torch.Tensor, eta: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(steps, 5) rows [sqrt(a_t), sqrt(1 - a_t), sqrt(a_prev), sqrt(1 - a_prev - sigma^2), sigma].

    For a float32 (or lower) sampler state, the authors' float32 factors, each correctly rounded
    from float64 (as NumPy and CUDA give them; PyTorch's float32 CPU sqrt may be 1 ulp off), with
    their sigma (`ddim_sigmas`). For a float64 state, everything in float64 from the same
    alpha_bars: rounding the factors to float32 would put ~1e-7 relative error into every step.
    """
    if dtype == torch.float64:
        a_t, a_prev = a_t.double(), a_prev.double()
        sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        return torch.stack([a_t.sqrt(), (1 - a_t).sqrt(), a_prev.sqrt(), (1 - a_prev - sigma**2).sqrt(), sigma], dim=1)
    sigma = ddim_sigmas(a_t, a_prev, eta)
    return torch.stack([_sqrt32(a_t), _sqrt32(1 - a_t), _sqrt32(a_prev), _sqrt32(1 - a_prev - sigma**2), sigma], dim=1)


def _sqrt32(v: torch.Tensor) -> torch.Tensor:
    return v.double().sqrt().float()


def _steps(items: list, progress: Progress, desc: str) -> Iterable:
    if callable(progress):
        for i, item in enumerate(items):
            yield item
            progress(i + 1, len(items))
    else:
        yield from tqdm(items, desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def sample_ddim(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    *,
    eta: float = DEFAULT.eta,
    generators: Sequence[torch.Generator] | None = None,
    progress: Progress = False,
    on_step: OnStep | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12) over `timesteps` (ascending), walked from the top down.

    As the authors' `DDIMSampler` run on a GPU, to the bit: float32 coefficients from the float32
    `alphas_cumprod` (float64 ones for a float64 `x_T`: see `ddim_coefficients`), no clipping, and
    the last step goes to alpha_bar_0 (not 1), so the result keeps the noise level of t = 0. For
    eta > 0 each step's fresh noise comes from `generators` (one per sample; see `randn`).
    """
    t = torch.tensor(list(timesteps))
    a_t = alphas_cumprod.cpu()[t]
    a_prev = alphas_cumprod.cpu()[torch.cat([t.new_zeros(1), t[:-1]])]  # the t=1 step lands on abar_0
    coefs = ddim_coefficients(a_t, a_prev, eta, x_T.dtype)  # (steps, 5), one row per step
    x = x_T
    for n, i in enumerate(_steps(list(reversed(range(len(t)))), progress, "DDIM")):
        sqrt_a, sqrt_1ma, sqrt_ap, sqrt_dir, s = coefs[i].to(x.device)
        eps = eps_fn(x, torch.full((x.shape[0],), int(t[i]), device=x.device))
        x0 = (x - sqrt_1ma * eps) / sqrt_a  # "predicted x_0"
        x = sqrt_ap * x0 + sqrt_dir * eps  # + "direction pointing to x_t"
        if eta > 0:
            x = x + s * randn(x.shape, generators, x.device, x.dtype)  # + "random noise"
        if on_step is not None:
            x = on_step(n, int(t[i]), x)
    return x


def make_scheduler(schedule: NoiseSchedule, sampler: str, **config) -> Scheduler:
    """The diffusers scheduler of `sampler` ("ddpm", "dpm++" or "unipc") on the authors' schedule exactly.

    Same betas ("scaled_linear" is diffusers' name for LDM's sqrt-spaced schedule), then the
    float32 cumulative product replaced by ours: diffusers computes it in float32 (up to ~15 ulp
    off), and every step coefficient (DPM-Solver++'s sigmas included) is derived from it in
    `set_timesteps`. `config` overrides any other setting (e.g. `solver_order=1`).
    """
    base = dict(
        num_train_timesteps=schedule.num_train_timesteps,
        beta_start=schedule.linear_start,
        beta_end=schedule.linear_end,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )
    scheduler: Scheduler
    if sampler == "ddpm":  # "fixed_small": the posterior variance tilde-beta (Ho et al. Eq. 7)
        scheduler = DDPMScheduler(**{**base, "variance_type": "fixed_small", "clip_sample": False, **config})
    elif sampler == "dpm++":  # "sigma_min": the last step lands on alpha_bar_0, where DDIM ends
        options = dict(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="sigma_min")
        scheduler = DPMSolverMultistepScheduler(**{**base, **options, **config})
    elif sampler == "unipc":  # diffusers' defaults (bh2, order 2, corrector on), ending where DDIM ends
        options = dict(predict_x0=True, solver_type="bh2", solver_order=2, final_sigmas_type="sigma_min")
        scheduler = UniPCMultistepScheduler(**{**base, **options, **config})
    else:
        raise InputError(f"sampler: no diffusers scheduler for {sampler!r}; use 'ddpm', 'dpm++' or 'unipc'")
    scheduler.alphas_cumprod = schedule.alphas_cumprod.clone()
    return scheduler


@torch.no_grad()
def sample_scheduler(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    scheduler: Scheduler,
    timesteps: Sequence[int],
    *,
    generators: Sequence[torch.Generator] | None = None,
    progress: Progress = False,
    on_step: OnStep | None = None,
) -> torch.Tensor:
    """Run a diffusers scheduler over `timesteps` (ascending; given to it as its custom grid).

    The grid is passed explicitly because diffusers' own "leading" spacing differs from the
    authors': DDPMScheduler has their stride but S steps exactly and crashes at S = 1000 with
    `steps_offset=1`; DPMSolverMultistepScheduler and UniPCMultistepScheduler use stride T // (S + 1).
    """
    set_grid(scheduler, timesteps)
    noise_generators = list(generators) if generators is not None else None
    x = x_T
    for n, t in enumerate(_steps(scheduler.timesteps.tolist(), progress, type(scheduler).__name__)):
        eps = eps_fn(x, torch.full((x.shape[0],), t, device=x.device))
        if isinstance(scheduler, UniPCMultistepScheduler):  # adds no noise, takes no generator
            x = scheduler.step(eps, t, x, return_dict=False)[0]
        else:  # diffusers annotates `generator` as one Generator; its randn_tensor takes one per sample
            x = scheduler.step(eps, t, x, generator=noise_generators, return_dict=False)[0]  # type: ignore[arg-type,call-arg]
        if on_step is not None:
            replaced = on_step(n, t, x)
            if isinstance(scheduler, UniPCMultistepScheduler) and replaced is not x and not torch.equal(replaced, x):
                # UniPC's corrector rebuilds the next step's input from this step's: it would undo the
                # replacement, so that step takes the replaced state as it is
                scheduler.disable_corrector.append(n)
            x = replaced
    return x


def set_grid(scheduler: Scheduler, timesteps: Sequence[int]) -> None:
    """Put `scheduler` on the grid `timesteps` (ascending), as its `set_timesteps` would.

    DDPM and DPM-Solver++ take a custom grid. UniPC's `set_timesteps` takes only a step count (its
    "leading" grid has stride T // (S + 1), not the authors'), so it sets its own grid of the same
    length and then gets ours, with the sigmas its default branch derives from a grid:
    sqrt((1 - abar) / abar) at each timestep, in float32, then the final sigma (abar_0's, for
    final_sigmas_type="sigma_min"). tests/test_sampling.py proves this equals `set_timesteps` on
    diffusers' own grid, bit for bit.
    """
    descending = sorted(timesteps, reverse=True)
    if isinstance(scheduler, UniPCMultistepScheduler):
        _set_unipc_grid(scheduler, descending)
    else:
        scheduler.set_timesteps(timesteps=descending)  # type: ignore[call-arg]


def _set_unipc_grid(scheduler: UniPCMultistepScheduler, descending: list[int]) -> None:
    if scheduler.config["final_sigmas_type"] != "sigma_min":
        raise InputError("scheduler: UniPC on a custom grid needs final_sigmas_type='sigma_min'")
    scheduler.set_timesteps(len(descending))  # resets its multistep state
    scheduler.disable_corrector = list(scheduler.config["disable_corrector"])  # its own (appended to)
    abar = scheduler.alphas_cumprod
    sigmas = ((1 - abar) / abar) ** 0.5
    t = torch.tensor(descending, dtype=torch.int64)
    scheduler.timesteps = t
    scheduler.sigmas = torch.cat([sigmas[t], sigmas[:1]]).float()


def _check(x_T: torch.Tensor, sampler: str, eta: float, generators: Sequence[torch.Generator] | None) -> None:
    if sampler not in SAMPLERS:
        raise InputError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not eta >= 0:
        raise InputError(f"eta: must be >= 0, got {eta}")
    if generators is not None and len(generators) != x_T.shape[0]:
        raise InputError(f"generators: need one per batch item ({x_T.shape[0]}), got {len(generators)}")


def sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    sampler: str = DEFAULT.sampler,
    num_steps: int = DEFAULT.steps,
    eta: float = DEFAULT.eta,
    generators: Sequence[torch.Generator] | None = None,
    progress: Progress = False,
    on_step: OnStep | None = None,
) -> torch.Tensor:
    """Denoise `x_T` into a sample with one of `SAMPLERS` on the authors' grid (`ddim_timesteps`).

    `num_steps` is the authors' S (it sets the stride T // S, so a few more model calls may run).
    `eta` is DDIM's (0: deterministic, 1: DDPM-like noise); the other samplers ignore it.
    `generators` (one per sample, as used to draw `x_T`) feed the stochastic samplers, so a sample
    depends on its own seed only. `progress`: True for a tqdm bar, or a callback(steps_done, total).
    `on_step(step_index, t, x) -> x` sees (and may replace) the state after every step.

    >>> schedule = NoiseSchedule()
    >>> gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    >>> x_T = randn((2, 3, 8, 8), gens)
    >>> x_0 = sample(lambda x, t: torch.zeros_like(x), x_T, schedule, num_steps=10)
    >>> x_0.shape
    torch.Size([2, 3, 8, 8])
    """
    _check(x_T, sampler, eta, generators)
    timesteps = ddim_timesteps(num_steps, schedule.num_train_timesteps)
    if sampler == "ddim":
        return sample_ddim(
            eps_fn,
            x_T,
            schedule.alphas_cumprod,
            timesteps,
            eta=eta,
            generators=generators,
            progress=progress,
            on_step=on_step,
        )
    scheduler = make_scheduler(schedule, sampler)
    return sample_scheduler(
        eps_fn, x_T, scheduler, timesteps, generators=generators, progress=progress, on_step=on_step
    )
