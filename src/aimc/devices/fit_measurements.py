"""Measurements for :func:`aimc.devices.fit.fit_pcm`: reading and validating the table of conductance reads.

One row per read, columns ``device_id``, ``g_target_uS``, ``t_seconds`` (since programming, the ``t`` of
``PCM.read``), ``g_uS``; optional ``array`` and ``chip`` (a device is identified by (chip, array, device_id)).
Targets come in discrete levels (≥ ``min_devices`` devices each).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aimc.errors import DataError, FileFormatError

__all__ = ["read_table", "read_measurements", "Measurements", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS",
           "MIN_DEVICES_PER_LEVEL"]

REQUIRED_COLUMNS = ("device_id", "g_target_uS", "t_seconds", "g_uS")
OPTIONAL_COLUMNS = ("array", "chip")
MIN_DEVICES_PER_LEVEL = 20


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
