"""Statistical PCM device model for inference (programming noise, drift, 1/f read noise).

The equations are those of Nandakumar et al., ICECS 2019 (doi:10.1109/ICECS46596.2019.8964852), calibrated on
the one-million-device PCM array of Joshi et al., Nat. Commun. 11, 2473 (2020), as implemented in IBM aihwkit
(``PCMLikeNoiseModel``). Reference sheet section B (``shared/reference/pcm-model-and-paper-facts.md``) lists them;
we keep the equations and drop the quirks of its section B.10:

* the programming-noise reference conductance is an ordinary field (always used, never silently ignored);
* drift starts from the programmed conductances at their programming-time scale (no re-normalisation of the
  noisy programmed weights by their own max|W| at every drift call).

Units: conductances in µS, times in seconds since programming. Every function is pure: randomness comes in as a
``torch.Generator`` or an ``aimc.rng.CounterStream`` (counter-based, so a chip is regenerated from its seed, the
same on CPU and CUDA); nothing reads the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from aimc.errors import ConfigError, NonFiniteError, ShapeError
from aimc.rng import CounterStream, standard_normal

__all__ = ["PCM", "DeviceState"]


@dataclass(frozen=True)
class DeviceState:
    """Per-device state sampled once at programming time.

    All tensors have the same shape (any shape, typically ``(2, out, rows)`` for a differential pair).

    Attributes:
        g_target: target conductance in µS.
        g_prog: programmed conductance in µS (target + programming noise, clamped ≥ 0).
        nu: drift exponent of each device (dimensionless, ≥ 0).
    """

    g_target: torch.Tensor
    g_prog: torch.Tensor
    nu: torch.Tensor


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(
            f"{name} holds {bad} NaN/Inf value(s); conductances must be finite. "
            "Check the weights you are programming (a diverged training run is the usual cause)."
        )


def check_targets(g_target: torch.Tensor, g_max: float) -> None:
    """Target conductances must be finite and within [0, g_max] µS (one min/max pass; NaN and ±Inf show in it)."""
    if not g_target.numel():
        return
    lo, hi = (float(v) for v in torch.aminmax(g_target))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        _check_finite("g_target", g_target)
    if lo < 0 or hi > g_max * (1 + 1e-6):
        raise ShapeError(
            f"g_target must lie in [0, g_max={g_max}] µS, found [{lo:.4g}, {hi:.4g}]; map weights with aimc.mapping "
            "first."
        )


def _check_time(t_seconds: float) -> float:
    try:
        t = float(t_seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"t_seconds={t_seconds!r} is not a number; give seconds since programming, e.g. 3600.0.")
    if not math.isfinite(t) or t < 0:
        raise ConfigError(
            f"t_seconds={t_seconds!r} is invalid: time since programming must be finite and ≥ 0 seconds "
            "(e.g. 25.0 for the first read-out, 86400.0 for one day)."
        )
    return t


def drift_factor(nu: torch.Tensor, t_seconds: float, t0: float) -> torch.Tensor:
    """Drift (t/t0)^(−ν) with t = t_seconds + t0 seconds (1 at t_seconds = 0); shared by every device model."""
    t = _check_time(t_seconds) + t0
    return torch.mul(nu, -math.log(t / t0)).exp_()  # (−ν)·ln(t/t0), the same product


def read_time_factor(t_seconds: float, t0: float, t_read: float) -> float:
    """sqrt(ln((t + t_read)/(2·t_read))) with t = t_seconds + t0 seconds: the 1/f read noise accumulated since
    programming, in units of its per-decade coefficient Q_s; shared by every device model."""
    t = _check_time(t_seconds) + t0
    return math.sqrt(math.log((t + t_read) / (2.0 * t_read)))


def program_devices(dev, g_target: torch.Tensor, generator: torch.Generator | CounterStream,  # noqa: ANN001
                    drift_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> DeviceState:
    """Programming shared by the statistical device models (PCM, HERMES): g_prog = max(g_T + s_p·σ_p(g_T)·N, 0)
    and ν = |μ_ν(g_T) + σ_ν(g_T)·N|·drift_scale, with ``dev``'s ``prog_std``, ``drift_stats``, ``prog_noise_scale``
    and ``drift_scale``; ``g_target`` in µS, checked against ``dev.g_max``. ``drift_stats``: ``dev.drift_stats
    (g_target)`` when the caller has computed it already."""
    check_targets(g_target, dev.g_max)
    g_prog = _programmed(dev, g_target, generator)
    n2 = standard_normal(generator, g_target.shape, device=g_target.device, dtype=g_target.dtype)
    mu, sig = dev.drift_stats(g_target) if drift_stats is None else drift_stats
    # |μ + σ·N|·drift_scale, in place on σ·N (a factor 1 is left out: x·1 = x)
    nu = n2.mul_(sig).add_(mu).abs_()
    return DeviceState(g_target=g_target, g_prog=g_prog, nu=nu if dev.drift_scale == 1 else nu.mul_(dev.drift_scale))


def program_conductances(dev, g_target: torch.Tensor, generator: torch.Generator | CounterStream) -> torch.Tensor:  # noqa: ANN001
    """g_prog of :func:`program_devices` alone (its first draw; no drift exponents): what the programmed weights
    and the GDC baseline need. ``g_target`` in µS, checked against ``dev.g_max``."""
    check_targets(g_target, dev.g_max)
    return _programmed(dev, g_target, generator)


def _programmed(dev, g_target: torch.Tensor, generator: torch.Generator | CounterStream) -> torch.Tensor:  # noqa: ANN001
    n1 = standard_normal(generator, g_target.shape, device=g_target.device, dtype=g_target.dtype)
    # max(g_T + s_p·σ_p·N, 0) in place on σ_p (same operations in the same order; a factor 1 is left out)
    s = dev.prog_std(g_target)
    if dev.prog_noise_scale != 1:
        s.mul_(dev.prog_noise_scale)
    return s.mul_(n1).add_(g_target).clamp_(min=0.0)


def read_devices(dev, state: DeviceState, t_seconds: float,  # noqa: ANN001
                 generator: torch.Generator | CounterStream) -> torch.Tensor:
    """A read shared by the statistical device models: drift g_prog·drift_factor(ν, t) plus fresh 1/f noise of std
    |g_d|·Q_s(g_prog)·read_time_factor(t)·read_noise_scale, clamped ≥ 0 (µS)."""
    g_drift = dev.drift_factor(state.nu, t_seconds).mul_(state.g_prog)
    sigma = g_drift.abs().mul_(dev.read_q_s(state.g_prog)).mul_(dev.read_time_factor(t_seconds))
    if dev.read_noise_scale != 1:  # a factor 1 is left out (x·1 = x)
        sigma.mul_(dev.read_noise_scale)
    n = standard_normal(generator, g_drift.shape, device=g_drift.device, dtype=g_drift.dtype)
    return sigma.mul_(n).add_(g_drift).clamp_(min=0.0)


@dataclass(frozen=True)
class PCM:
    """Statistical model of a phase-change memory device (reference sheet B.2–B.4).

    Attributes:
        g_max: largest target conductance, µS. Weights are mapped so that max|W| ↦ ``g_max``. Default 25 µS
            (Joshi et al. 2020).
        t0: time of the first read after programming, s; drift is measured relative to it (t = t_inf + t0).
            Default 20 s.
        t_read: duration of one read, s; sets the low-frequency cut-off of the 1/f noise. Default 250 ns.
        prog_coeffs: (c0, c1, c2) of σ_prog(g_T) = c0 + c1·(g_T/g_max) + c2·(g_T/g_max)², in µS at the reference
            g_max. Default (0.26348, 1.9650, −1.1731), fitted on hardware (aihwkit ``PCMLikeNoiseModel``).
        prog_g_max_reference: g_max at which ``prog_coeffs`` were fitted, µS; σ_prog scales with
            g_max / prog_g_max_reference. Default 25 µS.
        prog_noise_scale: multiplies σ_prog (1 = calibrated model, 0 = perfect programming).
        read_noise_scale: multiplies the 1/f read-noise σ.
        drift_scale: multiplies every drift exponent ν.
        drift_mean: (a, b, lo, hi) of μ_ν = clip(a·ln g_r + b, lo, hi) with g_r = g_T/g_max.
        drift_std: (a, b, lo, hi) of σ_ν = clip(a·ln g_r + b, lo, hi).
        read_q: (q0, exponent, floor, cap) of Q_s = min(q0 / max(g_r_prog^exponent, floor), cap).
    """

    g_max: float = 25.0
    t0: float = 20.0
    t_read: float = 250e-9
    prog_coeffs: tuple[float, float, float] = (0.26348, 1.9650, -1.1731)
    prog_g_max_reference: float = 25.0
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    drift_mean: tuple[float, float, float, float] = (-0.0155, 0.0244, 0.049, 0.1)
    drift_std: tuple[float, float, float, float] = (-0.0125, -0.0059, 0.008, 0.045)
    read_q: tuple[float, float, float, float] = (0.0088, 0.65, 1e-3, 0.2)
    kind: str = field(default="pcm", init=False)

    def __post_init__(self) -> None:
        problems = []
        for name in ("g_max", "t0", "t_read", "prog_g_max_reference"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                problems.append(f"{name}={v!r} must be a finite number > 0")
        for name in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                problems.append(f"{name}={v!r} must be a finite number ≥ 0 (1.0 = calibrated model, 0 = off)")
        for name, n in (("prog_coeffs", 3), ("drift_mean", 4), ("drift_std", 4), ("read_q", 4)):
            v = getattr(self, name)
            if len(tuple(v)) != n or not all(isinstance(c, (int, float)) and math.isfinite(c) for c in v):
                problems.append(f"{name}={v!r} must be {n} finite numbers")
            else:
                object.__setattr__(self, name, tuple(float(c) for c in v))
        for name in ("drift_mean", "drift_std"):
            v = getattr(self, name)
            if len(v) == 4 and v[2] > v[3]:
                problems.append(f"{name} clip range lo={v[2]} > hi={v[3]}")
        if problems:
            raise ConfigError("invalid PCM device parameters: " + "; ".join(problems) + ". Units: µS and seconds.")

    # ---- closed-form statistics (used by program/read and by the tests) -------------------------------------
    def prog_std(self, g_target: torch.Tensor) -> torch.Tensor:
        """σ of the programming noise in µS at target conductance ``g_target`` (µS), before ``prog_noise_scale``."""
        c0, c1, c2 = self.prog_coeffs
        r = g_target / self.g_max
        return (c0 + c1 * r + c2 * r * r) * (self.g_max / self.prog_g_max_reference)

    def drift_stats(self, g_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_ν, σ_ν) of the drift exponent before folding and ``drift_scale``, from the target conductance."""
        lg = torch.log(torch.clamp(g_target.abs() / self.g_max, min=1e-7))
        a, b, lo, hi = self.drift_mean
        mu = torch.clamp(a * lg + b, lo, hi)
        a, b, lo, hi = self.drift_std
        sig = torch.clamp(a * lg + b, lo, hi)
        return mu, sig

    def read_q_s(self, g_prog: torch.Tensor) -> torch.Tensor:
        """Q_s, the relative 1/f read-noise coefficient, from the programmed conductance (µS)."""
        q0, ex, floor, cap = self.read_q
        return torch.clamp(q0 / torch.clamp((g_prog.abs() / self.g_max) ** ex, min=floor), max=cap)

    def drift_factor(self, nu: torch.Tensor, t_seconds: float) -> torch.Tensor:
        """(t/t0)^(−ν) with t = t_seconds + t0 (1 at t_seconds = 0)."""
        return drift_factor(nu, t_seconds, self.t0)

    def read_time_factor(self, t_seconds: float) -> float:
        """sqrt(ln((t + t_read)/(2·t_read))) with t = t_seconds + t0: 1/f noise accumulated since programming."""
        return read_time_factor(t_seconds, self.t0, self.t_read)

    # ---- sampling -------------------------------------------------------------------------------------------
    def program(self, g_target: torch.Tensor, *, generator: torch.Generator | CounterStream,
                drift_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> DeviceState:
        """Program devices to ``g_target`` (µS, any shape, values in [0, g_max]).

        Samples programming noise and one drift exponent per device, once. ``drift_stats``: this device's
        ``drift_stats(g_target)`` when the caller has it already (not computed again).

        Returns:
            A :class:`DeviceState` with tensors of ``g_target``'s shape.
        """
        return program_devices(self, g_target, generator, drift_stats)

    def program_conductance(self, g_target: torch.Tensor, *,
                            generator: torch.Generator | CounterStream) -> torch.Tensor:
        """Only the programmed conductances (µS) of :meth:`program` with the same generator (its first draw)."""
        return program_conductances(self, g_target, generator)

    def read(self, state: DeviceState, t_seconds: float, *, generator: torch.Generator | CounterStream) -> torch.Tensor:
        """Conductance (µS) ``t_seconds`` after programming: drift with the stored ν plus fresh 1/f read noise.

        Two calls share programming noise and ν but draw independent read noise (the ensemble semantics of
        reference B.5).
        """
        return read_devices(self, state, t_seconds, generator)
