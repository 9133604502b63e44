"""Renumber the classes of a trained pipeline or procedural parser, without retraining.

Why: the shipped demo model and parser were trained when the procedural faces put `l_*` on the
image's left; CelebAMask-HQ (and now the procedural faces, see scadm.labels) put it on the right.
A model whose classes are renumbered computes, on relabelled masks, what the old one computed on
the old masks. `perm[k]` is the class index that new class k had before (for a swap of pairs, as
`left_right_permutation` returns, the permutation is its own inverse).

Where a class index enters each network:
- UNet: only the input channels of every SPADE norm's first conv (the mask); the masked
  cross-attention treats its C tokens as a set, so reordering tokens and mask channels together
  changes nothing but the order of a few sums (float rounding).
- style encoder: its channel groups and output rows. These cannot be permuted exactly (see
  StyleEncoder's docstring); its `class_order` setting is updated instead, which is bit-exact.
- procedural parser: the output channels of its last conv (weights and bias), bit-exact.

>>> new = relabel_pipeline(pipe, left_right_permutation(pipe.label_set))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from scadm.data.folder import flip_table
from scadm.errors import InputError
from scadm.labels import LEFT_RIGHT_PAIRS, LabelSet
from scadm.models.style_encoder import StyleEncoder
from scadm.models.unet import SCADMUNet
from scadm.nn.spade import SPADEGroupNorm
from scadm.parsing.procedural import ProceduralParserNet
from scadm.pipeline import SCADMPipeline


def left_right_permutation(label_set: LabelSet) -> list[int]:
    """The permutation that trades every `l_*` class with its `r_*` class (LEFT_RIGHT_PAIRS)."""
    return flip_table(label_set, LEFT_RIGHT_PAIRS).tolist()


def _check(perm: Sequence[int], num_classes: int) -> list[int]:
    perm = [int(k) for k in perm]
    if sorted(perm) != list(range(num_classes)):
        raise InputError(f"perm: {perm} is not a permutation of 0..{num_classes - 1}")
    return perm


def relabel_unet(unet: SCADMUNet, perm: Sequence[int]) -> SCADMUNet:
    """A copy of `unet` whose mask channel k is the old mask channel perm[k]."""
    perm = _check(perm, unet.config.num_classes)
    out = copy.deepcopy(unet)
    for module in out.modules():
        if isinstance(module, SPADEGroupNorm):
            weight = module.mlp_shared[0].get_parameter("weight")  # the conv that reads the mask
            weight.data = weight.data[:, perm].contiguous()
    return out


def relabel_style_encoder(encoder: StyleEncoder, perm: Sequence[int]) -> StyleEncoder:
    """A copy of `encoder`, same weights, whose class_order follows the renumbering."""
    num_classes = encoder.config.num_classes
    perm = _check(perm, num_classes)
    new_index = [perm.index(k) for k in range(num_classes)]  # old class k is now new_index[k]
    old_order = encoder.config.class_order or list(range(num_classes))
    order = [new_index[c] for c in old_order]
    args = {k: v for k, v in encoder.config.items() if not k.startswith("_")}  # diffusers' own
    args["class_order"] = None if order == list(range(num_classes)) else order
    out = StyleEncoder(**args)
    out.load_state_dict(encoder.state_dict())
    torch.nn.Module.to(out, device=encoder.device, dtype=encoder.dtype)  # no diffusers dtype warning
    return out.train(encoder.training)


def relabel_pipeline(pipe: SCADMPipeline, perm: Sequence[int]) -> SCADMPipeline:
    """A pipeline whose networks read and write classes in the new numbering; the label set (the
    names and colours of indices 0..C-1) and the first stage are unchanged."""
    return SCADMPipeline(
        unet=relabel_unet(pipe.unet, perm),
        style_encoder=relabel_style_encoder(pipe.style_encoder, perm),
        vqvae=pipe.vqvae,
        schedule=pipe.schedule,
        label_set=pipe.label_set,
        image_size=pipe.image_size,
        unconditional=pipe.unconditional,
    )


def relabel_parser(net: ProceduralParserNet, perm: Sequence[int]) -> ProceduralParserNet:
    """A copy of `net` whose output channel k is the old channel perm[k]."""
    perm = _check(perm, net.config.num_classes)
    out = copy.deepcopy(net)
    head = out.head
    head.weight.data = head.weight.data[perm].contiguous()
    if head.bias is not None:
        head.bias.data = head.bias.data[perm].contiguous()
    return out
