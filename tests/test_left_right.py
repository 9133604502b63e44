"""One left/right convention (scadm.labels): l_* is the subject's left, on the image's right, in
procedural faces as in CelebAMask-HQ; renumbering a trained model's classes (scadm.relabel) keeps
what it computes."""

import numpy as np
import pytest
import torch
from tiny_models import face, tiny_pipeline

from scadm.data.synthetic import render_face, swap_parts
from scadm.errors import InputError
from scadm.labels import CELEBAMASK_HQ, LEFT_RIGHT_PAIRS
from scadm.models.style_encoder import StyleEncoder
from scadm.models.unet import SCADMUNet
from scadm.parsing import load_face_parser
from scadm.parsing.procedural import ParserConfig, ProceduralParserNet
from scadm.pipeline import SCADMPipeline
from scadm.relabel import (
    left_right_permutation,
    relabel_parser,
    relabel_pipeline,
    relabel_style_encoder,
    relabel_unet,
)

PERM = left_right_permutation(CELEBAMASK_HQ)
# Relabelled models compute the same sums in another order: float32 (eps 1.2e-7) rounding over
# ~20 layers of O(1) activations stays near 1e-6 (measured 2e-6 after 25 DDIM steps with the
# shipped model); 1e-5 would still catch a wrong channel, which moves outputs by O(0.1).
TOL = {"rtol": 1e-5, "atol": 1e-5}


def test_rendered_l_parts_lie_on_the_image_right():
    for seed in range(40):
        labels = render_face(seed).labels
        cols = np.broadcast_to(np.arange(labels.shape[1]), labels.shape)
        centre = labels.shape[1] / 2
        for left, right in LEFT_RIGHT_PAIRS:
            on_left = labels == CELEBAMASK_HQ.index(left)
            on_right = labels == CELEBAMASK_HQ.index(right)
            if on_left.any():
                assert cols[on_left].mean() > centre, (seed, left)
            if on_right.any():
                assert cols[on_right].mean() < centre, (seed, right)


def test_a_one_eye_swap_repaints_the_eye_with_that_label():
    target, reference = render_face(900_000_017), render_face(900_000_023)
    swapped = swap_parts(target, reference, ["l_eye"])
    changed = (swapped.image != target.image).any(-1)
    l_eye = target.labels == CELEBAMASK_HQ.index("l_eye")
    assert changed[l_eye].mean() > 0.5  # the reference's l_eye has another colour
    assert not changed[:, : target.labels.shape[1] // 2].any()  # the image's left half is untouched


def test_left_right_permutation_swaps_the_pairs_only():
    expected = list(range(19))
    for left, right in LEFT_RIGHT_PAIRS:
        i, j = CELEBAMASK_HQ.index(left), CELEBAMASK_HQ.index(right)
        expected[i], expected[j] = j, i
    assert expected == PERM


def _tiny(mask_downsample: str) -> SCADMPipeline:
    torch.manual_seed(0)
    style_encoder = StyleEncoder(num_downsample=4, num_upsample=3, num_feat=1, style_dim=16)
    unet = SCADMUNet(
        model_channels=32,
        channel_mult=(1, 2),
        attention_resolutions=(1, 2),
        num_head_channels=16,
        context_dim=48,
        mask_downsample=mask_downsample,
    )
    with torch.no_grad():  # random weights everywhere, zero-initialised layers included
        for p in list(unet.parameters()) + list(style_encoder.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    base = tiny_pipeline()
    return SCADMPipeline(
        unet, style_encoder, base.vqvae, base.schedule, CELEBAMASK_HQ, image_size=64, unconditional="blank"
    )


@pytest.mark.parametrize("mask_downsample", ["nearest", "any"])  # hard and soft masked attention
def test_relabelled_pipeline_on_new_labels_equals_the_old_on_old_labels(mask_downsample, one_thread):
    old = _tiny(mask_downsample)
    new = relabel_pipeline(old, PERM)
    perm = torch.tensor(PERM)
    image, labels = (torch.stack(x) for x in zip(face(1), face(2), strict=True))
    old_labels = perm[labels]  # what the old numbering called each pixel
    old_code, new_code = old.encode_style(image, old_labels), new.encode_style(image, labels)
    assert torch.equal(new_code.tokens, old_code.tokens[:, perm])  # bit for bit
    assert torch.equal(new_code.blank, old_code.blank[:, perm])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    eps_old = old.unet(x, t, old_code.tokens, old.one_hot(old_labels))
    eps_new = new.unet(x, t, new_code.tokens, new.one_hot(labels))
    torch.testing.assert_close(eps_new, eps_old, **TOL)
    assert not torch.allclose(new.unet(x, t, new_code.tokens, new.one_hot(old_labels)), eps_old, **TOL)
    eye = CELEBAMASK_HQ.index("l_eye")
    ref = old_code.index(1)
    torch.testing.assert_close(
        new(labels, new_code.swap(new_code.index(1), [eye]), num_inference_steps=3),
        old(old_labels, old_code.swap(ref, [PERM[eye]]), num_inference_steps=3),
        **TOL,
    )


def test_relabelling_twice_restores_the_model():
    encoder = StyleEncoder(num_classes=19, num_downsample=3, num_upsample=2, num_feat=1, style_dim=4)
    once = relabel_style_encoder(encoder, PERM)
    assert once.config.class_order == PERM
    assert relabel_style_encoder(once, PERM).config.class_order is None
    unet = SCADMUNet(
        model_channels=32, channel_mult=(1,), attention_resolutions=(1,), num_head_channels=16, context_dim=8
    )
    back = relabel_unet(relabel_unet(unet, PERM), PERM)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), unet.state_dict().values(), strict=True))


def test_bad_permutations_are_refused():
    with pytest.raises(InputError, match="class_order"):
        StyleEncoder(num_classes=3, num_downsample=3, num_upsample=2, class_order=[0, 0, 1])
    with pytest.raises(InputError, match="perm"):
        relabel_parser(ProceduralParserNet(ParserConfig(channels=(8, 16))), [0, 1])


def test_relabelled_parser_gives_the_relabelled_logits():
    torch.manual_seed(0)
    net = ProceduralParserNet(ParserConfig(channels=(8, 16))).eval()
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(relabel_parser(net, PERM)(image), net(image)[:, PERM])  # bit for bit


def test_shipped_parser_finds_l_eye_on_the_image_right():
    parser = load_face_parser("procedural")
    for seed in (900_000_017, 900_000_023):
        f = render_face(seed)
        image = torch.from_numpy(f.image).permute(2, 0, 1).float()[None] / 127.5 - 1
        predicted = parser(image)[0].numpy()
        for name in ("l_eye", "r_eye"):
            k = CELEBAMASK_HQ.index(name)
            truth, found = f.labels == k, predicted == k
            assert (truth & found).sum() / (truth | found).sum() > 0.6, (seed, name)
