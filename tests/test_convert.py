import re

import pytest
import torch
import yaml
from authors_layout import authors_checkpoint, authors_yaml, ldm_vq_state

from scadm.authors_config import read_authors_config
from scadm.convert import convert, load_checkpoint, vq_from_ldm
from scadm.errors import CheckpointError, InputError, ScadmWarning
from scadm.models.autoencoder import vq_f4


@pytest.fixture()
def authors_files(tiny_pipe, tmp_path):
    config = tmp_path / "diffusion-sem-with_uc-mask-attn.yaml"
    config.write_text(authors_yaml(tiny_pipe))
    ckpt = tmp_path / "last.ckpt"
    torch.save(authors_checkpoint(tiny_pipe, ema_offset=0.5), ckpt)
    return config, ckpt


def test_face_config_is_read_like_the_authors_yaml(tiny_pipe, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(authors_yaml(tiny_pipe))
    cfg = read_authors_config(config)
    assert cfg["unet"]["model_channels"] == tiny_pipe.unet.config.model_channels
    assert cfg["unet"]["mask_attention"] is True
    assert cfg["style_encoder"]["num_classes"] == 19
    assert cfg["vqvae"]["block_out_channels"] == tuple(tiny_pipe.vqvae.config.block_out_channels)
    assert cfg["schedule"] == {"num_train_timesteps": 1000, "linear_start": 0.0015, "linear_end": 0.0195}


@pytest.mark.parametrize("weights", ["raw", "ema"])
def test_convert_round_trip_recovers_every_tensor(tiny_pipe, authors_files, weights):
    config, ckpt = authors_files
    pipe = convert(config, ckpt, weights=weights)
    offset = 0.5 if weights == "ema" else 0.0
    for k, v in tiny_pipe.unet.state_dict().items():
        torch.testing.assert_close(pipe.unet.state_dict()[k], v + offset, rtol=0, atol=0)
    for ours, theirs in [(pipe.style_encoder, tiny_pipe.style_encoder), (pipe.vqvae, tiny_pipe.vqvae)]:
        for k, v in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[k], v), k
    assert pipe.unconditional == "zero"  # what the authors' sampler feeds the unconditional branch


def test_converted_pipeline_renders_like_the_original(tiny_pipe, authors_files):
    config, ckpt = authors_files
    pipe = convert(config, ckpt, weights="raw")
    pipe.unconditional = tiny_pipe.unconditional
    from tiny_models import face

    image, labels = face(seed=3)
    a = tiny_pipe(labels[None], tiny_pipe.encode_style(image[None], labels[None]), num_inference_steps=3)
    b = pipe(labels[None], pipe.encode_style(image[None], labels[None]), num_inference_steps=3)
    assert torch.equal(a, b)


def test_vq_key_mapping_is_a_bijection_on_the_face_config():
    with torch.device("meta"):
        vq = vq_f4()
    assert sum(p.numel() for p in vq.parameters()) == 55_322_782  # LDM's vq-f4, as the README quotes
    ldm = ldm_vq_state(vq)
    assert len(ldm) == 205
    assert "decoder.up.0.block.2.conv1.weight" in ldm and "encoder.mid.attn_1.q.weight" in ldm
    back = vq_from_ldm(ldm, levels=3)
    assert set(back) == set(vq.state_dict())
    assert all(back[k].shape == v.shape for k, v in vq.state_dict().items())


def test_ldm_vq_training_losses_are_dropped():
    with torch.device("meta"):
        vq = vq_f4(block_out_channels=(32, 32, 32))
    ldm = ldm_vq_state(vq)
    ldm["loss.discriminator.main.0.weight"] = torch.zeros(1)
    assert not any(k.startswith("loss.") for k in vq_from_ldm(ldm, levels=3))


def test_partial_checkpoint_lists_missing_keys(tiny_pipe, authors_files, tmp_path):
    config, ckpt = authors_files
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    del state["cond_stage_model.Encoder.first_layer.0.weight"]
    state["cond_stage_model.bogus"] = torch.zeros(1)
    bad = tmp_path / "partial.ckpt"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(
        CheckpointError, match=r"style encoder.*1 missing: Encoder\.first_layer\.0\.weight.*1 unexpected: bogus"
    ):
        convert(config, bad, weights="raw")


def test_checkpoint_of_another_model_is_refused(tiny_pipe, authors_files, tmp_path):
    config, _ = authors_files
    other = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointError, match="not an SCA-DM/LDM checkpoint"):
        convert(config, other)


def test_ema_missing_is_explained(tiny_pipe, authors_files, tmp_path):
    config, ckpt = authors_files
    state = {
        k: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items() if not k.startswith("model_ema.")
    }
    raw_only = tmp_path / "raw.ckpt"
    torch.save({"state_dict": state}, raw_only)
    with pytest.raises(CheckpointError, match="--weights raw"):
        convert(config, raw_only, weights="ema")


def test_pickled_code_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, evil)
    with pytest.raises(CheckpointError, match="will not run.*exec"):
        load_checkpoint(evil)


def test_corrupt_and_missing_files(tmp_path, tiny_pipe):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        load_checkpoint(junk)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  target: something.Else\n")
    with pytest.raises(InputError, match="expected 'ldm.models.diffusion.ddpm.LatentDiffusion'"):
        read_authors_config(bad_yaml)


def test_lightning_callback_classes_in_a_checkpoint_are_stubbed_not_imported(tmp_path, monkeypatch):
    """PL 1.4 (the authors' pin) keys `callbacks` by the callback class itself."""
    import sys
    import types

    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
    sys.modules[names[-1]].ModelCheckpoint = ModelCheckpoint
    ckpt = tmp_path / "pl142.ckpt"
    torch.save(
        {
            "state_dict": {"model.diffusion_model.x": torch.ones(2)},
            "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.1)}},
        },
        ckpt,
    )
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    assert torch.equal(load_checkpoint(ckpt)["model.diffusion_model.x"], torch.ones(2))
    assert "pytorch_lightning" not in sys.modules


def test_unknown_globals_are_named_in_the_error(tmp_path):
    import argparse

    ckpt = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {}, "hparams": argparse.Namespace(lr=1.0)}, ckpt)
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        load_checkpoint(ckpt)


def _one_line_error(ckpt) -> str:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt)
    msg = str(e.value)
    assert msg.startswith(f"{ckpt}: ") and "\n" not in msg and "Re-running" not in msg
    return msg


def test_legacy_pickle_with_code_is_refused_naming_the_code(tmp_path):
    """Pre-1.6 (non-zip) files: torch cannot list their globals up front, so the refusal used to
    be the first line of torch's advice to load unsafely, cut mid-sentence."""

    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, legacy, _use_new_zipfile_serialization=False)
    assert re.search(r"refers to code scadm will not run \((builtins\.)?exec\)", _one_line_error(legacy))


def test_a_legacy_checkpoint_of_plain_tensors_still_loads(tmp_path):
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": {"a": torch.ones(2)}}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(legacy)["a"], torch.ones(2))


@pytest.mark.parametrize(
    "name, make, says",
    [
        ("cut.ckpt", lambda p, full: p.write_bytes(full[: len(full) // 2]), "truncated or corrupt"),
        ("cut_legacy.ckpt", None, "truncated or corrupt"),
        ("empty.ckpt", lambda p, full: p.write_bytes(b""), "is empty"),
        (
            "plain.ckpt",
            lambda p, full: p.write_bytes(__import__("pickle").dumps({"a": 1}, protocol=4)),
            "not a PyTorch checkpoint",
        ),
        ("cut.safetensors", None, "truncated or corrupt safetensors file"),
    ],
)
def test_damaged_checkpoints_say_what_is_wrong_in_one_line(tmp_path, name, make, says):
    path = tmp_path / name
    if name == "cut_legacy.ckpt":
        torch.save({"state_dict": {"a": torch.ones(1000)}}, path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:-2000])
    elif name == "cut.safetensors":
        from safetensors.torch import save_file

        save_file({"a": torch.ones(1000)}, path)
        path.write_bytes(path.read_bytes()[:-100])
    else:
        full = tmp_path / "full.ckpt"
        torch.save({"state_dict": {"a": torch.ones(1000)}}, full)
        make(path, full.read_bytes())
    assert says in _one_line_error(path)


def test_the_authors_configs_convert_without_warnings(tiny_pipe, authors_files):
    import warnings

    config, ckpt = authors_files
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScadmWarning)
        convert(config, ckpt, weights="raw")


def test_unknown_config_settings_are_named_in_a_warning(tiny_pipe, authors_files, tmp_path):
    config, ckpt = authors_files
    raw = yaml.safe_load(config.read_text())
    raw["model"]["params"]["unet_config"]["params"]["use_scale_shift_norm"] = True
    raw["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["tanh_out"] = True
    odd = tmp_path / "odd.yaml"
    odd.write_text(yaml.safe_dump(raw))
    with pytest.warns(
        ScadmWarning,
        match=r"odd\.yaml: unknown setting\(s\) unet_config\.use_scale_shift_norm, "
        r"ddconfig\.tanh_out ignored",
    ):
        convert(odd, ckpt, weights="raw")


def test_a_wrong_class_count_blames_the_config_setting(tiny_pipe, authors_files, tmp_path):
    config, ckpt = authors_files
    raw = yaml.safe_load(config.read_text())
    raw["model"]["params"]["unet_config"]["params"]["num_classes"] = 20
    raw["model"]["params"]["cond_stage_config"]["params"]["num_mask_channels"] = 20
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        InputError,
        match=r"wrong\.yaml: unet_config num_classes is 20 but .*last\.ckpt was "
        r"trained with 19 classes .*set num_classes: 19",
    ):
        convert(wrong, ckpt, weights="raw")
    raw["model"]["params"]["cond_stage_config"]["params"]["num_mask_channels"] = 19
    wrong.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="num_classes .20. and cond_stage_config num_mask_channels .19."):
        read_authors_config(wrong)


def test_non_finite_weights_are_refused_only_where_they_are_used(tiny_pipe, authors_files, tmp_path):
    config, ckpt = authors_files
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    key = next(k for k in state if k.startswith("model_ema.diffusion_model"))
    state[key] = torch.full_like(state[key], float("nan"))
    bad = tmp_path / "nan_ema.ckpt"
    torch.save({"state_dict": state}, bad)
    convert(config, bad, weights="raw")  # the EMA copy is not used
    with pytest.raises(CheckpointError, match=r"nan_ema\.ckpt \(the UNet\): tensor .* holds NaN or infinite"):
        convert(config, bad, weights="ema")
