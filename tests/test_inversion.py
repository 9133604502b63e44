"""DDIM inversion, the region-preserving sampler, edit regions and the per-target inversion cache."""

import copy
import dataclasses
import gc

import numpy as np
import pytest
import torch
from tiny_models import face

from scadm.errors import InputError
from scadm.inversion import REFINE_STEPS, InversionCache, content_key, ddim_invert, keep_target, weights_key
from scadm.io import to_uint8
from scadm.models.autoencoder import encode
from scadm.regions import FRESH_NOISE, Preserve, distance, edited_classes, edited_region, latent_keep, pixel_weight
from scadm.sampling import ddim_timesteps, sample, sample_ddim
from scadm.settings import RenderSettings

STEPS = 10
HAIR, U_LIP, L_LIP = 13, 11, 12


def _target(pipe, seed=3, size=64):
    image, labels = face(seed, size)
    return image[None], labels[None]


def _guided_eps(pipe, image, labels, g):
    return pipe.eps_fn(pipe.encode_style(image, labels), pipe.one_hot(labels), g)


def _denoiser(pipe, image, labels, g):
    """The tiny pipeline's guided eps, shrunk 10x, on top of the exact eps of unit-Gaussian data
    (E[noise | x_t] = sqrt(1 - abar_t) x_t): a denoiser at every noise level, as a trained model is.
    The bare random UNet is none: its GroupNorms make eps nearly scale-free in x, so on the
    shrinking latents of an inversion its eps changes faster than x and the implicit step has no
    unique solution, which no trained model shows (the demo model converges: reports/inversion/README.md)."""
    unet_eps = _guided_eps(pipe, image, labels, g)
    s1ma = pipe.schedule.sqrt_one_minus_alphas_cumprod

    def eps_fn(x, t):
        return s1ma[t].view(-1, 1, 1, 1) * x + 0.1 * unet_eps(x, t)

    return eps_fn


def test_inversion_round_trip_reconstructs_z0(tiny_pipe, one_thread):
    image, labels = _target(tiny_pipe, size=32)  # the UNet is convolutional: a small latent is enough
    eps_fn = _denoiser(tiny_pipe, image, labels, 1.0)
    z_0 = encode(tiny_pipe.vqvae, image)
    ac, grid = tiny_pipe.schedule.alphas_cumprod, ddim_timesteps(STEPS)
    errors = []
    for refine in (0, 2, 8):
        trajectory = ddim_invert(eps_fn, z_0, ac, grid, refine=refine)
        assert len(trajectory.latents) == STEPS + 1 and torch.equal(trajectory.latents[0], z_0)
        back = sample_ddim(eps_fn, trajectory.noise, ac, grid)
        errors.append(((back - z_0).abs().max() / z_0.abs().max()).item())
    # Plain inversion is off by the eps mismatch of every step (~12 % of the latent's range on
    # this coarse 10-step grid); each fixed-point refinement shrinks that (a contraction), and 8 of
    # them reach 2e-3 of the range, 60x below plain inversion and far above float32 rounding (1e-6).
    assert errors[2] < errors[1] < errors[0] and errors[2] < 2e-3 and errors[0] > 0.05


@pytest.mark.parametrize("sampler", ["ddim", "dpm++", "unipc"])
def test_keeping_nothing_is_the_plain_sampler_and_keeping_all_is_z0(tiny_pipe, one_thread, sampler):
    image, labels = _target(tiny_pipe)
    eps_fn = _guided_eps(tiny_pipe, image, labels, 1.2)
    trajectory = ddim_invert(
        eps_fn, encode(tiny_pipe.vqvae, image), tiny_pipe.schedule.alphas_cumprod, ddim_timesteps(STEPS), refine=0
    )
    x_T = torch.randn_like(trajectory.noise)
    nothing = torch.zeros(1, 1, *x_T.shape[-2:])
    run = dict(schedule=tiny_pipe.schedule, sampler=sampler, num_steps=STEPS)
    start, on_step = keep_target(trajectory, nothing)
    assert torch.equal(sample(eps_fn, start(x_T), on_step=on_step, **run), sample(eps_fn, x_T, **run))
    start, on_step = keep_target(trajectory, nothing + 1)
    assert torch.equal(sample(eps_fn, start(x_T), on_step=on_step, **run), trajectory.latents[0])
    with pytest.raises(InputError, match="not on the inverted grid"):
        sample(eps_fn, x_T, tiny_pipe.schedule, num_steps=STEPS + 1, on_step=on_step)


def test_distance_is_close_to_euclidean():
    region = torch.zeros(1, 41, 41, dtype=torch.bool)
    region[0, 20, 20] = True
    d = distance(region, 12)[0]
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    true = ((yy - 20) ** 2 + (xx - 20) ** 2).sqrt()
    near = true <= 10
    # the octagonal metric is within 8 % of the Euclidean one (+1 px for the grid's rounding)
    assert ((d[near] - true[near]).abs() <= 0.08 * true[near] + 1).all()
    assert d[0, 0] == 13  # beyond the limit: limit + 1


def test_edit_region_weights_and_latent_cells():
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, 8:16, 8:16] = HAIR
    classes = torch.zeros(1, 19, dtype=torch.bool)
    classes[0, HAIR] = True
    region = edited_region(labels, labels, classes)
    assert region.sum() == 64
    w = pixel_weight(region, 4)[0, 0]
    assert (w[8:16, 8:16] == 1).all() and w[8:16, 6].eq(1).all()  # full edit up to half the margin
    assert w[8:16, 18].eq(0.5).all() and w[8:16, 19].eq(0).all() and w[0, 0] == 0  # column 15 + 3, + 4
    keep = latent_keep(region, 4, 4)[0, 0]  # cells of 4 px: edited rows/cols 1..4 (pixels 4..19)
    assert (keep[1:5, 1:5] == 0).all() and keep.sum() == 64 - 16
    changed = labels.clone()
    changed[0, 0, 0] = 1  # a user-edited mask: changed pixels count too, even of unedited classes
    assert edited_region(labels, changed, torch.zeros_like(classes))[0, 0, 0]


def _preserve_edit(pipe, parts, margin=4, fresh=FRESH_NOISE, **kw):
    image, labels = _target(pipe)
    ref_image, ref_labels = face(11)
    target = pipe.encode_style(image, labels)
    code = target.swap(pipe.encode_style(ref_image[None], ref_labels[None]), parts)
    out = pipe(labels, code, RenderSettings(steps=STEPS, **kw), preserve=Preserve(image, labels, margin, fresh))
    region = edited_region(labels, labels, edited_classes(target, code))
    return image, labels, out, region


def test_preserved_edit_keeps_outside_pixels_exactly_and_changes_the_part(tiny_pipe, one_thread):
    image, _labels, out, region = _preserve_edit(tiny_pipe, [HAIR])
    outside = pixel_weight(region, 4)[0, 0] == 0
    assert outside.sum() > 0.3 * outside.numel() and region.sum() > 100
    result, target = to_uint8(out)[0], to_uint8(image)[0]
    assert np.array_equal(result[outside.numpy()], target[outside.numpy()])
    # the hair is re-generated by the (random) tiny model: far from the target's own hair
    assert np.abs(result[region[0].numpy()].astype(int) - target[region[0].numpy()]).mean() > 10


def test_no_edit_returns_the_target_and_bad_margins_are_refused(tiny_pipe, one_thread):
    image, labels = _target(tiny_pipe)
    same = tiny_pipe.encode_style(image, labels)
    out = tiny_pipe(labels, same, num_inference_steps=STEPS, preserve=Preserve(image, labels))
    assert torch.equal(out, image)
    with pytest.raises(InputError, match="margin"):
        Preserve(image, labels, margin=-1)


def test_start_noise_mixes_inverted_and_seed_noise_at_unit_variance():
    inverted, seed_noise = torch.randn(2, 1, 3, 64, 64).unbind()
    image, labels = torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)
    assert torch.equal(Preserve(image, labels, fresh=0).start_noise(inverted, seed_noise), inverted)
    assert torch.equal(Preserve(image, labels, fresh=1).start_noise(inverted, seed_noise), seed_noise)
    mixed = Preserve(image, labels, fresh=0.5).start_noise(inverted, seed_noise)
    # 12,288 draws: the std's standard error is 1 / sqrt(2 n) = 0.0064; 0.03 is ~5 of them, while a
    # plain average of the two (no square roots) would give 0.71
    assert abs(mixed.std().item() - 1) < 0.03
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(InputError, match="fresh"):
            Preserve(image, labels, fresh=bad)


def test_preserved_edits_follow_the_seed_inside_only(tiny_pipe, one_thread):
    """The editor's 'new seed' gives another edit at eta 0 (the inside starts partly from the
    seed's noise); the outside is the target's whatever the seed."""
    _image, _labels, a, region = _preserve_edit(tiny_pipe, [HAIR], seed=1)
    b = _preserve_edit(tiny_pipe, [HAIR], seed=2)[2]
    inside, outside = region[0], pixel_weight(region, 4)[0, 0] == 0
    # outputs in [-1, 1]: two seeds of the random tiny model differ by 0.03 (~4 of 255 levels) on
    # average inside; more than one level (2 / 255) is a real difference, not rounding (1e-6)
    assert (a - b).abs()[..., inside].mean() > 2 / 255
    assert torch.equal(a[..., outside], b[..., outside])
    # from the inverted noise alone (fresh = 0) DDIM at eta 0 draws no noise: the seed is ignored
    c, d = (_preserve_edit(tiny_pipe, [HAIR], fresh=0, seed=s)[2] for s in (1, 2))
    assert torch.equal(c, d)


def test_stochastic_samplers_keep_the_outside_too(tiny_pipe, one_thread):
    image, _labels, out, region = _preserve_edit(tiny_pipe, [HAIR], sampler="ddpm")
    outside = (pixel_weight(region, 4)[0, 0] == 0).numpy()
    assert np.array_equal(to_uint8(out)[0][outside], to_uint8(image)[0][outside])


def test_several_edits_of_one_target_invert_once(tiny_pipe, one_thread):
    tiny_pipe.inversions = InversionCache()
    calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        _preserve_edit(tiny_pipe, [HAIR])
        first = len(calls)
        _preserve_edit(tiny_pipe, [U_LIP, L_LIP])
    finally:
        hook.remove()
    assert first == STEPS * (REFINE_STEPS + 1) + STEPS  # inversion, then the edit's own sampling
    assert len(calls) - first == STEPS  # the second edit of the same target: sampling only
    assert (tiny_pipe.inversions.misses, tiny_pipe.inversions.hits) == (1, 1)
    _preserve_edit(tiny_pipe, [HAIR], guidance=1.0)  # other settings: another inversion
    assert tiny_pipe.inversions.misses == 2 and len(tiny_pipe.inversions) == 2


def test_cache_key_follows_content_and_settings():
    a = torch.zeros(2, 3)
    assert content_key(a, steps=10) == content_key(a.clone(), steps=10)
    assert content_key(a, steps=10) != content_key(a, steps=11)
    b = a.clone()
    b[0, 0] = 1e-7
    assert content_key(a, steps=10) != content_key(b, steps=10)
    cache = InversionCache(capacity=1)
    cache.get("x", lambda: 1), cache.get("y", lambda: 2), cache.get("x", lambda: 3)
    assert (cache.misses, cache.hits, cache.get("x", lambda: 4)) == (3, 0, 3)


def test_inversion_cache_follows_the_weights(tiny_pipe, one_thread):
    pipe = dataclasses.replace(tiny_pipe, unet=copy.deepcopy(tiny_pipe.unet), inversions=InversionCache())
    image, labels = _target(pipe)
    rs = RenderSettings(steps=2)
    first = pipe.invert(image, labels, rs)
    assert pipe.invert(image, labels, rs) is first
    with torch.no_grad():
        next(pipe.unet.parameters()).mul_(2)  # the same UNet object, new weights (as a fine-tune step does)
    changed = pipe.invert(image, labels, rs)
    assert not torch.equal(changed.noise, first.noise) and pipe.inversions.misses == 2
    pipe.unet = copy.deepcopy(pipe.unet)  # another object with the same weights: not trusted to be the same
    pipe.invert(image, labels, rs)
    assert (pipe.inversions.misses, pipe.inversions.hits) == (3, 1)


def test_weights_key_sees_in_place_writes_moves_and_new_objects_at_old_ids():
    net = torch.nn.Linear(2, 2)
    key = weights_key(net)
    assert weights_key(net) == key
    net.load_state_dict(torch.nn.Linear(2, 2).state_dict())  # copies in place: same storage
    assert weights_key(net) != key
    key = weights_key(net)
    torch.nn.Module.to(net, dtype=torch.float64)
    assert weights_key(net) != key
    # modules sharing one set of weights (so storage and versions agree) and, once collected,
    # each other's id(): only the per-object number tells them apart
    keys, reused = {}, 0
    for _ in range(20):
        shell = torch.nn.Linear(2, 2)
        shell.weight, shell.bias = net.weight, net.bias
        key = weights_key(shell)
        reused += id(shell) in keys
        assert key not in keys.values()
        keys[id(shell)] = key
        del shell
        gc.collect()
    assert reused  # CPython hands a freed object's address to the next one of its size
