"""SCA-DM denoiser UNet: shapes, initialisation, conditioning, and the authors' parameter layout."""

import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scadm.errors import InputError
from scadm.models.unet import SCADMUNet
from scadm.nn.attention import SpatialTransformer
from scadm.nn.resblocks import ResBlock, SPADEResBlock, UpcastGroupNorm, timestep_embedding
from scadm.nn.spade import SPADEGroupNorm, resize_mask

CLASSES, CTX = 5, 16
TINY = dict(model_channels=32, channel_mult=(1, 2), num_head_channels=16, context_dim=CTX, num_classes=CLASSES)

# Golden layout, derived from the authors' UNetModel built on the meta device (label_emb dropped):
# (number of tensors, sha256 of the sorted "key:AxBxC" lines, number of parameters).
FACE_LAYOUT = (800, "0f2ef181a5ed4e4969e18df3cea956de175283d4b485e2e9290da8d52c12d3f2", 486_895_363)
NARROW_LAYOUT = (800, "15b79018afc66edbfbcaf2faaf263ce5a0bf1c871d2bc0adee0f0a483c782017", 20_723_971)
FACE_KEYS = {
    "time_embed.2.weight": (896, 896),
    "input_blocks.3.0.op.weight": (224, 224, 3, 3),
    "input_blocks.4.0.in_layers.2.weight": (448, 224, 3, 3),
    "input_blocks.4.0.out_layers.3.weight": (448, 448, 3, 3),
    "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight": (672, 1280),
    "middle_block.0.in_norm.mlp_shared.0.weight": (128, 19, 3, 3),
    "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight": (7168, 896),
    "output_blocks.0.0.in_norm.mlp_gamma.weight": (1792, 128, 3, 3),
    "output_blocks.0.0.skip_connection.weight": (896, 1792, 1, 1),
    "output_blocks.2.2.conv.weight": (896, 896, 3, 3),
    "output_blocks.11.0.out_layers.2.weight": (224, 224, 3, 3),
    "out.2.weight": (3, 224, 3, 3),
}


def layout(model):
    lines = sorted(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in model.state_dict().items())
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return len(lines), digest, sum(p.numel() for p in model.parameters())


def tiny_unet(seed=0, **overrides):
    """A tiny UNet with every parameter perturbed, so zero-initialised branches matter."""
    torch.manual_seed(seed)
    model = SCADMUNet(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(h=8, w=8, scale=4, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, h, w, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    context = torch.tanh(torch.randn(batch, CLASSES, CTX, generator=g))
    labels = torch.randint(0, CLASSES, (batch, h * scale, w * scale), generator=g)
    mask = F.one_hot(labels, CLASSES).permute(0, 3, 1, 2).float()
    return x, t, context, mask


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.mark.parametrize("h, w, scale", [(8, 8, 4), (16, 8, 4), (16, 16, 4), (8, 8, 1), (16, 8, 1)])
def test_forward_shapes_any_latent_size_and_mask_resolution(unet, h, w, scale):
    x, t, context, mask = inputs(h, w, scale)
    with torch.no_grad():
        eps = unet(x, t, context, mask)
    assert eps.shape == x.shape and eps.dtype == torch.float32
    assert torch.isfinite(eps).all() and eps.abs().max() > 0


def test_fresh_model_predicts_exactly_zero():
    """out.2 is zero-initialised like the authors', so training starts from eps = 0."""
    torch.manual_seed(0)
    x, t, context, mask = inputs()
    with torch.no_grad():
        assert torch.equal(SCADMUNet(**TINY)(x, t, context, mask), torch.zeros_like(x))


def test_prediction_depends_on_mask_context_and_timestep(unet):
    x, t, context, mask = inputs()
    with torch.no_grad():
        eps = unet(x, t, context, mask)
        assert not torch.allclose(eps, unet(x, t, context, mask.roll(1, dims=1)))
        assert not torch.allclose(eps, unet(x, t, context.roll(1, dims=1), mask))
        assert not torch.allclose(eps, unet(x, t + 1, context, mask))


def test_unconditional_zero_context_and_zero_mask_is_finite(unet):
    x, t, context, mask = inputs()
    with torch.no_grad():
        eps = unet(x, t, torch.zeros_like(context), torch.zeros_like(mask))
    assert torch.isfinite(eps).all()


def test_samples_in_a_batch_do_not_influence_each_other(unet):
    """One soft mask sends the whole batch down the exact path; results must not change."""
    x, t, context, mask = inputs()
    soft = mask.clone()
    soft[1] = soft[1] * 0.7
    with torch.no_grad():
        together = unet(x, t, context, soft)
        alone = torch.cat([unet(x[i : i + 1], t[i : i + 1], context[i : i + 1], soft[i : i + 1]) for i in range(2)])
    # float32 kernels of another batch size round differently: measured 2e-6 on |eps| ~ 1.6; a sample
    # leaking into another moves it by O(0.1)
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=0)


def test_scalar_timestep_broadcasts_over_batch(unet):
    x, _, context, mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            unet(x, torch.tensor(7), context, mask),  # the same computation
            unet(x, torch.tensor([7, 7]), context, mask),
            rtol=0,
            atol=0,
        )


def test_face_config_has_the_authors_layout_without_label_emb():
    with torch.device("meta"):
        model = SCADMUNet()
    assert layout(model) == FACE_LAYOUT
    state = model.state_dict()
    assert {k: tuple(state[k].shape) for k in FACE_KEYS} == FACE_KEYS
    assert "label_emb.weight" not in state
    kinds = [type(m) for m in model.modules()]
    assert (kinds.count(ResBlock), kinds.count(SPADEResBlock), kinds.count(SpatialTransformer)) == (8, 14, 16)


def test_narrow_config_has_the_authors_layout():
    with torch.device("meta"):
        model = SCADMUNet(model_channels=32, num_head_channels=16)
    assert layout(model) == NARROW_LAYOUT


def test_plain_cross_attention_ablation_has_the_same_parameters(unet):
    ablation = tiny_unet(mask_attention=False)
    assert layout(ablation)[:2] == layout(unet)[:2]
    x, t, context, mask = inputs()
    with torch.no_grad():
        assert torch.isfinite(ablation(x, t, context, mask)).all()


def test_save_and_load_round_trip(unet, tmp_path):
    unet.save_pretrained(tmp_path)
    loaded = SCADMUNet.from_pretrained(tmp_path).eval()
    x, t, context, mask = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, context, mask), unet(x, t, context, mask))


def test_gradient_checkpointing_keeps_gradients():
    x, t, context, mask = inputs(batch=1, scale=1)
    grads = []
    for checkpointing in (False, True):
        model = tiny_unet()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(x, t, context, mask).square().mean().backward()
        grads.append(model.input_blocks[1][0].in_layers[2].weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)  # recomputation replays the same ops


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, t, c, m: (x[..., :7], t, c, m[..., :28]), "divisible"),
        (lambda x, t, c, m: (x, t, c, m[..., ::8, ::8]), "below the latent"),
        (lambda x, t, c, m: (x, t, c[:, :3], m), "context"),
        (lambda x, t, c, m: (x, t[:1], c, m), "timesteps"),
        (lambda x, t, c, m: (x, t, c, m[:, :3]), "mask"),
    ],
)
def test_bad_inputs_raise_input_error(unet, change, message):
    with pytest.raises(InputError, match=message):
        unet(*change(*inputs()))


def _embedding64(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The sinusoidal embedding in NumPy float64 (cos then sin, zero column for odd dims)."""
    freqs = np.exp(-math.log(10_000) * np.arange(dim // 2, dtype=np.float64) / (dim // 2))
    args = t.numpy().astype(np.float64)[:, None] * freqs[None]
    out = np.concatenate([np.cos(args), np.sin(args), np.zeros((len(t), dim % 2))], axis=1)
    return torch.from_numpy(out)


def test_timestep_embedding_is_cos_then_sin_in_float32():
    emb = timestep_embedding(torch.tensor([0, 500]), 7)
    assert emb.dtype == torch.float32 and emb.shape == (2, 7)
    # args up to 500 rad in float32 (eps 6e-8): ~3e-5 error in cos/sin
    torch.testing.assert_close(emb, _embedding64(torch.tensor([0, 500]), 7).float(), atol=1e-4, rtol=0)
    assert emb[0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # bf16 models get the authors' float32 embedding, exactly
    assert torch.equal(timestep_embedding(torch.tensor([0, 500]), 7, dtype=torch.bfloat16), emb)


def test_float32_embedding_is_the_authors_float32_computation_bit_for_bit():
    """Their checkpoints' parity depends on it: float32 frequencies, float32 arguments."""
    t, half = torch.arange(0, 1000, 7), 16
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    expected = F.pad(torch.cat([torch.cos(args), torch.sin(args)], dim=-1), (0, 1))
    assert torch.equal(timestep_embedding(t, 33), expected)


def test_timestep_embedding_of_a_float64_model_is_float64():
    t = torch.arange(0, 1000, 37)
    emb = timestep_embedding(t, 33, dtype=torch.float64)
    assert emb.dtype == torch.float64
    # args up to 999 rad carry ~1e3 * 2.2e-16 = 2e-13 absolute error, and so do cos/sin; float32
    # would be off by ~6e-5
    torch.testing.assert_close(emb, _embedding64(t, 33), atol=1e-12, rtol=0)


def test_float64_unet_carries_no_float32_error():
    """A float64 UNet equals itself fed the exact float64 embedding to ~1e-12 of its output's scale
    (a float32 embedding, as before, moved it by ~1e-7)."""
    model = tiny_unet().double()
    x, t, context, mask = (v.double() if v.is_floating_point() else v for v in inputs())
    with torch.no_grad():
        eps = model(x, t, context, mask)
        exact = _embedding64(t, model.config.model_channels)
        hook = model.time_embed.register_forward_pre_hook(lambda module, args: (exact,))
        try:
            reference = model(x, t, context, mask)
        finally:
            hook.remove()
    assert eps.dtype == torch.float64
    # the embedding's ~2e-13 error passes through ~20 layers of O(1) gain: ~1e-12 of max |eps| (~1)
    torch.testing.assert_close(eps, reference, rtol=0, atol=1e-12 * reference.abs().max().item())


def test_resblock_norm_runs_in_float32_for_low_precision_inputs():
    norm = UpcastGroupNorm(32, 64)
    x = torch.randn(2, 64, 4, 4).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.group_norm(x.float(), 32, norm.weight, norm.bias).to(torch.bfloat16))


def test_spade_modulates_with_mask_resized_by_nearest():
    torch.manual_seed(0)
    spade = SPADEGroupNorm(32, CLASSES, hidden_channels=8)
    x = torch.randn(1, 32, 4, 4)
    mask = inputs(4, 4, scale=4, batch=1)[3]
    hidden = spade.mlp_shared(mask[:, :, ::4, ::4])
    expected = F.group_norm(x, 32) * (1 + spade.mlp_gamma(hidden)) + spade.mlp_beta(hidden)
    torch.testing.assert_close(spade(x, mask), expected, rtol=0, atol=1e-5)  # |out| ~ 3, float32 GroupNorm


def test_widths_that_do_not_split_into_heads_are_rejected():
    with pytest.raises(InputError, match="num_head_channels"):
        SCADMUNet(**{**TINY, "num_head_channels": 24})


def test_any_downsampling_is_the_max_over_each_block():
    mask = inputs(4, 4, scale=4, batch=2)[3]
    blocks = mask.unflatten(2, (4, 4)).unflatten(4, (4, 4))  # (B, C, 4, 4, 4, 4)
    expected = blocks.amax(dim=(3, 5))
    assert torch.equal(resize_mask(mask, (4, 4), "any"), expected)  # a max of 0s and 1s is exact
    assert torch.equal(resize_mask(mask, (4, 4), "nearest"), mask[:, :, ::4, ::4])


@pytest.mark.parametrize("rule, sees_part", [("nearest", False), ("any", True)])
def test_a_part_between_grid_points_reaches_the_model_only_with_any_downsampling(rule, sees_part):
    """A one-pixel part off the latent grid: nearest resizing drops it everywhere (the authors'
    limit at small sizes), "any" lets its style and shape in."""
    model = tiny_unet(mask_downsample=rule)
    x, t, context, mask = inputs(batch=1)
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, 13, 14] = 3  # off the every-4th-pixel grid
    mask = F.one_hot(labels, CLASSES).permute(0, 3, 1, 2).float()
    other = context.clone()
    other[:, 3] = -other[:, 3]
    with torch.no_grad():
        changed = not torch.allclose(model(x, t, context, mask), model(x, t, other, mask))
        without_part = F.one_hot(torch.zeros_like(labels), CLASSES).permute(0, 3, 1, 2).float()
        reshaped = not torch.allclose(model(x, t, context, mask), model(x, t, context, without_part))
    assert changed == sees_part and reshaped == sees_part


def test_unknown_mask_downsampling_is_rejected():
    with pytest.raises(InputError, match="mask_downsample"):
        SCADMUNet(**{**TINY, "mask_downsample": "bilinear"})


def test_any_downsampling_composes_across_grids():
    """Max-pooling composes: the latent-size "any" mask, multi-hot, gives the same result as the
    full-resolution mask, so every grid sees the same parts whichever resolution comes in."""
    model = tiny_unet(mask_downsample="any")
    x, t, context, mask = inputs(batch=1)
    with torch.no_grad():
        out = model(x, t, context, mask)
        pooled = resize_mask(mask, (8, 8), "any")
        assert (pooled.sum(1) > 1).any()  # the test needs cells with several classes
        assert torch.equal(out, model(x, t, context, pooled))  # same grid masks -> same result
