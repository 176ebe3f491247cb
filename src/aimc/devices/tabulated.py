"""A device given by tables: programming noise, drift and read noise vs conductance, interpolated.

For technologies whose behaviour does not follow the PCM forms (a quadratic programming-noise polynomial, clipped
log-linear drift statistics, a power-law read-noise coefficient; reference sheet B.2–B.4): give each statistic at a
few conductances and the device interpolates linearly between them (constant beyond the first and last point).
``aimc fit-device`` can write one (``FitResult.tabulated()``: the per-level estimates of a fit, no functional form).

The sampling semantics are those of :class:`aimc.devices.PCM`, with the statistics looked up in the tables:

* programming: g_prog = max(g_T + σ_prog(g_T)·N, 0); drift exponent ν = |μ_ν(g_T) + σ_ν(g_T)·N|
  (or ν = μ_ν + σ_ν·N with ``fold_drift=False``, for devices whose conductance may also grow);
* reading at t seconds after programming: g_drift = g_prog·((t + t0)/t0)^(−ν);
  g(t) = max(g_drift + |g_drift|·Q(g_prog)·f(t)·N, 0) with f(t) = sqrt(ln((t + t0 + t_read)/(2·t_read))) (1/f
  noise accumulated since programming, as PCM) or f = 1 (``read_time="constant"``: white read noise).

Units: µS and seconds. Pure functions of their inputs; randomness comes in as a ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from aimc._checks import is_number
from aimc.devices.pcm import DeviceState, _check_time, check_targets, drift_factor, read_time_factor
from aimc.errors import ConfigError
from aimc.rng import CounterStream, standard_normal

__all__ = ["Tabulated", "interp"]

_TABLES = ("prog_std", "drift_mean", "drift_std", "read_q")


def interp(x: torch.Tensor, xp: tuple[float, ...], fp: tuple[float, ...]) -> torch.Tensor:
    """Piecewise-linear interpolation of the table (xp, fp) at ``x`` (any shape), constant outside [xp₀, xp₋₁]."""
    xs = torch.tensor(xp, dtype=x.dtype, device=x.device)
    fs = torch.tensor(fp, dtype=x.dtype, device=x.device)
    if len(xp) == 1:
        return fs[0].expand_as(x).clone()
    xc = x.clamp(xs[0], xs[-1])
    i = torch.searchsorted(xs, xc.contiguous(), right=True).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xs[i - 1], xs[i], fs[i - 1], fs[i]
    return f0 + (f1 - f0) * (xc - x0) / (x1 - x0)


@dataclass(frozen=True)
class Tabulated:
    """Device statistics as tables over conductance (µS), linearly interpolated.

    Attributes:
        g_points: ascending conductances (µS) at which the tables are given, within [0, g_max].
        prog_std: σ of the programming noise at each point, µS (≥ 0).
        drift_mean: mean drift exponent μ_ν at each point (dimensionless), looked up at the target conductance.
        drift_std: spread σ_ν of the drift exponent at each point (≥ 0).
        read_q: relative read-noise coefficient Q at each point (≥ 0), looked up at the programmed conductance.
        g_max: largest target conductance, µS (weights are mapped so that max|W| ↦ g_max).
        t0: reference time of drift, s (t = t_seconds + t0, as PCM). Default 20 s.
        t_read: duration of one read, s (1/f low-frequency cut-off). Default 250 ns.
        read_time: ``"1/f"`` — read noise grows as sqrt(ln((t + t_read)/(2 t_read))) like PCM; ``"constant"``.
        fold_drift: ν = |μ + σ·N| (never negative, as PCM) if True, else μ + σ·N.
        file, sha256: where the device was loaded from (set by :func:`aimc.devices.load`; recorded in configs).
    """

    g_points: tuple[float, ...]
    prog_std: tuple[float, ...]
    drift_mean: tuple[float, ...]
    drift_std: tuple[float, ...]
    read_q: tuple[float, ...]
    g_max: float = 25.0
    t0: float = 20.0
    t_read: float = 250e-9
    read_time: str = "1/f"
    fold_drift: bool = True
    file: str | None = None
    sha256: str | None = None
    kind: str = field(default="tabulated", init=False)

    def __post_init__(self) -> None:
        p: list[str] = []
        for name in ("g_max", "t0", "t_read"):
            v = getattr(self, name)
            if not (is_number(v) and v > 0):
                p.append(f"{name}={v!r} must be a finite number > 0")
        n = None
        for name in ("g_points", *_TABLES):
            v = getattr(self, name)
            try:
                vals = tuple(float(c) for c in v)
            except (TypeError, ValueError):
                p.append(f"{name}={v!r} must be a list of numbers")
                continue
            if not vals or not all(math.isfinite(c) for c in vals):
                p.append(f"{name} must be a non-empty list of finite numbers, got {list(vals)}")
                continue
            object.__setattr__(self, name, vals)
            if n is None:
                n = len(vals)
            elif len(vals) != n:
                p.append(f"{name} has {len(vals)} entries but g_points has {n}: every table needs one value per "
                         "point")
        if not p:
            g = self.g_points
            if any(b <= a for a, b in zip(g, g[1:])):
                p.append(f"g_points={list(g)} must be strictly ascending")
            if g[0] < 0 or (isinstance(self.g_max, (int, float)) and g[-1] > self.g_max * (1 + 1e-9)):
                p.append(f"g_points must lie in [0, g_max={self.g_max}] µS, got [{g[0]}, {g[-1]}]")
            for name in ("prog_std", "drift_std", "read_q"):
                bad = [v for v in getattr(self, name) if v < 0]
                if bad:
                    p.append(f"{name} holds negative value(s) {bad[:3]}: a spread must be ≥ 0")
        if self.read_time not in ("1/f", "constant"):
            p.append(f"read_time={self.read_time!r} is not one of ['1/f', 'constant']")
        if not isinstance(self.fold_drift, bool):
            p.append(f"fold_drift={self.fold_drift!r} must be true or false")
        if p:
            raise ConfigError("invalid Tabulated device: " + "; ".join(p) + ". Units: µS and seconds.")

    # ---- statistics ---------------------------------------------------------------------------------------------
    def prog_std_at(self, g_target: torch.Tensor) -> torch.Tensor:
        """σ_prog (µS) at target conductance ``g_target`` (µS)."""
        return interp(g_target, self.g_points, self.prog_std)

    def drift_stats(self, g_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_ν, σ_ν) at target conductance ``g_target`` (µS)."""
        return interp(g_target, self.g_points, self.drift_mean), interp(g_target, self.g_points, self.drift_std)

    def read_q_s(self, g_prog: torch.Tensor) -> torch.Tensor:
        """Relative read-noise coefficient Q at programmed conductance ``g_prog`` (µS)."""
        return interp(g_prog.abs(), self.g_points, self.read_q)

    def drift_factor(self, nu: torch.Tensor, t_seconds: float) -> torch.Tensor:
        """((t_seconds + t0)/t0)^(−ν)."""
        return drift_factor(nu, t_seconds, self.t0)

    def read_time_factor(self, t_seconds: float) -> float:
        """f(t): sqrt(ln((t + t0 + t_read)/(2·t_read))) for ``read_time="1/f"``, else 1."""
        if self.read_time == "constant":
            _check_time(t_seconds)
            return 1.0
        return read_time_factor(t_seconds, self.t0, self.t_read)

    # ---- sampling -------------------------------------------------------------------------------------------------
    def program(self, g_target: torch.Tensor, *, generator: torch.Generator | CounterStream) -> DeviceState:
        """Program devices to ``g_target`` (µS, any shape, in [0, g_max]); samples g_prog and ν once."""
        check_targets(g_target, self.g_max)
        n1 = standard_normal(generator, g_target.shape, device=g_target.device, dtype=g_target.dtype)
        n2 = standard_normal(generator, g_target.shape, device=g_target.device, dtype=g_target.dtype)
        g_prog = torch.clamp(g_target + self.prog_std_at(g_target) * n1, min=0.0)
        mu, sig = self.drift_stats(g_target)
        nu = mu + sig * n2
        return DeviceState(g_target=g_target, g_prog=g_prog, nu=nu.abs() if self.fold_drift else nu)

    def read(self, state: DeviceState, t_seconds: float, *, generator: torch.Generator | CounterStream) -> torch.Tensor:
        """Conductance (µS) ``t_seconds`` after programming: drift with the stored ν plus fresh read noise."""
        g_drift = state.g_prog * self.drift_factor(state.nu, t_seconds)
        sigma = g_drift.abs() * self.read_q_s(state.g_prog) * self.read_time_factor(t_seconds)
        n = standard_normal(generator, g_drift.shape, device=g_drift.device, dtype=g_drift.dtype)
        return torch.clamp(g_drift + sigma * n, min=0.0)
