"""One face-parser interface over both networks: [-1, 1] images in, CelebAMask-HQ labels out.

`load_face_parser("procedural")` reads procedural faces (the shipped demo domain, offline);
`load_face_parser("bisenet")` reads aligned CelebA-HQ-style photos (needs the parse extra).
Either returns a FaceParser: images (N, 3, H, W) in [-1, 1] -> int64 labels (N, H, W) in
scadm.labels.CELEBAMASK_HQ order, at the input's own size or at `size=`. The BiSeNet parser at
512 px equals the original inference of its weights (tests/test_parsing_golden.py).

>>> parser = load_face_parser("procedural")
>>> labels = parser(images)          # images: (N, 3, 64, 64) in [-1, 1]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from scadm.errors import InputError
from scadm.labels import NUM_CLASSES

PARSERS = ("procedural", "bisenet")
BISENET_INPUT = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FaceParser(nn.Module):
    """Resizes images to the network's input size (bilinear), normalises them the way the
    network was trained, upsamples the logits to that input size the way the network's own
    inference code does (`align_corners`), resizes them to the output size (bilinear, antialiased
    when shrinking), takes the argmax and maps the network's class ids to CelebAMask-HQ's.

    At the network's input size the labels are exactly the network's own inference; at another
    size the logits travel back over the same pixel grid mapping the image took to get there.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor
    remap: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        to_celebamask_hq: Sequence[int] = tuple(range(NUM_CLASSES)),
        batch_size: int = 8,
        align_corners: bool = False,
    ):
        super().__init__()
        self.net = net.eval()
        self.input_size, self.batch_size = int(input_size), int(batch_size)
        self.align_corners = bool(align_corners)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("remap", torch.tensor(to_celebamask_hq, dtype=torch.int64))

    @torch.no_grad()
    def forward(self, images: torch.Tensor, size: int | Sequence[int] | None = None) -> torch.Tensor:
        """int64 labels (N, *size); `size` defaults to the images' own (H, W)."""
        return self.at_sizes(images, [tuple(images.shape[-2:]) if size is None else size])[0]

    @torch.no_grad()
    def at_sizes(self, images: torch.Tensor, sizes: Sequence[int | Sequence[int]]) -> list[torch.Tensor]:
        """Labels at each of `sizes` from one pass of the network (N, *size) each."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.dtype.is_floating_point:
            raise InputError(
                f"images: expected a float (N, 3, H, W) tensor in [-1, 1], got {images.dtype} {tuple(images.shape)}"
            )
        pairs = [_pair(size) for size in sizes]
        self.eval()
        out: list[list[torch.Tensor]] = [[] for _ in pairs]
        for chunk in images.split(self.batch_size):
            native = self.logits(chunk)
            for k, size in enumerate(pairs):
                labels = self.resize_logits(native, size).argmax(1)
                out[k].append(self.remap[labels].to(images.device))
        return [
            torch.cat(o) if o else images.new_zeros(images.shape[0], *size, dtype=torch.int64)
            for o, size in zip(out, pairs, strict=True)
        ]

    @torch.no_grad()
    def logits(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """float32 logits (N, classes, *size) in the network's class order; `size` defaults to
        the network's input size, where they are the network's own inference."""
        side = (self.input_size,) * 2
        x = images.to(self.mean.device, torch.float32)
        if tuple(x.shape[-2:]) != side:
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True)
        x = ((x + 1) / 2 - self.mean) / self.std
        logits = self.net(x)
        if tuple(logits.shape[-2:]) != side:
            logits = F.interpolate(logits, size=side, mode="bilinear", align_corners=self.align_corners)
        return logits if size is None else self.resize_logits(logits, size)

    @staticmethod
    def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Input-size logits to another size: bilinear, antialiased when shrinking, so that a
        small label takes the class with the highest mean logit over its footprint (thin parts
        such as brows and lips keep their share instead of depending on one sampled pixel)."""
        if tuple(size) == tuple(logits.shape[-2:]):
            return logits
        shrink = size[0] < logits.shape[-2] or size[1] < logits.shape[-1]
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, Sequence) else ()
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in pair):
        raise InputError(f"size: expected a positive int or (height, width), got {size!r}")
    return pair


def load_face_parser(
    name: str = "bisenet", weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> FaceParser:
    """A FaceParser by name: "procedural" (shipped weights, or a `scadm train-parser` folder)
    or "bisenet" (the installed 79999_iter.pth, or that file's path)."""
    if name == "procedural":
        from scadm.parsing.procedural import PROCEDURAL_PARSER, load_procedural_net

        net = load_procedural_net(weights or PROCEDURAL_PARSER)
        # the net takes [-1, 1] directly: mean 0.5, std 0.5 undo the wrapper's [0, 1] step
        parser = FaceParser(net, net.config.image_size, (0.5,) * 3, (0.5,) * 3)
    elif name == "bisenet":
        from scadm.parsing.weights import BISENET_TO_CELEBAMASK_HQ, load_bisenet

        # align_corners=True: how the original inference code (zllrunning/face-parsing.PyTorch,
        # model.py) upsamples the 1/8-resolution logits to the input size, which the weights
        # 79999_iter.pth come with; the half-pixel convention shrinks the labels ~1.4 % toward the
        # centre and flips ~3 % of the pixels.
        parser = FaceParser(
            load_bisenet(weights),
            BISENET_INPUT,
            IMAGENET_MEAN,
            IMAGENET_STD,
            BISENET_TO_CELEBAMASK_HQ,
            align_corners=True,
        )
    else:
        raise InputError(f"parser: unknown face parser {name!r}; choose {', '.join(PARSERS)}")
    return parser.to(device)
