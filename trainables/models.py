"""Encoders (their pooled feature vector is what the probes see) and the projection head."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages of width w, 2w, 4w, 8w with 2x2 max pooling between
    them, then global average pooling: [B, C, H, W] -> [B, 8w]. Trains at CPU speed."""

    def __init__(self, in_channels: int = 3, width: int = 16):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            layers += _conv_bn(c, w)
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BasicBlock(nn.Module):
    """The two-conv residual block of ResNet-18/34."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.convs = nn.Sequential(*_conv_bn(c_in, c_out, stride),
                                   nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return torch.relu(self.convs(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, no max pool, stages of BasicBlocks of
    width w, 2w, 4w, ...: blocks (2, 2, 2, 2), w = 64 is ResNet-18 ([B, C, 32, 32] -> [B, 512]);
    blocks (5, 5, 5), w = 16 is the ResNet-32 of the long-tail literature (He et al.'s
    CIFAR ResNet as used by LDAM, BBN and PaCo; [B, C, 32, 32] -> [B, 64])."""

    def __init__(self, in_channels: int = 3, width: int = 64, blocks=(2, 2, 2, 2)):
        super().__init__()
        layers, c = _conv_bn(in_channels, width), width
        for stage, n in enumerate(blocks):
            w = width * 2 ** stage
            for i in range(n):
                layers.append(BasicBlock(c, w, stride=2 if (i == 0 and stage > 0) else 1))
                c = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def projection_head(feature_dim: int, out_dim: int) -> nn.Module:
    """MLP head: Linear - BN - ReLU - Linear, [B, d] -> [B, out_dim].

    The BN (as in SimCLR v2 and MoCo v2's successors) centres the embeddings: without
    it a freshly initialised CNN (ReLU features, all positive) maps every image to
    nearly the same direction, and supervised contrastive losses sat at log(2B - 1)
    for the first epochs on `shapes`.
    """
    return nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.BatchNorm1d(feature_dim),
                         nn.ReLU(inplace=True), nn.Linear(feature_dim, out_dim))


class Pixels(nn.Module):
    """The raw-pixel baseline: no parameters, [B, C, H, W] -> [B, C*H*W]."""

    def __init__(self, in_channels: int = 3, width: int = 0, image_size: int = 32):
        super().__init__()
        self.feature_dim = in_channels * image_size * image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def resnet32(in_channels: int = 3, width: int = 16) -> CifarResNet:
    return CifarResNet(in_channels, width, blocks=(5, 5, 5))


class ResNet50(nn.Module):
    """torchvision's ResNet-50 (random init: nothing is downloaded) for 224x224 list
    datasets; the classifier is dropped: [B, 3, H, W] -> [B, 2048]."""

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()
        import torchvision
        net = torchvision.models.resnet50(weights=None, width_per_group=width)
        net.fc = nn.Identity()
        self.body, self.feature_dim = net, 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# name -> (builder, default width)
ENCODERS = {"cnn": (SmallCNN, 16), "resnet18": (CifarResNet, 64), "resnet32": (resnet32, 16),
            "resnet50": (ResNet50, 64), "pixels": (Pixels, 0)}


def build_encoder(arch: str, in_channels: int, width: int | None, image_size: int) -> nn.Module:
    """An encoder from the registry; its `feature_dim` is the probe's input size."""
    builder, default_width = ENCODERS[arch]
    if builder is Pixels:
        return Pixels(in_channels, image_size=image_size)
    return builder(in_channels=in_channels, width=width or default_width)
