"""BiSeNet face parser (Yu et al., "BiSeNet: Bilateral Segmentation Network", ECCV 2018), in the
layout of the widely used CelebAMask-HQ face-parsing checkpoint `79999_iter.pth`.

Written here from the checkpoint's parameter names and shapes, so its state dict loads strictly
(minus the two auxiliary training heads, see AUX_HEADS) and nothing is downloaded: the reference
code fetches ImageNet ResNet-18 weights in its constructor. Module names follow the checkpoint
(`cp.resnet.layer1.0.conv1`, `cp.arm16`, `ffm.convblk`, `conv_out.conv_out`, ...).

The context path is a ResNet-18; in this face-parsing variant the spatial path is the ResNet's
stride-8 feature map itself rather than a separate three-conv branch.

>>> net = BiSeNet()
>>> net(torch.zeros(1, 3, 512, 512)).shape   # logits at 1/8 resolution, parser class order
torch.Size([1, 19, 64, 64])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BISENET_CLASSES = 19
# Heads the checkpoint trained with deep supervision on the context features; inference uses only
# the fused output `conv_out`, so their weights are dropped when loading.
AUX_HEADS = ("conv_out16.", "conv_out32.")
RESNET18_WIDTHS = (64, 128, 256, 512)
CONTEXT_CHANNELS = 128  # width of the context path's refined features
FUSED_CHANNELS = 256  # spatial (128) + context (128)


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU; `conv` and `bn` are the checkpoint's names."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)


class BasicBlock(nn.Module):
    """ResNet-18 residual block: two 3x3 convs, a 1x1 projection when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        h = self.bn2(self.conv2(h))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(h + shortcut, inplace=True)


class ResNet18Features(nn.Module):
    """ResNet-18 without its classifier; returns the stride-8, -16 and -32 feature maps."""

    def __init__(self):
        super().__init__()
        w = RESNET18_WIDTHS
        self.conv1 = nn.Conv2d(3, w[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(w[0], w[0]), BasicBlock(w[0], w[0]))
        self.layer2 = nn.Sequential(BasicBlock(w[0], w[1], 2), BasicBlock(w[1], w[1]))
        self.layer3 = nn.Sequential(BasicBlock(w[1], w[2], 2), BasicBlock(w[2], w[2]))
        self.layer4 = nn.Sequential(BasicBlock(w[2], w[3], 2), BasicBlock(w[3], w[3]))

    def forward(self, x: torch.Tensor):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    """ARM (paper Fig. 2b): a 3x3 conv, then channels reweighted by a sigmoid of their global mean."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_out)
        self.conv_atten = nn.Conv2d(c_out, c_out, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        weight = self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True)))
        return feat * torch.sigmoid(weight)


class ContextPath(nn.Module):
    """ResNet-18 + ARMs on the stride-16/32 maps + a global-context term, merged top-down."""

    def __init__(self):
        super().__init__()
        w = RESNET18_WIDTHS
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinement(w[2], CONTEXT_CHANNELS)
        self.arm32 = AttentionRefinement(w[3], CONTEXT_CHANNELS)
        self.conv_head32 = ConvBNReLU(CONTEXT_CHANNELS, CONTEXT_CHANNELS)
        self.conv_head16 = ConvBNReLU(CONTEXT_CHANNELS, CONTEXT_CHANNELS)
        self.conv_avg = ConvBNReLU(w[3], CONTEXT_CHANNELS, kernel=1)

    def forward(self, x: torch.Tensor):
        feat8, feat16, feat32 = self.resnet(x)
        global_context = self.conv_avg(feat32.mean((2, 3), keepdim=True))  # (B, 128, 1, 1)
        up32 = _upsample_nearest(self.arm32(feat32) + global_context, feat16)
        up32 = self.conv_head32(up32)
        up16 = _upsample_nearest(self.arm16(feat16) + up32, feat8)
        return feat8, self.conv_head16(up16)


def _upsample_nearest(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class FeatureFusion(nn.Module):
    """FFM (paper Fig. 2c): concat, 1x1 conv, then add a channel-reweighted copy of itself."""

    def __init__(self, channels: int = FUSED_CHANNELS, reduction: int = 4):
        super().__init__()
        self.convblk = ConvBNReLU(channels, channels, kernel=1)
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        weight = self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True))))
        return feat + feat * torch.sigmoid(weight)


class SegmentationHead(nn.Module):
    """3x3 ConvBNReLU then a 1x1 classifier (no bias), the checkpoint's `conv_out`."""

    def __init__(self, c_in: int, c_mid: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_mid)
        self.conv_out = nn.Conv2d(c_mid, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """forward: ImageNet-normalised RGB (B, 3, H, W) -> logits (B, 19, H/8, W/8) in the
    checkpoint's class order (see scadm.parsing.weights.BISENET_TO_CELEBAMASK_HQ)."""

    def __init__(self, num_classes: int = BISENET_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion()
        self.conv_out = SegmentationHead(FUSED_CHANNELS, FUSED_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial, context = self.cp(x)
        return self.conv_out(self.ffm(spatial, context))
