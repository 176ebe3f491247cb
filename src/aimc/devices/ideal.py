"""A perfect device: programs exactly, never drifts, reads without noise. Useful as a control."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from aimc.devices.pcm import DeviceState, _check_time, check_targets
from aimc.errors import ConfigError

__all__ = ["Ideal"]


@dataclass(frozen=True)
class Ideal:
    """Noise-free device with conductances in [0, ``g_max``] µS (default 25 µS, as the PCM model)."""

    g_max: float = 25.0
    kind: str = field(default="ideal", init=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.g_max, (int, float)) and math.isfinite(self.g_max) and self.g_max > 0):
            raise ConfigError(f"Ideal device: g_max={self.g_max!r} must be a finite number > 0 (µS).")

    def program(self, g_target: torch.Tensor, *, generator: torch.Generator) -> DeviceState:
        """Return a state with ``g_prog == g_target`` and ``nu == 0``."""
        check_targets(g_target, self.g_max)
        return DeviceState(g_target=g_target, g_prog=g_target.clone(), nu=torch.zeros_like(g_target))

    def read(self, state: DeviceState, t_seconds: float, *, generator: torch.Generator) -> torch.Tensor:
        """Return the programmed conductance (µS), whatever the time."""
        _check_time(t_seconds)
        return state.g_prog.clone()
