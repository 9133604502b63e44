"""One-way import of the authors' checkpoints into a scadm pipeline folder.

Reads the authors' YAML config as they ship it (only the keys that define the networks and the
schedule; their `target:` strings are checked, never imported) and their Lightning checkpoint
(`model.diffusion_model.*`, `model_ema.*`, `cond_stage_model.*`, `first_stage_model.*`), and/or
CompVis's vq-f4 `model.ckpt`. Nothing pickled is executed: checkpoints are read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

from .errors import CheckpointError, InputError
from .models.autoencoder import vq_f4
from .models.style_encoder import StyleEncoder
from .models.unet import SCADMUNet
from .schedule import NoiseSchedule

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
STYLE_PREFIX = "cond_stage_model."
VQ_PREFIX = "first_stage_model."
#: in every authors' checkpoint but never used by their forward pass
DEAD_UNET_KEYS = ("label_emb.weight",)

_TARGETS = {
    "model": "ldm.models.diffusion.ddpm.LatentDiffusion",
    "unet_config": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
    "cond_stage_config": "ldm.modules.diffusionmodules.styleenc.MultiScaleEffStyleEncoder",
    "first_stage_config": "ldm.models.autoencoder.VQModelInterface",
}


# ---------------------------------------------------------------- the authors' YAML


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


# ---------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A Lightning/LDM `.ckpt` or a `.safetensors` file -> flat state dict, no pickled code run."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        obj = _load_with_lightning_stubs(path, err)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state_dict of tensors")
    return state


#: Training-state classes that Lightning pickles into checkpoints (e.g. PL 1.4 keys `callbacks` by the
#: callback class). They are replaced by empty stand-ins: referenced, never imported or run.
STUBBABLE_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")


def _stub(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return type(name, (), {"__module__": module, "__qualname__": name})


def _load_with_lightning_stubs(path: Path, err: Exception) -> dict:
    """Retry a weights-only load with stand-ins for Lightning's own classes; refuse anything else."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        unsafe = []
    if unsafe and all(name.startswith(STUBBABLE_MODULES) for name in unsafe):
        with torch.serialization.safe_globals([_stub(name) for name in unsafe]):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as retry_err:
                err = retry_err
    if unsafe:
        raise CheckpointError(f"{path}: refers to code scadm will not run ({', '.join(unsafe[:5])}); "
                              "re-save its state_dict with torch.save or as .safetensors") from None
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise CheckpointError(f"{path}: cannot be read as a weights-only checkpoint ({first_line[:200]})") from None


def _strip(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _ema_unet(state: dict, unet_keys) -> dict[str, torch.Tensor]:
    """LitEma stores `diffusion_model.<param>` with the dots removed."""
    ema = _strip(state, EMA_PREFIX)
    return {k: ema[("diffusion_model." + k).replace(".", "")]
            for k in unet_keys if ("diffusion_model." + k).replace(".", "") in ema}


_VQ_RULES = [  # LDM taming Encoder/Decoder names -> diffusers VQModel names
    (r"^(encoder)\.down\.(\d+)\.block\.(\d+)\.", r"\1.down_blocks.\2.resnets.\3."),
    (r"^(encoder)\.down\.(\d+)\.downsample\.", r"\1.down_blocks.\2.downsamplers.0."),
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1."),
    (r"^(encoder|decoder)\.mid\.attn_1\.norm\.", r"\1.mid_block.attentions.0.group_norm."),
    (r"^(encoder|decoder)\.mid\.attn_1\.([qkv])\.", r"\1.mid_block.attentions.0.to_\2."),
    (r"^(encoder|decoder)\.mid\.attn_1\.proj_out\.", r"\1.mid_block.attentions.0.to_out.0."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
]


def vq_from_ldm(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """LDM/taming VQ keys -> diffusers VQModel keys (decoder levels reversed, 1x1 attention
    convs squeezed to linear weights); training-only `loss.*` entries are dropped."""
    out = {}
    for key, value in state.items():
        if key.startswith("loss."):
            continue
        match = re.match(r"^decoder\.up\.(\d+)\.(block|upsample)\.(\d+\.)?", key)
        if match:
            level = levels - 1 - int(match[1])
            inner = f"resnets.{match[3]}" if match[2] == "block" else "upsamplers.0."
            key = f"decoder.up_blocks.{level}.{inner}" + key[match.end():]
        for pattern, replacement in _VQ_RULES:
            key = re.sub(pattern, replacement, key)
        if ".mid_block.attentions.0.to_" in key and key.endswith("weight") and value.dim() == 4:
            value = value[:, :, 0, 0]
        out[key] = value
    return out


def _load_into(model: torch.nn.Module, state: dict, what: str, source: Path) -> None:
    """Strict load that says exactly which tensors are missing, unexpected or mis-shaped."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        def head(items):
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        parts = [f"{len(missing)} missing: {head(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {head(unexpected)}" if unexpected else "",
                 f"{len(shapes)} mis-shaped: {head(shapes)}" if shapes else ""]
        raise CheckpointError(f"{source}: {what} does not match the config; "
                              + "; ".join(p for p in parts if p))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def convert(config_path, ckpt_path=None, vq_ckpt_path=None, weights: str = "ema"):
    """Build an `SCADMPipeline` from the authors' config + checkpoint(s).

    `weights`: "ema" (the UNet EMA their FID numbers come from) or "raw" (what their demo used).
    `vq_ckpt_path`: CompVis's vq-f4 `model.ckpt`, used when given (else `first_stage_model.*`).
    """
    from .labels import CELEBAMASK_HQ, NUM_CLASSES, label_set_from_config
    from .pipeline import SCADMPipeline

    if weights not in ("ema", "raw"):
        raise InputError(f"--weights must be 'ema' or 'raw', got {weights!r}")
    if ckpt_path is None and vq_ckpt_path is None:
        raise InputError("give --ckpt (the authors' checkpoint) and/or --vq-ckpt (CompVis vq-f4)")
    cfg = read_authors_config(config_path)
    num_classes = cfg["unet"]["num_classes"]  # 19 = CelebAMask-HQ; other datasets get generic names
    unet = SCADMUNet(**cfg["unet"])
    style_encoder = StyleEncoder(**cfg["style_encoder"])
    vqvae = vq_f4(**cfg["vqvae"])

    if ckpt_path is not None:
        ckpt_path = Path(ckpt_path)
        state = load_checkpoint(ckpt_path)
        if not any(k.startswith(UNET_PREFIX) for k in state):
            raise CheckpointError(f"{ckpt_path}: no '{UNET_PREFIX}*' tensors: not an SCA-DM/LDM checkpoint")
        unet_state = _strip(state, UNET_PREFIX)
        for key in DEAD_UNET_KEYS:
            unet_state.pop(key, None)
        if weights == "ema":
            ema = _ema_unet(state, unet_state)
            if not ema:
                raise CheckpointError(f"{ckpt_path}: has no '{EMA_PREFIX}*' weights; use --weights raw")
            unet_state = {**unet_state, **ema}
            if len(ema) != len(unet_state):
                missing = sorted(set(unet_state) - set(ema))
                raise CheckpointError(f"{ckpt_path}: EMA lacks {len(missing)} UNet tensors, e.g. {missing[:3]}")
        _load_into(unet, unet_state, "the UNet", ckpt_path)
        _load_into(style_encoder, _strip(state, STYLE_PREFIX), "the style encoder", ckpt_path)
        if vq_ckpt_path is None:
            levels = len(cfg["vqvae"]["block_out_channels"])
            _load_into(vqvae, vq_from_ldm(_strip(state, VQ_PREFIX), levels), "the first stage", ckpt_path)
    if vq_ckpt_path is not None:
        vq_ckpt_path = Path(vq_ckpt_path)
        levels = len(cfg["vqvae"]["block_out_channels"])
        vq_state = load_checkpoint(vq_ckpt_path)
        if any(k.startswith(VQ_PREFIX) for k in vq_state):
            vq_state = _strip(vq_state, VQ_PREFIX)
        _load_into(vqvae, vq_from_ldm(vq_state, levels), "the first stage", vq_ckpt_path)

    return SCADMPipeline(
        unet=unet,
        style_encoder=style_encoder,
        vqvae=vqvae,
        schedule=NoiseSchedule(**cfg["schedule"]),
        label_set=CELEBAMASK_HQ if num_classes == NUM_CLASSES else
        label_set_from_config([f"class_{i}" for i in range(num_classes)]),
        image_size=cfg["image_size"],
        unconditional="zero",
    )
