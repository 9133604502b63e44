"""The multi-resolution style encoder E_s (paper §3.2, Eq. 5), checked on a tiny configuration.

Exact agreement with the authors' MultiScaleEffStyleEncoder (their random weights loaded into ours,
face width and reduced width, float32 and float64: bit-identical) was measured outside this repo,
since their code carries no licence; here the layout is pinned by their key list.
"""

import pytest
import torch
import torch.nn.functional as F

from scadm.errors import InputError
from scadm.models.style_encoder import POOL_EPS, StyleEncoder, present_classes

C, FEAT, DOWN, UP, D = 5, 2, 4, 3, 8


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels, C).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def encoder() -> StyleEncoder:
    torch.manual_seed(0)
    enc = StyleEncoder(num_classes=C, num_feat=FEAT, num_downsample=DOWN, num_upsample=UP, style_dim=D)
    return enc.eval()


def inputs(h=32, w=32, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    labels = torch.randint(0, C, (batch, h, w), generator=g)
    return image, one_hot(labels)


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (64, 48), (48, 80)])
def test_output_has_one_row_of_scales_times_style_dim_per_class(encoder, size):
    image, mask = inputs(*size)
    with torch.no_grad():
        out = encoder(image, mask)
    assert out.shape == (2, C, UP * D)
    assert out.abs().max() <= 1  # tanh-bounded


@pytest.mark.parametrize("size", [(40, 32), (32, 24), (8, 8)])
def test_sizes_whose_skips_do_not_line_up_are_rejected(encoder, size):
    image, mask = inputs(*size)
    with pytest.raises(InputError, match="image"):
        encoder(image, mask)


def test_mismatched_mask_is_rejected(encoder):
    image, mask = inputs()
    with pytest.raises(InputError, match="mask"):
        encoder(image, mask[:, :-1])
    with pytest.raises(InputError, match="mask"):
        encoder(image, mask[..., :16])


def test_config_without_room_for_the_decoder_is_rejected():
    with pytest.raises(InputError, match="num_upsample"):
        StyleEncoder(num_classes=C, num_downsample=3, num_upsample=3)


def nearest(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """PyTorch's 'nearest' rule written out: destination pixel i reads source floor(i * H / h)."""
    rows = (torch.arange(h) * mask.shape[-2] // h).long()
    cols = (torch.arange(w) * mask.shape[-1] // w).long()
    return mask[:, :, rows][:, :, :, cols]


def test_masked_average_pooling_matches_reference(encoder):
    """Eq. 5 after every decoder layer: group j of the features averaged over class j's region."""
    image, mask = inputs(64, 48)
    mask[1, 2] = 0  # class 2 absent in sample 1 (pixels left unlabelled)
    features, pooled = [], []
    hooks = [
        encoder.Decoder[f"dec_layer_{j}"].register_forward_hook(lambda m, i, o: features.append(o)) for j in range(UP)
    ]
    hooks += [encoder.out[f"out_{j}"].register_forward_hook(lambda m, i, o: pooled.append(i[0])) for j in range(UP)]
    with torch.no_grad():
        out = encoder(image, mask)
    for h in hooks:
        h.remove()

    for j, (feat, got) in enumerate(zip(features, pooled, strict=True)):
        B, width, H, W = feat.shape
        assert (64 // 2 ** (DOWN - 1 - j), 48 // 2 ** (DOWN - 1 - j)) == (H, W)
        region = nearest(mask, H, W)
        group = width // C
        expected = torch.zeros(B, width)
        for b in range(B):
            for c in range(C):
                m = region[b, c]
                for k in range(group):
                    ch = c * group + k
                    expected[b, ch] = (feat[b, ch] * m).sum() / (m.sum() + POOL_EPS)
        # float32 masked means (|x| ~ 2) summed in another order: ~1e-7 relative
        torch.testing.assert_close(got.squeeze(-1), expected, rtol=1e-5, atol=1e-6)
        # scale j occupies columns j*D:(j+1)*D of every class row, coarse to fine
        with torch.no_grad():
            style = encoder.out[f"out_{j}"](expected.unsqueeze(-1)).view(B, C, D)
        torch.testing.assert_close(out[:, :, j * D : (j + 1) * D], style, rtol=1e-5, atol=1e-6)


def test_absent_class_row_is_tanh_of_output_bias(encoder):
    image, mask = inputs()
    mask[0, 3] = 0
    with torch.no_grad():
        out = encoder(image, mask)
        blank = encoder(image, torch.zeros_like(mask))
    for j in range(UP):
        bias = encoder.out[f"out_{j}"][0].bias.view(C, D)
        assert torch.equal(out[0, 3, j * D : (j + 1) * D], torch.tanh(bias[3]))
        assert torch.equal(blank[:, :, j * D : (j + 1) * D], torch.tanh(bias).expand(2, C, D))
    assert not torch.equal(out[1, 3], out[0, 3])  # class 3 is present in sample 1


def test_present_classes_lists_classes_with_pixels():
    labels = torch.tensor([[[0, 1], [1, 4]]])
    assert present_classes(one_hot(labels)).tolist() == [[True, True, False, False, True]]


def test_relabelling_pixels_changes_only_the_two_classes_rows(encoder):
    """The mask enters only through the per-class pooling, so row j depends on mask channel j alone."""
    image, mask = inputs()
    labels = mask.argmax(1)
    moved = labels.clone()
    moved[:, :16][labels[:, :16] == 1] = 4
    with torch.no_grad():
        before = encoder(image, mask)
        after = encoder(image, one_hot(moved))
    changed = (before != after).any(-1).any(0)
    assert changed.tolist() == [False, True, False, False, True]


def test_class_groups_mix_only_through_the_skip_concatenation(encoder):
    """Perturbing first-layer group k: the coarsest scale changes in row k only, the next in the rows
    whose conv group reads slice k of [x, skip] -- group g reads slices 2g, 2g+1 (authors' quirk)."""
    image, mask = inputs()
    k = 0
    perturbed = StyleEncoder.from_config(encoder.config).eval()
    perturbed.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        perturbed.Encoder["first_layer"][0].weight[k * FEAT : (k + 1) * FEAT] += 1.0
        before, after = encoder(image, mask), perturbed(image, mask)
    changed = [(before[..., s * D : (s + 1) * D] != after[..., s * D : (s + 1) * D]).any(-1).any(0) for s in range(2)]
    assert changed[0].nonzero().flatten().tolist() == [k]
    readers = sorted({k // 2, (k + C) // 2})  # x slice k and skip slice k (= concat slice k + C)
    assert changed[1].nonzero().flatten().tolist() == readers


def test_save_and_load_round_trip(encoder, tmp_path):
    encoder.save_pretrained(tmp_path)
    loaded = StyleEncoder.from_pretrained(tmp_path).eval()
    image, mask = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(image, mask), encoder(image, mask))


def test_output_matches_the_authors_encoder_on_fixed_weights():
    """Golden numbers from the authors' MultiScaleEffStyleEncoder with the same config, weights and
    inputs (float64); they pin what the key layout cannot: upsampling mode, skip order, pooling."""
    enc = StyleEncoder(num_classes=C, num_feat=FEAT, num_downsample=DOWN, num_upsample=UP, style_dim=D)
    enc = enc.double().eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for t in enc.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.5)
    g = torch.Generator().manual_seed(8)
    image = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, C, (2, 32, 32), generator=g)
    with torch.no_grad():
        out = enc(image, one_hot(labels).double())
    ramp = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)
    got = [out.sum(), (out * ramp).sum(), out.abs().sum(), *out[0, 0, ::3], *out[1, 4, 1::3]]
    expected = [
        3.403595990288255,
        4.27384846174893,
        123.9260473004293,
        0.7953227256510402,
        -0.25972064508210896,
        0.5940011653952694,
        0.23722180858349493,
        0.08036414548762905,
        -0.17898589232622245,
        -0.6053196403606038,
        0.6645931494441436,
        -0.8025579352468772,
        0.20224484885080415,
        -0.862084801880359,
        0.668024888533051,
        0.2730227829733066,
        0.03113947715768406,
        0.37001663087808867,
        -0.5605787131987326,
    ]
    # float64 on both sides, values up to ~124: ~1e-14 (measured 3e-14)
    torch.testing.assert_close(torch.stack(got), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)


# Derived from the authors' MultiScaleEffStyleEncoder(num_downsample=6, num_upsample=5, num_feat=4,
# num_mask_channels=19, output_dim=256): its state_dict keys and shapes, in order.
AUTHORS_FACE_LAYOUT = """
Encoder.first_layer.0.weight 76,3,3,3
Encoder.first_layer.0.bias 76
Encoder.first_layer.1.weight 76
Encoder.first_layer.1.bias 76
Encoder.enc_layer_0.0.weight 152,4,3,3
Encoder.enc_layer_0.0.bias 152
Encoder.enc_layer_0.1.weight 152
Encoder.enc_layer_0.1.bias 152
Encoder.enc_layer_1.0.weight 304,8,3,3
Encoder.enc_layer_1.0.bias 304
Encoder.enc_layer_1.1.weight 304
Encoder.enc_layer_1.1.bias 304
Encoder.enc_layer_2.0.weight 608,16,3,3
Encoder.enc_layer_2.0.bias 608
Encoder.enc_layer_2.1.weight 608
Encoder.enc_layer_2.1.bias 608
Encoder.enc_layer_3.0.weight 1216,32,3,3
Encoder.enc_layer_3.0.bias 1216
Encoder.enc_layer_3.1.weight 1216
Encoder.enc_layer_3.1.bias 1216
Encoder.enc_layer_4.0.weight 2432,64,3,3
Encoder.enc_layer_4.0.bias 2432
Encoder.enc_layer_4.1.weight 2432
Encoder.enc_layer_4.1.bias 2432
Encoder.enc_layer_5.0.weight 4864,128,3,3
Encoder.enc_layer_5.0.bias 4864
Encoder.enc_layer_5.1.weight 4864
Encoder.enc_layer_5.1.bias 4864
Decoder.dec_layer_0.1.weight 2432,256,3,3
Decoder.dec_layer_0.1.bias 2432
Decoder.dec_layer_0.2.weight 2432
Decoder.dec_layer_0.2.bias 2432
Decoder.dec_layer_1.1.weight 1216,256,3,3
Decoder.dec_layer_1.1.bias 1216
Decoder.dec_layer_1.2.weight 1216
Decoder.dec_layer_1.2.bias 1216
Decoder.dec_layer_2.1.weight 608,128,3,3
Decoder.dec_layer_2.1.bias 608
Decoder.dec_layer_2.2.weight 608
Decoder.dec_layer_2.2.bias 608
Decoder.dec_layer_3.1.weight 304,64,3,3
Decoder.dec_layer_3.1.bias 304
Decoder.dec_layer_3.2.weight 304
Decoder.dec_layer_3.2.bias 304
Decoder.dec_layer_4.1.weight 152,32,3,3
Decoder.dec_layer_4.1.bias 152
Decoder.dec_layer_4.2.weight 152
Decoder.dec_layer_4.2.bias 152
out.out_0.0.weight 4864,128,1
out.out_0.0.bias 4864
out.out_1.0.weight 4864,64,1
out.out_1.0.bias 4864
out.out_2.0.weight 4864,32,1
out.out_2.0.bias 4864
out.out_3.0.weight 4864,16,1
out.out_3.0.bias 4864
out.out_4.0.weight 4864,8,1
out.out_4.0.bias 4864
"""


def test_face_config_has_the_authors_state_dict_layout():
    with torch.device("meta"):
        face = StyleEncoder()
    state = face.state_dict()
    layout = [f"{k} {','.join(map(str, v.shape))}" for k, v in state.items()]
    assert layout == AUTHORS_FACE_LAYOUT.split("\n")[1:-1]
    assert len(state) == 58
    assert sum(p.numel() for p in face.parameters()) == 18_069_304
