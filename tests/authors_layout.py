"""Write a scadm pipeline's weights in the authors' layout (their YAML + Lightning checkpoint).

Test support only: the inverse of `scadm.convert`, written independently of it (diffusers
VQModel names -> LDM/taming names), so a round trip checks the key mapping both ways.
"""

from __future__ import annotations

import re

import torch
import yaml


def ldm_vq_state(vqvae) -> dict[str, torch.Tensor]:
    levels = len(vqvae.config.block_out_channels)
    out = {}
    for key, value in vqvae.state_dict().items():
        new = key
        m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.", new)
        if m:
            i = levels - 1 - int(m[1])
            inner = f"block.{m[3]}." if m[3] is not None else "upsample."
            new = f"decoder.up.{i}.{inner}" + new[m.end() :]
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = new.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        new = new.replace("mid_block.attentions.0.group_norm.", "mid.attn_1.norm.")
        new = re.sub(r"mid_block\.attentions\.0\.to_([qkv])\.", r"mid.attn_1.\1.", new)
        new = new.replace("mid_block.attentions.0.to_out.0.", "mid.attn_1.proj_out.")
        new = new.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
        if ".attn_1." in new and new.endswith("weight") and value.dim() == 2:
            value = value[:, :, None, None]
        out[new] = value.clone()
    return out


def authors_checkpoint(pipe, ema_offset: float = 2**-10, seed: int = 0) -> dict:
    """A Lightning-style checkpoint of `pipe`; the EMA UNet = raw UNet + `ema_offset` (the default
    is small: +0.5 on every weight makes the tiny UNet render NaN, which `scadm` now refuses)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    unet = pipe.unet.state_dict()
    for k, v in unet.items():
        state["model.diffusion_model." + k] = v.clone()
        state["model_ema." + ("diffusion_model." + k).replace(".", "")] = v + ema_offset
    cfg = pipe.unet.config
    state["model.diffusion_model.label_emb.weight"] = torch.randn(cfg.num_classes, 4 * cfg.model_channels, generator=g)
    state["model_ema.diffusion_modellabel_embweight"] = torch.randn(
        cfg.num_classes, 4 * cfg.model_channels, generator=g
    )
    state["model_ema.decay"] = torch.tensor(0.9999)
    state["model_ema.num_updates"] = torch.tensor(7, dtype=torch.int32)
    for k, v in pipe.style_encoder.state_dict().items():
        state["cond_stage_model." + k] = v.clone()
    for k, v in ldm_vq_state(pipe.vqvae).items():
        state["first_stage_model." + k] = v
    state["alphas_cumprod"] = pipe.schedule.alphas_cumprod.clone()
    return {"state_dict": state, "epoch": 3, "global_step": 1234}


def authors_yaml(pipe) -> str:
    u, s, v = pipe.unet.config, pipe.style_encoder.config, pipe.vqvae.config
    ch = v.block_out_channels[0]
    config = {
        "model": {
            "base_learning_rate": 2e-6,
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": pipe.schedule.linear_start,
                "linear_end": pipe.schedule.linear_end,
                "timesteps": pipe.schedule.num_train_timesteps,
                "image_size": pipe.image_size // 4,
                "channels": 3,
                "conditioning_key": "crossattn",
                "cond_stage_trainable": True,
                "probability_of_discard": 0.5,
                "cond_stage_config": {
                    "target": "ldm.modules.diffusionmodules.styleenc.MultiScaleEffStyleEncoder",
                    "params": {
                        "num_downsample": s.num_downsample,
                        "num_upsample": s.num_upsample,
                        "num_feat": s.num_feat,
                        "num_mask_channels": s.num_classes,
                        "output_dim": s.style_dim,
                    },
                },
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "image_size": pipe.image_size // 4,
                        "in_channels": u.in_channels,
                        "out_channels": u.out_channels,
                        "model_channels": u.model_channels,
                        "attention_resolutions": list(u.attention_resolutions),
                        "num_res_blocks": u.num_res_blocks,
                        "channel_mult": list(u.channel_mult),
                        "num_head_channels": u.num_head_channels,
                        "use_spatial_transformer": True,
                        "context_dim": u.context_dim,
                        "num_classes": u.num_classes,
                        "use_mask_attn": u.mask_attention,
                    },
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder.VQModelInterface",
                    "params": {
                        "embed_dim": v.vq_embed_dim,
                        "n_embed": v.num_vq_embeddings,
                        "ckpt_path": "models/vq-f4/model.ckpt",
                        "ddconfig": {
                            "double_z": False,
                            "z_channels": v.latent_channels,
                            "resolution": pipe.image_size,
                            "in_channels": v.in_channels,
                            "out_ch": v.out_channels,
                            "ch": ch,
                            "ch_mult": [c // ch for c in v.block_out_channels],
                            "num_res_blocks": v.layers_per_block,
                            "attn_resolutions": [],
                            "dropout": 0.0,
                        },
                        "lossconfig": {"target": "torch.nn.Identity"},
                    },
                },
            },
        }
    }
    return yaml.safe_dump(config, sort_keys=False)
