import dataclasses
import json

import numpy as np
import pytest
import torch
from tiny_models import face, tiny_pipeline

from scadm.errors import CheckpointError, InputError, RenderError
from scadm.io import to_uint8
from scadm.pipeline import SCADMPipeline
from scadm.schedule import NoiseSchedule
from scadm.settings import RenderSettings


@pytest.fixture(scope="module")
def faces():
    return [face(seed=s) for s in (1, 2)]


def test_same_seed_same_image_regardless_of_batch(tiny_pipe, faces):
    (image, labels), (_, labels_b) = faces
    style = tiny_pipe.encode_style(image[None], labels[None])
    alone = tiny_pipe(labels[None], style, num_inference_steps=4, seed=7)
    batch = tiny_pipe(torch.stack([labels_b, labels]), style.repeat(2), num_inference_steps=4, seed=[3, 7])
    # batched float32 kernels round differently: images in [-1, 1], measured 9e-6 after 4 steps
    torch.testing.assert_close(alone[0], batch[1], atol=1e-4, rtol=0)
    other = tiny_pipe(labels[None], style, num_inference_steps=4, seed=8)
    assert (other - alone).abs().max() > 1e-3


def test_a_render_that_overflows_is_refused_not_clamped_to_a_flat_image(tiny_pipe, faces):
    """Finite weights can still overflow (here a decoder whose weights are all 3e38; bf16 or an extreme
    guidance in practice): clamping inf to [-1, 1] would return a flat image that looks like a result."""
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    weight = tiny_pipe.vqvae.decoder.conv_out.weight
    saved = weight.clone()
    try:
        with torch.no_grad():
            weight.fill_(3e38)
        with pytest.raises(RenderError, match=r"NaN or infinite values in sample 0 \(seed 3\), sample 1 \(seed 4\)"):
            tiny_pipe(labels.expand(2, -1, -1), style, num_inference_steps=2, seed=[3, 4])
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_render_check_flags_exactly_the_samples_with_non_finite_pixels():
    """The per-sample sum is a fast screen; a huge but finite sample (its sum overflows) passes."""
    from scadm.pipeline import check_rendered

    images = torch.randn(6, 3, 8, 8)
    images[1, 2, 3, 4] = float("nan")
    images[2, 0, 0, 0], images[2, 0, 0, 1] = float("inf"), float("-inf")
    images[4] = 3e38
    reference = [i for i in range(6) if not torch.isfinite(images[i]).all()]
    assert reference == [1, 2]
    with pytest.raises(RenderError, match=r"in sample 1 \(seed 11\), sample 2 \(seed 12\), refused"):
        check_rendered(images, list(range(10, 16)))
    check_rendered(images[[0, 3, 4, 5]], [0, 1, 2, 3])


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++", "unipc"])
def test_every_sampler_renders_images_in_range(tiny_pipe, faces, sampler):
    image, labels = faces[0]
    out = tiny_pipe(
        labels[None], tiny_pipe.encode_style(image[None], labels[None]), num_inference_steps=3, sampler=sampler, eta=1.0
    )
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1 and torch.isfinite(out).all()


def test_guidance_one_skips_the_unconditional_pass(tiny_pipe, faces):
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    batches = []
    hook = tiny_pipe.unet.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        tiny_pipe(labels[None], style, num_inference_steps=2, guidance_scale=1.0)
        tiny_pipe(labels[None], style, num_inference_steps=2, guidance_scale=1.2)
    finally:
        hook.remove()
    assert batches == [1, 1, 2, 2]


def test_unconditional_inputs_differ_between_modes(tiny_pipe, faces):
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    blank = tiny_pipe(labels[None], style, num_inference_steps=2, guidance_scale=3.0)
    tiny_pipe.unconditional = "zero"
    try:
        zero = tiny_pipe(labels[None], style, num_inference_steps=2, guidance_scale=3.0)
    finally:
        tiny_pipe.unconditional = "blank"
    assert (blank - zero).abs().max() > 1e-4


def test_save_and_load_round_trip(tiny_pipe, faces, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model/unet/diffusion_pytorch_model.safetensors").is_file()
    loaded = SCADMPipeline.from_pretrained(tmp_path / "model")
    for name in ("unet", "style_encoder", "vqvae"):
        saved, back = getattr(tiny_pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved), name
    image, labels = faces[0]
    a = tiny_pipe(labels[None], tiny_pipe.encode_style(image[None], labels[None]), num_inference_steps=3)
    b = loaded(labels[None], loaded.encode_style(image[None], labels[None]), num_inference_steps=3)
    # Same weights, but the loaded ones live at other memory alignments (views into the safetensors
    # buffer), where oneDNN's float32 kernels may take other vector paths: images in [-1, 1] measured
    # up to 3e-6 apart. A lost setting or tensor moves them by O(0.1).
    torch.testing.assert_close(a, b, rtol=0, atol=5e-5)
    assert loaded.unconditional == tiny_pipe.unconditional
    assert loaded.label_set == tiny_pipe.label_set


def test_v_prediction_pipeline_steps_with_the_eps_its_v_implies(tiny_pipe, faces, tmp_path, monkeypatch):
    """A UNet that outputs the exact v of a one-point data distribution must lead DDIM to that point.
    For a point mass DDIM keeps the eps of its first step (t = 901 of 10 steps), so the result is
    sqrt(abar_0) z* + sqrt(1 - abar_0) eps_901(x_T)."""
    v_pipe = dataclasses.replace(tiny_pipe, schedule=NoiseSchedule(prediction_type="v_prediction"))
    v_pipe.save_pretrained(tmp_path / "v")
    assert SCADMPipeline.from_pretrained(tmp_path / "v").schedule == v_pipe.schedule
    image, labels = faces[0]
    z_star = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    abar = v_pipe.schedule.alphas_cumprod

    def exact_v(x, t, context=None, mask=None, condition=None):
        a = abar[t].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * z_star) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * z_star

    monkeypatch.setattr(v_pipe.unet, "forward", exact_v)
    monkeypatch.setattr("scadm.pipeline.decode", lambda vqvae, z: z)  # look at the latent itself
    z_0 = v_pipe(
        labels[None], v_pipe.encode_style(image[None], labels[None]), num_inference_steps=10, guidance_scale=1.5, seed=3
    )
    x_T = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(3))
    eps = (x_T - abar[901].sqrt() * z_star) / (1 - abar[901]).sqrt()
    # float32 sampler over 10 steps, |z| < 1: measured 1.2e-7
    torch.testing.assert_close(z_0, abar[0].sqrt() * z_star + (1 - abar[0]).sqrt() * eps, rtol=0, atol=1e-5)


def test_bf16_runs_and_stays_close(tiny_pipe, faces, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    half = SCADMPipeline.from_pretrained(tmp_path / "model", dtype=torch.bfloat16)
    image, labels = faces[0]
    out = half(labels[None], half.encode_style(image[None], labels[None]), num_inference_steps=3)
    ref = tiny_pipe(labels[None], tiny_pipe.encode_style(image[None], labels[None]), num_inference_steps=3)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.1  # bf16 has 8 bits of mantissa (~4e-3 per op): close, not equal


def test_a_float64_pipeline_samples_in_float64_from_the_float32_seeds_noise(faces):
    pipe = tiny_pipeline().to(dtype=torch.float64)
    image, labels = faces[0]
    style = pipe.encode_style(image[None], labels[None])
    states = []
    z64 = pipe(
        labels[None],
        style,
        num_inference_steps=3,
        seed=4,
        output_type="latent",
        callback_on_step_end=lambda p, step, t, d: states.append(d["latents"].dtype),
    )
    assert pipe.state_dtype == torch.float64 and states == [torch.float64] * 3 and z64.dtype == torch.float64
    x_T = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(4)).double()
    assert torch.equal(pipe(labels[None], style, num_inference_steps=3, latents=x_T, output_type="latent"), z64)
    # the same render as float32 networks give, to float32's error: ~1e-7 relative per op, grown by
    # 1 / sqrt(alpha_bar) (up to ~10 at t = 667) over 3 UNet passes, on |z| up to ~25: measured 4e-6
    pipe.to(dtype=torch.float32)
    z32 = pipe(
        labels[None], pipe.encode_style(image[None], labels[None]), num_inference_steps=3, seed=4, output_type="latent"
    )
    assert z32.dtype == torch.float32 and pipe.state_dtype == torch.float32
    torch.testing.assert_close(z64.float(), z32, rtol=0, atol=1e-4)
    assert not torch.equal(z64.float(), z32)


def test_casting_a_pipeline_is_quiet_and_casts_every_network(monkeypatch):
    from diffusers.models import modeling_utils

    warnings = []  # diffusers' ModelMixin.to warns about fp32 modules on every cast
    monkeypatch.setattr(modeling_utils.logger, "warning", lambda message, *a, **k: warnings.append(message))
    pipe = tiny_pipeline()
    pipe.to(dtype=torch.bfloat16)
    assert warnings == []
    assert {next(m.parameters()).dtype for m in pipe.models()} == {torch.bfloat16}


def test_bad_inputs_are_named(tiny_pipe, faces, tmp_path):
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    with pytest.raises(InputError, match="19"):
        tiny_pipe(torch.full((1, 64, 64), 19), style)
    with pytest.raises(InputError, match="multiples of"):
        tiny_pipe(labels[None, :60, :60], style)
    with pytest.raises(InputError, match="do not match"):
        tiny_pipe.encode_style(image[None, :, :32, :32], labels[None])
    with pytest.raises(InputError, match="sampler"):
        tiny_pipe(labels[None], style, sampler="euler")
    with pytest.raises(InputError, match="seeds"):
        tiny_pipe(labels[None], style, seed=[1, 2])


def test_loading_something_else_fails_clearly(tmp_path, tiny_pipe):
    with pytest.raises(CheckpointError, match="not a scadm model folder"):
        SCADMPipeline.from_pretrained(tmp_path)
    tiny_pipe.save_pretrained(tmp_path / "m")
    index = tmp_path / "m/model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(CheckpointError, match="StableDiffusionPipeline"):
        SCADMPipeline.from_pretrained(tmp_path / "m")
    index.write_text("{broken")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        SCADMPipeline.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": None}, "no 'labels' entry"),
        ({"image_size": None, "unconditional": None}, "no 'image_size', 'unconditional' entry"),
        ({"schedule": None}, "no 'schedule' entry"),
        ({"labels": {"names": ["skin"]}}, "bad labels"),
        ({"labels": {"names": ["skin"], "palette": [[1, 2]]}}, "bad labels"),
        ({"labels": {"names": ["skin"], "palette": [["red", 0, 0]]}}, "bad labels"),
        ({"labels": ["skin"]}, "bad labels"),
    ],
)
def test_an_incomplete_index_names_the_file_and_entry(tmp_path, tiny_pipe, change, message):
    """A hand-edited or foreign model_index.json: one CheckpointError line, never a KeyError."""
    tiny_pipe.save_pretrained(tmp_path / "m")
    index = tmp_path / "m/model_index.json"
    content = json.loads(index.read_text()) | change
    index.write_text(json.dumps({k: v for k, v in content.items() if v is not None}))
    with pytest.raises(CheckpointError, match=f"model_index.json: {message}"):
        SCADMPipeline.from_pretrained(tmp_path / "m")


def test_an_index_that_is_not_an_object_is_refused(tmp_path, tiny_pipe):
    tiny_pipe.save_pretrained(tmp_path / "m")
    (tmp_path / "m/model_index.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="describes a None, not an SCADMPipeline"):
        SCADMPipeline.from_pretrained(tmp_path / "m")


# ---------------------------------------------------------------- settings and diffusers-style call


def test_settings_and_keywords_render_the_same(tiny_pipe, faces):
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    settings = RenderSettings(steps=3, guidance=1.5, sampler="ddim", eta=0.5, seed=4)
    a = tiny_pipe(labels[None], style, settings)
    b = tiny_pipe(labels[None], style, num_inference_steps=3, guidance_scale=1.5, eta=0.5, seed=4)
    assert torch.equal(a, b)
    c = tiny_pipe(labels[None], style, settings, seed=5)  # a keyword overrides its field
    assert (c - a).abs().max() > 1e-3


def test_latents_reproduce_the_seeds_noise_and_change_the_result(tiny_pipe, faces):
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    x_T = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(9))
    seeded = tiny_pipe(labels[None], style, num_inference_steps=3, seed=9)
    assert torch.equal(tiny_pipe(labels[None], style, num_inference_steps=3, latents=x_T), seeded)
    other = tiny_pipe(labels[None], style, num_inference_steps=3, seed=9, latents=torch.zeros_like(x_T))
    assert (other - seeded).abs().max() > 1e-3
    with pytest.raises(InputError, match="latents: expected a tensor of shape"):
        tiny_pipe(labels[None], style, latents=x_T[:, :2])
    with pytest.raises(InputError, match="latents: contains NaN"):
        tiny_pipe(labels[None], style, latents=x_T * float("nan"))


def test_output_types_are_one_render(tiny_pipe, faces, monkeypatch):
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    pt = tiny_pipe(labels[None], style, num_inference_steps=2)
    np_ = tiny_pipe(labels[None], style, num_inference_steps=2, output_type="np")
    pil = tiny_pipe(labels[None], style, num_inference_steps=2, output_type="pil")
    assert np_.shape == (1, 64, 64, 3) and np_.min() >= 0 and np_.max() <= 1
    torch.testing.assert_close(torch.from_numpy(np_), (pt.permute(0, 2, 3, 1) + 1) / 2, rtol=0, atol=0)
    assert len(pil) == 1 and pil[0].size == (64, 64) and pil[0].mode == "RGB"
    assert (np.asarray(pil[0]) == to_uint8(pt)[0]).all()  # the PNG `scadm edit` would write
    latent = tiny_pipe(labels[None], style, num_inference_steps=2, output_type="latent")
    assert latent.shape == (1, 3, 16, 16)
    # "latent" is not clamped: a decoder that passes latents through shows values beyond [-1, 1]
    monkeypatch.setattr("scadm.pipeline.sample", lambda *a, **k: torch.full((1, 3, 16, 16), 3.0))
    assert tiny_pipe(labels[None], style, output_type="latent").max() == 3.0
    with pytest.raises(InputError, match="output_type"):
        tiny_pipe(labels[None], style, output_type="jpeg")


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++", "unipc"])
def test_step_callback_sees_every_step_and_may_replace_latents(tiny_pipe, faces, sampler):
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    seen = []

    def watch(pipe, step, t, tensors):
        assert pipe is tiny_pipe
        seen.append((step, t, tensors["latents"].clone()))

    final = tiny_pipe(
        labels[None], style, num_inference_steps=3, sampler=sampler, output_type="latent", callback_on_step_end=watch
    )
    assert [s for s, _, _ in seen] == [0, 1, 2] and [t for _, t, _ in seen] == [667, 334, 1]
    assert torch.equal(seen[-1][2], final)
    zeroed = tiny_pipe(
        labels[None],
        style,
        num_inference_steps=3,
        sampler=sampler,
        output_type="latent",
        callback_on_step_end=lambda p, s, t, d: {"latents": d["latents"] * 0} if s == 2 else None,
    )
    assert torch.equal(zeroed, torch.zeros_like(final))
    with pytest.raises(InputError, match="callback_on_step_end: latents"):
        tiny_pipe(labels[None], style, num_inference_steps=2, callback_on_step_end=lambda *a: {"latents": 1})


def test_encode_style_takes_any_mask_the_encoder_takes(tiny_pipe, faces):
    image, labels = faces[0]
    one_hot = torch.nn.functional.one_hot(labels, 19).permute(2, 0, 1).float()[None]
    by_labels = tiny_pipe.encode_style(image[None], labels[None])
    assert torch.equal(tiny_pipe.encode_style(image[None], one_hot).tokens, by_labels.tokens)
    zero = tiny_pipe.encode_style(image[None], torch.zeros(1, 19, 64, 64))  # the unconditional branch's
    assert not zero.present.any()
    torch.testing.assert_close(
        zero.tokens, tiny_pipe.style_encoder(image[None], torch.zeros(1, 19, 64, 64)), rtol=0, atol=0
    )  # the same network call
    with pytest.raises(InputError, match="mask"):
        tiny_pipe.encode_style(image[None], torch.zeros(1, 18, 64, 64))


def test_explicit_settings_name_the_pipelines_dtype_and_seeds_fit_the_generator(tiny_pipe, faces):
    image, labels = faces[0]
    style = tiny_pipe.encode_style(image[None], labels[None])
    with pytest.raises(InputError, match="settings.dtype is bf16"):
        tiny_pipe(labels[None], style, RenderSettings(dtype="bf16"))
    with pytest.raises(InputError, match="seed: must be an integer in 0..2\\*\\*64-1"):
        tiny_pipe(labels[None], style, seed=2**70)
    with pytest.raises(InputError, match="seed of sample 1"):
        tiny_pipe(labels.expand(2, -1, -1), style, num_inference_steps=1, seed=2**64 - 1)
    with pytest.raises(InputError, match="guidance"):
        tiny_pipe(labels[None], style, guidance_scale=float("nan"))
