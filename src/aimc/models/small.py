"""Small models for the 8x8 digits and MNIST."""

from __future__ import annotations

import torch
import torch.nn as nn

from aimc.errors import ConfigError


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}; e.g. {name}=128.")


def digits_cnn(num_classes: int = 10) -> nn.Sequential:
    """Small CNN for scikit-learn's 8x8 digits (about 15 k parameters).

    Conv(1->16, 3x3)-BN-ReLU, Conv(16->32, 3x3)-BN-ReLU, MaxPool 2, Conv(32->32, 3x3)-BN-ReLU,
    global average pool, Linear(32 -> num_classes). Convolutions use padding 1 and no bias
    (the following batch norm has one).

    Input float32 ``(N, 1, 8, 8)``; output logits float32 ``(N, num_classes)``.
    """
    _check_positive("num_classes", num_classes)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def mnist_mlp(hidden: int = 250, num_classes: int = 10) -> nn.Sequential:
    """Fully connected network 784 -> hidden -> num_classes with ReLU.

    Input float32 ``(N, 1, 28, 28)`` (or ``(N, 784)``); output logits ``(N, num_classes)``.
    """
    _check_positive("hidden", hidden)
    _check_positive("num_classes", num_classes)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def mnist_cnn(num_classes: int = 10) -> nn.Sequential:
    """LeNet-like CNN with batch norm for MNIST (about 80 k parameters).

    Conv(1->16, 5x5)-BN-ReLU-MaxPool2 (28->24->12), Conv(16->32, 5x5)-BN-ReLU-MaxPool2
    (12->8->4), Flatten, Linear(512->128)-ReLU, Linear(128 -> num_classes).

    Input float32 ``(N, 1, 28, 28)``; output logits float32 ``(N, num_classes)``.
    """
    _check_positive("num_classes", num_classes)
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


class MnistLSTM(nn.Module):
    """Reads an MNIST image row by row: 28 time steps of 28 pixels, LSTM, linear on the last state.

    Args:
        hidden: LSTM hidden size.
        num_classes: Output size of ``linear``.

    Input float32 ``(N, 1, 28, 28)`` or ``(N, 28, 28)``; output logits ``(N, num_classes)``.
    Only ``linear`` is an ``nn.Linear``; the ``nn.LSTM`` stays as it is when linear and
    convolution layers are replaced.
    """

    def __init__(self, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        _check_positive("hidden", hidden)
        _check_positive("num_classes", num_classes)
        self.lstm = nn.LSTM(input_size=28, hidden_size=hidden, batch_first=True)
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits ``(N, num_classes)``; see the class docstring for shapes."""
        seq = x.reshape(x.shape[0], 28, 28)  # (N, time=rows, features=columns)
        out, _ = self.lstm(seq)
        return self.linear(out[:, -1])


def mnist_lstm(hidden: int = 128, num_classes: int = 10) -> MnistLSTM:
    """Build :class:`MnistLSTM`."""
    return MnistLSTM(hidden, num_classes)
