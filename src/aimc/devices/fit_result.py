"""The outcome of :func:`aimc.devices.fit.fit_pcm`: parameters with confidence intervals, per-level estimates,
the device file (YAML) and the measured-vs-model diagnostics."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from aimc.devices.fit_measurements import Measurements
from aimc.devices.fit_simulation import _simulate
from aimc.devices.pcm import PCM

__all__ = ["FitResult"]


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
