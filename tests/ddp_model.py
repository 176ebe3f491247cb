"""Batch-norm-free digits models for the DDP tests: with no batch statistics, data-parallel training over ranks
equals single-process training with the same global batch up to float rounding."""

import time

from torch import nn


class _Slow(nn.Module):
    def forward(self, x):
        if self.training:
            time.sleep(0.03)  # so a test can kill a run in the middle of an epoch
        return x


def mlp(hidden: int = 32) -> nn.Module:
    """8x8 digits -> Flatten -> Linear(64, hidden) -> ReLU -> Linear(hidden, 10)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def slow_mlp() -> nn.Module:
    return nn.Sequential(_Slow(), *mlp())
