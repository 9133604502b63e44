import copy

import torch

from scadm.models.autoencoder import decode, nearest_codes


def test_nearest_codes_are_the_quantisers_own_choice(tiny_pipe):
    vq = tiny_pipe.vqvae
    h = torch.randn(2, vq.config.latent_channels, 8, 8)
    quantised = vq.quantize(h)[0]
    # the quantiser returns h + (code - h): the same codes up to one float32 rounding of values ~1
    torch.testing.assert_close(nearest_codes(vq, h), quantised, atol=1e-6, rtol=0)


def test_a_bf16_vq_picks_its_codes_in_float32(tiny_pipe):
    """Distances in bf16 (8 bits of mantissa) pick another codebook entry for many latents; the
    bf16 decode must quantise as exact arithmetic does, so its images differ from the float32 ones
    only by the decoder's bf16 rounding."""
    vq_bf16 = copy.deepcopy(tiny_pipe.vqvae).to(torch.bfloat16)
    codebook = vq_bf16.quantize.embedding.weight.double()  # (K, C), the bf16 values exactly
    # latents spread like the codebook (its entries are ~1e-3): many lie between close entries
    h = codebook[torch.randint(len(codebook), (256,))] + 0.5 * codebook.std() * torch.randn(256, codebook.shape[1])
    exact = codebook[torch.cdist(h, codebook).argmin(dim=1)]  # float64: no near-ties at this scale
    as_image = lambda x: x.T.reshape(1, -1, 16, 16).contiguous()  # noqa: E731
    in_bf16 = vq_bf16.quantize(as_image(h).to(torch.bfloat16))[0].double()
    assert not torch.equal(in_bf16, as_image(exact)), "the bf16 quantiser must go wrong on these latents"
    assert torch.equal(nearest_codes(vq_bf16, as_image(h).float()).double(), as_image(exact))
    scale = vq_bf16.config.scaling_factor
    image = decode(vq_bf16, as_image(h).float() * scale)
    reference = vq_bf16.decode(as_image(exact).to(torch.bfloat16), force_not_quantize=True).sample
    assert torch.equal(image, reference)
