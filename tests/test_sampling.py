import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from scadm.errors import InputError
from scadm.sampling import (
    SAMPLERS,
    ddim_coefficients,
    ddim_sigmas,
    ddim_timesteps,
    guided_eps_fn,
    make_scheduler,
    randn,
    sample,
    sample_ddim,
    sample_scheduler,
    set_grid,
)
from scadm.schedule import NoiseSchedule

T = 1000
SCHEDULE = NoiseSchedule()


def closed_form_alphas_cumprod64() -> np.ndarray:
    betas = np.linspace(math.sqrt(0.0015), math.sqrt(0.0195), T, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def toy_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth, t-dependent, elementwise stand-in for a UNet."""
    return torch.tanh(0.7 * x + t.to(x.dtype).view(-1, 1, 1, 1) / T)


MU, STD = 1.5, 0.8


def gaussian_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps | x_t] for x_0 ~ N(MU, STD^2): x_t ~ N(sqrt(a) MU, a STD^2 + 1 - a)."""
    a = SCHEDULE.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
    return (torch.sqrt(1 - a) * (x.double() - a.sqrt() * MU) / (a * STD**2 + 1 - a)).to(x.dtype)


# --- timesteps -----------------------------------------------------------------------------------


def test_ddim_timesteps_reproduce_the_authors_uniform_grid():
    assert ddim_timesteps(10) == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901]
    assert ddim_timesteps(50) == list(range(1, 982, 20)) and len(ddim_timesteps(50)) == 50
    assert ddim_timesteps(60) == list(range(1, 994, 16)) and len(ddim_timesteps(60)) == 63


def test_ddim_timesteps_equal_the_authors_wherever_theirs_run_and_drop_t_equal_T_where_they_crash():
    for s in range(1, T + 1):
        theirs = [t + 1 for t in range(0, T, T // s)]  # `range(0, T, T // S) + 1`
        ours = ddim_timesteps(s)
        assert ours == [t for t in theirs if t < T], s
        assert theirs[-1] == T or ours == theirs  # only the crashing S change


def test_ddim_timesteps_for_crashing_step_counts():
    assert ddim_timesteps(3) == [1, 334, 667]
    assert ddim_timesteps(101) == list(range(1, 1000, 9)) and len(ddim_timesteps(101)) == 111
    assert ddim_timesteps(1000) == list(range(1, 1000))
    x = sample(toy_eps, torch.randn(1, 1, 2, 2), SCHEDULE, num_steps=101)  # theirs would crash here
    assert torch.isfinite(x).all()


# --- DDIM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_two_steps_match_eq12_transcription(eta):
    a = SCHEDULE.alphas_cumprod.double()
    x_T = torch.randn(2, 3, 4, 4)
    got = sample_ddim(toy_eps, x_T, SCHEDULE.alphas_cumprod, [1, 501], eta=eta, generators=seeded(5, 6))

    gens = seeded(5, 6)
    x = x_T.double()
    for t, t_prev in [(501, 1), (1, 0)]:  # the last step lands on alpha_bar_0, not 1
        a_t, a_prev = a[t], a[t_prev]
        sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t)) * torch.sqrt(1 - a_t / a_prev)
        eps = toy_eps(x.float(), torch.full((2,), t)).double()
        x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
        z = torch.cat([torch.randn(1, 3, 4, 4, generator=g) for g in gens]).double()
        x = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
    # float32 state vs float64 transcription: |x| ~ 7, two steps of ~1e-7 relative error (measured 8e-7)
    torch.testing.assert_close(got.double(), x, rtol=0, atol=1e-5)


def test_ddim_factors_are_correctly_rounded_float32_for_a_float32_state_and_float64_for_float64():
    a = SCHEDULE.alphas_cumprod
    a_t, a_prev = a[[1, 501, 981]], a[[0, 1, 501]]
    f32, f64 = ddim_coefficients(a_t, a_prev, 0.5), ddim_coefficients(a_t, a_prev, 0.5, torch.float64)
    assert f32.dtype == torch.float32 and f64.dtype == torch.float64
    # the authors' factors: NumPy's correctly rounded float32 square roots of float32 values
    for column, value in enumerate([a_t, 1 - a_t, a_prev]):
        rounded = np.sqrt(value.numpy().astype(np.float64)).astype(np.float32)
        assert torch.equal(f32[:, column], torch.from_numpy(rounded))
    assert torch.equal(f32[:, 4], ddim_sigmas(a_t, a_prev, 0.5))
    # float64: the same alpha_bars, no float32 rounding (which would leave ~3e-8 relative)
    a_t, a_prev = a_t.double(), a_prev.double()
    sigma = 0.5 * torch.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    expected = torch.stack([a_t.sqrt(), (1 - a_t).sqrt(), a_prev.sqrt(), (1 - a_prev - sigma**2).sqrt(), sigma], 1)
    torch.testing.assert_close(f64, expected, rtol=1e-15, atol=0)  # the same float64 ops
    assert (f64 - f32.double()).abs().max() > 1e-9


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_in_float64_matches_a_float64_transcription_to_float64_precision(eta):
    """A float64 state steps with float64 factors (float32-rounded ones left ~1e-7 relative error).
    25 steps of a few float64 ops, 1 / sqrt(a_t) <= 84 at t = 981: ~1e-14 relative (|x| up to ~130)."""
    a = SCHEDULE.alphas_cumprod.double()
    timesteps = ddim_timesteps(25)
    x_T = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    got = sample_ddim(toy_eps, x_T, SCHEDULE.alphas_cumprod, timesteps, eta=eta, generators=seeded(5, 6))
    assert got.dtype == torch.float64

    gens, x = seeded(5, 6), x_T
    for t, t_prev in zip(timesteps[::-1], [*timesteps[::-1][1:], 0], strict=True):
        a_t, a_prev = a[t], a[t_prev]
        sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t)) * torch.sqrt(1 - a_t / a_prev)
        eps = toy_eps(x, torch.full((2,), t))
        x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
        z = torch.cat([torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64) for g in gens])
        x = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
    torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_steps", [10, 50])
def test_ddim_matches_diffusers_ddim_scheduler_where_steps_divide_T(num_steps):
    scheduler = DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    scheduler.alphas_cumprod = SCHEDULE.alphas_cumprod.clone()
    scheduler.final_alpha_cumprod = SCHEDULE.alphas_cumprod[0]
    scheduler.set_timesteps(num_steps)
    assert sorted(scheduler.timesteps.tolist()) == ddim_timesteps(num_steps)

    x_T = torch.randn(2, 3, 4, 4)
    x = x_T
    for t in scheduler.timesteps:
        x = scheduler.step(toy_eps(x, t.repeat(2)), t, x).prev_sample
    ours = sample(toy_eps, x_T, SCHEDULE, sampler="ddim", num_steps=num_steps)
    # Both in float32 with different op orders: ~1 ulp per op, grown by 1 / sqrt(alpha_bar) (up to ~80)
    # as x reaches |x| ~ 80-170. Measured 1.5e-5 / 4.6e-5 (2.7e-7 of max |x|; a few ulp at 128); bound
    # 2e-6 of max |x|. A wrong coefficient or grid is off by O(1).
    torch.testing.assert_close(ours, x, rtol=0, atol=2e-6 * x.abs().max().item())


@pytest.mark.parametrize("num_steps", [10, 60])
def test_dpm_solver_at_order_1_is_our_ddim(num_steps):
    x_T = torch.randn(2, 3, 4, 4)
    timesteps = ddim_timesteps(num_steps)
    scheduler = make_scheduler(SCHEDULE, "dpm++", solver_order=1)
    dpm = sample_scheduler(gaussian_eps, x_T, scheduler, timesteps)
    ddim = sample_ddim(gaussian_eps, x_T, SCHEDULE.alphas_cumprod, timesteps)
    # equal in exact arithmetic; diffusers steps through float32 exp/log of lambda: measured 1.7e-6 on
    # |x| ~ 4 (4e-7 relative); bound 4e-6 of max |x|
    torch.testing.assert_close(dpm, ddim, rtol=0, atol=4e-6 * ddim.abs().max().item())


@pytest.mark.parametrize("sampler", ["dpm++", "unipc"])
def test_ode_solvers_end_at_alpha_bar_0(sampler):
    scheduler = make_scheduler(SCHEDULE, sampler)
    set_grid(scheduler, ddim_timesteps(10))
    assert scheduler.timesteps.tolist() == ddim_timesteps(10)[::-1]
    a0 = SCHEDULE.alphas_cumprod[0].double()
    assert scheduler.sigmas[-1].item() == pytest.approx(math.sqrt((1 - a0) / a0), rel=1e-6)  # float32: ~1e-7


# --- UniPC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [10, 25])
def test_unipc_on_our_grid_is_diffusers_own_where_the_grids_agree(num_steps):
    """set_grid replaces UniPC's grid (it takes no custom one); on diffusers' own grid the result
    must be what its set_timesteps gives, bit for bit, and so must the whole run."""
    own = make_scheduler(SCHEDULE, "unipc")
    own.set_timesteps(num_steps)
    grid = own.timesteps.flip(0).tolist()
    ours = make_scheduler(SCHEDULE, "unipc")
    set_grid(ours, grid)
    assert torch.equal(ours.timesteps, own.timesteps) and torch.equal(ours.sigmas, own.sigmas)
    x_T = torch.randn(2, 3, 4, 4)
    x = x_T
    for t in own.timesteps:
        x = own.step(toy_eps(x, t.repeat(2)), t, x).prev_sample
    assert torch.equal(sample_scheduler(toy_eps, x_T, make_scheduler(SCHEDULE, "unipc"), grid), x)


def gaussian_flow_error(sampler: str, num_steps: int, on_exact_path: bool = False) -> float:
    """Max error against the exact probability-flow solution for N(MU, STD^2) data: the ODE keeps
    each value's z-score, x(a) = m(a) + s(a) (x_T - m_T) / s_T, m = sqrt(a) MU, s^2 = a STD^2 + 1 - a.
    `on_exact_path`: after every step but the last, on_step replaces the state by the exact one."""
    grid = ddim_timesteps(num_steps)
    a = SCHEDULE.alphas_cumprod.double()
    x_T = randn((4, 1, 16, 16), seeded(*range(4)), dtype=torch.float64)

    def exact(ab):
        (m_top, s_top), (m, s) = [(v.sqrt() * MU, (v * STD**2 + 1 - v).sqrt()) for v in (a[grid[-1]], ab)]
        return m + s * (x_T - m_top) / s_top

    def on_step(n, t, x):  # step n started from grid[-1 - n] and landed on grid[-2 - n]
        return exact(a[grid[-2 - n]]) if n < len(grid) - 1 else x

    x = sample(
        gaussian_eps, x_T, SCHEDULE, sampler=sampler, num_steps=num_steps, on_step=on_step if on_exact_path else None
    )
    return (x - exact(a[0])).abs().max().item()


def test_unipc_converges_at_second_order_to_the_exact_flow():
    """From 50 to 200 steps (4x) a first-order solver's error falls ~4x (DDIM: measured 3.8x), a
    second-order one's ~16x. Measured for UniPC: 0.042 -> 0.0024 (17.5x). A wrong sigma, grid or
    prediction type loses the order (or converges to another point)."""
    coarse, fine = gaussian_flow_error("unipc", 50), gaussian_flow_error("unipc", 200)
    assert coarse / fine > 8
    assert fine < 5e-3 < gaussian_flow_error("ddim", 200)  # DDIM-200: 0.033


def test_unipc_takes_a_state_replaced_by_on_step_as_it_is():
    """UniPC's corrector rebuilds each step's input from the previous step's; a state replaced
    between steps (callbacks, region-preserving edits) must survive it. Put back on the exact path
    after every step, the last step's error is all that is left: measured 6.1e-4 (10 steps) for
    every sampler; with the corrector undoing the replacements UniPC stays at 0.058 (alone: 0.40)."""
    assert gaussian_flow_error("unipc", 10, on_exact_path=True) < 2e-3 < gaussian_flow_error("unipc", 10)


# --- DDPM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [1000, 60])
def test_ddpm_scheduler_uses_our_alphas_and_the_posterior_variance(num_steps):
    scheduler = make_scheduler(SCHEDULE, "ddpm")
    assert torch.equal(scheduler.alphas_cumprod, SCHEDULE.alphas_cumprod)
    timesteps = ddim_timesteps(num_steps)
    scheduler.set_timesteps(timesteps=timesteps[::-1])
    a = closed_form_alphas_cumprod64()
    for t, t_prev in zip(timesteps, [None, *timesteps[:-1]], strict=True):
        a_prev = 1.0 if t_prev is None else a[t_prev]  # Ho et al.: the last step goes to x_0
        beta = 1 - a[t] / a_prev
        tilde_beta = (1 - a_prev) / (1 - a[t]) * beta  # Ho et al. Eq. 7
        assert scheduler._get_variance(t).item() == pytest.approx(max(tilde_beta, 1e-20), rel=2e-4)


# --- guidance (paper Eq. 4) ----------------------------------------------------------------------


class RecordingUNet:
    def __init__(self):
        self.calls = []

    def __call__(self, x, t, context, mask):
        self.calls.append((x, t, context, mask))
        return x * context.mean(dim=(1, 2)).view(-1, 1, 1, 1) + mask.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)


def conditions(batch: int):
    cond = (torch.rand(batch, 19, 8) + 1, torch.rand(batch, 19, 4, 4))
    uncond = (torch.zeros(batch, 19, 8), torch.zeros(batch, 19, 4, 4))
    return cond, uncond


def test_guidance_scale_1_runs_only_the_conditional_pass():
    unet, (cond, uncond) = RecordingUNet(), conditions(2)
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([5, 5])
    eps = guided_eps_fn(unet, cond, uncond, guidance_scale=1.0)(x, t)
    assert len(unet.calls) == 1 and unet.calls[0][0].shape[0] == 2
    assert torch.equal(unet.calls[0][2], cond[0]) and torch.equal(unet.calls[0][3], cond[1])
    assert torch.equal(eps, unet(x, t, *cond))
    assert torch.equal(guided_eps_fn(RecordingUNet(), cond, None, 1.0)(x, t), eps)


def test_guidance_batches_uncond_first_and_combines_with_the_code_scale():
    unet, (cond, uncond) = RecordingUNet(), conditions(2)
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([7, 7])
    eps = guided_eps_fn(unet, cond, uncond, guidance_scale=1.2)(x, t)
    assert len(unet.calls) == 1
    x_in, t_in, context_in, mask_in = unet.calls[0]
    assert x_in.shape[0] == 4 and torch.equal(x_in, torch.cat([x, x])) and torch.equal(t_in, t.repeat(2))
    assert torch.equal(context_in[:2], uncond[0]) and torch.equal(context_in[2:], cond[0])
    assert torch.equal(mask_in[:2], uncond[1]) and torch.equal(mask_in[2:], cond[1])
    eps_u, eps_c = unet(x, t, *uncond), unet(x, t, *cond)
    torch.testing.assert_close(eps, eps_u + 1.2 * (eps_c - eps_u), rtol=0, atol=0)  # the same float ops


def test_guidance_needs_a_matching_unconditional_input():
    cond, uncond = conditions(2)
    with pytest.raises(InputError, match="uncond"):
        guided_eps_fn(RecordingUNet(), cond, None, 2.0)
    with pytest.raises(InputError, match="uncond"):
        guided_eps_fn(RecordingUNet(), cond, (uncond[0][:1], uncond[1][:1]), 2.0)


# --- seeds ---------------------------------------------------------------------------------------


def test_randn_rows_depend_only_on_their_own_seed():
    pair = randn((2, 3, 4, 4), seeded(3, 7))
    assert torch.equal(pair[1:], randn((1, 3, 4, 4), seeded(7)))
    assert torch.equal(pair[:1], torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("sampler, eta", [("ddim", 1.0), ("ddpm", 0.0)])
def test_stochastic_sample_depends_on_its_seed_not_on_the_batch(sampler, eta):
    def run(*seeds):
        gens = seeded(*seeds)
        x_T = randn((len(seeds), 2, 4, 4), gens)
        return sample(toy_eps, x_T, SCHEDULE, sampler=sampler, num_steps=10, eta=eta, generators=gens)

    batch, alone = run(3, 7, 11), run(7)
    assert torch.equal(batch[1:2], alone)
    assert not torch.equal(run(7), run(8))


# --- toy Gaussian: exact eps of N(mu, s^2) data -------------------------------------------------


@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddim", 1.0), ("dpm++", 0.0), ("unipc", 0.0), ("ddpm", 0.0)])
def test_samplers_recover_a_gaussian_with_its_exact_eps(sampler, eta):
    """At 200 steps the discretisation errors of the std are 0.6-3.3%; a wrong sign or coefficient
    is far off. (At 50 steps DDIM is 4% low and DPM-Solver++ 3% high on this grid.)"""
    gens = seeded(*range(8))
    x_T = randn((8, 1, 32, 32), gens, dtype=torch.float64)
    x = sample(gaussian_eps, x_T, SCHEDULE, sampler=sampler, num_steps=200, eta=eta, generators=gens)
    a_end = 1.0 if sampler == "ddpm" else SCHEDULE.alphas_cumprod[0].item()  # DDPM ends at x_0
    mean, std = math.sqrt(a_end) * MU, math.sqrt(a_end * STD**2 + 1 - a_end)
    assert x.mean().item() == pytest.approx(mean, abs=0.03)
    assert x.std().item() == pytest.approx(std, rel=0.05)


# --- entry point ---------------------------------------------------------------------------------


def test_sample_rejects_bad_arguments():
    x_T = torch.randn(2, 1, 2, 2)
    for kwargs, name in [
        (dict(sampler="plms"), "sampler"),
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=1001), "num_steps"),
        (dict(eta=-0.1), "eta"),
        (dict(generators=seeded(1)), "generators"),
    ]:
        with pytest.raises(InputError, match=name):
            sample(toy_eps, x_T, SCHEDULE, **kwargs)
    assert SAMPLERS == ("ddim", "ddpm", "dpm++", "unipc")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_progress_callback_sees_every_step_and_the_default_is_silent(sampler, capsys):
    seen = []
    sample(
        toy_eps,
        torch.randn(1, 1, 2, 2),
        SCHEDULE,
        sampler=sampler,
        num_steps=60,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(i, 63) for i in range(1, 64)]
    sample(toy_eps, torch.randn(1, 1, 2, 2), SCHEDULE, sampler=sampler, num_steps=10)
    assert capsys.readouterr() == ("", "")
