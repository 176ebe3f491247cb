"""Bridges to a real chip: export target conductances, import measured ones in place of the statistical model.

Export (``aimc export-targets`` / :func:`export_targets`): per crossbar tile, one CSV with the target conductance of
each device of the differential pairs::

    layer, tile, tile_row, tile_col, row, col, in_index, out_index, g_plus_uS, g_minus_uS

``tile`` = tile_row · n_tile_cols + tile_col within the layer's weight matrix; ``row``/``col`` are the crossbar
coordinates inside the tile (input line, output line); ``in_index``/``out_index`` the matrix coordinates
(``W`` is ``(out, rows)``: W[out_index, in_index] ∝ g+ − g−). ``manifest.csv`` lists the tiles and their files.

Import (:func:`load_measured`): the same layout plus ``t_seconds`` (time since programming), with the measured
``g_plus_uS`` / ``g_minus_uS`` at one or more times; an optional ``chip`` column selects among several chips. The
measured devices then replace the statistical model: ``aimc.program`` gives them their first measured conductance
(no drift exponent), and ``aimc.at_time`` / ``aimc.evaluate`` interpolate each device's conductance linearly in
ln(t + t0) between measured times (t0 = the device model's, 20 s for PCM). Devices absent from the table keep the
statistical model. A measured read already holds its read noise: at a measured time the same values come back for
every seed (one chip); between times the interpolation averages two reads, slightly less noisy than one read.
``aimc.save`` stores the programmed buffers but not the measurement table: after ``aimc.load`` call
:func:`load_measured` again.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aimc import mapping
from aimc.devices.files import file_sha256
from aimc.devices.measured import LAYOUT_COLUMNS, MeasuredDevice, read_conductance_table, sample_measurements
from aimc.errors import ConfigError, DataError, StateError
from aimc.nn.convert import analog_layers

__all__ = ["target_table", "export_targets", "load_measured", "sample_measurements", "read_conductance_table",
           "MeasuredDevice", "LAYOUT_COLUMNS"]


# ---- export -------------------------------------------------------------------------------------------------------
def _matrices(model: torch.nn.Module):  # noqa: ANN202
    mats = [(name + sfx, mat, w) for name, layer in analog_layers(model)
            for sfx, (mat, w) in layer.analog_matrices().items()]
    if not mats:
        raise StateError("the model has no analog layers; convert it first: analog = aimc.convert(model, config).")
    return mats


def _targets(mat: Any, w: torch.Tensor) -> torch.Tensor:
    """``(2, out, rows)`` target conductances of the master weights (what ``program`` would map)."""
    w = w.detach().reshape(w.shape[0], -1).float()
    w_max = mapping.weight_scale(w, mat.layout, mat.config.mapping.scale, clip_std=mat.config.mapping.clip_std)
    return mapping.weights_to_conductances(w, w_max, mat.layout, mat.config.device.g_max)


def _tile_index(lay: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per matrix element (out, rows): tile_row, tile_col, row in tile, col in tile."""
    ri = np.repeat(np.arange(lay.n_row_tiles), lay.row_splits)
    ci = np.repeat(np.arange(lay.n_col_tiles), lay.col_splits)
    rs = np.array([s for s, _ in lay.row_bounds])[ri]
    cs = np.array([s for s, _ in lay.col_bounds])[ci]
    return ri, ci, np.arange(lay.rows) - rs, np.arange(lay.out_features) - cs


def target_table(model: torch.nn.Module) -> pd.DataFrame:
    """Target conductances of every differential pair of every analog matrix, one row per pair (µS).

    Columns: :data:`LAYOUT_COLUMNS` + ``g_plus_uS``, ``g_minus_uS``. Computed from the master weights with the
    model's mapping (no noise), so it does not need a programmed model.
    """
    frames = []
    with torch.no_grad():
        for name, mat, w in _matrices(model):
            g = _targets(mat, w).cpu().numpy()
            lay = mat.layout
            ri, ci, rr, cc = _tile_index(lay)
            out_i, in_i = np.meshgrid(np.arange(lay.out_features), np.arange(lay.rows), indexing="ij")
            tr, tc = ri[in_i].ravel(), ci[out_i].ravel()
            frames.append(pd.DataFrame({
                "layer": name, "tile": tr * lay.n_col_tiles + tc, "tile_row": tr, "tile_col": tc,
                "row": rr[in_i].ravel(), "col": cc[out_i].ravel(), "in_index": in_i.ravel(),
                "out_index": out_i.ravel(), "g_plus_uS": g[0].ravel(), "g_minus_uS": g[1].ravel()}))
    return pd.concat(frames, ignore_index=True).sort_values(["layer", "tile", "row", "col"], kind="stable",
                                                             ignore_index=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "root"


def export_targets(model: torch.nn.Module, out_dir: str | os.PathLike) -> list[Path]:
    """Write one CSV of target conductances per crossbar tile, and ``manifest.csv``, into ``out_dir``.

    Returns:
        The written paths (manifest first).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = target_table(model)
    g_max = {name: mat.config.device.g_max for name, mat, _ in _matrices(model)}
    paths, manifest = [], []
    for (layer, tile), grp in table.groupby(["layer", "tile"], sort=False):
        p = out / f"{_safe(layer)}__tile{int(tile):03d}.csv"
        grp.to_csv(p, index=False, float_format="%.7g")
        paths.append(p)
        manifest.append({"layer": layer, "tile": int(tile), "tile_row": int(grp["tile_row"].iloc[0]),
                         "tile_col": int(grp["tile_col"].iloc[0]), "rows": int(grp["row"].max()) + 1,
                         "cols": int(grp["col"].max()) + 1, "in_start": int(grp["in_index"].min()),
                         "out_start": int(grp["out_index"].min()), "g_max_uS": g_max[layer], "file": p.name})
    mp = out / "manifest.csv"
    pd.DataFrame(manifest).to_csv(mp, index=False)
    return [mp, *paths]


# ---- import -------------------------------------------------------------------------------------------------------
def load_measured(model: torch.nn.Module, table: pd.DataFrame | str | os.PathLike, *, chip: Any = None,
                  outside: str = "error") -> dict[str, int]:
    """Replace the statistical model by measured conductances for the devices in ``table`` (in place).

    Each analog matrix with measurements gets a :class:`MeasuredDevice` in its config; ``aimc.program``,
    ``aimc.at_time`` and ``aimc.evaluate`` then use the measured weights. Call it after training (the targets are
    checked against the current weights at every ``program``).

    Args:
        model: a converted model (the one the targets were exported from).
        table: measured conductances (see the module docstring) or the path of a CSV/Parquet file or directory.
        chip: which chip, when the table has a ``chip`` column with several.
        outside: ``"error"`` or ``"hold"``: what a time outside the measured ones does.

    Returns:
        ``{matrix name: measured pairs}``.
    """
    source = sha = None
    if not isinstance(table, pd.DataFrame):
        source = str(table)
        sha = file_sha256(table) if Path(table).is_file() else None
        table = read_conductance_table(table)
    if outside not in ("error", "hold"):
        raise ConfigError(f"outside={outside!r} is not one of ['error', 'hold']")
    need = ("layer", "tile", "row", "col", "t_seconds", "g_plus_uS", "g_minus_uS")
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(f"measured conductances lack column(s) {missing}; expected {list(need)} (the export-targets "
                        f"layout plus t_seconds), found {list(table.columns)}.")
    if "chip" in table.columns:
        chips = sorted(table["chip"].unique().tolist())
        if chip is None and len(chips) > 1:
            raise DataError(f"the table holds {len(chips)} chips {chips[:5]}; choose one with chip=...")
        if chip is not None:
            if chip not in chips:
                raise DataError(f"chip={chip!r} is not in the table (chips: {chips[:10]}).")
            table = table[table["chip"] == chip]
    vals = table[["t_seconds", "g_plus_uS", "g_minus_uS"]].to_numpy(dtype=float)
    if not np.isfinite(vals).all() or (vals < 0).any():
        raise DataError("measured conductances and times must be finite and ≥ 0 (µS, s); "
                        f"{int((~np.isfinite(vals) | (vals < 0)).any(axis=1).sum())} row(s) are not.")
    mats = {name: (mat, w) for name, mat, w in _matrices(model)}
    unknown = sorted(set(table["layer"].astype(str)) - set(mats))
    if unknown:
        raise DataError(f"layer(s) {unknown[:5]} of the table are not analog matrices of this model "
                        f"({list(mats)[:8]}).")
    out: dict[str, int] = {}
    for name, grp in table.groupby(table["layer"].astype(str), sort=False):
        mat, w = mats[name]
        out[name] = _attach(name, mat, w, grp, outside, source, sha)
    return out


def _attach(name: str, mat: Any, w: torch.Tensor, grp: pd.DataFrame, outside: str, source: str | None,
            sha: str | None) -> int:
    lay = mat.layout
    times = sorted(set(grp["t_seconds"].astype(float)))
    tile = grp["tile"].to_numpy(dtype=np.int64)
    tr, tc = tile // lay.n_col_tiles, tile % lay.n_col_tiles
    bad = (tile < 0) | (tr >= lay.n_row_tiles)
    if bad.any():
        raise DataError(f"layer {name!r}: tile index {int(tile[bad][0])} does not exist (the matrix has "
                        f"{lay.n_tiles} tiles); the table does not match this model's layout.")
    rs = np.array([s for s, _ in lay.row_bounds])
    cs = np.array([s for s, _ in lay.col_bounds])
    rsz, csz = np.array(lay.row_splits), np.array(lay.col_splits)
    row, col = grp["row"].to_numpy(dtype=np.int64), grp["col"].to_numpy(dtype=np.int64)
    bad = (row < 0) | (row >= rsz[tr]) | (col < 0) | (col >= csz[tc])
    if bad.any():
        raise DataError(f"layer {name!r}: {int(bad.sum())} row(s) have crossbar coordinates outside their tile "
                        "(row ≥ tile rows or col ≥ tile cols); the table does not match this model's layout.")
    r_i, o_i = rs[tr] + row, cs[tc] + col
    k = np.searchsorted(times, grp["t_seconds"].to_numpy(dtype=float))
    g = torch.full((len(times), 2, lay.out_features, lay.rows), float("nan"))
    kt, ot, rt = (torch.tensor(a) for a in (k, o_i, r_i))
    g[kt, 0, ot, rt] = torch.tensor(grp["g_plus_uS"].to_numpy(dtype=np.float32))
    g[kt, 1, ot, rt] = torch.tensor(grp["g_minus_uS"].to_numpy(dtype=np.float32))
    seen = ~torch.isnan(g).all(dim=(0, 1))
    complete = ~torch.isnan(g).any(dim=(0, 1))
    partial = seen & ~complete
    if bool(partial.any()):
        raise DataError(f"layer {name!r}: {int(partial.sum())} pair(s) were measured at some times but not at all of "
                        f"{times}; give every measured pair at every time.")
    with torch.no_grad():
        g_target = _targets(mat, w)
    base = mat.config.device
    base = base.base if isinstance(base, MeasuredDevice) else base  # reloading replaces, never nests
    dev = MeasuredDevice(base=base, layer=name, times=tuple(times),
                         g=g.to(g_target.device), mask=complete.to(g_target.device), g_target=g_target,
                         outside=outside, source=source, sha256=sha)
    mat.config = dataclasses.replace(mat.config, device=dev)
    return int(complete.sum())
