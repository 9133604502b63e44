"""Attention layers of the SCA-DM denoiser: self-attention, style cross-attention (paper Eq. 6-7),
mask-conditioned cross-attention (Eq. 8) and the spatial transformer that hosts them (Fig. 2).

Parameter names (to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2, norm1-3, proj_in, proj_out)
follow the authors' LDM-derived modules so their checkpoints load by name.
"""

import torch
import torch.nn.functional as F
from torch import nn

from scadm.errors import InputError
from scadm.nn.resblocks import zero_init
from scadm.nn.spade import NORM_GROUPS, resize_mask

TRANSFORMER_NORM_EPS = 1e-6
FF_MULT = 4


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B, heads, N, d)."""
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    return t.transpose(1, 2).flatten(2)


def is_one_hot_or_empty(mask: torch.Tensor) -> bool:
    """True when every entry of the (B, C, ...) mask is 0 or 1 and no pixel has two classes.

    Nearest resizing keeps this property, so it can be checked once at the input resolution.
    """
    binary = ((mask == 0) | (mask == 1)).all()
    return bool(binary & (mask.sum(dim=1) <= 1).all())


class CrossAttention(nn.Module):
    """Multi-head attention of image tokens over context tokens (Eq. 6-7); plain softmax.

    q, k, v projections have no bias; to_out is Linear + Dropout, as in LDM. With mask
    conditioning switched off this is the paper's ablation.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (B, N, query_dim), context (B, M, context_dim) -> (B, N, query_dim)."""
        q = _split_heads(self.to_q(x), self.heads)
        k = _split_heads(self.to_k(context), self.heads)
        v = _split_heads(self.to_v(context), self.heads)
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class SelfAttention(CrossAttention):
    """Unmasked self-attention over the image tokens (attn1 of every transformer block)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__(dim, dim, heads, dim_head, dropout)

    # Narrower than CrossAttention.forward on purpose: self-attention has no separate context.
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x)


class MaskedCrossAttention(CrossAttention):
    """Mask-conditioned cross-attention over the C class style tokens (paper Eq. 8), with the
    authors' semantics: logits q k^T / sqrt(d) are multiplied by the 0/1 class mask, every entry
    that is then exactly 0 becomes -finfo(dtype).max (not -inf), softmax over classes, @ v, to_out.

    Consequences this class exploits: with a one-hot mask each pixel keeps one finite logit, so
    the softmax is exactly one-hot and the output is to_out(v_c) of the pixel's class c,
    independent of the query and of to_q/to_k (kept only so checkpoints load; with such masks they
    get no gradient). A pixel with no class has all logits at -max, a uniform softmax, and gets
    the mean of the C value vectors; an all-zero context therefore gives the to_out bias. The hard
    path reproduces this with a gather, no q and no attention matrix; it also honours a class
    whose key is exactly zero in a head (its logit is exactly 0, so masked). What it does not
    reproduce is the measure-zero case of a present class whose logit q.k is exactly 0 for
    non-zero q and k, which the authors would also mask. Soft or overlapping masks take an exact
    vectorised masked softmax.
    """

    # Wider than CrossAttention.forward on purpose: the class mask is this layer's whole point.
    def forward(  # type: ignore[override]
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, hard: bool | None = None
    ) -> torch.Tensor:
        """x (B, N, query_dim) tokens; context (B, C, context_dim); mask (B, C, N) class
        membership of each token; hard: whether the mask is one-hot or empty (checked if None)."""
        mask = mask.to(x.dtype)
        if hard is None:
            hard = is_one_hot_or_empty(mask)
        if hard:
            return self.hard_output(context, mask)
        v = self.to_v(context).unflatten(-1, (self.heads, -1))  # (B, C, heads, d)
        k = self.to_k(context).unflatten(-1, (self.heads, -1))
        return self.to_out(self._masked_softmax(x, k, v, mask))

    def hard_output(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The output (B, N, query_dim) for a one-hot or empty mask (B, C, N): it does not depend on
        the tokens, so a sampler computes it once per edit instead of once per step."""
        v = self.to_v(context).unflatten(-1, (self.heads, -1))  # (B, C, heads, d)
        k = self.to_k(context).unflatten(-1, (self.heads, -1))
        return self.to_out(self._hard_assignment(k, v, mask))

    def _hard_assignment(self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each token takes the value vector of its class, per head; otherwise the class mean."""
        member = mask.transpose(1, 2) > 0  # (B, N, C)
        cls = member.to(torch.uint8).argmax(dim=-1)[:, :, None, None]  # (B, N, 1, 1)
        own_v = torch.take_along_dim(v, cls, dim=1)  # (B, N, heads, d)
        key_nonzero = (k != 0).any(dim=-1, keepdim=True)  # (B, C, heads, 1)
        attended = member.any(dim=-1)[:, :, None, None] & torch.take_along_dim(key_nonzero, cls, dim=1)
        out = torch.where(attended, own_v, v.mean(dim=1, keepdim=True))
        return out.flatten(2)  # (B, N, heads * d)

    def _masked_softmax(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = _split_heads(self.to_q(x), self.heads)  # (B, heads, N, d)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, C, d)
        logits = (q @ k.transpose(-1, -2)) * self.scale * mask.transpose(1, 2)[:, None]
        logits = logits.masked_fill(logits == 0, -torch.finfo(logits.dtype).max)
        return _merge_heads(logits.softmax(dim=-1) @ v)


class GEGLU(nn.Module):
    """Gated GELU projection: a * gelu(gate), both halves of one Linear."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with inner width FF_MULT * dim."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        inner_dim = FF_MULT * dim
        self.net = nn.Sequential(GEGLU(dim, inner_dim), nn.Dropout(dropout), nn.Linear(inner_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, style cross-attention (masked or plain), feed-forward."""

    def __init__(
        self, dim: int, heads: int, dim_head: int, context_dim: int, dropout: float = 0.0, mask_attention: bool = True
    ):
        super().__init__()
        self.mask_attention = mask_attention
        cross = MaskedCrossAttention if mask_attention else CrossAttention
        self.attn1 = SelfAttention(dim, heads, dim_head, dropout)
        self.ff = FeedForward(dim, dropout)
        self.attn2 = cross(dim, context_dim, heads, dim_head, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None = None,
        hard: bool | None = None,
        cross: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, N, dim); context (B, C, context_dim); mask (B, C, N), used only if masked;
        `cross`: attn2's output when it is known not to depend on x (MaskedCrossAttention.hard_output)."""
        x = x + self.attn1(self.norm1(x))
        if cross is not None:
            x = x + cross
        elif self.mask_attention:
            if mask is None:
                raise InputError("mask: required by mask-conditioned cross-attention")
            x = x + self.attn2(self.norm2(x), context, mask, hard)
        else:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


def _masked_attention(block: nn.Module) -> MaskedCrossAttention:
    """The cross-attention of a TransformerBlock built with mask_attention."""
    attn = block.get_submodule("attn2")
    if not isinstance(attn, MaskedCrossAttention):
        raise TypeError(f"{type(attn).__name__}: not mask-conditioned")
    return attn


class SpatialTransformer(nn.Module):
    """GroupNorm, 1x1 proj_in, transformer blocks over the h*w tokens, 1x1 proj_out (zero-init),
    plus the input: a fresh layer is the identity."""

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        context_dim: int,
        depth: int = 1,
        dropout: float = 0.0,
        mask_attention: bool = True,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        self.mask_attention = mask_attention
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Conv2d(channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner_dim, heads, dim_head, context_dim, dropout, mask_attention) for _ in range(depth)
        )
        self.proj_out = zero_init(nn.Conv2d(inner_dim, channels, kernel_size=1))

    def condition(self, context: torch.Tensor, mask: torch.Tensor | None, hard: bool | None) -> tuple:
        """What the blocks need from (context, mask at the layer's resolution): the token mask,
        and with a one-hot mask each block's cross-attention output, which then depends on
        nothing else and is computed here once instead of once per sampler step."""
        token_mask = None
        if self.mask_attention and mask is not None:
            token_mask = mask.flatten(2)  # (B, C, h*w)
            if hard is None:
                hard = is_one_hot_or_empty(token_mask)
        crosses: list[torch.Tensor | None] = [None] * len(self.transformer_blocks)
        if token_mask is not None and hard:
            crosses = [_masked_attention(block).hard_output(context, token_mask) for block in self.transformer_blocks]
        return token_mask, hard, crosses

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None = None,
        hard: bool | None = None,
        condition: tuple | None = None,
    ) -> torch.Tensor:
        """x (B, channels, h, w); context (B, C, context_dim); mask (B, C, H, W), any H, W,
        nearest-resized to (h, w); hard as in MaskedCrossAttention; or instead of mask and hard,
        `condition`: what `condition(context, mask at (h, w), hard)` returned."""
        b, _, h, w = x.shape
        if condition is None:
            mask = None if mask is None else resize_mask(mask, (h, w))
            condition = self.condition(context, mask, hard)
        token_mask, hard, crosses = condition
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (B, h*w, inner)
        for block, cross in zip(self.transformer_blocks, crosses, strict=True):
            tokens = block(tokens, context, token_mask, hard, cross)
        return x + self.proj_out(tokens.transpose(1, 2).reshape(b, -1, h, w))
