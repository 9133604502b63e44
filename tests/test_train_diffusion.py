import argparse
import json
from pathlib import Path

import pytest
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from scadm.cli.train import add_train_commands
from scadm.data.synthetic import SyntheticFaces
from scadm.labels import one_hot
from scadm.models.autoencoder import encode
from scadm.pipeline import SCADMPipeline
from scadm.schedule import NoiseSchedule
from scadm.train.config import build_style_encoder, build_unet, build_vqvae, load_config
from scadm.train.diffusion import UNetEMA, diffusion_loss

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    config = load_config(TINY)
    torch.manual_seed(0)
    faces = SyntheticFaces(4, config.data.size, seed=0)
    image = torch.stack([faces[i]["image"] for i in range(4)])
    mask = one_hot(torch.stack([faces[i]["labels"] for i in range(4)]), 19)
    return config, build_unet(config), build_style_encoder(config), build_vqvae(config), image, mask


def test_style_dropout_zeroes_chosen_style_images_and_never_the_mask(tiny):
    _config, unet, style_encoder, vqvae, image, mask = tiny
    seen = {}
    hooks = [
        style_encoder.register_forward_pre_hook(lambda m, args: seen.update(style=args)),
        unet.register_forward_pre_hook(lambda m, args: seen.update(unet_mask=args[3])),
    ]
    try:
        seed = 3
        diffusion_loss(
            unet,
            style_encoder,
            NoiseSchedule(),
            encode(vqvae, image),
            image,
            mask,
            torch.Generator().manual_seed(seed),
            style_dropout=0.5,
        )
    finally:
        for hook in hooks:
            hook.remove()
    # replay the generator: t (4 draws), noise, then the dropout choice
    g = torch.Generator().manual_seed(seed)
    torch.randint(0, 1000, (4,), generator=g)
    torch.randn((4, 3, 8, 8), generator=g)
    dropped = torch.rand(4, generator=g) < 0.5
    assert 0 < dropped.sum() < 4, "pick a seed that drops some rows and keeps others"
    style_image, style_mask = seen["style"]
    assert (style_image[dropped] == 0).all()
    assert torch.equal(style_image[~dropped], image[~dropped])
    assert torch.equal(style_mask, mask) and torch.equal(seen["unet_mask"], mask)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_regresses_the_schedules_target(tiny, prediction_type):
    _config, _, style_encoder, vqvae, image, mask = tiny
    schedule = NoiseSchedule(prediction_type=prediction_type)
    z0 = encode(vqvae, image).detach()
    loss = diffusion_loss(
        lambda x, *_, **__: torch.zeros_like(x),
        style_encoder,
        schedule,
        z0,
        image,
        mask,
        torch.Generator().manual_seed(5),
        style_dropout=0.5,
    )
    g = torch.Generator().manual_seed(5)  # replay: t, then the noise
    t = torch.randint(0, 1000, (4,), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    a = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    target = noise if prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * z0
    assert loss.item() == pytest.approx(target.pow(2).mean().item(), rel=1e-5)  # float32 means, other order


def test_loss_decreases_when_overfitting_one_batch(tiny):
    config, _, _, vqvae, image, mask = tiny
    torch.manual_seed(1)
    unet, style_encoder = build_unet(config), build_style_encoder(config)
    z0 = encode(vqvae, image).detach()
    opt = torch.optim.AdamW(list(unet.parameters()) + list(style_encoder.parameters()), lr=2e-3)

    def loss(seed):
        return diffusion_loss(
            unet,
            style_encoder,
            NoiseSchedule(),
            z0,
            image,
            mask,
            torch.Generator().manual_seed(seed),
            style_dropout=0.5,
        )

    with torch.no_grad():
        before = sum(loss(1000 + k).item() for k in range(4))
    for step in range(30):
        opt.zero_grad()
        loss(step % 4 + 1000).backward()
        opt.step()
    with torch.no_grad():
        after = sum(loss(1000 + k).item() for k in range(4))
    assert after < 0.7 * before


def test_ema_follows_the_authors_litema_rule():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = UNetEMA(model, decay=0.5)
    shadow = model.weight.item()
    for n, value in enumerate([3.0, -1.0, 2.0, 5.0, 4.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        decay = min(0.5, (1 + n) / (10 + n))
        shadow -= (1 - decay) * (shadow - value)
        assert ema.shadow["weight"].item() == pytest.approx(shadow, rel=1e-6)  # float32 EMA vs Python float
    assert ema.num_updates == 5
    # diffusers' EMAModel (no warm-up) lags one update: decay 0 at the first, 2/11 at the second.
    reference = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=False)
    assert (reference.get_decay(1), reference.get_decay(2)) == (0.0, pytest.approx(2 / 11, rel=1e-12))
    assert UNetEMA(model, 0.9999).current_decay() == 1 / 10  # before update 1: (1+0)/(10+0)


def test_train_vq_then_train_then_sample_from_the_saved_pipeline(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command"))
    for argv in (
        ["train-vq", str(TINY), "--out", str(tmp_path / "vq"), "--cpu", "--no-progress"],
        [
            "train",
            str(TINY),
            "--out",
            str(tmp_path / "dm"),
            "--vq",
            str(tmp_path / "vq"),
            "--max-steps",
            "4",
            "--cpu",
            "--no-progress",
        ],
    ):
        args = parser.parse_args(argv)
        assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "train-vq: step 4 (from scratch)" in out and "eval/psnr" in out
    assert f"wrote {tmp_path / 'dm' / 'pipeline'}" in out

    assert len(list((tmp_path / "vq" / "samples").glob("*.png"))) == 1
    assert len(list((tmp_path / "dm" / "samples").glob("*.png"))) == 1
    assert list((tmp_path / "dm" / "logs" / "diffusion").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "dm" / "training.json").read_text())["step"] == 4

    pipe = SCADMPipeline.from_pretrained(tmp_path / "dm" / "pipeline")
    ema = load_file(tmp_path / "dm" / "checkpoints" / "step_0000004" / "ema_unet.safetensors")
    assert all(torch.equal(v, ema[k]) for k, v in pipe.unet.state_dict().items())  # the EMA UNet
    assert pipe.unconditional == "blank" and pipe.image_size == 32
    vq_trained = load_file(tmp_path / "vq" / "vqvae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(v, vq_trained[k]) for k, v in pipe.vqvae.state_dict().items())

    labels = SyntheticFaces(1, 32, seed=9)[0]["labels"][None]
    images = pipe(labels, pipe.blank_style(labels), num_inference_steps=2)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


def test_scale_by_std_gives_unit_variance_latents_that_decode_the_same(tmp_path):
    from scadm.models.autoencoder import decode, set_scale_by_std, vq_f4

    torch.manual_seed(0)
    vq = vq_f4(block_out_channels=(8, 8, 8), norm_num_groups=8, num_vq_embeddings=32, layers_per_block=1)
    images = torch.stack([SyntheticFaces(8, 32)[i]["image"] for i in range(8)])
    with torch.no_grad():
        raw = encode(vq, images)
        decoded = decode(vq, raw, quantize=False)
        scale = set_scale_by_std(vq, images)
        scaled = encode(vq, images)
        assert scaled.std().item() == pytest.approx(1.0, rel=1e-4)  # 1 / std in float32, then a std again
        torch.testing.assert_close(scaled, raw * scale, rtol=1e-6, atol=0)  # one float32 product: 1 ulp
        # (raw * s) / s is raw to 1 ulp, then the decoder's float32 convs: |x| ~ 3, measured 5.7e-6
        torch.testing.assert_close(decode(vq, scaled, quantize=False), decoded, atol=5e-5, rtol=0)
    vq.save_pretrained(tmp_path / "vq")
    assert type(vq).from_pretrained(tmp_path / "vq").config.scaling_factor == pytest.approx(scale, rel=1e-12)  # JSON


def test_latent_cache_filled_in_chunks_holds_each_items_own_latent(tiny):
    from scadm.train.data import CachedDataset
    from scadm.train.diffusion import LatentCache

    config, _, _, vqvae, _, _ = tiny
    faces = CachedDataset(SyntheticFaces(5, config.data.size, seed=2))
    faces.fill(num_workers=0, progress=False)
    cache = LatentCache(vqvae)
    cache.FILL_CHUNK = 2  # chunks 0-1, 2-3, 4
    cache.fill(faces, torch.device("cpu"), progress=False)
    assert sorted(cache.latents) == [0, 1, 2, 3, 4]
    with torch.no_grad():
        for i in range(5):
            alone = encode(vqvae, faces[i]["image"][None]).float()
            # batched float32 encoder convs round differently: |z| < 1, measured 7e-7
            torch.testing.assert_close(cache.latents[i], alone, atol=1e-5, rtol=0)
    # a batch of cached items is served from the cache, whatever images come with it
    assert torch.equal(
        cache([3, 0], torch.zeros(2, 3, 1, 1)),  # served as stored
        torch.cat([cache.latents[3], cache.latents[0]]),
    )


def test_max_minutes_ends_at_the_first_logging_step_with_a_checkpoint(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "train-vq",
            str(TINY),
            "--out",
            str(tmp_path / "vq"),
            "--cpu",
            "--no-progress",
            "--set",
            "train_vq.max_steps=50",
            "--max-minutes",
            "1e-9",
        ]
    )
    assert args.func(args) == 0
    assert "train-vq: step 2 (from scratch)" in capsys.readouterr().out  # tiny.yaml logs every 2 steps
    assert json.loads((tmp_path / "vq" / "training.json").read_text())["step"] == 2
    assert (tmp_path / "vq" / "checkpoints" / "step_0000002").is_dir()


def test_init_starts_a_fresh_run_from_a_pipelines_weights(tmp_path):
    from scadm.errors import CheckpointError
    from scadm.train import train_diffusion, train_vq

    config = load_config(TINY)
    train_vq(config, tmp_path / "vq", max_steps=2, progress=False, cpu=True)
    first = train_diffusion(config, tmp_path / "a", vq=tmp_path / "vq", max_steps=2, progress=False, cpu=True)
    frozen = load_config(TINY, ["train.lr=1e-12", "train.weight_decay=0"])
    train_diffusion(
        frozen, tmp_path / "b", vq=tmp_path / "vq", max_steps=1, progress=False, cpu=True, init=first.export
    )
    a, b = SCADMPipeline.from_pretrained(first.export), SCADMPipeline.from_pretrained(tmp_path / "b" / "pipeline")
    for name in ("unet", "style_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        for k in sa:  # one step at lr 1e-12: still the init
            # Adam moves each weight by ~lr = 1e-12 (below float32's ulp for |w| > 1e-5); 1e-9 is a
            # thousand such steps and far below one real step
            torch.testing.assert_close(sb[k], sa[k], atol=1e-9, rtol=0, msg=f"{name}.{k}")
    wider = load_config(TINY, ["model.unet.model_channels=64"])
    with pytest.raises(CheckpointError, match="--init .* unet does not match"):
        train_diffusion(
            wider, tmp_path / "c", vq=tmp_path / "vq", max_steps=1, progress=False, cpu=True, init=first.export
        )
    from scadm.relabel import left_right_permutation, relabel_pipeline

    relabel_pipeline(a, left_right_permutation(a.label_set)).save_pretrained(tmp_path / "relabelled")
    with pytest.raises(CheckpointError, match="class_order"):  # the weights alone would mix up l/r
        train_diffusion(
            config,
            tmp_path / "d",
            vq=tmp_path / "vq",
            max_steps=1,
            progress=False,
            cpu=True,
            init=tmp_path / "relabelled",
        )


def test_vq_init_fine_tunes_a_first_stage_and_refuses_another_shape(tmp_path, capsys):
    from scadm.errors import CheckpointError
    from scadm.train import train_vq

    config = load_config(TINY)
    first = train_vq(config, tmp_path / "vq", max_steps=2, progress=False, cpu=True)
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command"))
    argv = ["train-vq", str(TINY), "--out", str(tmp_path / "b"), "--cpu", "--no-progress", "--max-steps", "1"]
    args = parser.parse_args([*argv, "--init", str(first.out), "--set", "train_vq.lr=1e-12"])
    args.overrides.append("train_vq.weight_decay=0")
    assert args.func(args) == 0
    assert f"fine-tuned from {first.out}" in capsys.readouterr().out
    a, b = (
        load_file(first.export / "diffusion_pytorch_model.safetensors"),
        load_file(tmp_path / "b" / "vqvae" / "diffusion_pytorch_model.safetensors"),
    )
    for k in a:  # one step at lr 1e-12 (see the UNet test above): still the init, codebook included
        torch.testing.assert_close(b[k], a[k], atol=1e-9, rtol=0, msg=k)
    wider = load_config(TINY, ["model.vqvae.num_vq_embeddings=64"])
    with pytest.raises(CheckpointError, match="--init .* first stage does not match model.vqvae"):
        train_vq(wider, tmp_path / "c", max_steps=1, progress=False, cpu=True, init=first.out)
