"""Fit the statistical PCM model (reference sheet B.2–B.4) to measured conductances: ``aimc fit-device``.

Measurements: one row per read, columns ``device_id``, ``g_target_uS``, ``t_seconds`` (since programming, the ``t``
of ``PCM.read``), ``g_uS``; optional ``array`` and ``chip`` (a device is identified by (chip, array, device_id)).
Targets come in discrete levels (≥ ``min_devices`` devices each).

Method (what is estimated from what):

1. Per device, a weighted least-squares line ln g(t) = ln g₀ − ν̂·ln((t + t0)/t0) through its positive reads
   (weights 1/f(t)², f the 1/f read-noise time factor): the drift exponent ν̂ is minus the log-log slope, and the
   residuals around that drift law, divided by f(t), give the relative read noise (mean square ŝ²).
2. Per target level: the spread of the first read across devices (programming noise; at a 0 µS level, where
   programming noise is rectified, the mean of the first read), the median of ν̂ (drift mean), the IQR of ν̂
   (drift spread) and sqrt(median ŝ²) (read-noise coefficient Q).
3. These raw statistics are biased: the first read also holds read noise and drift up to that time; ν̂ holds the
   estimation noise of a slope through noisy reads, and reads clamped at 0 µS are dropped. The biases are removed
   by simulation (indirect inference): the same statistics are computed on measurements simulated with the model
   itself (same levels, devices and read times, ``sim_factor``× as many devices, common random numbers) at the
   current parameters, and each level's estimate is moved by the data-minus-simulation difference (mean: as is;
   spreads: in variance; Q: in log), with a secant slope, until the simulated statistics match the measured ones.
4. The reference forms are fitted to the corrected per-level values by weighted least squares (weights from the
   bootstrap): σ_prog = c0 + c1·r + c2·r² (r = g_T/g_max); μ_ν, σ_ν = clip(a·ln r + b, lo, hi); ln Q_s =
   min(ln q0 − exponent·ln r, ln cap). A clip bound is fitted only where the data ask for it (it must lower χ² by
   more than 3.84, a likelihood-ratio test at 5 %); otherwise it is *not identified*: the default is kept if it
   does not bind inside the measured range, else it is moved to the fitted value at the edge of that range.
5. Confidence intervals: bootstrap over devices (resampled within each level), steps 2–4 repeated with the final
   simulation held fixed; intervals are widened by sqrt(1 + 1/sim_factor) for the simulation's own noise.

Not identified, and said so (default kept, ``identified = False`` in the result and the YAML): drift and read noise
with a single read time; drift spread and read noise with fewer than 3 reads per device; clip bounds no level
reaches; ``read_q`` floor (binds only beyond the cap); drift and read noise at a 0 µS level (half of its devices
read 0 µS forever). ``t0`` (20 s) and ``t_read`` (250 ns) are model constants, not fitted.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aimc.devices.pcm import PCM
from aimc.errors import DataError, FileFormatError

__all__ = ["fit_pcm", "FitResult", "read_table", "read_measurements", "Measurements", "simulate_measurements",
           "REQUIRED_COLUMNS", "MIN_DEVICES_PER_LEVEL", "PARAM_NAMES"]

REQUIRED_COLUMNS = ("device_id", "g_target_uS", "t_seconds", "g_uS")
OPTIONAL_COLUMNS = ("array", "chip")
MIN_DEVICES_PER_LEVEL = 20
_LR_PENALTY = 3.84  # χ²₁ at 5 %: a clip bound must earn its parameter
# flat parameter names ↔ PCM fields
PARAM_NAMES = {"prog_coeffs": ("c0", "c1", "c2"), "drift_mean": ("mu_a", "mu_b", "mu_lo", "mu_hi"),
               "drift_std": ("sigma_a", "sigma_b", "sigma_lo", "sigma_hi"),
               "read_q": ("q0", "q_exponent", "q_floor", "q_cap")}
_FLAT = [n for names in PARAM_NAMES.values() for n in names]


# ---- measurements -------------------------------------------------------------------------------------------------
def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (Parquet needs pyarrow)."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"measurement file {str(p)!r} does not exist; check the path.")
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise FileFormatError(f"{str(p)!r} is a Parquet file, which needs pyarrow: install it with "
                                  "`pip install pyarrow` (or save the table as CSV).") from None
        return pd.read_parquet(p)
    try:
        return pd.read_csv(p)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise FileFormatError(f"{str(p)!r} is not a readable CSV file ({e}).") from None


@dataclass
class Measurements:
    """Validated measurements as per-device arrays.

    Attributes:
        table: the validated rows.
        levels: ``(L,)`` ascending target levels, µS.
        level: ``(n,)`` level index of each device.
        T, G: ``(n, m)`` read times (s) and conductances (µS) of each device, NaN-padded to the most reads.
        keys: ``(n,)`` device identity, "chip/array/device_id".
    """

    table: pd.DataFrame
    levels: np.ndarray
    level: np.ndarray
    T: np.ndarray
    G: np.ndarray
    keys: np.ndarray

    @property
    def n_devices(self) -> int:
        return len(self.level)

    @property
    def g_target(self) -> np.ndarray:
        return self.levels[self.level]


def read_measurements(source: pd.DataFrame | str | os.PathLike, *,
                      min_devices: int = MIN_DEVICES_PER_LEVEL) -> Measurements:
    """Read and validate measurements (see the module docstring); every problem is listed at once.

    Raises:
        DataError: missing columns, non-numeric or non-finite values, negative times or conductances, a device
            with two targets, too many distinct targets, or a level with fewer than ``min_devices`` devices.
    """
    df = source if isinstance(source, pd.DataFrame) else read_table(source)
    what = "measurements" if isinstance(source, pd.DataFrame) else f"measurements {str(source)!r}"
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{what} lack column(s) {missing}: one row per read needs {list(REQUIRED_COLUMNS)} "
                        f"(optional {list(OPTIONAL_COLUMNS)}); found {list(df.columns)}.")
    if len(df) == 0:
        raise DataError(f"{what} hold no rows.")
    problems = []
    num = {}
    for c in REQUIRED_COLUMNS[1:]:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(v)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            problems.append(f"{c} has {int(bad.sum())} missing, non-numeric or non-finite value(s) (rows {rows})")
        num[c] = v
    for c, unit in (("t_seconds", "s since programming"), ("g_target_uS", "µS"), ("g_uS", "µS")):
        neg = num[c] < 0
        if neg.any():
            problems.append(f"{c} has {int(neg.sum())} negative value(s) (rows {np.flatnonzero(neg)[:5].tolist()}); "
                            f"it must be ≥ 0 ({unit})")
    if problems:
        raise DataError(f"invalid {what}: " + "; ".join(problems) + ".")
    key = df["device_id"].astype(str)
    for c in ("array", "chip"):
        if c in df.columns:
            key = df[c].astype(str) + "/" + key
    clean = pd.DataFrame({"key": key.to_numpy(), "g_target_uS": num["g_target_uS"], "t_seconds": num["t_seconds"],
                          "g_uS": num["g_uS"]})
    per_dev = clean.groupby("key", sort=False)["g_target_uS"].agg(["min", "max"])
    two = per_dev[(per_dev["max"] - per_dev["min"]) > 1e-9 * np.maximum(per_dev["max"], 1.0)]
    if len(two):
        raise DataError(f"{len(two)} device(s) have more than one g_target_uS (e.g. {list(two.index[:3])}); a "
                        "device is programmed once to one target. Give each programming its own device_id.")
    targets = per_dev["min"].to_numpy()
    levels = np.unique(np.round(targets, 9))
    if len(levels) > 64:
        raise DataError(f"{what} have {len(levels)} distinct target conductances; the fit needs discrete target "
                        f"levels with ≥ {min_devices} devices each (round the targets to the levels you programmed).")
    level_of = np.searchsorted(levels, np.round(targets, 9))
    counts = np.bincount(level_of, minlength=len(levels))
    few = [(float(levels[k]), int(c)) for k, c in enumerate(counts) if c < min_devices]
    if few:
        raise DataError(f"{what}: target level(s) with fewer than the minimum of {min_devices} devices: "
                        + ", ".join(f"{g:g} µS ({c})" for g, c in few)
                        + ". Measure more devices per level, drop those levels, or lower min_devices.")
    if len(levels) < 2:
        raise DataError(f"{what} hold a single target level ({levels[0]:g} µS); noise and drift vs conductance need "
                        "at least 2 levels (3 for the programming-noise polynomial).")
    clean["dev"] = pd.Categorical(clean["key"], categories=per_dev.index).codes
    clean = clean.sort_values(["dev", "t_seconds"], kind="stable")
    pos = clean.groupby("dev").cumcount().to_numpy()
    n, m = len(per_dev), int(pos.max()) + 1
    T = np.full((n, m), np.nan)
    G = np.full((n, m), np.nan)
    d = clean["dev"].to_numpy()
    T[d, pos] = clean["t_seconds"].to_numpy()
    G[d, pos] = clean["g_uS"].to_numpy()
    return Measurements(table=df, levels=levels, level=level_of, T=T, G=G, keys=per_dev.index.to_numpy())


# ---- statistics ---------------------------------------------------------------------------------------------------
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


# ---- simulation ---------------------------------------------------------------------------------------------------
def _simulate(dev: PCM, g_t: np.ndarray, T: np.ndarray, noise: tuple[torch.Tensor, ...]) -> np.ndarray:
    """Reads ``(n, m)`` of devices with targets ``g_t`` at times ``T`` (NaN = no read) under ``dev``."""
    n1, n2, n3 = noise
    gt = torch.as_tensor(g_t, dtype=torch.float64)
    tt = torch.as_tensor(np.nan_to_num(T, nan=0.0), dtype=torch.float64)
    g_prog = torch.clamp(gt + dev.prog_noise_scale * dev.prog_std(gt) * n1, min=0.0)
    mu, sig = dev.drift_stats(gt)
    nu = (mu + sig * n2).abs() * dev.drift_scale
    g_drift = g_prog[:, None] * torch.exp(-nu[:, None] * torch.log((tt + dev.t0) / dev.t0))
    f = torch.sqrt(torch.log((tt + dev.t0 + dev.t_read) / (2 * dev.t_read)))
    sigma = g_drift.abs() * dev.read_q_s(g_prog)[:, None] * f * dev.read_noise_scale
    g = torch.clamp(g_drift + sigma * n3, min=0.0).numpy()
    return np.where(np.isfinite(T), g, np.nan)


def _sim_levels(P: np.ndarray, levels: np.ndarray, lev: np.ndarray, T: np.ndarray, noise: tuple[np.ndarray, ...],
                shape: PCM) -> np.ndarray:
    """Like :func:`_simulate`, but each level k with its own (σ_prog, μ_ν, σ_ν, Q) = ``P[k]``; within a level Q
    follows the read-noise form of ``shape`` over the programmed conductance, scaled to ``P[k, 3]`` at the target."""
    n1, n2, n3 = noise
    g_t = levels[lev]
    g_prog = np.maximum(g_t + P[lev, 0] * n1, 0.0)
    nu = np.abs(P[lev, 1] + P[lev, 2] * n2)
    with torch.no_grad():
        q_rel = (shape.read_q_s(torch.as_tensor(g_prog)) / shape.read_q_s(torch.as_tensor(g_t))).numpy()
    q = P[lev, 3] * q_rel
    tt = np.nan_to_num(T, nan=0.0)
    g_drift = g_prog[:, None] * np.exp(-nu[:, None] * np.log((tt + shape.t0) / shape.t0))
    f = np.sqrt(np.log((tt + shape.t0 + shape.t_read) / (2 * shape.t_read)))
    g = np.maximum(g_drift + np.abs(g_drift) * q[:, None] * f * n3, 0.0)
    return np.where(np.isfinite(T), g, np.nan)


def simulate_measurements(device: PCM, levels: list[float], n_devices: int, times: list[float], *,
                          seed: int) -> pd.DataFrame:
    """Synthetic measurements from a PCM model: ``n_devices`` spread evenly over ``levels`` (µS), each read at every
    one of ``times`` (s), in the measurement format of :func:`read_measurements`."""
    rng = torch.Generator().manual_seed(int(seed))
    g_t = np.repeat(np.asarray(levels, dtype=float), math.ceil(n_devices / len(levels)))[:n_devices]
    T = np.tile(np.asarray(times, dtype=float), (n_devices, 1))
    noise = (torch.randn(n_devices, generator=rng, dtype=torch.float64),
             torch.randn(n_devices, generator=rng, dtype=torch.float64),
             torch.randn(T.shape, generator=rng, dtype=torch.float64))
    G = _simulate(device, g_t, T, noise)
    ids = np.repeat(np.arange(n_devices), len(times))
    return pd.DataFrame({"device_id": ids, "g_target_uS": g_t[ids], "t_seconds": T.ravel(),
                         "g_uS": np.round(G.ravel(), 5)})


# ---- functional forms -----------------------------------------------------------------------------------------------
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


# ---- the fit --------------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """Outcome of :func:`fit_pcm`.

    Attributes:
        device: the fitted :class:`PCM` (``prog_g_max_reference = g_max``; scales 1).
        params: one row per scalar parameter: ``name`` (c0, c1, c2, mu_a, …), ``field`` and ``index`` in
            :class:`PCM`, ``value``, ``ci_low``/``ci_high`` (95 %, NaN if not identified), ``se``, ``identified``,
            ``default`` (the value of the reference model at this g_max).
        levels: one row per target level: devices, raw statistics, corrected estimates with standard errors, and the
            fitted forms at that level.
        notes: what was not identified, and other caveats.
        design: devices, reads, levels and times of the measurements.
    """

    device: PCM
    params: pd.DataFrame
    levels: pd.DataFrame
    notes: list[str]
    design: dict[str, Any]
    settings: dict[str, Any]
    measurements: Measurements = field(repr=False)
    nu_hat: np.ndarray = field(repr=False)  # per measured device
    nu_hat_model: tuple[np.ndarray, np.ndarray] = field(repr=False)  # (levels index, ν̂) of simulated devices
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def not_identified(self) -> list[str]:
        return self.params.loc[~self.params["identified"], "name"].tolist()

    def to_markdown(self) -> str:
        """The parameter table: value, 95 % CI, reference default, identified."""
        rows = ["| parameter | PCM field | fitted | 95 % CI | reference default | identified |",
                "|---|---|---|---|---|---|"]
        for _, r in self.params.iterrows():
            ci = "—" if not r["identified"] else f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]"
            rows.append(f"| {r['name']} | {r['field']}[{r['index']}] | {r['value']:.4g} | {ci} | {r['default']:.4g} "
                        f"| {'yes' if r['identified'] else '**no** (default or range edge kept)'} |")
        return "\n".join(rows)

    def tabulated(self):  # noqa: ANN201
        """The per-level estimates as a :class:`aimc.devices.Tabulated` device (no functional form); levels whose
        drift or read noise is not identified (e.g. 0 µS) take the fitted forms' values there."""
        from aimc.devices.tabulated import Tabulated

        lv = self.levels
        cols = ("prog_std", "drift_mean", "drift_std", "read_q")
        tab = {c: np.where(np.isfinite(lv[c]), lv[c], lv[c + "_form"]) for c in cols}
        return Tabulated(g_points=tuple(lv["g_target_uS"]), prog_std=tuple(np.maximum(tab["prog_std"], 0)),
                         drift_mean=tuple(tab["drift_mean"]), drift_std=tuple(np.maximum(tab["drift_std"], 0)),
                         read_q=tuple(np.maximum(tab["read_q"], 0)), g_max=self.device.g_max, t0=self.device.t0,
                         t_read=self.device.t_read)

    def fit_section(self) -> dict[str, Any]:
        """The informational ``fit`` section of the device file."""
        par = {}
        for _, r in self.params.iterrows():
            e: dict[str, Any] = {"value": float(r["value"]), "identified": bool(r["identified"])}
            if r["identified"]:
                e["ci95"] = [float(r["ci_low"]), float(r["ci_high"])]
                e["se"] = float(r["se"])
            else:
                e["default"] = float(r["default"])
            par[r["name"]] = e
        return {"method": "aimc.devices.fit_pcm: per-device log-log drift fits, per-level statistics corrected by "
                          "simulation (indirect inference), reference forms by weighted least squares, bootstrap "
                          "over devices", "measurements": {**self.source, **self.design},
                "settings": self.settings, "parameters": par, "not_identified": self.not_identified,
                "notes": list(self.notes)}

    def save(self, path: str | os.PathLike, *, tabulated: bool = False) -> str:
        """Write the fitted device (or its :meth:`tabulated` version) as a device file; returns its sha256."""
        from aimc.devices.files import save

        return save(self.tabulated() if tabulated else self.device, path, fit=self.fit_section())

    def diagnostics(self, *, seed: int = 12345) -> pd.DataFrame:
        """Measured vs modelled mean and spread of g per target level and read time (log-binned when reads are
        spread over many distinct times). ``z_mean`` = (measured − model mean) / its standard error."""
        m = self.measurements
        k = self.settings["sim_factor"]
        T = np.tile(m.T, (k, 1))
        lev = np.tile(m.level, k)
        rng = torch.Generator().manual_seed(seed)
        noise = tuple(torch.randn(s, generator=rng, dtype=torch.float64) for s in (len(lev), len(lev), T.shape))
        G = _simulate(self.device, m.levels[lev], T, noise)
        times = np.unique(m.T[np.isfinite(m.T)])
        if len(times) > 40:
            edges = np.geomspace(max(times.min(), 1e-3), times.max() * 1.0001, 13)
            centers = np.sqrt(edges[:-1] * edges[1:])

            def tb(t: np.ndarray) -> np.ndarray:
                return centers[np.clip(np.searchsorted(edges, np.maximum(t, 1e-3), side="right") - 1, 0, 11)]
        else:
            def tb(t: np.ndarray) -> np.ndarray:
                return t

        def agg(T_: np.ndarray, G_: np.ndarray, lev_: np.ndarray) -> pd.DataFrame:
            ok = np.isfinite(T_)
            d = pd.DataFrame({"level": np.broadcast_to(lev_[:, None], T_.shape)[ok], "t": tb(T_[ok]), "g": G_[ok]})
            return d.groupby(["level", "t"])["g"].agg(["mean", "std", "count"])

        a, b = agg(m.T, m.G, m.level), agg(T, G, lev)
        d = pd.merge(a, b, left_index=True, right_index=True, suffixes=("_meas", "_model")).reset_index()
        se = np.sqrt(d["std_meas"] ** 2 / d["count_meas"] + d["std_model"] ** 2 / d["count_model"])
        return pd.DataFrame({
            "g_target_uS": m.levels[d["level"]], "t_seconds": d["t"], "n": d["count_meas"],
            "mean_meas": d["mean_meas"], "mean_model": d["mean_model"], "sd_meas": d["std_meas"],
            "sd_model": d["std_model"], "z_mean": (d["mean_meas"] - d["mean_model"]) / np.maximum(se, 1e-12),
            "sd_ratio": d["std_meas"] / np.maximum(d["std_model"], 1e-12)})


def _flat(params: dict[str, tuple[float, ...]]) -> np.ndarray:
    return np.array([v for f in PARAM_NAMES for v in params[f]], dtype=float)


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


def _steps(u: np.ndarray, g_max: float) -> np.ndarray:
    """Finite-difference steps in the transformed parameter space (σ², μ, σ², ln Q)."""
    h = np.empty_like(u)
    h[:, 0] = 0.1 * np.maximum(np.abs(u[:, 0]), (0.01 * g_max / 25) ** 2)
    h[:, 1] = 0.05 * np.maximum(np.abs(u[:, 1]), 0.01)
    h[:, 2] = 0.1 * np.maximum(np.abs(u[:, 2]), 0.002 ** 2)
    h[:, 3] = 0.1
    return h


class _LevelSolver:
    """Per-level indirect inference: find per-level parameters whose simulated statistics equal the measured ones."""

    def __init__(self, meas: Measurements, active: np.ndarray, sim_factor: int, seed: int, t0: float, t_read: float):
        self.meas, self.active, self.t0, self.t_read = meas, active, t0, t_read
        L = len(meas.levels)
        self.T, self.lev = np.tile(meas.T, (sim_factor, 1)), np.tile(meas.level, sim_factor)
        self.groups = [np.flatnonzero(self.lev == k) for k in range(L)]
        rng = np.random.default_rng(seed + 1)  # common random numbers for every simulation
        self.noise = (rng.standard_normal(len(self.lev)), rng.standard_normal(len(self.lev)),
                      rng.standard_normal(self.T.shape))
        self.J = np.zeros((L, 4, 4))

    def stats(self, u: np.ndarray, shape: PCM) -> np.ndarray:
        G = _sim_levels(_from_space(u), self.meas.levels, self.lev, self.T, self.noise, shape)
        ds = _dev_stats(self.T, G, self.t0, self.t_read)
        return _to_space(_level_stats(ds, self.groups, self.meas.levels, self.active))

    def solve(self, u: np.ndarray, target: np.ndarray, shape: PCM, g_max: float, n_iter: int) -> tuple[np.ndarray,
                                                                                                         np.ndarray]:
        """Newton iterations on ``u`` (L, 4; transformed space) until sim stats = ``target``; returns (u, residual)."""
        u = u.copy()
        act = self.active
        res = np.zeros_like(u)
        for it in range(n_iter + 1):
            s0 = self.stats(u, shape)
            res = np.where(act, target - s0, 0.0)
            if it == n_iter:
                break
            h = _steps(u, g_max)
            for j in range(4):
                u2 = u.copy()
                u2[:, j] += h[:, j]
                self.J[:, :, j] = np.nan_to_num((self.stats(u2, shape) - s0) / h[:, j:j + 1])
            for k in range(len(u)):
                a = act[k]
                if not a.any():
                    continue
                Jk = self.J[k][np.ix_(a, a)]
                try:
                    step = np.linalg.solve(Jk, res[k, a])
                except np.linalg.LinAlgError:
                    step = res[k, a]
                lim = 20 * h[k, a]
                u[k, a] += np.clip(step, -lim, lim)
        return u, res

    def linear_map(self, dS: np.ndarray) -> np.ndarray:
        """``(B, L, 4)`` statistic deviations → parameter deviations, with the last Jacobians (delta method)."""
        out = np.zeros_like(dS)
        for k in range(dS.shape[1]):
            a = self.active[k]
            if a.any():
                try:
                    Jinv = np.linalg.inv(self.J[k][np.ix_(a, a)])
                except np.linalg.LinAlgError:
                    Jinv = np.eye(int(a.sum()))
                out[:, k, a] = dS[:, k, a] @ Jinv.T
        return out


def fit_pcm(measurements: Measurements | pd.DataFrame | str | os.PathLike, *, g_max: float | None = None,
            t0: float = 20.0, t_read: float = 250e-9, min_devices: int = MIN_DEVICES_PER_LEVEL,
            n_bootstrap: int = 200, sim_factor: int = 4, n_iter: int = 4, seed: int = 0) -> FitResult:
    """Fit the statistical PCM model to measured conductances (method: module docstring).

    Args:
        measurements: a table / CSV / Parquet path in the measurement format, or :class:`Measurements`.
        g_max: the g_max of the fitted device, µS; default the highest target level.
        t0, t_read: model constants (s), not fitted: the drift reference time and the read duration.
        min_devices: minimum devices per target level.
        n_bootstrap: bootstrap resamples for the confidence intervals.
        sim_factor: simulated devices per measured device in the bias correction.
        n_iter: Newton iterations of the simulation correction (per round; two rounds).
        seed: seed of the bootstrap and the simulations.

    Returns:
        A :class:`FitResult`; ``result.device`` is the fitted :class:`PCM`.
    """
    source: dict[str, Any] = {}
    if isinstance(measurements, (str, os.PathLike)):
        from aimc.devices.files import file_sha256

        source = {"file": str(measurements), "sha256": file_sha256(measurements)}
    meas = measurements if isinstance(measurements, Measurements) else read_measurements(
        measurements, min_devices=min_devices)
    levels, L = meas.levels, len(meas.levels)
    g_max = float(levels.max()) if g_max is None else float(g_max)
    if not (math.isfinite(g_max) and g_max > 0) or levels.max() > g_max * (1 + 1e-9):
        raise DataError(f"g_max={g_max!r} µS must be > 0 and ≥ the highest target level ({levels.max():g} µS).")
    ref = PCM()
    base = PCM(g_max=g_max, t0=t0, t_read=t_read, prog_coeffs=tuple(c * g_max / ref.prog_g_max_reference
                                                                     for c in ref.prog_coeffs),
               prog_g_max_reference=g_max)
    notes: list[str] = []
    ds = _dev_stats(meas.T, meas.G, t0, t_read)
    groups = [np.flatnonzero(meas.level == k) for k in range(L)]
    n_nu = np.array([np.isfinite(ds.nu[g]).sum() for g in groups])
    n_s2 = np.array([np.isfinite(ds.s2[g]).sum() for g in groups])
    active = np.zeros((L, 4), dtype=bool)
    active[:, 0] = True
    active[:, 1] = n_nu >= min_devices
    active[:, 2] = active[:, 1] & (n_s2 >= min_devices) & (levels > 0)  # at 0 µS too noisy to deconvolve
    active[:, 3] = n_s2 >= min_devices
    pos = levels > 0
    ident = {"drift_mean": active[pos, 1].sum() >= 2, "drift_std": active[pos, 2].sum() >= 2,
             "read_q": active[pos, 3].sum() >= 2}
    if not ident["drift_mean"]:
        active[:, 1:] = False
        notes.append("drift (mean and spread) and read noise are not identified: fewer than 2 levels have ≥ "
                     f"{min_devices} devices with positive reads at 2 or more distinct times; defaults kept")
    elif not ident["read_q"]:
        active[:, 2:] = False
        notes.append("drift spread and read noise are not identified: fewer than 3 positive reads per device, so "
                     "read noise cannot be told apart from the drift-exponent spread; defaults kept")
    if not all(ident.values()):
        notes.append("prog_coeffs: the first read's drift and read noise were removed with the default (not "
                     "identified) drift and read-noise parameters, an approximation")
    if levels[0] == 0:
        notes.append("the 0 µS level: c0 comes from the mean of its rectified first reads, corrected for its drift "
                     "and read noise; "
                     + ("those are estimated from its devices that read above 0 µS (drift mean, read noise), the "
                        "drift spread follows the fitted form" if active[0, [1, 3]].all() else
                        "too few of its devices read above 0 µS at 3 or more times, so they follow the fitted "
                        "forms and c0 depends on them"))
    S_d = _level_stats(ds, groups, levels, active)
    rng = np.random.default_rng(seed)
    boot = [[rng.choice(g, len(g)) for g in groups] for _ in range(n_bootstrap)]
    S_b = np.stack([_level_stats(ds, gb, levels, active) for gb in boot]) if boot else S_d[None]
    se2_med = np.array([np.nanmedian(ds.se2[g]) if np.isfinite(ds.se2[g]).any() else np.nan for g in groups])
    dof = max(float(np.median(np.sum(np.isfinite(meas.G) & (meas.G > 0), 1))) - 2, 1.0)
    V = _naive(S_d, se2_med, math.sqrt((1 - 2 / (9 * dof)) ** 3))
    # round 1: per-level parameters under the reference read-noise shape; round 2: under the fitted one
    solver = _LevelSolver(meas, active, sim_factor, seed, t0, t_read)
    U_d = _to_space(S_d)
    dev, forms, res, SE, Vb = base, None, np.zeros_like(V), np.full_like(V, np.nan), V[None]
    for rnd in range(2):
        u = np.where(active, _to_space(np.nan_to_num(V, nan=1.0)), _to_space(_truth(dev, levels)))
        u, res = solver.solve(u, np.nan_to_num(U_d), dev, g_max, n_iter if rnd == 0 else max(n_iter // 2, 1))
        V = np.where(active, _from_space(u), np.nan)
        Ub = u[None] + solver.linear_map(np.nan_to_num(_to_space(S_b) - U_d[None]))
        Vb = np.where(active[None], _from_space(Ub), np.nan)
        SE = _nanstd(Vb) if len(Vb) > 1 else np.abs(V) * 0.1 + 1e-6
        forms = _fit_forms(V, SE, levels, g_max, base, ident)
        dev = _device(base, forms.params)
    sd_stat = _nanstd(_to_space(S_b)) if len(S_b) > 1 else np.ones_like(res)
    worst = np.nanmax(np.where(active, np.abs(res) / np.maximum(sd_stat, 1e-12), 0))
    if worst > 0.5:
        notes.append(f"the simulation correction did not fully converge (largest residual {worst:.2g} bootstrap "
                     "standard deviations of its statistic)")
    # bootstrap of the form fit over the per-level bootstrap values. Within a level, read noise follows the fitted
    # read-noise exponent over the programmed conductances, so the per-level values depend on it: D = dV/d(exponent)
    # (one more solve) carries each replicate's exponent back into its per-level values (two fixed-point steps).
    theta = _flat(forms.params)
    ident_flat = np.array([v for f in PARAM_NAMES for v in forms.identified[f]])
    D = np.zeros_like(V)
    if forms.identified["read_q"][1]:
        J, dex = solver.J.copy(), 0.02
        q = list(dev.read_q)
        q[1] += dex
        u2, _ = solver.solve(u, np.nan_to_num(U_d), dataclasses.replace(dev, read_q=tuple(q)), g_max, 2)
        D = np.nan_to_num((np.where(active, _from_space(u2), np.nan) - V) / dex)
        solver.J = J

    def replicate(vb: np.ndarray) -> np.ndarray:
        f = _fit_forms(vb, SE, levels, g_max, base, ident)
        for _ in range(2 if D.any() else 0):
            f = _fit_forms(vb + D * (f.params["read_q"][1] - dev.read_q[1]), SE, levels, g_max, base, ident)
        return _flat(f.params)

    tb = np.stack([replicate(Vb[b]) for b in range(len(Vb))])
    infl = math.sqrt(1 + 1 / sim_factor)
    med = np.median(tb, axis=0)
    ci_lo = theta + infl * (np.percentile(tb, 2.5, axis=0) - med)
    ci_hi = theta + infl * (np.percentile(tb, 97.5, axis=0) - med)
    se = infl * tb.std(axis=0, ddof=1) if len(tb) > 1 else np.full_like(theta, np.nan)
    default = _flat({f: getattr(base, f) for f in PARAM_NAMES})
    params = pd.DataFrame({
        "name": _FLAT, "field": [f for f in PARAM_NAMES for _ in PARAM_NAMES[f]],
        "index": [i for f in PARAM_NAMES for i in range(len(PARAM_NAMES[f]))], "value": theta,
        "ci_low": np.where(ident_flat, ci_lo, np.nan), "ci_high": np.where(ident_flat, ci_hi, np.nan),
        "se": np.where(ident_flat, se, np.nan), "identified": ident_flat, "default": default})
    form_vals = _truth(dev, levels)
    lv = pd.DataFrame({"g_target_uS": levels, "n_devices": [len(g) for g in groups], "n_drift_fits": n_nu})
    for j, c in enumerate(("prog_std", "drift_mean", "drift_std", "read_q")):
        lv[c] = V[:, j]
        lv[c + "_se"] = SE[:, j] * infl
        lv[c + "_raw"] = S_d[:, j]
        lv[c + "_form"] = form_vals[:, j]
    T_sim, lev_sim = solver.T, solver.lev
    ds_fin = _dev_stats(T_sim, _simulate(dev, levels[lev_sim], T_sim, tuple(torch.as_tensor(n) for n in solver.noise)),
                        t0, t_read)
    t_fin = meas.T[np.isfinite(meas.T)]
    design = {"n_devices": int(meas.n_devices), "n_reads": int(np.isfinite(meas.G).sum()),
              "levels_uS": [float(v) for v in levels], "t_min_s": float(t_fin.min()), "t_max_s": float(t_fin.max()),
              "reads_per_device_median": float(np.median(np.isfinite(meas.T).sum(1)))}
    settings = {"g_max": g_max, "t0": t0, "t_read": t_read, "min_devices": min_devices, "n_bootstrap": n_bootstrap,
                "sim_factor": sim_factor, "n_iter": n_iter, "seed": seed}
    return FitResult(device=dev, params=params, levels=lv, notes=notes + forms.notes, design=design,
                     settings=settings, measurements=meas, nu_hat=ds.nu, nu_hat_model=(lev_sim, ds_fin.nu),
                     source=source)
