"""Small random-weight models and faces for fast tests."""

from __future__ import annotations

import torch

from scadm.data.synthetic import render_face
from scadm.labels import CELEBAMASK_HQ
from scadm.models.autoencoder import vq_f4
from scadm.models.style_encoder import StyleEncoder
from scadm.models.unet import SCADMUNet
from scadm.pipeline import SCADMPipeline
from scadm.schedule import NoiseSchedule


def tiny_pipeline(seed: int = 0, image_size: int = 64) -> SCADMPipeline:
    """A 19-class pipeline with the face model's structure, sampling in well under a second."""
    torch.manual_seed(seed)
    style_encoder = StyleEncoder(num_downsample=4, num_upsample=3, num_feat=1, style_dim=16)
    unet = SCADMUNet(
        model_channels=32, channel_mult=(1, 2), attention_resolutions=(1, 2), num_head_channels=16, context_dim=3 * 16
    )
    vqvae = vq_f4(block_out_channels=(32, 32, 32), num_vq_embeddings=256, sample_size=image_size)
    with torch.no_grad():  # the UNet's zero-initialised output layers would make eps = 0 everywhere
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return SCADMPipeline(
        unet, style_encoder, vqvae, NoiseSchedule(), CELEBAMASK_HQ, image_size=image_size, unconditional="blank"
    )


def face(seed: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A procedural face as (image (3,H,W) in [-1,1], labels (H,W))."""
    f = render_face(seed, size)
    return torch.from_numpy(f.image).permute(2, 0, 1).float() / 127.5 - 1, torch.from_numpy(f.labels)
