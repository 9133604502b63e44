"""The first stage: CompVis LDM's VQ-f4 autoencoder, as diffusers' `VQModel`.

diffusers' VQModel reproduces LDM's VQ encoder/decoder exactly (same blocks, a mid attention
block in each, the 8192-entry codebook), so scadm uses it rather than rewriting it. Two LDM
conventions matter and are kept:
- the diffusion model sees the *pre-quantisation* latent (`encode` does not quantise);
- `decode` quantises first (LDM's default), `quantize=False` skips it.
The diffusion latent is `scaling_factor * encoder latent` (LDM's `scale_factor`): 1.0 for LDM's
vq-f4 and the authors' model; a first stage trained by scadm gets 1 / std of its latents when the
diffusion run starts (LDM's `scale_by_std`), so the noise schedule sees unit-variance latents.
"""

from __future__ import annotations

import torch
from diffusers.models import VQModel

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
    return 2 ** (len(vqvae.config["block_out_channels"]) - 1)


def encode(vqvae: VQModel, image: torch.Tensor) -> torch.Tensor:
    """Image (B,3,H,W) in [-1, 1] -> diffusion latent (B,3,H/f,W/f): the continuous, not
    quantised, encoder output (LDM) times `scaling_factor`."""
    return vqvae.encode(image).latents * vqvae.config["scaling_factor"]


def decode(vqvae: VQModel, latent: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Diffusion latent (any float dtype) -> image in [-1, 1] (unclamped), in the VQ's dtype;
    quantises first like LDM's `decode_first_stage`.

    A half-precision VQ picks its codebook entries in float32: bf16 distances choose another entry
    for many latents (a bf16 decode was ~0.11 relative error from the float32 one)."""
    h = latent / vqvae.config["scaling_factor"]
    if quantize and vqvae.dtype in (torch.float16, torch.bfloat16):
        return vqvae.decode(nearest_codes(vqvae, h.float()).to(vqvae.dtype), force_not_quantize=True).sample
    return vqvae.decode(h.to(vqvae.dtype), force_not_quantize=not quantize).sample


def nearest_codes(vqvae: VQModel, h: torch.Tensor) -> torch.Tensor:
    """Each latent pixel of `h` (B,C,h,w) replaced by its nearest codebook entry (Euclidean, as the
    VQ's own quantiser), computed in `h`'s dtype."""
    codebook = vqvae.quantize.embedding.weight.to(h.dtype)  # (K, C)
    pixels = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    codes = codebook[torch.cdist(pixels, codebook).argmin(dim=1)]
    return codes.view(h.shape[0], h.shape[2], h.shape[3], h.shape[1]).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def set_scale_by_std(vqvae: VQModel, images: torch.Tensor) -> float:
    """LDM's `scale_by_std`: scaling_factor = 1 / std of the encoder latents of `images` (each
    encoded alone, so the value does not depend on batching); returns it."""
    latents = torch.cat([vqvae.encode(image[None].to(vqvae.device, vqvae.dtype)).latents for image in images])
    scale = float(1.0 / latents.float().std())
    vqvae.register_to_config(scaling_factor=scale)
    return scale
