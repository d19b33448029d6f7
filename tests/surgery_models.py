"""Small models that mirror real architectures, for the surgery tests (fast on CPU).

Each takes ``norm_layer`` (called as ``norm_layer(num_channels)``, torchvision's convention),
so the same network can be built with any torch.nn or normlab norm:

* `resnet_like`: stem conv-BN-ReLU, three BasicBlocks (the last two with a stride-2 conv-BN
  downsample shortcut), global average pool, Linear; input (N, 3, 16, 16); widths w, 2w, 4w.
* `mobilenet_like`: depthwise-separable blocks (3x3 depthwise conv (groups=C)-BN-ReLU6, 1x1
  pointwise conv-BN), one with an inverted-residual skip; head Linear + BatchNorm1d + ReLU
  (+ optional Dropout) + Linear; input (N, 3, 16, 16).
* `unet_decoder_like`: a two-level encoder and a U-Net decoder (ConvTranspose2d-BN-ReLU up
  blocks, skip concatenation, conv-BN-ReLU); input (N, 3, 16, 16), output (N, classes, 16, 16).
* `token_mlp_like`: (N, L, C) tokens with ``nn.LayerNorm(C)`` over the last dim (a
  transformer-style MLP block), for channel-last (channel_dim=-1) norms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv-BN-ReLU-conv-BN plus the (downsampled) input."""

    def __init__(self, cin: int, cout: int, stride: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetLike(nn.Module):
    def __init__(self, norm_layer: NormLayer, num_classes: int, width: int) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(w)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(w, w, 1, norm_layer))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2, norm_layer))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2, norm_layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_like(
    norm_layer: NormLayer = nn.BatchNorm2d, num_classes: int = 10, width: int = 8
) -> nn.Module:
    return ResNetLike(norm_layer, num_classes, width)


class SeparableBlock(nn.Module):
    """MobileNet's depthwise-separable conv; an inverted-residual skip when shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.depthwise = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), norm_layer(cin),
            nn.ReLU6(),
        )
        self.pointwise = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm_layer(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.pointwise(self.depthwise(x))
        return x + y if self.residual else y


class MobileNetLike(nn.Module):
    def __init__(
        self,
        norm_layer: NormLayer,
        head_norm_layer: NormLayer,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), norm_layer(8), nn.ReLU6()),
            SeparableBlock(8, 8, 1, norm_layer),
            SeparableBlock(8, 16, 2, norm_layer),
            SeparableBlock(16, 16, 1, norm_layer),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(16, 16), head_norm_layer(16), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(16, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenet_like(
    norm_layer: NormLayer = nn.BatchNorm2d,
    num_classes: int = 10,
    head_norm_layer: NormLayer = nn.BatchNorm1d,
    dropout: float = 0.0,
) -> nn.Module:
    return MobileNetLike(norm_layer, head_norm_layer, num_classes, dropout)


def _conv_norm_relu(cin: int, cout: int, norm_layer: NormLayer) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), norm_layer(cout), nn.ReLU())


class UpBlock(nn.Module):
    """U-Net decoder step: ConvTranspose2d(stride 2)-BN-ReLU, concat the skip, conv-BN-ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), norm_layer(cout), nn.ReLU()
        )
        self.fuse = _conv_norm_relu(cout + cskip, cout, norm_layer)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


class UNetDecoderLike(nn.Module):
    def __init__(self, norm_layer: NormLayer, num_classes: int) -> None:
        super().__init__()
        self.enc1 = _conv_norm_relu(3, 8, norm_layer)
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), _conv_norm_relu(8, 16, norm_layer))
        self.bottom = nn.Sequential(nn.MaxPool2d(2), _conv_norm_relu(16, 32, norm_layer))
        self.decoder = nn.ModuleDict({
            "up2": UpBlock(32, 16, 16, norm_layer),
            "up1": UpBlock(16, 8, 8, norm_layer),
        })
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        s1 = self.enc1(x)
        s2 = self.enc2(s1)
        y = self.decoder["up2"](self.bottom(s2), s2)
        return self.head(self.decoder["up1"](y, s1))


def unet_decoder_like(norm_layer: NormLayer = nn.BatchNorm2d, num_classes: int = 3) -> nn.Module:
    return UNetDecoderLike(norm_layer, num_classes)


class TokenMLPLike(nn.Module):
    """Pre-norm MLP blocks over (N, L, C) tokens, then a mean over tokens and a Linear head."""

    def __init__(self, norm_layer: NormLayer, dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(6, dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(norm_layer(dim), nn.Linear(dim, 2 * dim), nn.GELU(),
                          nn.Linear(2 * dim, dim))
            for _ in range(2)
        )
        self.norm = norm_layer(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(self.norm(x).mean(1))


def token_mlp_like(
    norm_layer: NormLayer = nn.LayerNorm, dim: int = 16, num_classes: int = 10
) -> nn.Module:
    return TokenMLPLike(norm_layer, dim, num_classes)


IMAGE_SHAPE = (4, 3, 16, 16)  # (N, C, H, W) for the image models
TOKEN_SHAPE = (4, 5, 6)  # (N, L, features) for token_mlp_like
