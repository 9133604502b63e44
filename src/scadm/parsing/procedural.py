"""A small UNet that parses procedural faces (scadm.data.synthetic) into CelebAMask-HQ classes.

Why: the mask-accuracy metrics (mIoU / pixel accuracy of a parser run on generated faces) need a
parser for the domain the shipped demo model works in, and one that runs offline. Procedural
labels are exact, so a network of about 1 M parameters learns them well at 64 px; the weights
ship with scadm (fp16 safetensors, about 2 MB).

>>> net = load_procedural_net()                    # the shipped weights
>>> logits = net(torch.zeros(1, 3, 64, 64))       # (1, 19, 64, 64), input in [-1, 1]
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from scadm.errors import CheckpointError, InputError
from scadm.labels import NUM_CLASSES
from scadm.models.loading import check_finite, unreadable_safetensors
from scadm.parsing.weights import load_strict

PROCEDURAL_PARSER = Path(__file__).resolve().parent.parent / "assets" / "parser-procedural-64"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
GROUPS = 8  # GroupNorm groups: batch-size independent, so one face parses like a batch of them


@dataclass(frozen=True)
class ParserConfig:
    """Constructor arguments of ProceduralParserNet, saved as config.json next to the weights."""

    channels: tuple[int, ...] = (24, 48, 96, 96)  # per resolution level, 64 px -> 8 px
    num_classes: int = NUM_CLASSES
    image_size: int = 64  # the resolution it was trained at; the wrapper resizes to it

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or any(c < GROUPS or c % GROUPS for c in self.channels):
            raise InputError(f"channels: {self.channels} must be multiples of {GROUPS}")
        if self.image_size % (1 << (len(self.channels) - 1)):
            raise InputError(
                f"image_size: {self.image_size} must be divisible by "
                f"{1 << (len(self.channels) - 1)} for {len(self.channels)} levels"
            )


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(GROUPS, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(GROUPS, c_out),
        nn.SiLU(),
    )


class ProceduralParserNet(nn.Module):
    """UNet: a double conv per level, stride-2 convs down, nearest upsampling + skip concat up.

    forward: (B, 3, S, S) in [-1, 1] -> logits (B, num_classes, S, S).
    """

    def __init__(self, config: ParserConfig = ParserConfig()):
        super().__init__()
        self.config = config
        ch = config.channels
        self.stem = _double_conv(3, ch[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), _double_conv(b, b))
            for a, b in itertools.pairwise(ch)
        )
        self.up = nn.ModuleList(_double_conv(b + a, a) for a, b in itertools.pairwise(ch))
        self.head = nn.Conv2d(ch[0], config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in reversed(self.up):
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return self.head(h)


def save_procedural_net(net: ProceduralParserNet, out: str | Path, dtype=torch.float16) -> Path:
    """Write config.json + model.safetensors (fp16 by default: half the size, same labels)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(asdict(net.config), indent=2) + "\n")
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}
    save_file(state, out / WEIGHTS_FILE)
    return out


def load_procedural_net(path: str | Path = PROCEDURAL_PARSER) -> ProceduralParserNet:
    """The parser in folder `path` (default: the shipped one), float32, in eval mode."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise InputError(
            f"{path}: not a procedural parser folder (needs {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, as `scadm train-parser --out DIR` writes)"
        )
    try:
        config = ParserConfig(**json.loads(config_file.read_text()))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config_file}: not a parser config ({e})") from None
    net = ProceduralParserNet(config)
    try:
        state = {k: v.float() for k, v in load_file(weights_file).items()}
    except Exception as e:  # safetensors raises its own error types
        raise unreadable_safetensors(weights_file, e) from None
    check_finite(state.items(), weights_file)
    load_strict(net, state, weights_file)
    return net.eval()
