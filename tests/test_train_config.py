from pathlib import Path

import pytest
import yaml

from scadm.errors import InputError
from scadm.train.config import (
    build_style_encoder,
    build_unet,
    build_vqvae,
    check_resume_config,
    load_config,
    save_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path, data) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _tiny(**sections) -> dict:
    data = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return data


@pytest.mark.parametrize(
    "name",
    ["tiny.yaml", "demo-procedural-64.yaml", "paper-celebamask-hq.yaml", "realistic-64.yaml", "realistic-64-cpu.yaml"],
)
def test_shipped_configs_load_and_pass_checks(name):
    config = load_config(CONFIGS / name)
    assert config.train.style_dropout == 0.5


def test_paper_config_uses_the_authors_effective_learning_rate():
    config = load_config(CONFIGS / "paper-celebamask-hq.yaml")
    assert config.train.lr == pytest.approx(2e-6 * 8 * 6, rel=1e-12)  # base x batch x accumulation (scale_lr)
    assert (config.data.batch_size, config.train.grad_accum, config.train.ema_decay) == (8, 6, 0.9999)
    assert config.model.unet["context_dim"] == 1280 and config.train.unconditional == "zero"


def test_realistic_config_fits_together_and_ships_under_30_mb_in_fp16():
    config = load_config(CONFIGS / "realistic-64.yaml")
    unet, style, vq = build_unet(config), build_style_encoder(config), build_vqvae(config)
    assert unet.config.context_dim == style.config.num_upsample * style.config.style_dim
    assert vq.config.latent_channels == unet.config.in_channels
    parameters = sum(p.numel() for m in (unet, style, vq) for p in m.parameters())
    assert 2 * parameters <= 30e6  # issue 12: the shipped realistic model, fp16, <= 30 MB
    assert config.train.mixed_precision == config.train_vq.mixed_precision == "bf16"
    assert config.data.kind == "folder" and not config.data.flip  # cache_latents needs no flips


def test_demo_config_builds_models_that_fit_together():
    config = load_config(CONFIGS / "demo-procedural-64.yaml")
    unet, style, vq = build_unet(config), build_style_encoder(config), build_vqvae(config)
    assert unet.config.context_dim == style.config.num_upsample * style.config.style_dim
    assert vq.config.latent_channels == unet.config.in_channels
    assert config.data.size // 2 ** (len(vq.config.block_out_channels) - 1) == 16  # 16x16 latent


@pytest.mark.parametrize("section, key", [("train", "lrr"), ("data", "batchsize"), ("", "trian")])
def test_unknown_key_is_refused_naming_key_and_file(tmp_path, section, key):
    data = _tiny()
    (data[section] if section else data)[key] = 1
    with pytest.raises(InputError, match=rf"run\.yaml: unknown key '{section + '.' if section else ''}{key}'"):
        load_config(_write(tmp_path, data))


def test_unknown_model_argument_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"run\.yaml: unknown key 'model\.unet\.model_channel'"):
        load_config(_write(tmp_path, _tiny(model={"unet": {"model_channel": 32}})))


def test_key_of_the_other_data_kind_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"data\.root is only read for data\.kind 'folder'"):
        load_config(_write(tmp_path, _tiny(data={"root": "faces"})))


def test_exponent_without_dot_is_read_as_a_number(tmp_path):
    # YAML 1.1 parses 2e-6 as a string; the config must still read it as 2e-06.
    assert load_config(_write(tmp_path, _tiny(train={"lr": "2e-6"}))).train.lr == 2e-6


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("train", {"max_steps": 1.5}, r"train\.max_steps must be a int"),
        ("train", {"mixed_precision": "fp8"}, r"train\.mixed_precision must be one of"),
        ("train", {"unconditional": "none"}, r"train\.unconditional must be one of"),
        ("train", {"prediction_type": "x0"}, r"train\.prediction_type must be one of"),
        ("train", {"betas": [0.9]}, r"train\.betas must be a list of 2 numbers"),
        (
            "model",
            {"style_encoder": {"num_downsample": 3, "num_upsample": 2, "num_feat": 1, "style_dim": 9}},
            r"model\.unet\.context_dim must be num_upsample \* style_dim = 18",
        ),
        ("data", {"size": 36}, r"data\.size 36 must be a multiple of 8"),
    ],
)
def test_inconsistent_settings_are_refused(tmp_path, section, values, message):
    with pytest.raises(InputError, match=message):
        load_config(_write(tmp_path, _tiny(**{section: values})))


def test_overrides_set_nested_values_and_are_checked_like_the_file():
    config = load_config(
        CONFIGS / "demo-procedural-64.yaml", ["model.unet.mask_attention=false", "train.max_steps=7", "train.lr=1e-4"]
    )
    assert config.model.unet["mask_attention"] is False
    assert config.train.max_steps == 7 and config.train.lr == 1e-4
    assert build_unet(config).config.mask_attention is False
    with pytest.raises(InputError, match="--set train.max_step=3.*unknown key 'train.max_step'"):
        load_config(CONFIGS / "demo-procedural-64.yaml", ["train.max_step=3"])
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        load_config(CONFIGS / "demo-procedural-64.yaml", ["train.max_steps"])


@pytest.mark.parametrize("kind", ["synthetic", "folder"])
def test_a_saved_config_loads_back_unchanged(tmp_path, kind):
    raw = _tiny()
    if kind == "folder":
        raw["data"] = {"kind": "folder", "root": "faces", "flip": True, "size": 32, "batch_size": 4}
    config = load_config(_write(tmp_path, raw))
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def test_resume_refuses_a_config_that_changes_the_run_and_allows_reporting_changes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(_write(tmp_path, _tiny())), run / "config.yaml")
    diffusion, vq = ("data", "model", "train"), ("data", "model.vqvae", "train_vq")
    same_training = _tiny(train={"max_steps": 99, "checkpoint_every": 7}, data={"num_workers": 2})
    check_resume_config(load_config(_write(tmp_path, same_training)), run, diffusion)
    other = load_config(_write(tmp_path, _tiny(data={"num": 17}, train={"prediction_type": "v_prediction"})))
    with pytest.raises(InputError, match=r"data\.num: 16 -> 17, train\.prediction_type: 'epsilon' -> 'v_prediction'"):
        check_resume_config(other, run, diffusion)
    with pytest.raises(InputError, match=r"data\.num: 16 -> 17\)"):  # the first stage ignores train.*
        check_resume_config(other, run, vq)
