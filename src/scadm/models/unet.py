"""The SCA-DM denoiser eps(z_t, t, style, mask) (paper Fig. 2, Sec. 3.3-3.4).

An LDM UNet whose encoder has plain ResBlocks, whose middle block and decoder have SPADE
ResBlocks fed by the semantic mask, and whose spatial transformers inject the per-class style
codes through mask-conditioned cross-attention (Eq. 8). Parameter names equal the authors'
`model.diffusion_model.*` names without that prefix, minus their unused `label_emb`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from scadm.errors import InputError
from scadm.nn.attention import SpatialTransformer, is_one_hot_or_empty
from scadm.nn.resblocks import (
    Downsample,
    ResBlock,
    SPADEResBlock,
    UpcastGroupNorm,
    Upsample,
    timestep_embedding,
    zero_init,
)
from scadm.nn.spade import MASK_DOWNSAMPLING, NORM_GROUPS, SPADE_HIDDEN_CHANNELS, resize_mask

TIME_EMBED_MULT = 4


class UNetStep(nn.ModuleList):
    """One entry of input_blocks / middle_block / output_blocks: layers applied in order, each
    given the conditioning it takes (time embedding, style context, its part of a UNetCondition)."""

    def condition(self, context: torch.Tensor, mask: torch.Tensor, hard: bool | None) -> list:
        """Per layer, what it takes from the style context and the mask at this step's grid."""
        out: list[tuple | None] = []
        for layer in self:
            if isinstance(layer, SPADEResBlock):
                out.append(layer.condition(mask))
            elif isinstance(layer, SpatialTransformer):
                out.append(layer.condition(context, mask, hard))
            else:
                out.append(None)
        return out

    def forward(self, h, emb, context, condition):
        for layer, cond in zip(self, condition, strict=True):
            if isinstance(layer, SPADEResBlock):
                h = layer(h, emb, condition=cond)
            elif isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context, condition=cond)
            else:
                h = layer(h)
        return h


@dataclass(frozen=True, eq=False)
class UNetCondition:
    """One batch's conditioning in the form the layers use it: the style context and, per UNet
    step and layer, what depends on style and mask alone (the mask at that grid, the SPADE
    modulations, the cross-attention outputs of one-hot masks: a fifth of the UNet's arithmetic).

    A sampler builds it once per edit (`SCADMUNet.condition`) and passes it to every step; one-hot
    checks (bool of a tensor) happen here too, so a compiled step has no graph break."""

    context: torch.Tensor  # (B, C, context_dim), in the UNet's dtype
    size: tuple[int, int]  # the latent grid (h, w) it was built for
    steps: list  # per UNetStep (input, middle, output order): per layer its conditioning or None


class UNetConfig(FrozenDict):
    """What `SCADMUNet.config` holds (diffusers records the constructor's arguments and serves
    them as attributes): declared for the type checker, which sees only a dict[str, Any]."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: Sequence[int]
    num_res_blocks: int
    attention_resolutions: Sequence[int]
    num_head_channels: int
    transformer_depth: int
    context_dim: int
    num_classes: int
    dropout: float
    mask_attention: bool
    spade_hidden_channels: int
    mask_downsample: str


# diffusers declares config_name as str in ModelMixin and None in ConfigMixin; its own models mix both.
class SCADMUNet(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Noise predictor eps = unet(x, timesteps, context, mask).

    `attention_resolutions` are downsampling factors (1 = latent resolution), as in the authors'
    config; defaults are the paper's face model (486,895,363 parameters). `mask_downsample` is
    how the mask reaches each feature grid (see scadm.nn.spade.MASK_DOWNSAMPLING): "nearest" is
    the authors' rule and the one their checkpoints were trained with.

    Example:
        >>> unet = SCADMUNet(model_channels=32, channel_mult=(1, 2), num_head_channels=16,
        ...                  context_dim=16, num_classes=5, attention_resolutions=(2,))
        >>> mask = torch.nn.functional.one_hot(torch.randint(0, 5, (1, 32, 32)), 5)
        >>> eps = unet(torch.randn(1, 3, 8, 8), torch.tensor([10]), torch.randn(1, 5, 16),
        ...            mask.permute(0, 3, 1, 2).float())
        >>> eps.shape
        torch.Size([1, 3, 8, 8])
    """

    _supports_gradient_checkpointing = True

    if TYPE_CHECKING:

        @property
        def config(self) -> UNetConfig: ...

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        model_channels: int = 224,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (8, 4, 2),
        num_head_channels: int = 32,
        transformer_depth: int = 1,
        context_dim: int = 1280,
        num_classes: int = 19,
        dropout: float = 0.0,
        mask_attention: bool = True,
        spade_hidden_channels: int = SPADE_HIDDEN_CHANNELS,
        mask_downsample: str = "nearest",
    ):
        super().__init__()
        if mask_downsample not in MASK_DOWNSAMPLING:
            raise InputError(f"mask_downsample: '{mask_downsample}' is not one of {', '.join(MASK_DOWNSAMPLING)}")
        widths = [model_channels * m for m in channel_mult]
        for width in widths:
            if width % NORM_GROUPS or width % num_head_channels:
                raise InputError(
                    f"model_channels * channel_mult: {width} is not divisible by {NORM_GROUPS} "
                    f"(norm groups) and num_head_channels={num_head_channels}"
                )
        self.gradient_checkpointing = False
        emb_dim = TIME_EMBED_MULT * model_channels

        def transformer(ch):
            return SpatialTransformer(
                ch, ch // num_head_channels, num_head_channels, context_dim, transformer_depth, dropout, mask_attention
            )

        def spade_block(ch, out_ch):
            return SPADEResBlock(ch, emb_dim, num_classes, out_ch, dropout, spade_hidden_channels)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        self.input_blocks = nn.ModuleList([UNetStep([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        skip_widths = [model_channels]
        ch = model_channels
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, width, dropout)]
                ch = width
                if 2**level in attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(UNetStep(layers))
                skip_widths.append(ch)
            if level < len(widths) - 1:
                self.input_blocks.append(UNetStep([Downsample(ch)]))
                skip_widths.append(ch)

        self.middle_block = UNetStep([spade_block(ch, ch), transformer(ch), spade_block(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for i in range(num_res_blocks + 1):
                layers = [spade_block(ch + skip_widths.pop(), width)]
                ch = width
                if 2**level in attention_resolutions:
                    layers.append(transformer(ch))
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(UNetStep(layers))

        self.out = nn.Sequential(
            UpcastGroupNorm(NORM_GROUPS, ch),
            nn.SiLU(),
            zero_init(nn.Conv2d(model_channels, out_channels, 3, padding=1)),
        )

    def condition(
        self, context: torch.Tensor | None, mask: torch.Tensor | None, size: Sequence[int], hard: bool | None = None
    ) -> UNetCondition:
        """The conditioning of style `context` (B, num_classes, context_dim) and `mask`
        (B, num_classes, H, W) for latents of spatial `size` (h, w), computed once for any number
        of steps. `hard`: whether `mask` is one-hot or empty, if the caller knows (else checked);
        with mask_downsample "any" the coarser grids are always checked."""
        cfg = self.config
        size = (int(size[0]), int(size[1]))
        context, mask = self._check_conditioning(context, mask, size)
        dtype = self.dtype
        context, mask = context.to(dtype), mask.to(dtype)
        nearest = cfg.mask_downsample == "nearest"
        if cfg.mask_attention and nearest and hard is None:
            hard = is_one_hot_or_empty(mask)  # nearest resizing keeps one-hotness: one check for every grid
        grids, steps = {}, []
        for step, factor in zip(self._steps(), self._step_factors(), strict=True):
            grid = (size[0] // factor, size[1] // factor)
            if grid not in grids:
                resized = resize_mask(mask, grid, cfg.mask_downsample)
                grid_hard = hard if nearest or not cfg.mask_attention else is_one_hot_or_empty(resized)
                grids[grid] = resized, grid_hard
            steps.append(step.condition(context, *grids[grid]))
        return UNetCondition(context, size, steps)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        condition: UNetCondition | None = None,
        hard: bool | None = None,
    ) -> torch.Tensor:
        """x (B, in_channels, h, w) noisy latent, h and w divisible by 2**(levels-1);
        timesteps (B,) or scalar, int or float; context (B, num_classes, context_dim) style codes;
        mask (B, num_classes, H, W) one-hot float at any resolution >= (h, w); or, instead of
        context and mask, their `condition` (see `condition`, which also explains `hard`).
        Returns eps (B, out_channels, h, w) in x's dtype."""
        timesteps = self._check_inputs(x, timesteps)
        if condition is None:
            condition = self.condition(context, mask, x.shape[-2:], hard)
        return self.denoise(x, self.time_features(timesteps), condition)

    def time_features(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The sinusoidal embedding of (B,) timesteps that `denoise` takes (float32; float64 for a
        float64 model)."""
        return timestep_embedding(timesteps, self.config.model_channels, dtype=self.dtype)

    def denoise(self, x: torch.Tensor, features: torch.Tensor, condition: UNetCondition) -> torch.Tensor:
        """`forward` from the timesteps' `time_features`. Split off for CUDA graphs
        (`scadm.models.cuda_graphs`): the embedding's frequencies are built on the CPU and copied
        over, as the authors' are, and a graph cannot capture a copy from pageable memory."""
        if condition.size != tuple(x.shape[-2:]) or condition.context.shape[0] != x.shape[0]:
            raise InputError(
                f"condition: built for {condition.context.shape[0]} latents of "
                f"{condition.size[0]}x{condition.size[1]}, got x {tuple(x.shape)}"
            )
        dtype = self.dtype
        emb = self.time_embed(features.to(dtype))
        h, context = x.to(dtype), condition.context
        step_conditions = iter(condition.steps)
        skips = []
        for step in self.input_blocks:
            h = self._run(step, h, emb, context, next(step_conditions))
            skips.append(h)
        h = self._run(self.middle_block, h, emb, context, next(step_conditions))
        for step in self.output_blocks:
            h = self._run(step, torch.cat([h, skips.pop()], dim=1), emb, context, next(step_conditions))
        return self.out(h).to(x.dtype)

    def _run(self, step, h, emb, context, step_condition):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(step, h, emb, context, step_condition)
        return step(h, emb, context, step_condition)

    def _steps(self) -> list[UNetStep]:
        return [*self.input_blocks, self.middle_block, *self.output_blocks]

    def _step_factors(self) -> list[int]:
        """The downsampling factor of each step's input grid (a step's layers all work at it; a
        final Downsample or Upsample takes no conditioning)."""
        levels = len(self.config.channel_mult)
        factors, level = [], 0
        for step in self.input_blocks:
            factors.append(2**level)
            level += any(isinstance(layer, Downsample) for layer in step.children())
        factors.append(2 ** (levels - 1))
        for step in self.output_blocks:
            factors.append(2**level)
            level -= any(isinstance(layer, Upsample) for layer in step.children())
        return factors

    def _check_inputs(self, x, timesteps) -> torch.Tensor:
        """Raise InputError for a bad latent or timesteps; return timesteps as a (B,) tensor."""
        cfg = self.config
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise InputError(f"x: expected (B, {cfg.in_channels}, h, w), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        if h % factor or w % factor:
            raise InputError(f"x: spatial size {h}x{w} is not divisible by {factor}")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        if timesteps.shape != (b,):
            raise InputError(f"timesteps: expected shape ({b},) or a scalar, got {tuple(timesteps.shape)}")
        return timesteps

    def _check_conditioning(
        self, context: torch.Tensor | None, mask: torch.Tensor | None, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raise InputError unless both are given with matching shapes; return them."""
        cfg = self.config
        h, w = size
        if context is None or mask is None:
            raise InputError("context and mask: both required (or a condition)")
        b = mask.shape[0] if mask.ndim == 4 else context.shape[0]
        tokens = cfg.num_classes if cfg.mask_attention else context.shape[1]
        if context.ndim != 3 or tuple(context.shape) != (b, tokens, cfg.context_dim):
            raise InputError(f"context: expected ({b}, {tokens}, {cfg.context_dim}), got {tuple(context.shape)}")
        if mask.ndim != 4 or mask.shape[1] != cfg.num_classes:
            raise InputError(f"mask: expected ({b}, {cfg.num_classes}, H, W), got {tuple(mask.shape)}")
        if mask.shape[2] < h or mask.shape[3] < w:
            raise InputError(f"mask: resolution {mask.shape[2]}x{mask.shape[3]} is below the latent's {h}x{w}")
        return context, mask
