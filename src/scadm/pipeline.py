"""SCADMPipeline: mask + per-class style -> face.

One call renders a batch: `pipe(labels, style, settings)`. Every edit of the paper is a `StyleCode`
(reconstruction, total/partial swap, reference + random parts, noise-based generation,
interpolation) rendered on a mask, the user's edited mask included:

    pipe = SCADMPipeline.from_pretrained("model_dir")
    target = pipe.encode_style(image, labels)                   # reconstruction
    ref = pipe.encode_style(ref_image, ref_labels)
    settings = RenderSettings(seed=0)  # scadm.settings: defaults (50 DDIM steps, g = 1.2), checks
    out = pipe(labels, target.swap(ref, parts=[13]), settings)  # give the target the ref's hair

`save_pretrained` / `from_pretrained` write and read a model folder (`scadm.model_folder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.models import VQModel
from PIL import Image

from .errors import InputError, RenderError
from .inversion import InversionCache, Trajectory
from .io import to_uint8
from .labels import LabelSet, one_hot
from .model_folder import read_folder, save_folder
from .models.autoencoder import decode, downsampling_factor
from .models.cuda_graphs import CUDAGraphedUNet, check_cuda
from .models.style_encoder import StyleEncoder
from .models.unet import SCADMUNet
from .regions import Preserve, invert_target, preserving
from .sampling import OnStep, Progress, guided_eps_fn, randn, sample
from .schedule import NoiseSchedule
from .settings import RenderSettings, check_seed, dtype_name
from .style import StyleCode

#: What the unconditional branch of classifier-free guidance sees (paper Eq. 4, eps(E_s(0), 0)):
#: "zero" = zero style context and zero mask (the authors' sampler: converted checkpoints);
#: "blank" = the style of an all-zero image with the real mask (what their training dropped to).
UNCONDITIONAL_INPUTS = ("zero", "blank")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
#: diffusers' callback_on_step_end: (pipe, step index, timestep, {"latents": x}) -> dict or None
StepCallback = Callable[[Any, int, int, dict], "dict | None"]


@dataclass
class SCADMPipeline:
    """The three networks, the noise schedule and the label set, rendered by `__call__`.

    Not a diffusers `DiffusionPipeline`, on purpose: what decides a render besides the networks
    is not a diffusers component (the float32 `NoiseSchedule` table the authors' DDIM needs to the
    bit, our own DDIM, the label set and its palette, the unconditional mode), and diffusers'
    `model_index.json` and loader would carry them only through custom code, while changing the
    format of every converted and shipped model folder. What it would give is cheap here: every
    network is a diffusers `ModelMixin` (`accelerate.cpu_offload` works on each), a folder goes to
    the Hub with `huggingface_hub.upload_folder`, and the call takes diffusers' arguments
    (`latents`, `output_type`, `callback_on_step_end`, `num_inference_steps`, `guidance_scale`).
    """

    unet: SCADMUNet
    style_encoder: StyleEncoder
    vqvae: VQModel
    schedule: NoiseSchedule
    label_set: LabelSet
    image_size: int = 256
    unconditional: str = "zero"
    #: trajectories of recently inverted targets (region-preserving edits, `invert`)
    inversions: InversionCache = field(default_factory=InversionCache, repr=False, compare=False)
    #: the UNet's sampler steps as captured CUDA graphs, when enabled (`enable_cuda_graphs`)
    _graphs: CUDAGraphedUNet | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.unconditional not in UNCONDITIONAL_INPUTS:
            raise InputError(f"unconditional must be one of {UNCONDITIONAL_INPUTS}, got {self.unconditional!r}")
        if self.unet.config.num_classes != self.label_set.num_classes:
            raise InputError(
                f"the UNet has {self.unet.config.num_classes} classes but the label set "
                f"has {self.label_set.num_classes}"
            )
        for model in self.models():
            model.eval().requires_grad_(False)

    # ------------------------------------------------------------ device, dtype, storage

    def models(self):
        return (self.unet, self.style_encoder, self.vqvae)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def state_dtype(self) -> torch.dtype:
        """The sampler's state and coefficients: float64 with float64 networks, else float32 (the
        authors' sampler, whatever precision the networks run in)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def to(self, device=None, dtype=None) -> SCADMPipeline:
        """Move every network; `dtype` (e.g. torch.bfloat16) sets the networks' precision (and
        `state_dtype` the sampler's)."""
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for model in self.models():
            # nn.Module's own `to`: diffusers' ModelMixin.to warns about "modules that should be kept
            # in float32" on every dtype cast, even when, as here, there are none
            torch.nn.Module.to(model, **moves)
        if self._graphs is not None:
            self._graphs.reset()  # captured on the old weights; the next render captures again
        return self

    def enable_cuda_graphs(self) -> None:
        """Replay every sampler step as one captured CUDA graph (`scadm.models.cuda_graphs`): no
        Python or launch per kernel. The first render of a batch size, image size and mask kind
        captures (a few steps' time); later renders of the same shapes reuse it. Results equal
        the eager path's (benchmarks/cuda_graphs.py checks it on a GPU). CUDA only."""
        check_cuda(self.device, "enable_cuda_graphs")
        self._graphs = CUDAGraphedUNet(self.unet)

    def disable_cuda_graphs(self) -> None:
        self._graphs = None

    def save_pretrained(self, folder: str | Path) -> None:
        save_folder(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device=None, dtype=None) -> SCADMPipeline:
        """Load a folder written by `save_pretrained`; networks in `dtype` (default float32)."""
        return cls(**read_folder(folder, cls.__name__, dtype)).to(device=device)

    # ------------------------------------------------------------ conditioning

    def check_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Label map(s) (H,W) / (B,H,W) as (B,H,W), sizes checked against the networks; public because
        the region-preserving edit (`scadm.regions`) checks its target before stepping the denoiser."""
        if labels.dim() == 2:
            labels = labels[None]
        f = downsampling_factor(self.vqvae) * 2 ** (len(self.unet.config.channel_mult) - 1)
        h, w = labels.shape[-2:]
        if labels.dim() != 3 or h % f or w % f:
            raise InputError(f"labels must be (B,H,W) with H and W multiples of {f}, got {tuple(labels.shape)}")
        return labels

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """Label map(s) (B,H,W) int -> one-hot (B,C,H,W) in the networks' dtype and device."""
        labels = self.check_labels(labels)
        return one_hot(labels.to(self.device), self.label_set.num_classes).to(self.dtype)

    def _style_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A label map (B,H,W) / (H,W) int, or a float mask (B,C,H,W) / (C,H,W) as the style
        encoder takes it (one-hot, soft, or all zeros like the unconditional branch's), as a float
        mask on the networks' device; shapes are the encoder's to check."""
        if mask.is_floating_point():
            mask = mask[None] if mask.dim() == 3 else mask
            if not torch.isfinite(mask).all():
                raise InputError("mask: contains NaN or infinite values")
            return mask.to(self.device, self.dtype)
        if mask.dim() == 2:
            mask = mask[None]
        return one_hot(mask.to(self.device), self.label_set.num_classes).to(self.dtype)

    @torch.no_grad()
    def encode_style(self, image: torch.Tensor, mask: torch.Tensor) -> StyleCode:
        """The per-class styles of `image` (B,3,H,W) in [-1,1] under `mask` (paper §3.2): its own
        label map (B,H,W), or any float mask (B,C,H,W) the style encoder takes."""
        if image.dim() == 3:
            image = image[None]
        mask = self._style_mask(mask)
        if image.shape[0] != mask.shape[0] or image.shape[-2:] != mask.shape[-2:]:
            raise InputError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)} do not match")
        return StyleCode.encode(self.style_encoder, image.to(self.device, self.dtype), mask)

    @torch.no_grad()
    def blank_style(self, mask: torch.Tensor) -> StyleCode:
        """The style of no reference at all: every part random (paper §4.4, noise-based generation)."""
        return StyleCode.blank_for(self.style_encoder, self._style_mask(mask))

    # ------------------------------------------------------------ rendering

    @torch.no_grad()
    def __call__(
        self,
        labels: torch.Tensor,
        style: StyleCode,
        settings: RenderSettings | None = None,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        seed: int | Sequence[int] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pt",
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        progress: Progress = False,
        preserve: Preserve | None = None,
    ):
        """Render faces with the shapes of `labels` (B,H,W) and the styles of `style`.

        `settings` (default `RenderSettings()`) says how; the diffusers-named keywords override its
        fields (`num_inference_steps`, `guidance_scale`, `sampler`, `eta`, `seed`). Explicit
        settings must name the pipeline's own dtype: a result depends on it, and casting the
        networks back and forth would lose precision for good.
        `seed`: one int (sample i uses seed + i) or one seed per sample; an image depends only on
        its own seed, not on the batch it was rendered in.
        `latents`: the initial noise x_T (B,C,h,w) instead of the seeds' (the seeds still drive the
        noise that ddpm and eta > 0 add), e.g. for exact reproduction or inversion.
        `output_type`: "pt" (B,3,H,W) float32 in [-1, 1] (scadm's range, what `encode_style`
        takes); "np" (B,H,W,3) float32 in [0, 1] and "pil" (list of RGB images, rounded as
        `scadm.io.to_uint8`) as diffusers gives them; "latent" the final latents z_0, unclamped.
        `callback_on_step_end(pipe, step, t, {"latents": x})`: called after every sampler step
        with the sampler's state (`state_dtype`); a returned dict with "latents" replaces it.
        `progress`: True for a tqdm bar, or a callback(steps_done, total).
        `preserve`: keep the target's own pixels outside the edited parts (`scadm.regions.Preserve`,
        beyond the paper): the target is DDIM-inverted (once: `self.inversions` caches it), sampling
        follows its trajectory outside the edited region plus a margin and starts inside from a mix
        of its inverted noise and the seed's (`Preserve.fresh`; `latents` replace both).
        """
        per_sample = seed is not None and not isinstance(seed, int)
        settings = self._settings(
            settings,
            steps=num_inference_steps,
            guidance=guidance_scale,
            sampler=sampler,
            eta=eta,
            seed=None if per_sample else seed,
        )
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type: must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        unknown = set(callback_on_step_end_tensor_inputs) - {"latents"}
        if unknown:
            raise InputError(f"callback_on_step_end_tensor_inputs: only 'latents' is offered, got {sorted(unknown)}")
        mask = self.one_hot(labels)
        batch = mask.shape[0]
        if len(style) == 1 and batch > 1:
            style = style.repeat(batch)
        if len(style) != batch:
            raise InputError(f"{len(style)} style codes for {batch} masks")
        seeds = [settings.seed + i for i in range(batch)] if seed is None or isinstance(seed, int) else list(seed)
        if len(seeds) != batch:
            raise InputError(f"{len(seeds)} seeds for {batch} masks")
        generators = [
            torch.Generator("cpu").manual_seed(check_seed(s, f"seed of sample {i}")) for i, s in enumerate(seeds)
        ]

        style = style.to(self.device, self.dtype)
        f = downsampling_factor(self.vqvae)
        shape = (batch, self.unet.config.in_channels, mask.shape[-2] // f, mask.shape[-1] // f)
        eps_fn = self.eps_fn(style, mask, settings.guidance)
        if latents is None:
            # drawn in float32 whatever the state's dtype: a float64 render starts from the same noise
            x_T = randn(shape, generators, device=self.device, dtype=torch.float32).to(self.state_dtype)
        else:
            x_T = self._check_latents(latents, shape, "latents")
        on_step: OnStep | None = None
        if callback_on_step_end is not None:

            def from_callback(step: int, t: int, x: torch.Tensor) -> torch.Tensor:
                returned = callback_on_step_end(self, step, t, {"latents": x}) or {}
                if "latents" not in returned:
                    return x
                return self._check_latents(returned["latents"], shape, "callback_on_step_end: latents")

            on_step = from_callback

        kept = None if preserve is None else preserving(self, labels, style, preserve, settings, progress)
        if kept is not None:
            x_T, on_step = kept.start(x_T, seeded=latents is None), kept.on_step(on_step)
        z_0 = sample(
            eps_fn,
            x_T,
            self.schedule,
            sampler=settings.sampler,
            num_steps=settings.steps,
            eta=settings.eta,
            generators=generators,
            progress=progress,
            on_step=on_step,
        )
        if output_type == "latent":
            check_rendered(z_0, seeds)
            return z_0
        images = decode(self.vqvae, z_0).float()
        check_rendered(images, seeds)
        images = images.clamp(-1, 1)
        if kept is not None:
            images = kept.blend_pixels(images)
        if output_type == "pt":
            return images
        if output_type == "np":
            return ((images + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(x) for x in to_uint8(images)]

    def eps_fn(self, style: StyleCode, mask: torch.Tensor, guidance: float):
        """The guided denoiser of `style` on one-hot `mask` (paper Eq. 4); public because the
        region-preserving edit and DDIM inversion drive it step by step themselves."""
        if self.unconditional == "zero":
            uncond = (torch.zeros_like(style.tokens), torch.zeros_like(mask))
        else:
            uncond = (style.blank, mask)
        f = downsampling_factor(self.vqvae)
        size = (mask.shape[-2] // f, mask.shape[-1] // f)
        unet = self._step_unet()

        def unet_state_io(x, t, condition):
            """The UNet in its own dtype, with the sampler's state in and eps out in the state's dtype."""
            eps = unet(x.to(self.dtype), t, condition=condition).to(x.dtype)
            return self.schedule.eps_from_output(x, t, eps)

        return guided_eps_fn(
            unet_state_io,
            (style.tokens, mask),
            uncond,
            guidance,
            prepare=lambda context, mask: self.unet.condition(context, mask, size),
        )

    def _settings(self, settings: RenderSettings | None, **overrides) -> RenderSettings:
        """`settings` (checked against the networks' dtype) or the defaults in the pipeline's
        dtype, with the keyword overrides applied."""
        if settings is None:
            own = dtype_name(self.dtype)
            settings = RenderSettings(dtype=own) if own else RenderSettings()
        elif settings.torch_dtype != self.dtype:
            raise InputError(
                f"settings.dtype is {settings.dtype} but the pipeline runs in {self.dtype}; "
                f"load it with dtype=settings.torch_dtype"
            )
        return settings.replace(**overrides)

    def _check_latents(self, latents: torch.Tensor, shape: tuple, what: str) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"{what}: expected a tensor of shape {shape}, got {got}")
        if not torch.isfinite(latents).all():
            raise InputError(f"{what}: contains NaN or infinite values")
        return latents.to(self.device, self.state_dtype)

    def _step_unet(self) -> SCADMUNet | CUDAGraphedUNet:
        """What runs a sampler step: the UNet, or its CUDA graphs (refused off CUDA)."""
        if self._graphs is None:
            return self.unet
        if self._graphs.unet is not self.unet:  # the UNet was replaced since enable_cuda_graphs
            self._graphs = CUDAGraphedUNet(self.unet)
        check_cuda(self.device, "enable_cuda_graphs")
        return self._graphs

    # ------------------------------------------------------------ region-preserving edits

    @torch.no_grad()
    def invert(
        self,
        image: torch.Tensor,
        labels: torch.Tensor,
        settings: RenderSettings | None = None,
        progress: Progress = False,
    ) -> Trajectory:
        """The DDIM trajectory of one target (1,3,H,W) under its own style and mask with the steps and
        guidance of `settings` (`scadm.regions.invert_target`), from `self.inversions` when already inverted."""
        return invert_target(self, image, labels, self._settings(settings), progress)


def check_rendered(images: torch.Tensor, seeds: Sequence[int]) -> None:
    """RenderError if any sample holds NaN/Inf (clamping would turn it into a black or flat
    image that looks like a result). Screened by each sample's sum, as `non_finite` screens
    weights: 1 ms for 8 faces of 256 px on one CPU thread (isfinite on every pixel: 18 ms)."""
    suspects = (~torch.isfinite(images.flatten(1).sum(1))).nonzero().flatten().tolist()
    bad = [i for i in suspects if not bool(torch.isfinite(images[i]).all())]
    if bad:
        which = ", ".join(f"sample {i} (seed {seeds[i]})" for i in bad[:3]) + (" ..." if len(bad) > 3 else "")
        raise RenderError(
            f"the render produced NaN or infinite values in {which}, refused rather than "
            "saved as a blank image; check the settings (e.g. an extreme guidance) or the "
            "model's weights (bf16 can overflow)"
        )
