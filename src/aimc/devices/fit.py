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

The steps live in: ``fit_measurements`` (reading and validating), ``fit_stats`` (1–2), ``fit_simulation`` (3, and
:func:`simulate_measurements`), ``fit_forms`` (4), ``fit_result`` (:class:`FitResult`: the device file and the
diagnostics); this module runs them and does the bootstrap of step 5.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np
import pandas as pd
import torch

from aimc.devices.fit_forms import _FLAT, PARAM_NAMES, _device, _fit_forms, _flat, _truth
from aimc.devices.fit_forms import fit_clipped_line as fit_clipped_line
from aimc.devices.fit_measurements import (MIN_DEVICES_PER_LEVEL, REQUIRED_COLUMNS, Measurements, read_measurements,
                                           read_table)
from aimc.devices.fit_measurements import OPTIONAL_COLUMNS as OPTIONAL_COLUMNS
from aimc.devices.fit_result import FitResult
from aimc.devices.fit_simulation import _LevelSolver, _simulate, simulate_measurements
from aimc.devices.fit_stats import _dev_stats, _from_space, _level_stats, _naive, _nanstd, _to_space
from aimc.devices.pcm import PCM
from aimc.errors import DataError

__all__ = ["fit_pcm", "FitResult", "read_table", "read_measurements", "Measurements", "simulate_measurements",
           "REQUIRED_COLUMNS", "MIN_DEVICES_PER_LEVEL", "PARAM_NAMES"]


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
