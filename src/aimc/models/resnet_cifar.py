"""CIFAR ResNets of He et al. (2016) with parameter-free "option A" shortcuts.

Module and key names match the bundled pretrained checkpoint
(``resnet32_cifar10.safetensors``): ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.conv{1,2}``,
``layer{1,2,3}.{i}.bn{1,2}``, ``linear``. All weights live in ``nn.Conv2d`` / ``nn.Linear``
modules; the shortcut (subsampling + zero channels) and the residual addition are plain
tensor operations inside ``forward`` so they stay digital when those modules are swapped
for analog ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from aimc.errors import ConfigError, FileFormatError

PRETRAINED_RESNET32_FILE = "resnet32_cifar10.safetensors"


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride`` and pad zero channels.

    Input ``(N, C_in, H, W)`` -> output ``(N, C_out, ceil(H / stride), ceil(W / stride))``,
    taking ``x[:, :, ::stride, ::stride]`` and adding ``(C_out - C_in) // 2`` zero channels
    before and the rest after the original ones (8 + 8 going 16 -> 32 channels).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ConfigError(
                f"option-A shortcut cannot reduce channels ({in_channels} -> {out_channels}); "
                f"use out_channels >= in_channels."
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample and zero-pad channels; shapes as in the class docstring."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            lo = extra // 2
            x = F.pad(x, (0, 0, 0, 0, lo, extra - lo))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlockA(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus an option-A shortcut, then ReLU.

    Input float32 ``(N, in_channels, H, W)``; output ``(N, out_channels, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = OptionAShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block; see the class docstring for shapes."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 images: 3x3 stem, three stages of ``n`` blocks, avgpool, linear.

    Args:
        blocks_per_stage: ``n``, the number of basic blocks in each of the three stages.
        num_classes: Output size of the final linear layer.
        widths: Channels of the three stages (16, 32, 64 in the paper).

    Input float32 ``(N, 3, H, W)`` (32x32 for CIFAR); output logits float32 ``(N, num_classes)``.
    """

    def __init__(self, blocks_per_stage: int = 5, num_classes: int = 10,
                 widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for stage, width in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                blocks.append(BasicBlockA(cin, width, 2 if (stage > 0 and j == 0) else 1))
                cin = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits ``(N, num_classes)`` from images ``(N, 3, H, W)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = out.mean(dim=(2, 3))
        return self.linear(out)


def resnet_cifar(depth: int, num_classes: int = 10) -> ResNetCifar:
    """Build the CIFAR ResNet of the given depth (20, 32, 44, 56, 110, ...: ``6n + 2``).

    Raises:
        ConfigError: if ``depth`` is not of the form ``6n + 2`` with ``n >= 1``.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (e.g. 20, 32, 44, 56, 110), got {depth!r}."
        )
    return ResNetCifar((depth - 2) // 6, num_classes)


def resnet20_cifar(num_classes: int = 10) -> ResNetCifar:
    """ResNet-20 for CIFAR (0.27 M parameters)."""
    return resnet_cifar(20, num_classes)


def resnet32_cifar(num_classes: int = 10) -> ResNetCifar:
    """ResNet-32 for CIFAR (0.46 M parameters), the architecture of the bundled checkpoint."""
    return resnet_cifar(32, num_classes)


def resnet44_cifar(num_classes: int = 10) -> ResNetCifar:
    """ResNet-44 for CIFAR (0.66 M parameters)."""
    return resnet_cifar(44, num_classes)


def resnet56_cifar(num_classes: int = 10) -> ResNetCifar:
    """ResNet-56 for CIFAR (0.85 M parameters)."""
    return resnet_cifar(56, num_classes)


def load_pretrained_resnet32(path: str | os.PathLike[str] | None = None) -> ResNetCifar:
    """Build ResNet-32 and load the pretrained CIFAR-10 weights from a safetensors file.

    Every parameter and buffer must be present with the right shape, except
    ``num_batches_tracked`` (absent from the checkpoint, which predates it); no extra keys
    are allowed. The model expects inputs normalised as :func:`aimc.data.cifar10` does.

    Args:
        path: The safetensors file; ``None`` uses ``resnet32_cifar10.safetensors`` in the
            default data directory (see :func:`aimc.data.default_data_root`).

    Returns:
        The model in eval mode, float32 on CPU.

    Raises:
        FileFormatError: if the file is missing, unreadable, or its keys/shapes do not match.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from aimc.data import default_data_root

    p = Path(path) if path is not None else default_data_root() / PRETRAINED_RESNET32_FILE
    if not p.is_file():
        raise FileFormatError(
            f"pretrained ResNet-32 weights not found at {p}; pass path=<file>, or set AIMC_DATA "
            f"to the directory holding {PRETRAINED_RESNET32_FILE}."
        )
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FileFormatError(
            f"cannot read {p} as safetensors ({type(exc).__name__}: {exc}); the file is "
            f"truncated or not a safetensors file, restore it."
        ) from exc
    model = resnet32_cifar()
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if not k.endswith("num_batches_tracked"))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)}, model {tuple(expected[k])}"
                   for k in set(expected) & set(state) if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        raise FileFormatError(
            f"{p} does not hold CIFAR ResNet-32 weights: missing keys {missing[:8]}, unexpected "
            f"keys {unexpected[:8]}, shape mismatches {wrong[:8]} (expected keys like "
            f"'conv1.weight' (16, 3, 3, 3), 'layer3.4.bn2.running_var' (64,), 'linear.weight' (10, 64))."
        )
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
    return model.eval()
