"""Small purpose-built models and data for the tests, and loading the example scripts."""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

import torch
from torch import nn

import aimc
from aimc.config import PeripheryConfig
from aimc.rng import CounterStream


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


def require_mnist() -> None:
    """Skip the calling test when the MNIST file (``../shared/data/mnist.npz``) is not available."""
    from aimc.data import default_data_root

    try:
        if not (default_data_root() / "mnist.npz").is_file():
            pytest.skip("MNIST file not available")
    except Exception:  # noqa: BLE001 - no data directory at all
        pytest.skip("MNIST file not available")


def load_example(path: Path, name: str):  # noqa: ANN201
    """Import the example script ``path`` as module ``name``, registered in ``sys.modules`` (dataclasses look
    their module up there); the caller removes it when done. Nothing is left registered if the import fails."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


# ---- statistical device tests (test_devices.py, test_hermes.py) ------------------------------------------------
N_SAMPLES = 200_000
"""Samples per statistical check of the device models (5-SE tolerances resolve about 1 % of a σ)."""


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise(seed: int) -> CounterStream:
    """The counter-based noise source analog matrices program and read with (aimc.rng)."""
    return CounterStream(seed)


def full(value: float, n: int = N_SAMPLES) -> torch.Tensor:
    """``n`` float64 copies of ``value`` (µS or relative conductance, as the test needs)."""
    return torch.full((n,), float(value), dtype=torch.float64)
