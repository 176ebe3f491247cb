"""Weights ↔ conductances: tile layout, per-tile scales, differential pairs, device counts.

A layer's weight is viewed as a matrix ``W`` of shape ``(out, rows)``: ``rows = in_features`` for a Linear,
``rows = in_channels/groups · prod(kernel)`` for a convolution. Crossbar tiles hold ``tile_rows`` input lines and
``tile_cols`` output lines. Rows of a convolution are split on channel boundaries (a kernel never straddles two
tiles), columns on group boundaries.

Grouped and depthwise convolutions (``groups > 1``) whose groups each fit one tile are *packed*: ``p`` consecutive
groups share one tile as a block-diagonal matrix (``p = min(groups, tile_rows // rows, tile_cols // out_per_group)``,
tiles filled in order, the last one with the remainder). Tile ``j`` then takes the input lines of its groups
(``[g0·rows, g1·rows)`` of the ``groups·rows`` input vector) and drives their output columns. A depthwise 3×3
convolution with 576 channels uses ⌈576 / 56⌉ = 11 tiles instead of 576. The device state is still stored as the
``(out, rows)`` per-group matrix: the off-block crosspoints of a packed tile are never programmed (on a chip they
are devices left in the RESET, amorphous state, a fraction of a µS and without the programming spread of
iterative programming, whose conductance and 1/f read noise scale with g), so aimc models them as exactly 0 µS,
noise-free (aihwkit has no packing to compare with; this is aimc's choice). Everything the periphery shares over a
tile is a packed tile's: the weight scale ``w_max`` (``scale="tile"``), the per-vector dynamic input range (abs-max
over all packed groups' inputs), the GDC factor and bound management (a vector is re-read when any output of the
tile clips); DAC, ADC and output noise act per line as usual. :meth:`TileLayout.tile_weights` builds a tile's
explicit (block-diagonal) matrix; the reference MVM (:func:`aimc.periphery.tiled_mvm`) multiplies with it.

Differential pair (reference B.1): g+ = clamp(W·g_max/w_max, 0, g_max), g− = clamp(−W·g_max/w_max, 0, g_max),
where ``w_max`` is the largest |W| of the tile (or column, or layer). Back: W = (g+ − g−)·w_max/g_max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from aimc.errors import ConfigError

__all__ = ["TileLayout", "make_layout", "weight_scale", "weights_to_conductances", "conductances_to_weights"]


def _even_splits(n_units: int, n_parts: int) -> list[int]:
    base, extra = divmod(n_units, n_parts)
    return [base + (1 if i < extra else 0) for i in range(n_parts)]


@dataclass(frozen=True)
class TileLayout:
    """How one weight matrix ``(out, rows)`` is cut into crossbar tiles.

    Attributes:
        out_features: number of output columns (all groups).
        rows: input lines of one group (``in_channels/groups · prod(kernel)``).
        groups: convolution groups (1 for Linear).
        row_splits: sizes of the row chunks (same for every group); one chunk = one tile row band.
        col_splits: sizes of the column chunks over all ``out_features`` (group-aligned).
        groups_per_tile: groups packed block-diagonally into one tile (1: a tile's columns lie in one group).
    """

    out_features: int
    rows: int
    groups: int
    row_splits: tuple[int, ...]
    col_splits: tuple[int, ...]
    groups_per_tile: int = 1

    @property
    def whole_groups(self) -> bool:
        """Every tile holds whole groups on all their rows (packed, or one group per tile): the grouped fast path
        computes all tiles of the layer batched."""
        out_pg = self.out_features // self.groups
        return self.n_row_tiles == 1 and all(c % out_pg == 0 for c in self.col_splits)

    def tile_groups(self, j: int) -> tuple[int, int]:
        """Groups ``[g0, g1)`` whose columns column tile ``j`` holds (``g1 = g0 + 1`` unless packed)."""
        out_pg = self.out_features // self.groups
        cs, ce = self.col_bounds[j]
        return cs // out_pg, max(cs // out_pg + 1, -(-ce // out_pg))

    def in_bounds(self, j: int, k: int) -> tuple[int, int]:
        """[start, stop) of the input lines (of the ``groups·rows`` input vector) driving tile (column ``j``,
        row ``k``)."""
        g0, g1 = self.tile_groups(j)
        s, e = self.row_bounds[k]
        if g1 - g0 == 1:
            return g0 * self.rows + s, g0 * self.rows + e
        return g0 * self.rows, g1 * self.rows  # packed: one row band holds every row of its groups

    def tile_weights(self, w: torch.Tensor, j: int, k: int) -> torch.Tensor:
        """The explicit matrix of tile (column ``j``, row ``k``) from the per-group ``(out, rows)`` matrix ``w``:
        ``w[cols, rows]``, or for a packed tile the block-diagonal ``(Σ out_pg, Σ rows)`` of its groups (zeros
        off the blocks: unprogrammed crosspoints)."""
        cs, ce = self.col_bounds[j]
        s, e = self.row_bounds[k]
        g0, g1 = self.tile_groups(j)
        if g1 - g0 == 1:
            return w[cs:ce, s:e]
        out_pg = self.out_features // self.groups
        return torch.block_diag(*w[cs:ce, s:e].split(out_pg, dim=0))

    @property
    def n_row_tiles(self) -> int:
        return len(self.row_splits)

    @property
    def n_col_tiles(self) -> int:
        return len(self.col_splits)

    @property
    def n_tiles(self) -> int:
        """Number of crossbar tiles used by this matrix."""
        return self.n_row_tiles * self.n_col_tiles

    @property
    def n_weights(self) -> int:
        return self.out_features * self.rows

    @property
    def n_devices(self) -> int:
        """Two PCM devices (a differential pair) per weight."""
        return 2 * self.n_weights

    @cached_property
    def row_bounds(self) -> list[tuple[int, int]]:
        """[start, stop) of each row chunk."""
        out, a = [], 0
        for s in self.row_splits:
            out.append((a, a + s))
            a += s
        return out

    @cached_property
    def col_bounds(self) -> list[tuple[int, int]]:
        """[start, stop) of each column chunk."""
        out, a = [], 0
        for s in self.col_splits:
            out.append((a, a + s))
            a += s
        return out

    def row_tile_index(self, device: torch.device | None = None) -> torch.Tensor:
        """Row-chunk index of each row, shape ``(rows,)`` int64."""
        return torch.repeat_interleave(torch.arange(self.n_row_tiles, device=device),
                                       torch.tensor(self.row_splits, device=device))

    def col_tile_index(self, device: torch.device | None = None) -> torch.Tensor:
        """Column-chunk index of each output, shape ``(out_features,)`` int64."""
        return torch.repeat_interleave(torch.arange(self.n_col_tiles, device=device),
                                       torch.tensor(self.col_splits, device=device))


def make_layout(out_features: int, rows: int, *, groups: int = 1, row_unit: int = 1, tile_rows: int = 512,
                tile_cols: int = 512, pack: bool = True) -> TileLayout:
    """Split a ``(out_features, rows)`` matrix into tiles of at most ``tile_rows × tile_cols``.

    Args:
        out_features: output columns over all groups (divisible by ``groups``).
        rows: input lines per group; a multiple of ``row_unit``.
        groups: convolution groups.
        row_unit: rows that must stay together (``prod(kernel)`` for a convolution: split on channels).
        tile_rows, tile_cols: tile size.
        pack: pack several groups block-diagonally into one tile where they fit (module docstring); ``False``
            gives every group its own tiles.
    """
    if row_unit > tile_rows:
        raise ConfigError(
            f"a kernel of {row_unit} rows does not fit a tile of {tile_rows} rows; "
            f"increase mapping.tile_rows to at least {row_unit}."
        )
    if rows % row_unit or out_features % groups:
        raise ConfigError(f"inconsistent layer shape: rows={rows} not a multiple of {row_unit} "
                          f"or out_features={out_features} not divisible by groups={groups}")
    units = rows // row_unit
    n = max(1, math.ceil(rows / tile_rows))
    while max(_even_splits(units, n)) * row_unit > tile_rows:
        n += 1
    row_splits = tuple(u * row_unit for u in _even_splits(units, n))
    out_pg = out_features // groups
    per_tile = min(groups, tile_rows // rows, tile_cols // max(out_pg, 1)) if pack and groups > 1 else 1
    if per_tile > 1:
        full, rest = divmod(groups, per_tile)
        cols = (per_tile * out_pg,) * full + ((rest * out_pg,) if rest else ())
        return TileLayout(out_features, rows, groups, (rows,), cols, per_tile)
    per_group = _even_splits(out_pg, max(1, math.ceil(out_pg / tile_cols)))
    return TileLayout(out_features, rows, groups, row_splits, tuple(per_group * groups))


def _group(per_col: torch.Tensor, layout: TileLayout, granularity: str, reduce: str) -> torch.Tensor:
    """Reduce an ``(out, n_row_tiles)`` per-column statistic over each scale group, broadcast back to that shape."""
    if granularity == "column":
        return per_col
    if granularity == "layer":
        v = per_col.amax() if reduce == "amax" else per_col.sum()
        return v.expand_as(per_col).clone()
    if granularity == "tile":
        idx = layout.col_tile_index(per_col.device)
        per_tile = torch.zeros(layout.n_col_tiles, layout.n_row_tiles, dtype=per_col.dtype, device=per_col.device)
        per_tile = per_tile.scatter_reduce(0, idx[:, None].expand_as(per_col), per_col, reduce=reduce)
        return per_tile[idx]
    raise ConfigError(f"mapping.scale={granularity!r} is not one of ['tile', 'column', 'layer']")


def weight_scale(weight: torch.Tensor, layout: TileLayout, granularity: str, *,
                 clip_std: float | None = None) -> torch.Tensor:
    """The |W| that is mapped to g_max, per output column and row chunk.

    Args:
        weight: ``(out, rows)``.
        layout: its tile layout.
        granularity: ``"tile"``, ``"column"`` or ``"layer"``: the group of weights that shares one scale.
        clip_std: ``None`` — the group's max|W| (nothing clips); a number α > 0 — min(max|W|, α·std(W)) with std
            the sample standard deviation (n − 1) of the group's weights, so outliers beyond α·std saturate at
            g_max (``weights_to_conductances`` clamps them) and the bulk of the weights gets a larger share of
            the conductance range. Groups of one weight keep max|W|.

    Returns:
        ``w_max`` of shape ``(out, n_row_tiles)``, every entry > 0 (a zero tile gets a tiny positive scale).
    """
    w = weight.detach()
    a = w.abs()
    colmax = torch.stack([a[:, s:e].amax(dim=1) for s, e in layout.row_bounds], dim=1)  # (out, n_row_tiles)
    w_max = _group(colmax, layout, granularity, "amax")
    if clip_std is not None:
        if not (isinstance(clip_std, (int, float)) and math.isfinite(clip_std) and clip_std > 0):
            raise ConfigError(f"mapping.clip_std={clip_std!r} must be a finite number > 0 (or null = no clipping)")
        w64 = w.double()
        cnt = torch.tensor([e - s for s, e in layout.row_bounds], dtype=torch.float64,
                           device=w.device).expand(w.shape[0], -1)
        tot = torch.stack([w64[:, s:e].sum(dim=1) for s, e in layout.row_bounds], dim=1)
        sq = torch.stack([(w64[:, s:e] ** 2).sum(dim=1) for s, e in layout.row_bounds], dim=1)
        n, s1, s2 = (_group(x, layout, granularity, "sum") for x in (cnt, tot, sq))
        std = ((s2 - s1 * s1 / n).clamp(min=0) / (n - 1).clamp(min=1)).sqrt()
        cap = torch.where(n > 1, clip_std * std, torch.full_like(std, math.inf)).to(w_max.dtype)
        w_max = torch.minimum(w_max, cap)
    return torch.clamp(w_max, min=1e-12)


def expand_rows(per_tile: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """Expand an ``(out, n_row_tiles)`` tensor to ``(out, rows)``."""
    if layout.n_row_tiles == 1:
        return per_tile.expand(-1, layout.rows)
    return per_tile.index_select(1, layout.row_tile_index(per_tile.device))


def weights_to_conductances(weight: torch.Tensor, w_max: torch.Tensor, layout: TileLayout,
                            g_max: float) -> torch.Tensor:
    """Target conductances (µS) of the differential pairs, shape ``(2, out, rows)``: [g+, g−]."""
    scaled = weight.detach() / expand_rows(w_max, layout) * g_max  # max|W| ↦ exactly g_max in float32
    return torch.stack([torch.clamp(scaled, 0.0, g_max), torch.clamp(-scaled, 0.0, g_max)])


def conductances_to_weights(g: torch.Tensor, w_max: torch.Tensor, layout: TileLayout, g_max: float) -> torch.Tensor:
    """Weights ``(out, rows)`` from conductances ``(2, out, rows)`` (µS): (g+ − g−)·w_max/g_max."""
    # w_max/g_max per (column, row tile), then expanded: the same factors without an (out, rows) division
    return (g[0] - g[1]) * expand_rows(w_max / g_max, layout)
