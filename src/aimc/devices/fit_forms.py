"""Functional forms for :func:`aimc.devices.fit.fit_pcm`: the reference forms fitted to per-level values.

Weighted least squares: σ_prog = c0 + c1·r + c2·r² (r = g_T/g_max); μ_ν, σ_ν = clip(a·ln r + b, lo, hi);
ln Q_s = min(ln q0 − exponent·ln r, ln cap). A clip bound is fitted only where the data ask for it (it must lower
χ² by more than 3.84, a likelihood-ratio test at 5 %); otherwise it is *not identified*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aimc.devices.pcm import PCM

__all__ = ["fit_clipped_line", "PARAM_NAMES"]

_LR_PENALTY = 3.84  # χ²₁ at 5 %: a clip bound must earn its parameter
# flat parameter names ↔ PCM fields
PARAM_NAMES = {"prog_coeffs": ("c0", "c1", "c2"), "drift_mean": ("mu_a", "mu_b", "mu_lo", "mu_hi"),
               "drift_std": ("sigma_a", "sigma_b", "sigma_lo", "sigma_hi"),
               "read_q": ("q0", "q_exponent", "q_floor", "q_cap")}
_FLAT = [n for names in PARAM_NAMES.values() for n in names]


def _flat(params: dict[str, tuple[float, ...]]) -> np.ndarray:
    return np.array([v for f in PARAM_NAMES for v in params[f]], dtype=float)


def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = np.sqrt(w)
    return np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]


def fit_clipped_line(x: np.ndarray, y: np.ndarray, se: np.ndarray, *, allow: tuple[str, ...] = ("left", "right"),
                     penalty: float = _LR_PENALTY, min_clip: int = 2) -> dict[str, Any] | None:
    """Weighted least squares of y = clip(a·x + b) with optional constant clip regions at the left / right end.

    Every split of the (sorted) points into left clip | line (≥ 2 points) | right clip is tried; a clip region
    needs ``min_clip`` points (one point on a clip cannot be told from one noisy point on the line) and costs
    ``penalty`` in χ². Returns ``{"a", "b", "left", "right", "chi2"}`` (``left``/``right`` = clip value or None),
    or None with fewer than 2 points.
    """
    order = np.argsort(x)
    x, y, w = x[order], y[order], 1.0 / np.maximum(se[order], 1e-12) ** 2
    n = len(x)
    if n < 2:
        return None
    best = None
    for i in range(n + 1 if "left" in allow else 1):
        for j in range(i + 2, n + 1):
            if (j < n and "right" not in allow) or 0 < i < min_clip or 0 < n - j < min_clip:
                continue
            mid = slice(i, j)
            if np.ptp(x[mid]) <= 0:
                continue
            b, a = _wls(np.stack([np.ones(j - i), x[mid]], 1), y[mid], w[mid])
            left = float(np.average(y[:i], weights=w[:i])) if i > 0 else None
            right = float(np.average(y[j:], weights=w[j:])) if j < n else None
            lo, hi = (right, left) if a < 0 else (left, right)
            if lo is not None and hi is not None and lo > hi:
                continue
            # χ² of the continuous clipped model these parameters describe (an inconsistent split just scores worse)
            pred = np.clip(a * x + b, -np.inf if lo is None else lo, np.inf if hi is None else hi)
            n_clip = (left is not None) + (right is not None)
            chi2 = float((w * (y - pred) ** 2).sum()) + penalty * n_clip
            if best is None or chi2 < best["chi2"] - 1e-12:
                best = {"a": float(a), "b": float(b), "left": left, "right": right, "chi2": chi2}
    return best


def _clip_params(fit: dict[str, Any] | None, default: tuple[float, ...], x_range: tuple[float, float],
                 name: str, notes: list[str], at_zero: float = float("nan")) -> tuple[tuple[float, float, float, float],
                                                                                  list[bool]]:
    """(a, b, lo, hi) of a clipped log-linear form and which of them the data identify.

    ``at_zero``: the estimate at the 0 µS level, if any. The model gives every 0 µS device the value of the clip
    bound at the low-conductance end (ln g_r = ln 1e-7 is far beyond any level), so when no other level reaches
    that bound, the 0 µS level identifies it.
    """
    if fit is None:
        notes.append(f"{name}: fewer than 2 usable levels, not identified; defaults kept")
        return tuple(default), [False] * 4  # type: ignore[return-value]
    a, b = fit["a"], fit["b"]
    lo, hi = (fit["right"], fit["left"]) if a < 0 else (fit["left"], fit["right"])
    ends = (a * x_range[0] + b, a * x_range[1] + b)
    ident = [True, True, lo is not None, hi is not None]
    if math.isfinite(at_zero):
        if a < 0 and hi is None and at_zero >= ends[0]:
            hi, ident[3] = at_zero, True
            notes.append(f"{name}: upper clip bound identified by the 0 µS level only")
        elif a > 0 and lo is None and at_zero <= ends[0]:
            lo, ident[2] = at_zero, True
            notes.append(f"{name}: lower clip bound identified by the 0 µS level only")
        elif (a < 0 and hi is None) or (a > 0 and lo is None):
            notes.append(f"{name}: the 0 µS level's estimate {at_zero:.4g} lies on the wrong side of the fitted "
                         "line, which the clipped form cannot represent; its clip bound is not identified")
    if lo is None:
        lo = min(default[2], min(ends))
        notes.append(f"{name}: lower clip bound not identified (no level reaches it); "
                     + ("default kept" if lo == default[2] else f"set to {lo:.4g}, the fitted value at the edge of the "
                        "measured range, since the default would bind inside it"))
    if hi is None:
        hi = max(default[3], max(ends))
        notes.append(f"{name}: upper clip bound not identified (no level reaches it); "
                     + ("default kept" if hi == default[3] else f"set to {hi:.4g}, the fitted value at the edge of the "
                        "measured range, since the default would bind inside it"))
    return (a, b, lo, hi), ident


@dataclass
class _Forms:
    params: dict[str, tuple[float, ...]]
    identified: dict[str, list[bool]]
    notes: list[str] = field(default_factory=list)


def _fit_forms(V: np.ndarray, SE: np.ndarray, levels: np.ndarray, g_max: float, base: PCM,
               ident: dict[str, bool]) -> _Forms:
    """Reference forms fitted to per-level values ``V`` (L, 4) [σ_prog, μ_ν, σ_ν, Q] with standard errors ``SE``."""
    notes: list[str] = []
    params: dict[str, tuple[float, ...]] = {}
    idf: dict[str, list[bool]] = {}
    r = levels / g_max
    ok = np.isfinite(V[:, 0]) & np.isfinite(SE[:, 0])
    if ok.sum() >= 3:
        c = _wls(np.stack([np.ones(ok.sum()), r[ok], r[ok] ** 2], 1), V[ok, 0], 1 / np.maximum(SE[ok, 0], 1e-9) ** 2)
        params["prog_coeffs"], idf["prog_coeffs"] = tuple(float(v) for v in c), [True] * 3
    elif ok.sum() == 2:
        c = _wls(np.stack([np.ones(2), r[ok]], 1), V[ok, 0], 1 / np.maximum(SE[ok, 0], 1e-9) ** 2)
        params["prog_coeffs"], idf["prog_coeffs"] = (float(c[0]), float(c[1]), 0.0), [True, True, False]
        notes.append("prog_coeffs: 2 levels only, so c2 is not identified and set to 0 (a straight line)")
    else:
        params["prog_coeffs"], idf["prog_coeffs"] = base.prog_coeffs, [False] * 3
    lx = np.log(np.maximum(r, 1e-7))
    for col, name in ((1, "drift_mean"), (2, "drift_std")):
        default = getattr(base, name)
        if not ident[name]:
            params[name], idf[name] = default, [False] * 4
            continue
        ok = np.isfinite(V[:, col]) & np.isfinite(SE[:, col]) & (levels > 0)
        f = fit_clipped_line(lx[ok], V[ok, col], SE[ok, col]) if ok.sum() >= 2 else None
        rng = (float(lx[ok].min()), float(lx[ok].max())) if ok.any() else (0.0, 0.0)
        zero = float(V[0, col]) if levels[0] == 0 and np.isfinite(V[0, col]) else float("nan")
        params[name], idf[name] = _clip_params(f, default, rng, name, notes, zero)
    q0, ex, floor, cap = base.read_q
    if ident["read_q"]:
        ok = np.isfinite(V[:, 3]) & np.isfinite(SE[:, 3]) & (levels > 0) & (V[:, 3] > 0)
        ly, lse = np.log(np.maximum(V[ok, 3], 1e-300)), SE[ok, 3] / np.maximum(V[ok, 3], 1e-300)
        f = fit_clipped_line(lx[ok], ly, lse, allow=("left",)) if ok.sum() >= 2 else None
        if f is None:
            params["read_q"], idf["read_q"] = base.read_q, [False] * 4
            notes.append("read_q: fewer than 2 usable levels, not identified; defaults kept")
        else:
            q0, ex = math.exp(f["b"]), -f["a"]
            q_edge = q0 / max(math.exp(ex * float(lx[ok].min())), floor)
            if f["left"] is not None and ex > 0:
                cap_v, cap_id = math.exp(f["left"]), True
            else:
                cap_v, cap_id = max(cap, q_edge), False
                notes.append("read_q: cap not identified (no level reaches it); " + (
                    "default kept" if cap_v == cap else f"set to {cap_v:.4g}, the fitted value at the lowest level"))
            params["read_q"], idf["read_q"] = (q0, ex, floor, cap_v), [True, True, False, cap_id]
            notes.append("read_q: floor not identified (it binds only beyond the cap); default kept")
    else:
        params["read_q"], idf["read_q"] = base.read_q, [False] * 4
    return _Forms(params, idf, notes)


def _truth(dev: PCM, levels: np.ndarray) -> np.ndarray:
    """``(L, 4)`` what each per-level statistic estimates under ``dev``: σ_prog, μ_ν, σ_ν, Q_s at the target."""
    g = torch.as_tensor(levels, dtype=torch.float64)
    mu, sig = dev.drift_stats(g)
    return np.stack([dev.prog_std(g).numpy(), mu.numpy(), sig.numpy(), dev.read_q_s(g).numpy()], 1)


def _device(base: PCM, params: dict[str, tuple[float, ...]]) -> PCM:
    dm, ds = list(params["drift_mean"]), list(params["drift_std"])
    dm[2], ds[2] = min(dm[2], dm[3]), min(ds[2], ds[3])
    ds[2] = max(ds[2], 0.0)
    return PCM(g_max=base.g_max, t0=base.t0, t_read=base.t_read, prog_coeffs=params["prog_coeffs"],
               prog_g_max_reference=base.g_max, drift_mean=tuple(dm), drift_std=tuple(ds), read_q=params["read_q"])
