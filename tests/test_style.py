"""StyleCode edits: row swaps, blank ("random") rows and interpolation on a tiny style encoder."""

import pytest
import torch
import torch.nn.functional as F

from scadm.errors import InputError
from scadm.models.style_encoder import StyleEncoder
from scadm.style import StyleCode

C = 5


@pytest.fixture(scope="module")
def encoder() -> StyleEncoder:
    torch.manual_seed(0)
    return StyleEncoder(num_classes=C, num_feat=1, num_downsample=3, num_upsample=2, style_dim=4).eval()


def reference(batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, 16, 16, generator=g) * 2 - 1
    labels = torch.randint(0, C - 1, (batch, 16, 16), generator=g)  # class C-1 absent
    return image, F.one_hot(labels, C).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def codes(encoder):
    """Three references (batch 3) and one other reference (batch 1)."""
    with torch.no_grad():
        return StyleCode.encode(encoder, *reference(3, 1)), StyleCode.encode(encoder, *reference(1, 2))


def test_encode_gives_style_presence_and_blank_of_a_zero_image(encoder):
    image, mask = reference(2, 3)
    with torch.no_grad():
        code = StyleCode.encode(encoder, image, mask)
        assert torch.equal(code.tokens, encoder(image, mask))
        assert torch.equal(code.blank, encoder(torch.zeros_like(image), mask))
    assert code.present.tolist() == [[True] * (C - 1) + [False]] * 2
    assert len(code) == 2 and code.num_classes == C


def test_blank_for_uses_the_blank_as_tokens(encoder):
    image, mask = reference(2, 3)
    with torch.no_grad():
        code = StyleCode.blank_for(encoder, mask)
        assert torch.equal(code.tokens, encoder(torch.zeros_like(image), mask))
    assert torch.equal(code.tokens, code.blank)


def test_swap_copies_exactly_the_chosen_rows_from_a_single_reference(codes):
    src, ref = codes
    out = src.swap(ref, parts=[1, 3])
    assert len(out) == 3
    for b in range(3):
        for j in range(C):
            expected = ref.tokens[0, j] if j in (1, 3) else src.tokens[b, j]
            assert torch.equal(out.tokens[b, j], expected)
    assert torch.equal(out.blank, src.blank)
    assert torch.equal(src.tokens, codes[0].tokens)  # inputs untouched


def test_swap_takes_presence_with_the_rows(codes):
    src, ref = codes
    ref = StyleCode(ref.tokens, torch.zeros_like(ref.present), ref.blank)
    out = src.swap(ref, parts=[2])
    assert out.present[:, 2].tolist() == [False] * 3
    assert out.present[:, 0].tolist() == [True] * 3


def test_swap_batch_1_code_with_batch_3_reference_broadcasts(codes):
    src, ref = codes
    out = ref.swap(src, parts=[0])
    assert len(out) == 3
    assert torch.equal(out.tokens[:, 0], src.tokens[:, 0])
    assert torch.equal(out.tokens[:, 1:], ref.tokens[:, 1:].expand(3, -1, -1))


def test_randomize_replaces_rows_by_blank_rows(codes):
    src, _ = codes
    out = src.randomize([0, 4])
    assert torch.equal(out.tokens[:, [0, 4]], src.blank[:, [0, 4]])
    assert torch.equal(out.tokens[:, 1:4], src.tokens[:, 1:4])
    assert not torch.equal(out.tokens[:, 0], src.tokens[:, 0])


def test_interpolate_endpoints_are_the_codes_and_midpoint_is_the_mean(codes):
    src, ref = codes
    assert torch.equal(src.interpolate(ref, 0.0).tokens, src.tokens)
    assert torch.equal(src.interpolate(ref, 1.0).tokens, ref.tokens.expand(3, -1, -1))
    mid = src.interpolate(ref, 0.5)
    torch.testing.assert_close(mid.tokens, (src.tokens + ref.tokens) / 2, rtol=0, atol=1e-6)  # |x| < 1, float32


def test_interpolate_on_parts_keeps_other_rows(codes):
    src, ref = codes
    out = src.interpolate(ref, 0.25, parts=[2])
    torch.testing.assert_close(
        out.tokens[:, 2], 0.75 * src.tokens[:, 2] + 0.25 * ref.tokens[:, 2], rtol=0, atol=1e-6
    )  # |x| < 1 in float32: a few ulp, whatever the op order
    assert torch.equal(out.tokens[:, [0, 1, 3, 4]], src.tokens[:, [0, 1, 3, 4]])


def test_interpolation_strip_from_per_sample_alphas(codes):
    src, ref = codes
    a = src.index(0)
    alphas = torch.linspace(0, 1, 4)
    strip = a.interpolate(ref, alphas)
    assert len(strip) == 4
    one_by_one = StyleCode.cat([a.interpolate(ref, float(t)) for t in alphas])
    torch.testing.assert_close(strip.tokens, one_by_one.tokens, rtol=0, atol=1e-6)  # |x| < 1, float32
    assert torch.equal(strip.tokens[0], a.tokens[0]) and torch.equal(strip.tokens[-1], ref.tokens[0])


@pytest.mark.parametrize("parts", [[C], [-1], [1.0], [True], 3, "hair"])
def test_bad_parts_raise_input_error(codes, parts):
    src, ref = codes
    for edit in (lambda: src.swap(ref, parts), lambda: src.randomize(parts), lambda: src.interpolate(ref, 0.5, parts)):
        with pytest.raises(InputError, match="parts"):
            edit()


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), torch.tensor([0.5, 2.0])])
def test_alpha_out_of_range_raises_input_error(codes, alpha):
    src, ref = codes
    with pytest.raises(InputError, match="alpha"):
        src.interpolate(ref, alpha)


def test_batches_that_do_not_broadcast_raise_input_error(codes):
    src, _ = codes
    with pytest.raises(InputError, match="other"):
        src.swap(StyleCode.cat([src.index(0)] * 2), [0])
    with pytest.raises(InputError, match="alpha"):
        src.interpolate(src, torch.tensor([0.0, 1.0]))


def test_batch_helpers(codes):
    src, _ = codes
    assert torch.equal(src.index(-1).tokens, src.tokens[2:])
    rep = src.repeat(2)
    assert torch.equal(rep.tokens[[0, 1]], src.tokens[[0, 0]])
    assert torch.equal(StyleCode.cat([src.index(i) for i in range(3)]).blank, src.blank)
    wide = src.to(dtype=torch.float64)
    assert wide.tokens.dtype == torch.float64 and wide.present.dtype == torch.bool
    with pytest.raises(InputError, match="^i:"):
        src.index(3)
