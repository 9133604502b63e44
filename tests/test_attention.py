"""Attention layers against straightforward references written from the authors' semantics."""

import pytest
import torch
import torch.nn.functional as F
from authors_execution import reference_masked_attention, reference_softmax_attention

from scadm.errors import InputError
from scadm.nn.attention import (
    CrossAttention,
    MaskedCrossAttention,
    SelfAttention,
    SpatialTransformer,
    TransformerBlock,
    is_one_hot_or_empty,
)

B, N, C, DIM, CTX, HEADS, DIM_HEAD = 2, 24, 5, 16, 12, 4, 4
# outputs |y| < 2 in float32, sums over <= 24 keys: ~1e-7 (measured <= 1.2e-7); a masking or
# normalisation bug moves them by O(0.1)
ATOL = 1e-5


def one_hot_mask(seed, empty_fraction=0.0):
    g = torch.Generator().manual_seed(seed)
    mask = F.one_hot(torch.randint(0, C, (B, N), generator=g), C).transpose(1, 2).float()
    empty = torch.rand(B, 1, N, generator=g) < empty_fraction
    return mask.masked_fill(empty, 0.0)  # (B, C, N)


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return MaskedCrossAttention(DIM, CTX, HEADS, DIM_HEAD)


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, N, DIM, generator=g), torch.randn(B, C, CTX, generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_attention_matches_reference_for_one_hot_masks(attn, tokens, seed):
    x, context = tokens
    mask = one_hot_mask(seed)
    torch.testing.assert_close(
        attn(x, context, mask), reference_masked_attention(attn, x, context, mask), atol=ATOL, rtol=0
    )


def test_pixels_without_class_get_mean_value_like_reference(attn, tokens):
    x, context = tokens
    mask = one_hot_mask(3, empty_fraction=0.4)
    out = attn(x, context, mask)
    torch.testing.assert_close(out, reference_masked_attention(attn, x, context, mask), atol=ATOL, rtol=0)
    empty = mask.sum(dim=1) == 0  # (B, N)
    mean_out = attn.to_out(attn.to_v(context).mean(dim=1))  # (B, DIM)
    torch.testing.assert_close(out[0, empty[0]], mean_out[0].expand(int(empty[0].sum()), -1), atol=ATOL, rtol=0)


def test_all_zero_mask_gives_mean_of_values_everywhere(attn, tokens):
    x, context = tokens
    mask = torch.zeros(B, C, N)
    out = attn(x, context, mask)
    expected = attn.to_out(attn.to_v(context).mean(dim=1))[:, None].expand(B, N, DIM)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, reference_masked_attention(attn, x, context, mask), atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", [4, 5])
def test_zero_context_gives_output_bias_for_any_mask(attn, tokens, seed):
    x, _ = tokens
    context = torch.zeros(B, C, CTX)
    mask = one_hot_mask(seed, empty_fraction=0.3)
    out = attn(x, context, mask)
    assert torch.equal(out, attn.to_out[0].bias.expand(B, N, DIM))
    torch.testing.assert_close(out, reference_masked_attention(attn, x, context, mask), atol=ATOL, rtol=0)


def test_class_with_zeroed_style_row_is_masked_like_reference(attn, tokens):
    """A zero context row makes that class's logits exactly 0, which the authors mask too."""
    x, context = tokens
    context = context.clone()
    context[:, 2] = 0
    mask = one_hot_mask(6)
    torch.testing.assert_close(
        attn(x, context, mask), reference_masked_attention(attn, x, context, mask), atol=ATOL, rtol=0
    )


def test_one_hot_output_does_not_depend_on_query_projection(attn, tokens):
    x, context = tokens
    mask = one_hot_mask(7, empty_fraction=0.2)
    before = attn(x, context, mask)
    with torch.no_grad():
        attn.to_q.weight.normal_()
    assert torch.equal(attn(x, context, mask), before)


@pytest.mark.parametrize("kind", ["soft", "overlapping"])
def test_soft_and_multi_class_masks_match_reference(attn, tokens, kind):
    x, context = tokens
    g = torch.Generator().manual_seed(8)
    if kind == "soft":
        mask = torch.rand(B, C, N, generator=g) * one_hot_mask(8)
    else:
        mask = (torch.rand(B, C, N, generator=g) < 0.4).float()
    assert not is_one_hot_or_empty(mask)
    torch.testing.assert_close(
        attn(x, context, mask), reference_masked_attention(attn, x, context, mask), atol=ATOL, rtol=0
    )


def test_exact_path_equals_hard_path_on_one_hot_masks(attn, tokens):
    x, context = tokens
    mask = one_hot_mask(9, empty_fraction=0.3)
    torch.testing.assert_close(attn(x, context, mask, hard=False), attn(x, context, mask, hard=True), atol=ATOL, rtol=0)


def test_is_one_hot_or_empty():
    assert is_one_hot_or_empty(one_hot_mask(0, empty_fraction=0.5))
    assert is_one_hot_or_empty(torch.zeros(1, C, 4, 4))
    assert not is_one_hot_or_empty(torch.full((1, C, 4), 0.5))
    assert not is_one_hot_or_empty(torch.ones(1, C, 4))


def test_plain_cross_attention_matches_softmax_reference(tokens):
    torch.manual_seed(0)
    attn = CrossAttention(DIM, CTX, HEADS, DIM_HEAD)
    x, context = tokens
    torch.testing.assert_close(attn(x, context), reference_softmax_attention(attn, x, context), atol=ATOL, rtol=0)


def test_self_attention_matches_explicit_softmax(tokens):
    torch.manual_seed(0)
    attn = SelfAttention(DIM, HEADS, DIM_HEAD)
    x, _ = tokens
    torch.testing.assert_close(attn(x), reference_softmax_attention(attn, x, x), atol=ATOL, rtol=0)


def test_masked_transformer_block_requires_mask(tokens):
    x, context = tokens
    with pytest.raises(InputError, match="mask"):
        TransformerBlock(DIM, HEADS, DIM_HEAD, CTX)(x, context)


def test_spatial_transformer_resizes_mask_by_nearest_and_starts_as_identity():
    torch.manual_seed(0)
    layer = SpatialTransformer(32, 2, 16, CTX)
    x, context = torch.randn(B, 32, 4, 6), torch.randn(B, C, CTX)
    labels = torch.randint(0, C, (B, 16, 24))
    mask = F.one_hot(labels, C).permute(0, 3, 1, 2).float()
    assert torch.equal(layer(x, context, mask), x)  # proj_out is zero-initialised
    torch.nn.init.normal_(layer.proj_out.weight)
    # nearest resizing of a 4x upsampled mask gives the same mask: identical computation
    torch.testing.assert_close(layer(x, context, mask), layer(x, context, mask[:, :, ::4, ::4]), rtol=0, atol=0)
    assert not torch.allclose(layer(x, context, mask), layer(x, context, mask.roll(1, dims=1)))
