"""The authors' execution of the SCA-DM denoiser, written plainly from their semantics (see
/work/shared/design/AUTHORS-IMPLEMENTATION.md, sections 4-5): the test reference of scadm's fast
paths and the "reference mode" of benchmarks/ (which imports it, so both use one reference).

What it mirrors, on scadm's own modules and weights: float32; every attention as a full logits
matrix over heads folded into the batch ((b h) n d, made contiguous like einops' rearrange);
the masked cross-attention's per-class loop (logits x resized 0/1 mask, then every exact zero set
to -finfo.max, once per class over the whole tensor), then softmax; the mask resized from full
resolution again in every attention layer and every SPADE norm; SPADE modulations and the style's
keys and values recomputed at every call; each transformer block behind a gradient-checkpoint
wrapper that is active whether or not gradients are wanted. Not mirrored: the collection of the
logits for the (disabled) attention loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scadm.nn.attention import SpatialTransformer, TransformerBlock
from scadm.nn.resblocks import ResBlock, SPADEResBlock, timestep_embedding


def fold_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B * heads, N, d), a contiguous copy (einops' 'b n (h d) -> (b h) n d')."""
    b, n, _ = t.shape
    return t.reshape(b, n, heads, -1).permute(0, 2, 1, 3).reshape(b * heads, n, -1).contiguous()


def unfold_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B * heads, N, d) -> (B, N, heads * d), a contiguous copy."""
    bh, n, d = t.shape
    return t.reshape(bh // heads, heads, n, d).permute(0, 2, 1, 3).reshape(bh // heads, n, heads * d).contiguous()


def reference_softmax_attention(attn, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * scale) v over the full (b h, n, m) logits matrix, then to_out."""
    h = attn.heads
    q, k, v = (fold_heads(f, h) for f in (attn.to_q(x), attn.to_k(context), attn.to_v(context)))
    weights = (torch.einsum("bid,bjd->bij", q, k) * attn.scale).softmax(dim=-1)
    return attn.to_out(unfold_heads(torch.einsum("bij,bjd->bid", weights, v), h))


def reference_masked_attention(attn, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The authors' loop for a (B, C, N) mask: per class multiply the logits by the mask, after each
    class replace every exact zero of the whole tensor by -max; then softmax over classes, @ v."""
    h = attn.heads
    q, k, v = (fold_heads(f, h) for f in (attn.to_q(x), attn.to_k(context), attn.to_v(context)))
    sim = torch.einsum("bid,bjd->bij", q, k) * attn.scale  # (B*h, N, C)
    per_head = mask.to(sim.dtype).repeat_interleave(h, dim=0)  # (B*h, C, N), batch-major like (b h)
    masked = sim.clone()
    for c in range(sim.shape[-1]):
        masked[:, :, c] = sim[:, :, c] * per_head[:, c, :]
        masked[masked == 0] = -torch.finfo(sim.dtype).max
    return attn.to_out(unfold_heads(torch.einsum("bij,bjd->bid", masked.softmax(dim=-1), v), h))


class _AlwaysCheckpoint(torch.autograd.Function):
    """A reentrant gradient checkpoint that runs whatever the grad mode (LDM's `checkpoint` with
    flag True): forward without a graph, backward recomputes it and differentiates inputs and
    parameters. Written here (not torch.utils.checkpoint) because that is the behaviour mirrored."""

    @staticmethod
    def forward(ctx, run, n_inputs, *args):
        ctx.run, ctx.n_inputs = run, n_inputs
        ctx.save_for_backward(*args)
        with torch.no_grad():
            return run(*args[:n_inputs])

    @staticmethod
    def backward(ctx, grad_out):
        args = ctx.saved_tensors
        inputs = [a.detach().requires_grad_(a.requires_grad) for a in args[: ctx.n_inputs]]
        params = list(args[ctx.n_inputs :])
        with torch.enable_grad():
            out = ctx.run(*inputs)
        wanted = [t for t in inputs + params if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        return (None, None, *(next(grads) if t.requires_grad else None for t in inputs + params))


def _grid_mask(mask: torch.Tensor, tokens: int) -> torch.Tensor:
    """The authors' resize inside attention: halve the full-resolution side until H*W matches."""
    h, w = mask.shape[-2:]
    while h * w > tokens:
        h, w = h // 2, w // 2
    return F.interpolate(mask, size=(h, w), mode="nearest").flatten(2)


def _transformer_block(block: TransformerBlock, x, context, mask):
    def run(x, context):
        normed = block.norm1(x)
        x = x + reference_softmax_attention(block.attn1, normed, normed)
        if block.mask_attention:
            x = x + reference_masked_attention(block.attn2, block.norm2(x), context, _grid_mask(mask, x.shape[1]))
        else:
            x = x + reference_softmax_attention(block.attn2, block.norm2(x), context)
        return x + block.ff(block.norm3(x))

    return _AlwaysCheckpoint.apply(run, 2, x, context, *block.parameters())


def _spatial_transformer(layer: SpatialTransformer, x, context, mask):
    b, _, h, w = x.shape
    tokens = layer.proj_in(layer.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, -1).contiguous()
    for block in layer.transformer_blocks:
        tokens = _transformer_block(block, tokens, context, mask)
    return x + layer.proj_out(tokens.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous())


def _spade(norm, x, mask):
    hidden = norm.mlp_shared(F.interpolate(mask, size=x.shape[-2:], mode="nearest"))
    return norm.norm(x) * (1 + norm.mlp_gamma(hidden)) + norm.mlp_beta(hidden)


def _spade_resblock(block: SPADEResBlock, x, emb, mask):
    h = block.in_layers(_spade(block.in_norm, x, mask)) + block.emb_layers(emb)[:, :, None, None]
    h = block.out_layers(_spade(block.out_norm, h, mask))
    return block.skip_connection(x) + h


def _step(step, h, emb, context, mask):
    for layer in step:
        if isinstance(layer, SPADEResBlock):
            h = _spade_resblock(layer, h, emb, mask)
        elif isinstance(layer, ResBlock):
            h = layer(h, emb)
        elif isinstance(layer, SpatialTransformer):
            h = _spatial_transformer(layer, h, context, mask)
        else:
            h = layer(h)
    return h


def authors_unet_forward(
    unet, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """eps of `unet`'s weights executed the authors' way; same contract as `unet(x, t, context, mask)`
    (mask at full resolution, "nearest" mask downsampling)."""
    t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
    dtype = unet.dtype
    emb = unet.time_embed(timestep_embedding(t, unet.config.model_channels).to(dtype))
    h, context, mask = x.to(dtype), context.to(dtype), mask.to(dtype)
    skips = []
    for step in unet.input_blocks:
        h = _step(step, h, emb, context, mask)
        skips.append(h)
    h = _step(unet.middle_block, h, emb, context, mask)
    for step in unet.output_blocks:
        h = _step(step, torch.cat([h, skips.pop()], dim=1), emb, context, mask)
    return unet.out(h).to(x.dtype)
