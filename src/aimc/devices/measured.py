"""Measured conductances of a real chip as a device model (``MeasuredDevice``), and the conductance tables.

The model-level bridges (export the target conductances of a converted model, attach measured ones to it) live in
:mod:`aimc.measured`, above the analog layers; this module stays a pure device model. Table layout, per crossbar
tile (the columns of :data:`LAYOUT_COLUMNS`)::

    layer, tile, tile_row, tile_col, row, col, in_index, out_index, g_plus_uS, g_minus_uS

plus ``t_seconds`` (time since programming) for measurements, and an optional ``chip`` column.

A :class:`MeasuredDevice` replaces the statistical model for the devices it holds: ``program`` gives them their
first measured conductance (no drift exponent), ``read`` interpolates each device's conductance linearly in
ln(t + t0) between measured times (t0 = the device model's, 20 s for PCM). Devices absent from the table keep the
statistical model. A measured read already holds its read noise: at a measured time the same values come back for
every seed (one chip); between times the interpolation averages two reads, slightly less noisy than one read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aimc.devices.pcm import DeviceState, _check_time
from aimc.errors import FileFormatError, StateError

__all__ = ["MeasuredDevice", "sample_measurements", "read_conductance_table", "LAYOUT_COLUMNS"]

LAYOUT_COLUMNS = ("layer", "tile", "tile_row", "tile_col", "row", "col", "in_index", "out_index")


@dataclass(frozen=True, eq=False)
class MeasuredDevice:
    """Measured conductances of one weight matrix, in place of (part of) a statistical device model.

    Attributes:
        base: the statistical device of the devices that were not measured (and of ``g_max``, ``t0``).
        layer: the matrix's name (layer name + suffix).
        times: ascending measured times since programming, s.
        g: ``(n_times, 2, out, rows)`` measured conductances, µS (NaN where a device was not measured).
        mask: ``(out, rows)`` True where the pair was measured.
        g_target: ``(2, out, rows)`` target conductances when the measurements were loaded (µS); programming other
            targets (the weights changed) is refused.
        outside: ``"error"`` (default) or ``"hold"`` (nearest measured time) for times outside the measured ones.
        source, sha256: the measurement file, if any.
    """

    base: Any
    layer: str
    times: tuple[float, ...]
    g: torch.Tensor
    mask: torch.Tensor
    g_target: torch.Tensor
    outside: str = "error"
    source: str | None = None
    sha256: str | None = None
    kind: str = field(default="measured", init=False)

    @property
    def g_max(self) -> float:
        return self.base.g_max

    @property
    def t0(self) -> float:
        return float(getattr(self.base, "t0", 20.0))

    def describe(self) -> dict[str, Any]:
        """What ``AnalogConfig.to_dict`` records for a measured matrix (not enough to rebuild it)."""
        from aimc.devices.files import device_to_dict

        base = device_to_dict(self.base) if hasattr(self.base, "prog_coeffs") or hasattr(self.base, "g_points") \
            else {"kind": self.base.kind, "g_max": self.base.g_max}
        return {"kind": "measured", "layer": self.layer, "times": list(self.times), "measured_pairs":
                int(self.mask.sum()), "source": self.source, "sha256": self.sha256, "base": base}

    def program(self, g_target: torch.Tensor, *, generator: torch.Generator) -> DeviceState:
        """Measured pairs: their first measured conductance, ν = 0; the others: the base model."""
        if g_target.shape != self.g_target.shape or not torch.allclose(
                g_target, self.g_target.to(g_target), rtol=1e-5, atol=1e-5):
            raise StateError(f"layer {self.layer!r}: the weights changed since the measured conductances were loaded "
                             "(different target conductances); export the targets again and re-measure, or reload.")
        st = self.base.program(g_target, generator=generator)
        m = self.mask.to(g_target.device)
        g0 = self.g[0].to(g_target)
        return DeviceState(g_target=g_target, g_prog=torch.where(m, g0, st.g_prog),
                           nu=torch.where(m, torch.zeros_like(st.nu), st.nu))

    def measured_at(self, t_seconds: float) -> torch.Tensor:
        """``(2, out, rows)`` measured conductances interpolated linearly in ln(t + t0) (NaN where not measured)."""
        t = _check_time(t_seconds)
        lo, hi = self.times[0], self.times[-1]
        if (t < lo * (1 - 1e-9) or t > hi * (1 + 1e-9)) and self.outside == "error":
            raise StateError(f"layer {self.layer!r}: t = {t:g} s is outside the measured times [{lo:g}, {hi:g}] s; "
                             "evaluate within them or load the measurements with outside='hold'.")
        t = min(max(t, lo), hi)
        u = [math.log(x + self.t0) for x in self.times]
        ut = math.log(t + self.t0)
        k = int(np.searchsorted(u, ut, side="right"))
        if k <= 0:
            return self.g[0]
        if k >= len(u):
            return self.g[-1]
        w = (ut - u[k - 1]) / (u[k] - u[k - 1])
        return self.g[k - 1] * (1 - w) + self.g[k] * w

    def read(self, state: DeviceState, t_seconds: float, *, generator: torch.Generator) -> torch.Tensor:
        """Conductance (µS) at ``t_seconds``: interpolated measurements, the base model elsewhere."""
        meas = self.measured_at(t_seconds).to(state.g_prog)
        m = self.mask.to(state.g_prog.device)
        if bool(m.all()):
            return meas.clone()
        model = self.base.read(state, t_seconds, generator=generator)
        return torch.where(m, meas, model)


# ---- tables -------------------------------------------------------------------------------------------------------
def sample_measurements(targets: pd.DataFrame, device: Any, times: list[float], *, seed: int) -> pd.DataFrame:
    """"Measure" a chip by sampling a device model: program every device of ``targets`` once, read it at ``times``.

    Args:
        targets: a :func:`aimc.measured.target_table` (or concatenated export files).
        device: a device model with ``program``/``read`` (e.g. ``aimc.devices.PCM()``).
        times: read times since programming, s.
        seed: seed of this chip.

    Returns:
        The targets' layout columns + ``t_seconds``, ``g_plus_uS``, ``g_minus_uS`` (measured), one row per pair and
        time: the input format of :func:`aimc.measured.load_measured`.
    """
    gen = torch.Generator().manual_seed(int(seed))
    g_t = torch.tensor(np.stack([targets["g_plus_uS"].to_numpy(), targets["g_minus_uS"].to_numpy()]),
                       dtype=torch.float32)
    state = device.program(g_t, generator=gen)
    layout = targets[[c for c in LAYOUT_COLUMNS if c in targets.columns]].reset_index(drop=True)
    frames = []
    for t in times:
        g = device.read(state, float(t), generator=gen).numpy()
        f = layout.copy()
        f["t_seconds"] = float(t)
        f["g_plus_uS"], f["g_minus_uS"] = g[0], g[1]
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def read_conductance_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV or Parquet file, or a directory of CSV files (``manifest.csv`` skipped), as one table."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.csv") if f.name != "manifest.csv")
        if not files:
            raise FileFormatError(f"{str(p)!r} holds no CSV files of conductances.")
        return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    from aimc.devices.fit import read_table

    return read_table(p)
