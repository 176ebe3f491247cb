"""Simulation for :func:`aimc.devices.fit.fit_pcm`: synthetic measurements and the per-level bias correction.

:func:`simulate_measurements` draws measurements from a PCM model; :class:`_LevelSolver` is the indirect
inference of the fit: per-level parameters whose simulated statistics (common random numbers) equal the measured
ones, by Newton iterations, and the delta-method map of statistic deviations to parameter deviations.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from aimc.devices.fit_measurements import Measurements
from aimc.devices.fit_stats import _dev_stats, _from_space, _level_stats, _to_space
from aimc.devices.pcm import PCM

__all__ = ["simulate_measurements"]


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
