"""SCADMPipeline: mask + per-class style -> face, and the folder format that stores it.

One call renders a batch: `pipe(labels, style)`. Every edit of the paper is a `StyleCode`
(reconstruction, total/partial swap, reference + random parts, noise-based generation,
interpolation) rendered on a mask, the user's edited mask included:

    pipe = SCADMPipeline.from_pretrained("model_dir")
    target = pipe.encode_style(image, labels)                   # reconstruction
    ref = pipe.encode_style(ref_image, ref_labels)
    out = pipe(labels, target.swap(ref, parts=[13]), seed=0)    # give the target the ref's hair

A folder holds `model_index.json` (the settings below) and one diffusers model folder per network
(`unet/`, `style_encoder/`, `vqvae/`: config.json + safetensors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers import VQModel

from . import __version__
from .errors import CheckpointError, InputError
from .labels import LabelSet, label_set_from_config, one_hot
from .models.autoencoder import decode, downsampling_factor
from .models.style_encoder import StyleEncoder
from .models.unet import SCADMUNet
from .sampling import SAMPLERS, guided_eps_fn, randn, sample
from .schedule import NoiseSchedule
from .style import StyleCode

#: What the unconditional branch of classifier-free guidance sees (paper Eq. 4, eps(E_s(0), 0)):
#: "zero" = zero style context and zero mask (the authors' sampler: converted checkpoints);
#: "blank" = the style of an all-zero image with the real mask (what their training dropped to).
UNCONDITIONAL_INPUTS = ("zero", "blank")
INDEX_FILE = "model_index.json"
COMPONENTS = {"unet": SCADMUNet, "style_encoder": StyleEncoder, "vqvae": VQModel}


@dataclass
class SCADMPipeline:
    unet: SCADMUNet
    style_encoder: StyleEncoder
    vqvae: VQModel
    schedule: NoiseSchedule
    label_set: LabelSet
    image_size: int = 256
    unconditional: str = "zero"

    def __post_init__(self):
        if self.unconditional not in UNCONDITIONAL_INPUTS:
            raise InputError(f"unconditional must be one of {UNCONDITIONAL_INPUTS}, got {self.unconditional!r}")
        if self.unet.config.num_classes != self.label_set.num_classes:
            raise InputError(f"the UNet has {self.unet.config.num_classes} classes but the label set "
                             f"has {self.label_set.num_classes}")
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

    def to(self, device=None, dtype=None) -> "SCADMPipeline":
        """Move every network; `dtype` (e.g. torch.bfloat16) sets the networks' precision, while
        the sampler's state and coefficients stay float32."""
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for model in self.models():
            # nn.Module's own `to`: diffusers' ModelMixin.to warns about "modules that should be kept
            # in float32" on every dtype cast, even when, as here, there are none
            torch.nn.Module.to(model, **moves)
        return self

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            getattr(self, name).save_pretrained(folder / name, safe_serialization=True)
        index = {
            "_class_name": type(self).__name__,
            "scadm_version": __version__,
            "image_size": self.image_size,
            "unconditional": self.unconditional,
            "schedule": self.schedule.to_dict(),
            "labels": {"names": list(self.label_set.names), "palette": [list(c) for c in self.label_set.palette]},
        }
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path, device=None, dtype=None) -> "SCADMPipeline":
        """Load a folder written by `save_pretrained`; networks in `dtype` (default float32)."""
        folder = Path(folder)
        index_path = folder / INDEX_FILE
        if not index_path.is_file():
            raise CheckpointError(f"{folder}: not a scadm model folder ({INDEX_FILE} missing); "
                                  "make one with `scadm convert` or `scadm train`")
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{index_path}: corrupt JSON ({err.msg}, line {err.lineno})") from None
        if index.get("_class_name") != cls.__name__:
            raise CheckpointError(f"{index_path}: describes a {index.get('_class_name')!r}, not an {cls.__name__}")
        parts = {}
        for name, model_cls in COMPONENTS.items():
            sub = folder / name
            if not (sub / "config.json").is_file():
                raise CheckpointError(f"{sub}: missing (config.json not found)")
            try:
                parts[name] = model_cls.from_pretrained(sub, local_files_only=True,
                                                        torch_dtype=dtype or torch.float32)
            except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
                first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                raise CheckpointError(f"{sub}: cannot load the {name} ({first})") from None
        labels = index["labels"]
        try:
            schedule = NoiseSchedule(**index["schedule"])
        except (TypeError, InputError) as err:
            raise CheckpointError(f"{index_path}: bad schedule ({err})") from None
        pipe = cls(**parts, schedule=schedule,
                   label_set=label_set_from_config(labels["names"], [tuple(c) for c in labels["palette"]]),
                   image_size=index["image_size"], unconditional=index["unconditional"])
        return pipe.to(device=device)

    # ------------------------------------------------------------ conditioning

    def _check_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.dim() == 2:
            labels = labels[None]
        f = downsampling_factor(self.vqvae) * 2 ** (len(self.unet.config.channel_mult) - 1)
        h, w = labels.shape[-2:]
        if labels.dim() != 3 or h % f or w % f:
            raise InputError(f"labels must be (B,H,W) with H and W multiples of {f}, got {tuple(labels.shape)}")
        return labels

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """Label map(s) (B,H,W) int -> one-hot (B,C,H,W) in the networks' dtype and device."""
        labels = self._check_labels(labels)
        return one_hot(labels.to(self.device), self.label_set.num_classes).to(self.dtype)

    @torch.no_grad()
    def encode_style(self, image: torch.Tensor, labels: torch.Tensor) -> StyleCode:
        """The per-class styles of `image` (B,3,H,W) in [-1,1] under its own label map (paper §3.2)."""
        if image.dim() == 3:
            image = image[None]
        labels = self._check_labels(labels)
        if image.shape[0] != labels.shape[0] or image.shape[-2:] != labels.shape[-2:]:
            raise InputError(f"image {tuple(image.shape)} and labels {tuple(labels.shape)} do not match")
        return StyleCode.encode(self.style_encoder, image.to(self.device, self.dtype), self.one_hot(labels))

    @torch.no_grad()
    def blank_style(self, labels: torch.Tensor) -> StyleCode:
        """The style of no reference at all: every part random (paper §4.4, noise-based generation)."""
        return StyleCode.blank_for(self.style_encoder, self.one_hot(labels))

    # ------------------------------------------------------------ rendering

    @torch.no_grad()
    def __call__(
        self,
        labels: torch.Tensor,
        style: StyleCode,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.2,
        sampler: str = "ddim",
        eta: float = 0.0,
        seed: int | Sequence[int] = 0,
        progress: bool = False,
    ) -> torch.Tensor:
        """Render faces (B,3,H,W) in [-1,1] with the shapes of `labels` and the styles of `style`.

        `guidance_scale` g: eps = eps_u + g (eps_c - eps_u); g = 1 runs no unconditional pass. The
        paper's "s = 1.2" is g = 1.2 (its Eq. 4 written literally would be g = 1 + s).
        `seed`: one int (sample i uses seed + i) or one seed per sample; an image depends only on
        its own seed, not on the batch it was rendered in.
        """
        if sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        mask = self.one_hot(labels)
        batch = mask.shape[0]
        if len(style) == 1 and batch > 1:
            style = style.repeat(batch)
        if len(style) != batch:
            raise InputError(f"{len(style)} style codes for {batch} masks")
        seeds = [seed + i for i in range(batch)] if isinstance(seed, int) else list(seed)
        if len(seeds) != batch:
            raise InputError(f"{len(seeds)} seeds for {batch} masks")
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

        style = style.to(self.device, self.dtype)
        if self.unconditional == "zero":
            uncond = (torch.zeros_like(style.tokens), torch.zeros_like(mask))
        else:
            uncond = (style.blank, mask)
        eps_fn = guided_eps_fn(self._unet_fp32_io, (style.tokens, mask), uncond, guidance_scale)

        f = downsampling_factor(self.vqvae)
        shape = (batch, self.unet.config.in_channels, mask.shape[-2] // f, mask.shape[-1] // f)
        x_T = randn(shape, generators, device=self.device, dtype=torch.float32)
        z_0 = sample(eps_fn, x_T, self.schedule, sampler=sampler, num_steps=num_inference_steps,
                     eta=eta, generators=generators, progress=progress)
        return decode(self.vqvae, z_0.to(self.dtype)).float().clamp(-1, 1)

    def _unet_fp32_io(self, x, t, context, mask):
        """The UNet in its own dtype, with the sampler's float32 state in and its eps out."""
        return self.schedule.eps_from_output(x, t, self.unet(x.to(self.dtype), t, context, mask).float())
