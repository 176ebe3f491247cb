"""ImageNet-style ResNet-34 (He et al., 2016) with projection shortcuts.

Key names follow the common convention (``conv1``, ``bn1``, ``layer{1..4}.{i}.conv{1,2}``,
``layer{1..4}.{i}.bn{1,2}``, ``layer{k}.0.downsample.{0,1}``, ``fc``), so checkpoints using it
load directly. The residual additions are plain tensor operations in ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from aimc.errors import ConfigError


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity or (1x1 conv + BN) shortcut, then ReLU.

    Input float32 ``(N, in_channels, H, W)``; output ``(N, out_channels, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block; see the class docstring for shapes."""
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNetImageNet(nn.Module):
    """ResNet with basic blocks for ImageNet-sized inputs.

    7x7 stride-2 stem (64 ch) + BN + ReLU + 3x3 stride-2 max pool, four stages of basic
    blocks with 64/128/256/512 channels (stride 2 at the first block of stages 2-4), global
    average pool and a linear classifier.

    Args:
        layers: Blocks per stage, ``(3, 4, 6, 3)`` for ResNet-34.
        num_classes: Output size of ``fc``.

    Input float32 ``(N, 3, H, W)`` (224x224 for ImageNet; anything >= 32x32 works);
    output logits float32 ``(N, num_classes)``.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), num_classes: int = 1000) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for stage, (n_blocks, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n_blocks):
                blocks.append(BasicBlock(cin, width, 2 if (stage > 0 and j == 0) else 1))
                cin = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits ``(N, num_classes)`` from images ``(N, 3, H, W)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet34_imagenet(num_classes: int = 1000) -> ResNetImageNet:
    """Build ResNet-34 for ImageNet (21.8 M parameters with 1000 classes)."""
    return ResNetImageNet((3, 4, 6, 3), num_classes)
