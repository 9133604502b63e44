"""Training and held-out scoring of the procedural-face parser (`scadm train-parser`).

Faces come fresh from scadm.data.synthetic (dataset seed 1: face seeds 1,000,003 + i), so the net
never sees a face twice; held-out faces use seeds from HELD_OUT_SEED on, which no training set of
scadm touches. Training images are blurred and noised at random because the parser's job is to
read faces that a diffusion model generated, and those are softer than the renderer's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scadm.data.synthetic import SyntheticFaces, render_face
from scadm.errors import InputError
from scadm.labels import NUM_CLASSES
from scadm.parsing.procedural import ParserConfig, ProceduralParserNet, save_procedural_net

TRAIN_DATA_SEED = 1
HELD_OUT_SEED = 900_000_000
MAX_BLUR_SIGMA = 1.2  # pixels at 64 px: about what the demo model's VQ-f4 decoder smooths away
MAX_NOISE = 0.06  # std of added Gaussian noise, in [-1, 1] units


@dataclass(frozen=True)
class ParserScore:
    """Pixel accuracy and mean IoU (over classes present in the truth or the prediction)."""

    accuracy: float
    miou: float
    per_class_iou: tuple[float, ...]  # NaN where a class is absent from both

    def summary(self) -> str:
        return f"pixel accuracy {self.accuracy:.4f}, mIoU {self.miou:.4f}"


def confusion_matrix(pred: torch.Tensor, truth: torch.Tensor, num_classes: int = NUM_CLASSES):
    """(C, C) int64 counts, rows = truth, columns = prediction."""
    index = truth.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def score(confusion: torch.Tensor) -> ParserScore:
    """Dataset-level scores from a confusion matrix (IoU per class over all pixels, then mean)."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    present = union > 0
    return ParserScore(
        accuracy=float(tp.sum() / c.sum()), miou=float(iou[present].mean()), per_class_iou=tuple(float(v) for v in iou)
    )


def held_out_score(
    parse: Callable[[torch.Tensor], torch.Tensor], num: int = 64, size: int = 64, batch_size: int = 32
) -> ParserScore:
    """Score `parse` ((N, 3, S, S) in [-1, 1] -> (N, S, S) labels) on faces HELD_OUT_SEED + i."""
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    for start in range(0, num, batch_size):
        faces = [render_face(HELD_OUT_SEED + i, size) for i in range(start, min(num, start + batch_size))]
        images = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2)
        images = images.float() / 127.5 - 1.0
        truth = torch.from_numpy(np.stack([f.labels for f in faces]))
        confusion += confusion_matrix(parse(images), truth)
    return score(confusion)


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random Gaussian blur (sigma 0..MAX_BLUR_SIGMA) and noise (0..MAX_NOISE), per image."""
    n = images.shape[0]
    sigma = torch.rand(n, generator=generator) * MAX_BLUR_SIGMA
    noise = torch.rand(n, 1, 1, 1, generator=generator) * MAX_NOISE
    radius = math.ceil(2 * MAX_BLUR_SIGMA)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (N, K); sigma ~ 0 gives the identity
    x = images.reshape(1, n * 3, *images.shape[-2:])
    k = kernel.repeat_interleave(3, 0)[:, None]  # (N*3, 1, K)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k[:, :, None, :], groups=n * 3)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k[:, :, :, None], groups=n * 3)
    x = x.reshape_as(images) + noise * torch.randn(images.shape, generator=generator)
    return x.clamp(-1.0, 1.0)


@dataclass(frozen=True)
class TrainResult:
    out: Path
    steps: int
    seconds: float
    final_loss: float
    held_out: ParserScore


def train_procedural_parser(
    out: str | Path,
    steps: int = 1500,
    batch_size: int = 16,
    lr: float = 2e-3,
    config: ParserConfig = ParserConfig(),
    seed: int = 0,
    held_out: int = 64,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train a ProceduralParserNet with cross-entropy, AdamW and cosine decay; save to `out`.

    >>> train_procedural_parser("runs/parser", steps=1500)  # doctest: +SKIP
    """
    if steps < 1 or batch_size < 1:
        raise InputError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = ProceduralParserNet(config).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    data = SyntheticFaces(steps * batch_size, size=config.image_size, seed=TRAIN_DATA_SEED)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    start, running = time.perf_counter(), math.nan
    for step, batch in enumerate(loader, start=1):
        logits = net(degrade(batch["image"], generator))
        loss = F.cross_entropy(logits, batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if step == 1 else 0.95 * running + 0.05 * loss.item()
        if step % 100 == 0 or step == steps:
            log(f"step {step}/{steps}: loss {running:.4f}, {time.perf_counter() - start:.0f} s")
            save_procedural_net(net, out)
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        result = held_out_score(lambda x: net(x).argmax(1), num=held_out, size=config.image_size)
    log(f"held-out faces {HELD_OUT_SEED}..{HELD_OUT_SEED + held_out - 1}: {result.summary()}")
    return TrainResult(Path(out), steps, seconds, running, result)
