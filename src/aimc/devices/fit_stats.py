"""Statistics for :func:`aimc.devices.fit.fit_pcm`: per-device drift and read-noise fits, per-level statistics.

Per device, a weighted least-squares line ln g(t) = ln g₀ − ν̂·ln((t + t0)/t0) through its positive reads (weights
1/f(t)², f the 1/f read-noise time factor) gives the drift exponent ν̂ and the relative read noise ŝ². Per level:
the programming spread of the first read, the median and IQR of ν̂, and sqrt(median ŝ²); plus the transform into
the space where the simulation correction is additive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class _DevStats:
    g1: np.ndarray  # first read, µS
    nu: np.ndarray  # −slope of ln g vs ln((t+t0)/t0); NaN if < 2 positive reads at distinct times
    s2: np.ndarray  # residual mean square of ln g / f(t); NaN if < 3 positive reads
    se2: np.ndarray  # variance of the slope estimate


def _dev_stats(T: np.ndarray, G: np.ndarray, t0: float, t_read: float) -> _DevStats:
    n = T.shape[0]
    first = np.nanargmin(np.where(np.isfinite(T), T, np.inf), axis=1)
    g1 = G[np.arange(n), first]
    valid = np.isfinite(G) & (G > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(valid, np.log((T + t0) / t0), 0.0)
        w = np.where(valid, 1.0 / np.log((T + t0 + t_read) / (2 * t_read)), 0.0)
        y = np.where(valid, np.log(np.where(valid, G, 1.0)), 0.0)
        sw = w.sum(1)
        xm = (w * x).sum(1) / sw
        ym = (w * y).sum(1) / sw
        dx = np.where(valid, x - xm[:, None], 0.0)
        sxx = (w * dx * dx).sum(1)
        slope = (w * dx * (y - ym[:, None])).sum(1) / sxx
        nv = valid.sum(1)
        ok = (nv >= 2) & (sxx > 1e-9 * np.maximum(sw, 1e-300))
        r = np.where(valid, y - ym[:, None] - slope[:, None] * dx, 0.0)
        s2 = (w * r * r).sum(1) / (nv - 2)
    nu = np.where(ok, -slope, np.nan)
    s2 = np.where(ok & (nv >= 3), s2, np.nan)
    return _DevStats(g1=g1, nu=nu, s2=s2, se2=np.where(ok & (nv >= 3), s2 / sxx, np.nan))


_STATS = ("prog", "mean", "spread", "read")


def _level_stats(ds: _DevStats, groups: list[np.ndarray], levels: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``(L, 4)`` raw statistics per level: programming spread, median ν̂, IQR/1.349 of ν̂, sqrt(median ŝ²)."""
    out = np.full((len(levels), 4), np.nan)
    for k, idx in enumerate(groups):
        g1 = ds.g1[idx]
        out[k, 0] = g1.mean() * math.sqrt(2 * math.pi) if levels[k] == 0 else g1.std(ddof=1)
        if active[k, 1]:
            nu = ds.nu[idx]
            nu = nu[np.isfinite(nu)]
            q1, q2, q3 = np.percentile(nu, [25, 50, 75])
            out[k, 1], out[k, 2] = q2, (q3 - q1) / 1.349
        if active[k, 3]:
            s2 = ds.s2[idx]
            out[k, 3] = math.sqrt(np.median(s2[np.isfinite(s2)]))
    out[~active] = np.nan
    return out


def _to_space(v: np.ndarray) -> np.ndarray:
    """Statistics / parameters → the space in which the simulation correction is additive."""
    out = v.copy()
    out[..., 0] = v[..., 0] ** 2
    out[..., 2] = v[..., 2] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out[..., 3] = np.log(v[..., 3])
    return out


def _from_space(u: np.ndarray) -> np.ndarray:
    out = u.copy()
    out[..., 0] = np.sqrt(np.maximum(u[..., 0], 1e-12))
    out[..., 2] = np.sqrt(np.maximum(u[..., 2], 1e-12))
    out[..., 3] = np.exp(u[..., 3])
    return out


def _nanstd(a: np.ndarray) -> np.ndarray:
    """Standard deviation over axis 0 ignoring NaN (NaN where fewer than 2 values), without warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(a, axis=0, ddof=1)


def _naive(S: np.ndarray, se2_med: np.ndarray, chi_fac: float) -> np.ndarray:
    """First guess of the per-level parameters from the raw statistics (before any simulation)."""
    V = S.copy()
    V[..., 2] = np.sqrt(np.maximum(S[..., 2] ** 2 - se2_med, (0.25 * S[..., 2]) ** 2))
    V[..., 3] = S[..., 3] / chi_fac
    return V
