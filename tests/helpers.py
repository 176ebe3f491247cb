"""Small purpose-built models and data for the tests."""

import dataclasses

import torch
from torch import nn

import aimc
from aimc.config import PeripheryConfig


def ideal_pcm_free(**periphery) -> aimc.AnalogConfig:
    """Ideal device with the given periphery (no device noise), tiles of 16×16 to exercise tiling."""
    return dataclasses.replace(aimc.presets.ideal(), mapping=aimc.MappingConfig(tile_rows=16, tile_cols=16),
                               periphery=PeripheryConfig(**periphery))


def small_cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 5))


def batches(n=64, batch=16, shape=(3, 8, 8), classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]
