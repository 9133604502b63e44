"""The authors' YAML config -> constructor arguments of scadm's networks and schedule.

Only the keys that define the networks and the schedule are read; the `target:` strings are
checked, never imported; settings scadm does not know are named in a one-line ScadmWarning.
`scadm.convert` builds the pipeline from these arguments and the authors' checkpoints.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import yaml

from .errors import InputError, ScadmWarning

_TARGETS = {
    "model": "ldm.models.diffusion.ddpm.LatentDiffusion",
    "unet_config": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
    "cond_stage_config": "ldm.modules.diffusionmodules.styleenc.MultiScaleEffStyleEncoder",
    "first_stage_config": "ldm.models.autoencoder.VQModelInterface",
}


#: Every setting of the authors' configs (and of LDM's classes they name) that scadm knows, per
#: section: read into the networks/schedule, or known to matter only for training or logging.
#: Anything else is named in a warning: scadm cannot tell whether it changes the model.
_KNOWN = {
    "model": {
        "linear_start",
        "linear_end",
        "timesteps",
        "conditioning_key",
        "parameterization",
        "beta_schedule",
        "scale_factor",
        "scale_by_std",
        "unet_config",
        "cond_stage_config",
        "first_stage_config",
        # training / logging only
        "num_timesteps_cond",
        "log_every_t",
        "first_stage_key",
        "cond_stage_key",
        "image_size",
        "channels",
        "monitor",
        "cond_stage_trainable",
        "probability_of_discard",
        "use_ema",
        "scheduler_config",
        "ckpt_path",
        "ignore_keys",
        "load_only_unet",
        "loss_type",
        "l_simple_weight",
        "original_elbo_weight",
        "learn_logvar",
        "logvar_init",
        "attn_loss_weight",
    },
    "unet_config": {
        "in_channels",
        "out_channels",
        "model_channels",
        "channel_mult",
        "num_res_blocks",
        "attention_resolutions",
        "num_head_channels",
        "transformer_depth",
        "context_dim",
        "num_classes",
        "dropout",
        "use_mask_attn",
        "use_spatial_transformer",
        # no effect on the weights or the outputs: gradient checkpointing, fp16 training,
        # the latent size (any size works), heads (num_head_channels wins), legacy (same
        # head width when num_head_channels is set)
        "image_size",
        "use_checkpoint",
        "use_fp16",
        "num_heads",
        "num_heads_upsample",
        "legacy",
    },
    "cond_stage_config": {"num_downsample", "num_upsample", "num_feat", "num_mask_channels", "output_dim"},
    "first_stage_config": {
        "embed_dim",
        "n_embed",
        "ddconfig",
        "lossconfig",
        "ckpt_path",
        "ignore_keys",
        "monitor",
        "image_key",
        "colorize_nlabels",
        "scheduler_config",
        "lr_g_factor",
    },
    "ddconfig": {
        "double_z",
        "z_channels",
        "resolution",
        "in_channels",
        "out_ch",
        "ch",
        "ch_mult",
        "num_res_blocks",
        "attn_resolutions",
        "dropout",
    },
}


def unknown_settings(sections: dict[str, dict]) -> list[str]:
    """'section.key' for every setting of `sections` that scadm does not know (see _KNOWN)."""
    return [f"{name}.{key}" for name, params in sections.items() for key in params if key not in _KNOWN[name]]


def _section(node: dict, name: str, path: Path) -> dict:
    if not isinstance(node, dict) or name not in node:
        raise InputError(f"{path}: no '{name}' section; is this the authors' SCA-DM config?")
    section = node[name]
    target = section.get("target") if isinstance(section, dict) else None
    if target != _TARGETS[name]:
        raise InputError(f"{path}: '{name}' targets {target!r}, expected {_TARGETS[name]!r}")
    return section.get("params", {}) or {}


def read_authors_config(path: str | Path) -> dict:
    """The authors' YAML -> constructor arguments of scadm's models and schedule."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable YAML file ({type(err).__name__})") from None
    model = _section(raw, "model", path)
    unet = _section(model, "unet_config", path)
    style = _section(model, "cond_stage_config", path)
    first = _section(model, "first_stage_config", path)

    if model.get("parameterization", "eps") != "eps" or model.get("beta_schedule", "linear") != "linear":
        raise InputError(f"{path}: only eps-prediction with LDM's 'linear' schedule is supported")
    if model.get("conditioning_key") != "crossattn" or not unet.get("use_spatial_transformer"):
        raise InputError(f"{path}: expected conditioning_key 'crossattn' with spatial transformers")
    if unet.get("num_head_channels", -1) in (-1, None):
        raise InputError(f"{path}: unet_config needs num_head_channels (num_heads alone is not supported)")
    if model.get("scale_by_std", False):
        raise InputError(f"{path}: scale_by_std is not supported; put the learned scale_factor in the config")
    if unet.get("num_classes") != style.get("num_mask_channels"):
        raise InputError(
            f"{path}: unet_config num_classes ({unet.get('num_classes')}) and cond_stage_config "
            f"num_mask_channels ({style.get('num_mask_channels')}) must be the same class count"
        )
    unknown = unknown_settings(
        {
            "model": model,
            "unet_config": unet,
            "cond_stage_config": style,
            "first_stage_config": first,
            "ddconfig": first.get("ddconfig") or {},
        }
    )
    if unknown:
        warnings.warn(
            ScadmWarning(
                f"{path}: unknown setting(s) {', '.join(unknown)} ignored; scadm does "
                "not implement them, check the converted model"
            ),
            stacklevel=2,
        )

    try:
        return _model_arguments(model, unet, style, first, path)
    except KeyError as err:
        raise InputError(f"{path}: missing setting {err} in the authors' config") from None


def _model_arguments(model: dict, unet: dict, style: dict, first: dict, path: Path) -> dict:
    ddconfig = first["ddconfig"]
    if ddconfig.get("attn_resolutions") or ddconfig.get("double_z"):
        raise InputError(f"{path}: first stage is not an LDM VQ autoencoder (attn_resolutions/double_z)")
    if ddconfig["z_channels"] != first["embed_dim"]:
        raise InputError(f"{path}: z_channels != embed_dim is not supported")
    ch = ddconfig["ch"]
    return {
        "unet": dict(
            in_channels=unet["in_channels"],
            out_channels=unet["out_channels"],
            model_channels=unet["model_channels"],
            channel_mult=tuple(unet["channel_mult"]),
            num_res_blocks=unet["num_res_blocks"],
            attention_resolutions=tuple(unet["attention_resolutions"]),
            num_head_channels=unet["num_head_channels"],
            transformer_depth=unet.get("transformer_depth", 1),
            context_dim=unet["context_dim"],
            num_classes=unet["num_classes"],
            dropout=unet.get("dropout", 0.0),
            mask_attention=bool(unet.get("use_mask_attn", False)),
        ),
        "style_encoder": dict(
            num_classes=style["num_mask_channels"],
            num_downsample=style["num_downsample"],
            num_upsample=style["num_upsample"],
            num_feat=style["num_feat"],
            style_dim=style["output_dim"],
        ),
        "vqvae": dict(
            in_channels=ddconfig["in_channels"],
            out_channels=ddconfig["out_ch"],
            block_out_channels=tuple(ch * m for m in ddconfig["ch_mult"]),
            layers_per_block=ddconfig["num_res_blocks"],
            latent_channels=ddconfig["z_channels"],
            vq_embed_dim=first["embed_dim"],
            num_vq_embeddings=first["n_embed"],
            sample_size=ddconfig["resolution"],
            scaling_factor=float(model.get("scale_factor", 1.0)),
        ),
        "schedule": dict(
            num_train_timesteps=model.get("timesteps", 1000),
            linear_start=model.get("linear_start", 1e-4),
            linear_end=model.get("linear_end", 2e-2),
        ),
        "image_size": ddconfig["resolution"],
    }
