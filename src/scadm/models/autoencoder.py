"""The first stage: CompVis LDM's VQ-f4 autoencoder, as diffusers' `VQModel`.

diffusers' VQModel reproduces LDM's VQ encoder/decoder exactly (same blocks, a mid attention
block in each, the 8192-entry codebook), so scadm uses it rather than rewriting it. Two LDM
conventions matter and are kept:
- the diffusion model sees the *pre-quantisation* latent (`encode` does not quantise);
- `decode` quantises first (LDM's default), `quantize=False` skips it.
The latent is not rescaled (`scaling_factor` 1.0; the authors' `scale_factor` is 1.0 too).
"""

from __future__ import annotations

import torch
from diffusers import VQModel

#: LDM vq-f4: 256x256x3 image <-> 3x64x64 latent, f = 2 ** (len(block_out_channels) - 1) = 4.
VQ_F4_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(128, 256, 512),
    layers_per_block=2,
    latent_channels=3,
    vq_embed_dim=3,
    num_vq_embeddings=8192,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=1.0,
    mid_block_add_attention=True,
    lookup_from_codebook=False,
)


def vq_f4(**overrides) -> VQModel:
    """A VQ-f4 autoencoder with LDM's architecture; `overrides` shrink it for tests or demos."""
    config = {**VQ_F4_CONFIG, **overrides}
    levels = len(config["block_out_channels"])
    config["down_block_types"] = ("DownEncoderBlock2D",) * levels
    config["up_block_types"] = ("UpDecoderBlock2D",) * levels
    return VQModel(**config)


def downsampling_factor(vqvae: VQModel) -> int:
    """Image pixels per latent pixel along a side (4 for VQ-f4)."""
    return 2 ** (len(vqvae.config.block_out_channels) - 1)


def encode(vqvae: VQModel, image: torch.Tensor) -> torch.Tensor:
    """Image (B,3,H,W) in [-1, 1] -> continuous latent (B,3,H/f,W/f), not quantised (LDM)."""
    return vqvae.encode(image).latents


def decode(vqvae: VQModel, latent: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Latent -> image in [-1, 1] (unclamped); quantises first like LDM's `decode_first_stage`."""
    return vqvae.decode(latent, force_not_quantize=not quantize).sample
