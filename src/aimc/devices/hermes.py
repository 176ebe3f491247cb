"""Statistical model of the PCM devices of IBM's HERMES Project Chip (programming noise, drift, 1/f read noise).

The equations are those of aihwkit's ``HermesNoiseModel`` (IBM/aihwkit, ``src/aihwkit/inference/noise/hermes.py``,
added in release 0.9.2), fitted on the 64-core HERMES chip (Le Gallo et al., Nat. Electron. 6, 680 (2023);
Khaddam-Aljameh et al., JSSC 57, 1027 (2022)) with the methodology of Nandakumar et al., ICECS 2019. The reference
sheet ``shared/reference/llm-and-hermes-facts.md`` §1 lists every constant; the ones below were checked against
that file of aihwkit (facts only).

Two variants (``num_devices``, counted per polarity of the differential pair):

* ``num_devices=1`` — one PCM per polarity, conventional single-device programming; g_max 10.35 µS, t0 200 s;
* ``num_devices=2`` — two PCM per polarity programmed with the MSF scheme (Vasilopoulos et al., TED 2023); they act
  as one conductance of twice the range: g_max 20.7 µS, t0 300 s. (aihwkit's own simplification: drift is
  modelled as if both devices held the same conductance.)

With x = g_T/g_max (target), r_p = |g_prog|/g_max (programmed) and t = t_seconds + t0:

* programming: σ_p = (c0 + c1·x + c2·x² + c3·x³)·g_max/g_ref µS, g_prog = max(g_T + s_p·σ_p·N, 0);
* drift exponent, drawn once at programming from r = max(x, 1e-7):
  μ_ν = clip(−0.0387·ln r − 0.0182, 0.072, 0.13) for r < 0.0945, else −0.0436r² − 0.0126r + 0.0736 (both variants);
  σ_ν (1 device) = clip(−0.0120·ln r − 0.0023, 0.0124, 0.04) for r < 0.3039, else −0.0165r² + 0.0116r + 0.0104;
  σ_ν (2 devices) = clip(−0.0117·ln r − 0.0057, 0.0091, 0.04) for r < 0.3055, else −0.0118r² + 0.0093r + 0.0073;
  ν = |μ_ν + σ_ν·N|·s_d;
* reading: g_d = g_prog·(t/t0)^(−ν); Q_s (1 device) = clip(−0.0078·ln r_p + 0.0038, 0.0179, 0.04) for
  r_p < 0.1591, else 0.0664r_p³ − 0.1352r_p² + 0.0768r_p + 0.0088; Q_s (2 devices) = clip(−0.0117·ln r_p − 0.0069,
  0.015, 0.04) for r_p < 0.16, else 0.0069r_p³ − 0.0280r_p² + 0.0211r_p + 0.0123;
  g = max(g_d + |g_d|·s_r·Q_s·sqrt(ln((t + t_read)/(2·t_read)))·N, 0).

The time convention is aimc's (and aihwkit's): ``t_seconds`` counts from t0, the first read after programming.

Units: conductances in µS, times in seconds. Every function is pure: randomness comes in as a ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from aimc.devices.pcm import (DeviceState, drift_factor, program_conductances, program_devices, read_devices,
                              read_time_factor)
from aimc.errors import ConfigError
from aimc.rng import CounterStream

__all__ = ["Hermes", "HERMES_VARIANTS"]

#: One branch of a piecewise statistic: below ``split`` clip(a·ln r + b, lo, hi), from ``split`` on the polynomial
#: ``poly`` in r (highest power first).
_Branch = tuple[float, float, float, float, float, tuple[float, ...]]  # (split, a, b, lo, hi, poly)

_DRIFT_MEAN: _Branch = (0.0945, -0.0387, -0.0182, 0.072, 0.13, (-0.0436, -0.0126, 0.0736))

#: Per-variant constants of aihwkit ``HermesNoiseModel`` (see the module docstring).
HERMES_VARIANTS: dict[int, dict] = {
    1: {"g_max": 10.35, "t0": 200.0, "prog_g_max_reference": 10.35,
        "prog_coeffs": (0.15781817, 2.32443916, -2.16310839, 0.68841818),
        "drift_std": (0.3039, -0.0120, -0.0023, 0.0124, 0.04, (-0.0165, 0.0116, 0.0104)),
        "read_q": (0.1591, -0.0078, 0.0038, 0.0179, 0.04, (0.0664, -0.1352, 0.0768, 0.0088))},
    2: {"g_max": 20.7, "t0": 300.0, "prog_g_max_reference": 20.7,
        "prog_coeffs": (0.16603222, 4.71806468, -8.48101252, 4.68961419),
        "drift_std": (0.3055, -0.0117, -0.0057, 0.0091, 0.04, (-0.0118, 0.0093, 0.0073)),
        "read_q": (0.16, -0.0117, -0.0069, 0.015, 0.04, (0.0069, -0.0280, 0.0211, 0.0123))},
}


#: Smallest r whose logarithm :func:`_branch` computes (a normal float32); see :func:`_check_floor`.
_LOG_FLOOR = 1e-30


def _check_floor(spec: _Branch) -> None:
    """Clipping ``a·ln r + b`` gives the same end for every r ≤ _LOG_FLOOR as for r → 0 (ln r → −∞): a ≠ 0 and
    a·ln(_LOG_FLOOR) + b already lies beyond that end of [lo, hi]."""
    _, a, b, lo, hi, _ = spec
    v = a * math.log(_LOG_FLOOR) + b
    if not ((a < 0 and v >= hi) or (a > 0 and v <= lo)):
        raise AssertionError(f"HERMES statistic {spec}: ln r is not clipped below r = {_LOG_FLOOR}")


for _spec in (_DRIFT_MEAN, *(v[k] for v in HERMES_VARIANTS.values() for k in ("drift_std", "read_q"))):
    _check_floor(_spec)


def _branch(r: torch.Tensor, spec: _Branch, log_r: torch.Tensor | None = None) -> torch.Tensor:
    """Piecewise statistic of ``r`` (any shape, ≥ 0): clipped log-linear below ``split``, polynomial from it on
    (``log_r``: ln r, when the caller has it).

    ``r = 0`` gives ln r = −∞, which the clip turns into ``hi`` (no NaN).
    """
    split, a, b, lo, hi, poly = spec
    if log_r is None:
        # ln of r ≥ _LOG_FLOOR only: at r = 0 (a device programmed to 0 µS) torch's vectorised log takes a slow path
        # (5x slower on CPU); every r ≤ _LOG_FLOOR clips to the same end as ln 0 = −∞ (_check_floor), so the
        # statistic is the same number
        low = torch.clamp(r, min=_LOG_FLOOR).log_().mul_(a)
    else:
        low = log_r.mul(a)  # the caller's ln r is shared by two statistics: not overwritten
    low.add_(b).clamp_(lo, hi)
    high = torch.mul(r, poly[0]).add_(poly[1])  # Horner's scheme (c0·r + c1)·r + ..., the same operations in place
    for c in poly[2:]:
        high.mul_(r).add_(c)
    # torch.where(r < split, low, high), as a linear interpolation with weights 0/1, which gives exactly one end
    # (ATen's lerp: start + w·(end − start) for w < ½, else end − (end − start)·(1 − w); both ends are finite):
    # a third of the cost of where's boolean mask on CPU
    return high.lerp_(low, torch.lt(r, split, out=torch.empty_like(r)))


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@dataclass(frozen=True)
class Hermes:
    """PCM of the IBM HERMES Project Chip, one or two devices per polarity (aihwkit ``HermesNoiseModel``).

    Fields left at ``None`` take the variant's calibrated value on construction (so a config records the value in
    use and ``to_dict``/``from_dict`` round-trips).

    Attributes:
        num_devices: PCM devices per polarity of the differential pair, 1 or 2 (default 2, as aihwkit).
        g_max: largest target conductance, µS; max|W| ↦ g_max. Default 10.35 µS (1 device) / 20.7 µS (2 devices),
            the largest characterised values; larger values are refused (the fits do not cover them).
        t0: time of the first read after programming, s; drift is relative to it (t = t_seconds + t0).
            Default 200 s (1 device) / 300 s (2 devices).
        t_read: duration of one read, s (1/f low-frequency cut-off). Default 512 ns (HERMES verify-read pulse).
        prog_coeffs: (c0, c1, c2, c3) of the cubic σ_prog in x = g_T/g_max, µS at ``prog_g_max_reference``.
            Default: the variant's hardware fit.
        prog_g_max_reference: g_max at which ``prog_coeffs`` were fitted, µS; σ_prog scales with
            g_max/prog_g_max_reference. Default: the variant's characterised g_max when ``prog_coeffs`` is the
            default, else ``g_max`` (aihwkit's documented intent; its code leaves it unset when both are given).
        prog_noise_scale: multiplies σ_prog (1 = calibrated model, 0 = perfect programming).
        read_noise_scale: multiplies the 1/f read-noise σ.
        drift_scale: multiplies every drift exponent ν.
    """

    num_devices: int = 2
    g_max: float | None = None
    t0: float | None = None
    t_read: float = 512e-9
    prog_coeffs: tuple[float, float, float, float] | None = None
    prog_g_max_reference: float | None = None
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    kind: str = field(default="hermes", init=False)

    def __post_init__(self) -> None:
        if self.num_devices not in (1, 2) or isinstance(self.num_devices, bool):
            raise ConfigError(f"invalid Hermes device: num_devices={self.num_devices!r} must be 1 or 2 (PCM devices "
                              "per polarity; the HERMES chip was characterised with one or two).")
        var = HERMES_VARIANTS[self.num_devices]
        default_coeffs = self.prog_coeffs is None
        for name in ("g_max", "t0", "prog_coeffs"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, var[name])
        if self.prog_g_max_reference is None:
            ref = var["prog_g_max_reference"] if default_coeffs else self.g_max
            object.__setattr__(self, "prog_g_max_reference", ref)
        p: list[str] = []
        for name in ("g_max", "t0", "t_read", "prog_g_max_reference"):
            if not _positive(getattr(self, name)):
                p.append(f"{name}={getattr(self, name)!r} must be a finite number > 0")
        if _positive(self.g_max) and self.g_max > var["g_max"] * (1 + 1e-9):
            p.append(f"g_max={self.g_max} µS exceeds the largest conductance characterised for "
                     f"num_devices={self.num_devices} ({var['g_max']} µS); use g_max ≤ {var['g_max']} (switching "
                     "variants in a config? give the whole device, {kind: hermes, num_devices: 1}, or use the "
                     "preset hermes_1dev)")
        for name in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
            v = getattr(self, name)
            if not (_positive(v) or v == 0) or isinstance(v, bool):
                p.append(f"{name}={v!r} must be a finite number ≥ 0 (1.0 = calibrated model, 0 = off)")
        c = self.prog_coeffs
        try:
            c = tuple(float(x) for x in c)
        except (TypeError, ValueError):
            c = ()
        if len(c) != 4 or not all(math.isfinite(x) for x in c):
            p.append(f"prog_coeffs={self.prog_coeffs!r} must be 4 finite numbers (c0..c3 of the cubic, µS)")
        else:
            object.__setattr__(self, "prog_coeffs", c)
        if p:
            raise ConfigError("invalid Hermes device: " + "; ".join(p) + ". Units: µS and seconds.")

    # ---- closed-form statistics (used by program/read and by the tests) -------------------------------------
    def prog_std(self, g_target: torch.Tensor) -> torch.Tensor:
        """σ of the programming noise in µS at target ``g_target`` (µS), before ``prog_noise_scale``."""
        x = g_target / self.g_max
        c = self.prog_coeffs
        s = torch.mul(x, c[-1]).add_(c[-2])  # Horner's scheme ((c3·x + c2)·x + c1)·x + c0, in place
        for ci in reversed(c[:-2]):
            s.mul_(x).add_(ci)
        return s.mul_(self.g_max / self.prog_g_max_reference)

    def drift_stats(self, g_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_ν, σ_ν) of the drift exponent before folding and ``drift_scale``, from the target conductance (µS)."""
        r = g_target.abs().div_(self.g_max).clamp_(min=1e-7)
        log_r = torch.log(r)  # one logarithm for both statistics
        return _branch(r, _DRIFT_MEAN, log_r), _branch(r, HERMES_VARIANTS[self.num_devices]["drift_std"], log_r)

    def read_q_s(self, g_prog: torch.Tensor) -> torch.Tensor:
        """Q_s, the relative 1/f read-noise coefficient, from the programmed conductance (µS); no floor on r_p."""
        return _branch(g_prog.abs().div_(self.g_max), HERMES_VARIANTS[self.num_devices]["read_q"])

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

        Samples programming noise and one drift exponent per conductance (per polarity), once. ``drift_stats``:
        this device's ``drift_stats(g_target)`` when the caller has it already (not computed again).

        Returns:
            A :class:`DeviceState` with tensors of ``g_target``'s shape.
        """
        return program_devices(self, g_target, generator, drift_stats)

    def program_conductance(self, g_target: torch.Tensor, *,
                            generator: torch.Generator | CounterStream) -> torch.Tensor:
        """Only the programmed conductances (µS) of :meth:`program` with the same generator (its first draw)."""
        return program_conductances(self, g_target, generator)

    def read(self, state: DeviceState, t_seconds: float, *, generator: torch.Generator | CounterStream) -> torch.Tensor:
        """Conductance (µS) ``t_seconds`` after the first read t0: stored ν's drift plus fresh 1/f read noise."""
        return read_devices(self, state, t_seconds, generator)
