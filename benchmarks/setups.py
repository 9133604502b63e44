"""What the benchmark runs: the models (face config or a toy one, random weights), the execution
variants (the authors' reference and scadm's fast paths) and one closure per measured case.

Every variant of a case computes the same thing from the same weights and inputs; only the
execution differs. "reference" mirrors the authors' (tests/authors_execution.py: float32, full
attention matrices with their per-class masking loop, rearrange copies, the always-on checkpoint
wrapper, SPADE and the mask recomputed every step, the VQ decoder's attention unfused).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor

from scadm.labels import CELEBAMASK_HQ
from scadm.models.autoencoder import decode, encode, vq_f4
from scadm.models.cuda_graphs import CUDAGraphedUNet
from scadm.models.style_encoder import StyleEncoder
from scadm.models.unet import SCADMUNet
from scadm.pipeline import SCADMPipeline
from scadm.sampling import GUIDANCE_SCALE, guided_eps_fn, randn, sample
from scadm.schedule import NoiseSchedule
from scadm.style import StyleCode
from scadm.train.diffusion import diffusion_loss
from tests.authors_execution import authors_unet_forward

CONFIGS = {
    # the paper's face model: 486.9 M UNet parameters, 256 px, 19 classes
    "face": dict(unet={}, style={}, vq={}, image=256),
    # small enough to run every case on a CPU in seconds (the GPU script's dry run)
    "toy": dict(
        unet=dict(
            model_channels=32, channel_mult=(1, 2), attention_resolutions=(1, 2), num_head_channels=16, context_dim=48
        ),
        style=dict(num_downsample=4, num_upsample=3, num_feat=1, style_dim=16),
        vq=dict(block_out_channels=(32, 32, 32), num_vq_embeddings=256, sample_size=64),
        image=64,
    ),
}
VARIANTS = ("reference", "fp32", "bf16", "bf16+cl", "bf16+compile", "bf16+graphs")


def build_pipeline(config: str, seed: int = 0) -> SCADMPipeline:
    """Random weights; the zero-initialised layers get small random values too, so that no output
    is exactly 0 (timing on zeros can flatter a kernel)."""
    cfg = CONFIGS[config]
    torch.manual_seed(seed)
    unet, style = SCADMUNet(**cfg["unet"]), StyleEncoder(**cfg["style"])
    vqvae = vq_f4(**cfg["vq"])
    with torch.no_grad():
        for p in unet.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return SCADMPipeline(unet, style, vqvae, NoiseSchedule(), CELEBAMASK_HQ, image_size=cfg["image"])


@dataclass
class Variant:
    name: str
    pipe: SCADMPipeline
    device: torch.device

    @property
    def reference(self) -> bool:
        return self.name == "reference"

    def unet_forward(self):
        """unet(x, t, context, mask) as this variant executes it (conditioning built in the call)."""
        if self.reference:
            return lambda x, t, c, m, **_: authors_unet_forward(self.pipe.unet, x, t, c, m)
        return self.pipe.unet


def make_variants(names, pipe: SCADMPipeline, device: torch.device) -> list[Variant]:
    """One pipeline per precision, shared by the variants that use it; reference and fp32 share the
    float32 weights. Compilation and CUDA graphs wrap the UNet of their own copy."""
    pipe.to(device)
    fp32, bf16 = pipe, None
    out = []
    for name in names:
        if name == "reference":
            own = copy.copy(fp32)  # the same weights; only the VQ decoder's attention is unfused
            own.vqvae = copy.deepcopy(fp32.vqvae)
            for module in own.vqvae.modules():
                if hasattr(module, "set_processor"):
                    module.set_processor(AttnProcessor())
            out.append(Variant(name, own, device))
            continue
        if name == "fp32":
            out.append(Variant(name, fp32, device))
            continue
        if bf16 is None:
            bf16 = copy.deepcopy(pipe).to(dtype=torch.bfloat16)
        if name == "bf16":
            out.append(Variant(name, bf16, device))
            continue
        own = copy.copy(bf16)  # shares the style encoder and VQ; the UNet is wrapped or re-laid
        own.unet = copy.deepcopy(bf16.unet)
        if name == "bf16+cl":
            own.unet.to(memory_format=torch.channels_last)
            own.vqvae = copy.deepcopy(bf16.vqvae).to(memory_format=torch.channels_last)
        elif name == "bf16+compile":
            own.unet.compile()
        elif name == "bf16+graphs":
            own.enable_cuda_graphs()  # the library's (one line of InputError off CUDA)
        out.append(Variant(name, own, device))
    return out


def inputs(pipe: SCADMPipeline, batch: int, device, seed: int = 0):
    """A batch of random one-hot masks (blocky, at image resolution), images and noise."""
    g = torch.Generator().manual_seed(seed)
    size = pipe.image_size
    labels = torch.randint(0, 19, (batch, size // 16, size // 16), generator=g)
    labels = labels.repeat_interleave(16, 1).repeat_interleave(16, 2)
    image = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    return labels.to(device), image.to(device)


def _mask(labels):
    return F.one_hot(labels, 19).permute(0, 3, 1, 2).float()


def unet_step_case(v: Variant, batch: int):
    """One guided sampler step: the UNet on 2 x batch rows (unconditional: zero style, zero mask)."""
    pipe, dev = v.pipe, v.device
    labels, _ = inputs(pipe, batch, dev)
    mask = _mask(labels)
    latent = pipe.image_size // 4
    g = torch.Generator().manual_seed(1)  # every variant sees the same inputs
    context = torch.randn(batch, 19, pipe.unet.config.context_dim, generator=g).tanh().to(dev)
    contexts = torch.cat([torch.zeros_like(context), context])
    masks = torch.cat([torch.zeros_like(mask), mask])
    x = torch.randn(2 * batch, 3, latent, latent, generator=g).to(dev)
    t = torch.full((2 * batch,), 500, device=dev)
    if v.reference:
        return lambda: authors_unet_forward(pipe.unet, x, t, contexts, masks)
    condition = pipe.unet.condition(contexts, masks, (latent, latent))
    xd = x.to(pipe.dtype)
    unet = CUDAGraphedUNet(pipe.unet) if v.name == "bf16+graphs" else pipe.unet
    return lambda: unet(xd, t, condition=condition)


def style_encoder_case(v: Variant, batch: int):
    labels, image = inputs(v.pipe, batch, v.device)
    mask, image = _mask(labels).to(v.pipe.dtype), image.to(v.pipe.dtype)
    return lambda: v.pipe.style_encoder(image, mask)


def vq_decode_case(v: Variant, batch: int):
    latent = v.pipe.image_size // 4
    z = torch.randn(batch, 3, latent, latent, generator=torch.Generator().manual_seed(2)).to(v.device, v.pipe.dtype)
    if v.name == "bf16+cl":
        z = z.to(memory_format=torch.channels_last)
    return lambda: decode(v.pipe.vqvae, z)


def edit_case(v: Variant, batch: int, sampler: str, steps: int):
    """A whole guided edit: the reference's styles, sampling, decoding (what `scadm edit` runs)."""
    pipe = v.pipe
    labels, image = inputs(pipe, batch, v.device)
    if not v.reference:
        return lambda: pipe(
            labels,
            pipe.encode_style(image, labels),
            num_inference_steps=steps,
            guidance_scale=GUIDANCE_SCALE,
            sampler=sampler,
            seed=0,
        )

    def authors_edit():
        mask = _mask(labels)
        style = StyleCode.encode(pipe.style_encoder, image, mask)
        eps_fn = guided_eps_fn(
            v.unet_forward(),
            (style.tokens, mask),
            (torch.zeros_like(style.tokens), torch.zeros_like(mask)),
            GUIDANCE_SCALE,
        )
        latent = pipe.image_size // 4
        generators = [torch.Generator().manual_seed(i) for i in range(batch)]  # the pipeline's seed=0
        x_T = randn((batch, 3, latent, latent), generators, v.device)
        z0 = sample(eps_fn, x_T, pipe.schedule, sampler=sampler, num_steps=steps, generators=generators)
        return decode(pipe.vqvae, z0).clamp(-1, 1)

    return authors_edit


class TrainState:
    """The float32 master weights and one AdamW shared by every variant's training step (its
    `fused`/`foreach` flags are read at each step, so one set of moments serves all: the face
    config's 8 GB of weights, gradients and moments would not fit twice on a small machine)."""

    def __init__(self, pipe: SCADMPipeline, device):
        # the float32 pipeline's own networks (inference cases are done by then): no third copy
        self.unet = pipe.unet.train().requires_grad_(True)  # float32, on the device already
        self.style = pipe.style_encoder.train().requires_grad_(True)
        self.vqvae, self.schedule, self.device = pipe.vqvae, pipe.schedule, device
        self.image_size = pipe.image_size
        self.optimizer = torch.optim.AdamW([*self.unet.parameters(), *self.style.parameters()], lr=1e-6)


def train_case(v: Variant, state: TrainState, batch: int):
    """One optimiser step of Eq. 2 on `batch` images: VQ encode (no grad), style encoder, UNet,
    backward, AdamW. Reference: float32, the authors' UNet execution, AdamW's per-tensor loop.
    Fast: bf16 autocast over float32 master weights (accelerate's mixed_precision="bf16"), fused
    AdamW; "+compile" compiles the UNet (one graph: the training forward says the mask is one-hot)."""
    labels, image = inputs(v.pipe, batch, v.device)
    mask = _mask(labels)
    g = torch.Generator().manual_seed(0)
    unet = state.unet
    if v.reference:
        unet_fn = lambda x, t, c, m, **_: authors_unet_forward(unet, x, t, c, m)  # noqa: E731
    elif v.name == "bf16+compile":
        unet_fn = torch.compile(unet)
    else:
        unet_fn = unet
    autocast = torch.autocast(v.device.type, dtype=torch.bfloat16, enabled=v.name.startswith("bf16"))

    def step():
        for group in state.optimizer.param_groups:
            group["fused"], group["foreach"] = not v.reference, False
        with torch.no_grad():
            z0 = encode(v.pipe.vqvae, image.to(v.pipe.dtype)).float()
        with autocast:
            loss = diffusion_loss(unet_fn, state.style, state.schedule, z0, image, mask, g, 0.5)
        loss.backward()
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        return loss

    return step
