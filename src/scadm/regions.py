"""Region-preserving edits (beyond the paper): which pixels an edit may change, and how a render
keeps the rest. `Preserve` asks for one; `preserving` gives `SCADMPipeline.__call__` its hooks.

An edit's region is every pixel whose class is restyled (in the target's mask or the edited one)
or whose class the user changed, grown by a margin of `margin` pixels:

* in the latent (f x f pixels per cell) every cell holding a pixel of the grown region is
  re-generated; the rest follows the target's inverted trajectory. The latent mask is binary
  per cell: a fractional mix of two noisy latents has less than unit variance, which the model
  reads as a blurrier image (Avrahami et al. 2023 blend with a binary downsampled mask too);
* in pixels the decoded edit is kept fully up to half the margin and faded linearly to the
  target's own pixels at the margin, so beyond it the result IS the target, with no seam.

Why a margin at all: the parts' borders are anti-aliased and shaded (a hair border darkens the skin
next to it), and the decoder spreads every latent cell over its neighbours, so a new style cut at
the class border would leave a fringe of the old one. The default, `image_size // 16` pixels, is
one latent cell at 64 px (4 px) and scales with the face; reports/inversion/README.md measures 0, 4 and 8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scadm.errors import InputError
from scadm.inversion import Trajectory, content_key, ddim_invert, keep_target, weights_key
from scadm.models.autoencoder import downsampling_factor, encode
from scadm.sampling import OnStep, Progress, ddim_timesteps
from scadm.settings import RenderSettings
from scadm.style import StyleCode

#: The default margin is this fraction of the image side (4 px at 64 px, 16 px at 256 px).
MARGIN_FRACTION = 1 / 16


def default_margin(image_size: int) -> int:
    return max(1, round(image_size * MARGIN_FRACTION))


def edited_classes(target: StyleCode, edited: StyleCode) -> torch.Tensor:
    """(B, C) bool: the classes whose style rows differ between the target's code and the edit's.

    "Differ" means by more than the encoder's rounding: a code encoded in another batch (or
    device) differs in the last bits, while tokens lie in [-1, 1] (tanh) and another face's row
    differs by far more than 1e-3 somewhere (3 ulp of 1.0 for bfloat16).
    """
    if edited.tokens.shape[1:] != target.tokens.shape[1:]:
        raise InputError("style: the edited code's rows do not match the target's")
    tol = max(1e-3, 3 * torch.finfo(target.tokens.dtype).eps)
    return ((edited.tokens.to(target.tokens) - target.tokens).abs() > tol).any(-1)


def edited_region(target_labels: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels of restyled `classes` (B, C) in either mask, or whose label changed."""
    if target_labels.shape[-2:] != labels.shape[-2:]:
        raise InputError(f"labels {tuple(labels.shape)} and the target's {tuple(target_labels.shape)} differ in size")
    target_labels = target_labels.to(labels.device).expand_as(labels)
    classes = classes.to(labels.device)
    restyled = [classes[b][labels[b]] | classes[b][target_labels[b]] for b in range(labels.shape[0])]
    return torch.stack(restyled) | (labels != target_labels)


def distance(region: torch.Tensor, limit: int) -> torch.Tensor:
    """(B, H, W) float: octagonal distance (alternate 4- and 8-neighbour growth; within 8 % of the
    Euclidean one) from `region` (B, H, W) bool, in pixels, capped at `limit` + 1.

    Hand-written in torch (max-pool growth) because scipy is not a core dependency.
    """
    grown = region[:, None].float()
    dist = torch.where(region, 0.0, float(limit + 1))[:, None]
    cross = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]], device=region.device)[None, None]
    for r in range(1, limit + 1):
        # odd r: a 4-neighbour step; even r: an 8-neighbour step
        new = (F.conv2d(grown, cross, padding=1) > 0).float() if r % 2 else F.max_pool2d(grown, 3, stride=1, padding=1)
        dist = torch.where((new > grown), float(r), dist)
        grown = new
    return dist[:, 0]


def check_margin(margin: int) -> int:
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        raise InputError(f"margin: expected a number of pixels >= 0, got {margin!r}")
    return margin


def latent_keep(region: torch.Tensor, margin: int, factor: int) -> torch.Tensor:
    """(B, 1, H/f, W/f) float: 1 on latent cells with no pixel within `margin` of `region`."""
    near = (distance(region, check_margin(margin)) <= margin).float()[:, None]
    return 1 - F.max_pool2d(near, factor)


def pixel_weight(region: torch.Tensor, margin: int) -> torch.Tensor:
    """(B, 1, H, W) float in [0, 1]: how much of the edit each pixel shows; 1 up to margin / 2 from
    `region`, falling linearly to 0 at `margin` (0 beyond it: the target's own pixels)."""
    d = distance(region, check_margin(margin))
    if margin == 0:
        return (d == 0).float()[:, None]
    ramp = (margin + 1) // 2
    return ((margin - d) / ramp).clamp(0, 1)[:, None]


def blend(edit: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """weight * edit + (1 - weight) * target; exactly `target` where weight is 0."""
    target = target.to(edit).expand_as(edit)
    return torch.where(weight > 0, weight * edit + (1 - weight) * target, target)


#: Share of the seed's noise in the edited region's starting noise (`Preserve.fresh`; the rest is
#: the target's inverted noise). Mean error inside the part against the true swap, 32 procedural
#: faces, demo model, DDIM 25 (paired standard errors 0.004-0.01), for fresh = 0 / 0.25 / 0.5 / 1
#: against plain SCA-DM: hair 0.138 / - / 0.135 / 0.137 vs 0.135; lips 0.123 / 0.124 / 0.126 / -
#: vs 0.129; one eye 0.120 / 0.132 / 0.143 / - vs 0.187. Half and half is the one share measured
#: that keeps every part at least level with plain (the hair), and gives each seed its own edit.
FRESH_NOISE = 0.5


@dataclass(frozen=True)
class Preserve:
    """A region-preserving edit's target: its image (1, 3, H, W) in [-1, 1] and its own mask
    (1, H, W). Outside the edited parts grown by `margin` pixels (None: `default_margin`) the
    result is this image, pixel for pixel.

    Inside, sampling starts from sqrt(1 - fresh) x the target's inverted noise + sqrt(fresh) x the
    seed's (both unit Gaussians, so the mix is one too). The inverted noise carries the target's
    layout and shading, which the true swap shares, but also its old colours: from it alone
    (fresh = 0) the hair keeps some of the old hair and every seed gives the same edit at eta 0;
    from the seed's alone (fresh = 1, as blended latent diffusion starts) the small parts lose
    their layout. `FRESH_NOISE` says what was measured.
    """

    image: torch.Tensor
    labels: torch.Tensor
    margin: int | None = None
    fresh: float = FRESH_NOISE

    def __post_init__(self):
        if self.margin is not None:
            check_margin(self.margin)
        if isinstance(self.fresh, bool) or not isinstance(self.fresh, int | float) or not 0 <= self.fresh <= 1:
            raise InputError(f"fresh: expected a share of the seed's noise in [0, 1], got {self.fresh!r}")

    def start_noise(self, inverted: torch.Tensor, seed_noise: torch.Tensor) -> torch.Tensor:
        """The edit's x_T inside the region (outside, `keep_target` puts the inverted noise back)."""
        return (1 - self.fresh) ** 0.5 * inverted.expand_as(seed_noise) + self.fresh**0.5 * seed_noise


# ---------------------------------------------------------------- how a pipeline runs one
# `pipe` below is the SCADMPipeline rendering the edit; its methods call these (it imports this module).


def _target(pipe, image: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    image = image[None] if image.dim() == 3 else image
    labels = pipe.check_labels(labels)
    if image.shape[0] != 1 or labels.shape[0] != 1 or image.shape[-2:] != labels.shape[-2:]:
        raise InputError(
            f"preserve: expected one target image (1,3,H,W) and its labels (1,H,W), "
            f"got {tuple(image.shape)} and {tuple(labels.shape)}"
        )
    return image.to(pipe.device, pipe.dtype), labels.to(pipe.device)


def invert_target(
    pipe, image: torch.Tensor, labels: torch.Tensor, settings: RenderSettings, progress: Progress
) -> Trajectory:
    """`SCADMPipeline.invert`: the target's trajectory from `pipe.inversions`, keyed by everything
    the inversion depends on, inverted (`scadm.inversion.ddim_invert`) when not there yet."""
    image, labels = _target(pipe, image, labels)
    key = content_key(
        image,
        labels,
        steps=settings.steps,
        guidance=settings.guidance,
        unconditional=pipe.unconditional,
        dtype=str(pipe.dtype),
        device=str(pipe.device),
        weights=weights_key(*pipe.models()),
        prediction=pipe.schedule.prediction_type,
    )

    def compute() -> Trajectory:
        eps_fn = pipe.eps_fn(pipe.encode_style(image, labels), pipe.one_hot(labels), settings.guidance)
        return ddim_invert(
            eps_fn,
            encode(pipe.vqvae, image).to(pipe.state_dtype),
            pipe.schedule.alphas_cumprod,
            ddim_timesteps(settings.steps, pipe.schedule.num_train_timesteps),
            progress=progress,
        )

    return pipe.inversions.get(key, compute)


@dataclass(frozen=True)
class KeptTarget:
    """What one render of a `Preserve` edit adds to a plain one: its start noise, the latent blend
    after every step (`scadm.inversion.keep_target`) and the pixel blend after decoding."""

    preserve: Preserve
    trajectory: Trajectory
    start_kept: Callable[[torch.Tensor], torch.Tensor]
    keep_step: OnStep
    image: torch.Tensor  # the target's pixels (1, 3, H, W), float32
    weight: torch.Tensor  # `pixel_weight` of the edited region

    def start(self, x_T: torch.Tensor, seeded: bool) -> torch.Tensor:
        """x_T from the seed's noise (`seeded`) mixed inside as `Preserve.fresh` says, or from the
        caller's `latents` as given; outside, the target's inverted noise either way."""
        if seeded:
            x_T = self.preserve.start_noise(self.trajectory.noise.to(x_T.dtype), x_T)
        return self.start_kept(x_T)

    def on_step(self, user_step: OnStep | None) -> OnStep:
        """The latent blend, then the caller's own step callback (which sees the blended state)."""
        keep_step = self.keep_step
        return keep_step if user_step is None else (lambda step, t, x: user_step(step, t, keep_step(step, t, x)))

    def blend_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return blend(images, self.image, self.weight)


def preserving(
    pipe, labels: torch.Tensor, style: StyleCode, preserve: Preserve, settings: RenderSettings, progress: Progress
) -> KeptTarget | None:
    """The render's `KeptTarget`; None when the edit covers the whole face (a plain render, with
    no inversion)."""
    image, target_labels = _target(pipe, preserve.image, preserve.labels)
    target_style = pipe.encode_style(image, target_labels)
    region = edited_region(target_labels, labels.to(pipe.device), edited_classes(target_style, style))
    margin = default_margin(pipe.image_size) if preserve.margin is None else preserve.margin
    keep = latent_keep(region, margin, downsampling_factor(pipe.vqvae))
    if not keep.any():  # every latent cell is edited: nothing of the target to follow
        return None
    trajectory = pipe.invert(image, target_labels, settings, progress)
    start_kept, keep_step = keep_target(trajectory, keep)
    return KeptTarget(preserve, trajectory, start_kept, keep_step, image.float(), pixel_weight(region, margin))
