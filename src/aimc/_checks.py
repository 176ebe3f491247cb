"""Shared value checks of the configuration dataclasses (no imports from the rest of aimc, so every module can use
them)."""

from __future__ import annotations

import math

__all__ = ["is_number"]


def is_number(v: object) -> bool:
    """``v`` is a finite int or float (bools are not numbers here: ``g_max: true`` is a mistake, not 1 µS)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
