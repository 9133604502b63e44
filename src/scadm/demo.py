"""`scadm demo`: every edit mode end to end on a tiny, randomly initialised pipeline.

Until scadm ships a trained demo model this shows the machinery (mask + style codes -> sampler ->
decoder -> labelled figure) on drawn face masks; the faces it renders are not meaningful.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .editing import edit_codes
from .io import mask_to_rgb, save_grid
from .labels import CELEBAMASK_HQ
from .models.autoencoder import vq_f4
from .models.style_encoder import StyleEncoder
from .models.unet import SCADMUNet
from .pipeline import SCADMPipeline
from .schedule import NoiseSchedule

DEMO_SIZE = 64


def tiny_pipeline(seed: int = 0, image_size: int = DEMO_SIZE) -> SCADMPipeline:
    """A small random-weight pipeline with the face model's structure (19 classes, VQ-f4)."""
    torch.manual_seed(seed)
    style_encoder = StyleEncoder(num_downsample=4, num_upsample=3, num_feat=1, style_dim=16)
    unet = SCADMUNet(model_channels=32, channel_mult=(1, 2), attention_resolutions=(1, 2),
                     num_head_channels=16, context_dim=3 * 16)
    vqvae = vq_f4(block_out_channels=(32, 32, 32), num_vq_embeddings=256, sample_size=image_size)
    with torch.no_grad():  # the UNet's zero-initialised output layers would make eps = 0 everywhere
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return SCADMPipeline(unet, style_encoder, vqvae, NoiseSchedule(), CELEBAMASK_HQ,
                         image_size=image_size, unconditional="blank")


def drawn_face(size: int = DEMO_SIZE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat-coloured face and its exact label map, drawn with a little jitter per seed."""
    rng = np.random.default_rng(seed)
    names = {n: i for i, n in enumerate(CELEBAMASK_HQ.names)}
    canvas = Image.new("L", (size, size), names["bg"])
    draw = ImageDraw.Draw(canvas)
    s = size / 64
    dx, dy = rng.integers(-3, 4, 2) * s

    def box(x0, y0, x1, y1):
        return [x0 * s + dx, y0 * s + dy, x1 * s + dx, y1 * s + dy]

    draw.rectangle(box(8, 54, 56, 70), fill=names["cloth"])
    draw.rectangle(box(25, 42, 39, 56), fill=names["neck"])
    draw.ellipse(box(12, 4, 52, 40 + rng.integers(0, 10)), fill=names["hair"])
    draw.ellipse(box(13, 22, 19, 34), fill=names["l_ear"])
    draw.ellipse(box(45, 22, 51, 34), fill=names["r_ear"])
    draw.ellipse(box(17, 12, 47, 50), fill=names["skin"])
    draw.rectangle(box(22, 22, 30, 24), fill=names["l_brow"])
    draw.rectangle(box(34, 22, 42, 24), fill=names["r_brow"])
    draw.ellipse(box(22, 26, 30, 31), fill=names["l_eye"])
    draw.ellipse(box(34, 26, 42, 31), fill=names["r_eye"])
    draw.polygon([(32 * s + dx, 28 * s + dy), (28 * s + dx, 38 * s + dy), (36 * s + dx, 38 * s + dy)],
                 fill=names["nose"])
    draw.ellipse(box(25, 40, 39, 43), fill=names["u_lip"])
    draw.ellipse(box(25, 43, 39, 47), fill=names["l_lip"])
    labels = torch.from_numpy(np.array(canvas, dtype=np.int64))
    colours = torch.from_numpy(rng.uniform(-1, 1, (len(names), 3))).float()
    image = colours[labels].permute(2, 0, 1)  # (3, H, W)
    return image, labels


def run_demo(out: Path, seed: int = 0, steps: int = 20) -> Path:
    """Render every edit mode for two drawn faces and save one labelled figure."""
    pipe = tiny_pipeline(seed)
    (image_a, labels_a), (image_b, labels_b) = drawn_face(seed=seed + 1), drawn_face(seed=seed + 2)
    target = pipe.encode_style(image_a[None], labels_a[None])
    reference = pipe.encode_style(image_b[None], labels_b[None])
    parts = CELEBAMASK_HQ.parse_parts
    edits = [("reconstruct", None), ("swap", None), ("partial", parts("hair")),
             ("partial", parts("l_eye")), ("partial", parts("lips")), ("mix", parts("hair")),
             ("random", None), ("interpolate", None), ("interpolate", parts("hair"))]
    rows, labels = [[image_a, mask_to_rgb(labels_a, CELEBAMASK_HQ), image_b]], ["target | mask | reference"]
    for mode, chosen in edits:
        code, captions = edit_codes(mode, target, reference, chosen, alphas=(0, 0.5, 1))
        images = pipe(labels_a[None].expand(len(code), -1, -1), code, num_inference_steps=steps, seed=seed)
        rows.append(list(images))
        labels.append(mode + (f" {','.join(CELEBAMASK_HQ.names[p] for p in chosen)}" if chosen else ""))
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "demo.png"
    save_grid(rows, figure, row_labels=labels,
              title=f"scadm demo - random tiny model, DDIM {steps} steps, g=1.2, seed {seed}")
    return figure
