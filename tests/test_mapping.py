"""Tests of aimc.mapping: tile layout, per-tile weight scales, differential-pair conductances (reference B.1)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aimc.errors import ConfigError
from aimc.mapping import (
    TileLayout,
    conductances_to_weights,
    expand_rows,
    make_layout,
    weight_scale,
    weights_to_conductances,
)

HYPO = settings(max_examples=40, derandomize=True, deadline=None)
GRANULARITIES = ("tile", "column", "layer")


def _check_layout_invariants(lay: TileLayout, out: int, rows: int, groups: int, row_unit: int, tile_rows: int,
                             tile_cols: int) -> None:
    assert sum(lay.row_splits) == rows
    assert all(0 < s <= tile_rows and s % row_unit == 0 for s in lay.row_splits)
    assert sum(lay.col_splits) == out
    assert all(0 < s <= tile_cols for s in lay.col_splits)
    # every column chunk lies inside one group, or (packed) holds whole groups whose input lines fit the tile
    out_pg = out // groups
    for s, e in lay.col_bounds:
        if lay.groups_per_tile == 1:
            assert s // out_pg == (e - 1) // out_pg
        else:
            assert s % out_pg == 0 and e % out_pg == 0 and (e - s) // out_pg * rows <= tile_rows
    assert lay.n_tiles == len(lay.row_splits) * len(lay.col_splits)


# ============================================================================ layout
def test_linear_300_in_700_out_on_256_tiles() -> None:
    lay = make_layout(700, 300, tile_rows=256, tile_cols=256)
    assert lay.n_row_tiles == 2 and lay.n_col_tiles == 3 and lay.n_tiles == 6
    assert lay.row_splits == (150, 150)
    assert lay.col_splits == (234, 233, 233)
    assert lay.row_bounds == [(0, 150), (150, 300)]
    assert lay.col_bounds == [(0, 234), (234, 467), (467, 700)]
    _check_layout_invariants(lay, 700, 300, 1, 1, 256, 256)
    assert lay.n_weights == 700 * 300 and lay.n_devices == 2 * 700 * 300


def test_small_linear_fits_one_tile() -> None:
    lay = make_layout(10, 784)
    assert lay.row_splits == (392, 392) and lay.col_splits == (10,)
    lay = make_layout(512, 512)
    assert lay.n_tiles == 1 and lay.row_splits == (512,) and lay.col_splits == (512,)
    lay = make_layout(513, 513)
    assert lay.n_tiles == 4


def test_conv_64ch_3x3_splits_on_channel_boundaries() -> None:
    """Conv2d(64, C, 3): rows = 64·9 = 576 > 512 ⇒ two row chunks of whole channels (each a multiple of 9)."""
    lay = make_layout(128, 576, row_unit=9)
    assert lay.n_row_tiles == 2
    assert all(s % 9 == 0 for s in lay.row_splits) and sum(lay.row_splits) == 576
    assert lay.row_splits == (288, 288)
    assert lay.col_splits == (128,)


def test_conv_needs_more_chunks_than_ceil_rows_over_tile() -> None:
    """Row unit 60 on 100-row tiles: ceil(180/100) = 2 chunks would need 120 rows; only 1 unit fits ⇒ 3 chunks."""
    lay = make_layout(8, 180, row_unit=60, tile_rows=100)
    assert lay.row_splits == (60, 60, 60)
    lay = make_layout(8, 7 * 49, row_unit=49, tile_rows=100)  # 7 channels of 7×7, 2 per tile ⇒ 4 chunks
    assert lay.n_row_tiles == 4 and all(s in (49, 98) for s in lay.row_splits)


def test_row_tile_index_and_col_tile_index() -> None:
    lay = make_layout(5, 7, tile_rows=3, tile_cols=2)
    assert lay.row_splits == (3, 2, 2) and lay.col_splits == (2, 2, 1)
    assert lay.row_tile_index().tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert lay.col_tile_index().tolist() == [0, 0, 1, 1, 2]


def test_grouped_conv_columns_split_per_group() -> None:
    """Conv2d(16, 64, 3, groups=4): 16 outputs and 4·9 = 36 rows per group; unpacked (or a group wider than a
    tile), every group gets its own column tiles."""
    lay = make_layout(64, 36, groups=4, row_unit=9, pack=False)
    assert lay.col_splits == (16, 16, 16, 16) and lay.n_tiles == 4
    lay = make_layout(64, 36, groups=4, row_unit=9, tile_cols=10)
    assert lay.col_splits == (8, 8) * 4 and lay.n_tiles == 8
    _check_layout_invariants(lay, 64, 36, 4, 9, 512, 10)
    # 3 outputs per group on 2-column tiles: chunks (2, 1) repeated, never straddling a group boundary
    lay = make_layout(12, 9, groups=4, row_unit=9, tile_cols=2)
    assert lay.col_splits == (2, 1) * 4
    _check_layout_invariants(lay, 12, 9, 4, 9, 512, 2)


def test_depthwise_conv_layout() -> None:
    lay = make_layout(32, 9, groups=32, row_unit=9, pack=False)
    assert lay.row_splits == (9,) and lay.col_splits == (1,) * 32 and lay.n_tiles == 32


@pytest.mark.parametrize(("out", "rows", "groups", "tile", "per_tile", "n_tiles"), [
    (576, 9, 576, 512, 56, 11),  # MobileNetV3 depthwise 3x3, 576 channels: ⌈576 / ⌊512/9⌋⌉ tiles
    (576, 25, 576, 512, 20, 29),  # depthwise 5x5
    (64, 36, 4, 512, 4, 1),  # Conv2d(16, 64, 3, groups=4): all 4 groups (144 x 64) in one tile
    (12, 18, 6, 40, 2, 3),  # 2 groups of 18 rows per 40-row tile
    (10, 9, 10, 40, 4, 3),  # 4 + 4 + 2 groups
])
def test_grouped_layouts_pack_groups_block_diagonally(out: int, rows: int, groups: int, tile: int, per_tile: int,
                                                       n_tiles: int) -> None:
    lay = make_layout(out, rows, groups=groups, row_unit=rows, tile_rows=tile, tile_cols=tile)
    assert lay.groups_per_tile == per_tile and lay.n_tiles == n_tiles and lay.whole_groups
    out_pg = out // groups
    assert lay.row_splits == (rows,)
    assert sum(lay.col_splits) == out and all(c % out_pg == 0 and c <= tile for c in lay.col_splits)
    assert all(c // out_pg * rows <= tile for c in lay.col_splits)  # the packed groups' input lines fit the tile
    # tile j: its groups' input lines and output columns; its matrix is torch.block_diag of the groups' matrices
    w = torch.randn(out, rows)
    lines = []
    for j, (cs, ce) in enumerate(lay.col_bounds):
        g0, g1 = cs // out_pg, ce // out_pg
        assert lay.tile_groups(j) == (g0, g1) and lay.in_bounds(j, 0) == (g0 * rows, g1 * rows)
        lines += range(*lay.in_bounds(j, 0))
        block = torch.block_diag(*[w[g * out_pg:(g + 1) * out_pg] for g in range(g0, g1)])
        assert torch.equal(lay.tile_weights(w, j, 0), block)
    assert lines == list(range(groups * rows))  # every input line drives exactly one tile


def test_packed_tile_scale_spans_its_groups() -> None:
    """scale="tile": the w_max of a packed tile is the max |W| over all its groups (as one physical tile)."""
    lay = make_layout(10, 9, groups=10, row_unit=9, tile_rows=40, tile_cols=40)  # groups 0-3, 4-7, 8-9
    w = torch.randn(10, 9, generator=torch.Generator().manual_seed(0))
    w_max = weight_scale(w, lay, "tile")
    for g0, g1 in [(0, 4), (4, 8), (8, 10)]:
        assert torch.equal(w_max[g0:g1, 0], w[g0:g1].abs().amax().expand(g1 - g0))


def test_kernel_larger_than_tile_raises() -> None:
    with pytest.raises(ConfigError, match="tile_rows"):
        make_layout(8, 2 * 49, row_unit=49, tile_rows=32)


@pytest.mark.parametrize(("out", "rows", "groups", "row_unit"), [(8, 10, 1, 9), (10, 9, 4, 9)])
def test_inconsistent_shape_raises(out: int, rows: int, groups: int, row_unit: int) -> None:
    with pytest.raises(ConfigError):
        make_layout(out, rows, groups=groups, row_unit=row_unit)


@HYPO
@given(
    out_pg=st.integers(1, 70), groups=st.integers(1, 4), units=st.integers(1, 60), row_unit=st.integers(1, 12),
    tile_rows=st.integers(1, 80), tile_cols=st.integers(1, 40),
)
def test_property_layout_is_valid_and_minimal(out_pg: int, groups: int, units: int, row_unit: int, tile_rows: int,
                                              tile_cols: int) -> None:
    """Property: the chunks cover all rows/columns, each fits one tile, row chunks are whole kernels, column chunks
    stay inside a group, and the number of chunks is the minimum possible:
    rows ceil(units / floor(tile_rows/row_unit)), columns groups·ceil(out_per_group/tile_cols)."""
    rows, out = units * row_unit, out_pg * groups
    if row_unit > tile_rows:
        with pytest.raises(ConfigError):
            make_layout(out, rows, groups=groups, row_unit=row_unit, tile_rows=tile_rows, tile_cols=tile_cols)
        return
    lay = make_layout(out, rows, groups=groups, row_unit=row_unit, tile_rows=tile_rows, tile_cols=tile_cols)
    _check_layout_invariants(lay, out, rows, groups, row_unit, tile_rows, tile_cols)
    per_tile = min(groups, tile_rows // rows, tile_cols // out_pg)
    if groups > 1 and per_tile > 1:  # packed: as few tiles as whole groups allow
        assert lay.n_row_tiles == 1 and lay.groups_per_tile == per_tile
        assert lay.n_col_tiles == math.ceil(groups / per_tile)
        return
    assert lay.n_row_tiles == math.ceil(units / (tile_rows // row_unit))
    assert lay.n_col_tiles == groups * math.ceil(out_pg / tile_cols)
    # balanced: chunk sizes differ by at most one unit
    assert max(lay.row_splits) - min(lay.row_splits) <= row_unit


# ============================================================================ weight scales
# 4 outputs × 6 rows on 3×2 tiles: row chunks [0:3], [3:6]; column chunks {0, 1}, {2, 3}.
W_HAND = torch.tensor(
    [
        [1.0, -2.0, 0.5, 3.0, 0.0, -1.0],
        [0.1, 0.2, -4.0, 0.5, 0.5, 0.5],
        [0.0, 0.0, 0.0, -6.0, 1.0, 0.0],
        [2.0, 1.0, 1.0, 0.0, 0.0, 0.25],
    ]
)
LAY_HAND = make_layout(4, 6, tile_rows=3, tile_cols=2)


def test_hand_layout() -> None:
    assert LAY_HAND.row_splits == (3, 3) and LAY_HAND.col_splits == (2, 2)


def test_weight_scale_tile() -> None:
    w_max = weight_scale(W_HAND, LAY_HAND, "tile")
    expected = torch.tensor([[4.0, 3.0], [4.0, 3.0], [2.0, 6.0], [2.0, 6.0]])
    assert torch.equal(w_max, expected)


def test_weight_scale_column() -> None:
    w_max = weight_scale(W_HAND, LAY_HAND, "column")
    expected = torch.tensor([[2.0, 3.0], [4.0, 0.5], [0.0, 6.0], [2.0, 0.25]])
    assert torch.equal(w_max[expected > 0], expected[expected > 0])
    # an all-zero (column of a) tile gets a tiny positive scale, never 0 (no division by zero later)
    assert 0 < float(w_max[2, 0]) <= 1e-9


def test_weight_scale_layer() -> None:
    w_max = weight_scale(W_HAND, LAY_HAND, "layer")
    assert w_max.shape == (4, 2) and torch.equal(w_max, torch.full((4, 2), 6.0))


def test_weight_scale_all_zero_matrix_is_positive() -> None:
    for g in GRANULARITIES:
        w_max = weight_scale(torch.zeros(3, 5), make_layout(3, 5), g)
        assert bool((w_max > 0).all())
        g_pair = weights_to_conductances(torch.zeros(3, 5), w_max, make_layout(3, 5), 25.0)
        assert torch.equal(g_pair, torch.zeros(2, 3, 5))


def test_weight_scale_ignores_sign_and_grad() -> None:
    w = W_HAND.clone().requires_grad_(True)
    w_max = weight_scale(-w, LAY_HAND, "tile")
    assert not w_max.requires_grad
    assert torch.equal(w_max, weight_scale(W_HAND, LAY_HAND, "tile"))


def test_weight_scale_bad_granularity() -> None:
    with pytest.raises(ConfigError):
        weight_scale(W_HAND, LAY_HAND, "row")


# ============================================================================ conductances
def test_hand_conductances_tile() -> None:
    w_max = weight_scale(W_HAND, LAY_HAND, "tile")
    g = weights_to_conductances(W_HAND, w_max, LAY_HAND, 25.0)
    assert g.shape == (2, 4, 6)
    # row 0, tile (0, 0) has w_max 4: W = 1 ↦ 6.25 µS on g+, W = −2 ↦ 12.5 µS on g−
    assert float(g[0, 0, 0]) == pytest.approx(6.25) and float(g[1, 0, 0]) == 0.0
    assert float(g[1, 0, 1]) == pytest.approx(12.5) and float(g[0, 0, 1]) == 0.0
    # row 1, W = −4 is the max of tile (0, 0) ↦ g− = g_max
    assert float(g[1, 1, 2]) == pytest.approx(25.0) and float(g[0, 1, 2]) == 0.0
    # row 2, W = −6 is the max of tile (1, 1) ↦ g− = g_max; W = 1 ↦ 25/6 on g+
    assert float(g[1, 2, 3]) == pytest.approx(25.0) and float(g[0, 2, 4]) == pytest.approx(25.0 / 6)
    # zeros ↦ both devices at 0
    assert float(g[0, 0, 4]) == 0.0 and float(g[1, 0, 4]) == 0.0


def _random_weight(out: int, rows: int, seed: int, scale: float, p_zero: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, rows, generator=g) * scale
    w[torch.rand(out, rows, generator=g) < p_zero] = 0.0
    return w


def _tile_max_mask(w: torch.Tensor, lay: TileLayout, w_max: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the entries whose |W| equals their own w_max (the ones that must land on g_max)."""
    return (w.abs() == expand_rows(w_max, lay)) & (w != 0)


shapes = dict(
    out=st.integers(1, 24), rows=st.integers(1, 24), tile_rows=st.integers(1, 10), tile_cols=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1), log_scale=st.floats(-3.0, 3.0), granularity=st.sampled_from(GRANULARITIES),
    g_max=st.sampled_from([1.0, 25.0, 50.0, 88.2]),
)


@HYPO
@given(**shapes)
def test_property_differential_pair(out: int, rows: int, tile_rows: int, tile_cols: int, seed: int,
                                    log_scale: float, granularity: str, g_max: float) -> None:
    """Property: for any matrix, layout and granularity, g+ carries the positive and g− the negative weights (the
    other device at exactly 0), every conductance lies in [0, g_max], |W| ∝ conductance with factor g_max/w_max,
    the largest |W| of each tile/column/layer lands on g_max (to 1 ulp), and there are 2 devices per weight."""
    w = _random_weight(out, rows, seed, 10.0**log_scale)
    lay = make_layout(out, rows, tile_rows=tile_rows, tile_cols=tile_cols)
    w_max = weight_scale(w, lay, granularity)
    g = weights_to_conductances(w, w_max, lay, g_max)
    assert g.shape == (2, out, rows) and g.numel() == lay.n_devices == 2 * w.numel()
    gp, gm = g[0], g[1]
    assert bool((g >= 0).all()) and bool((g <= g_max).all())
    assert bool((gm[w > 0] == 0).all()) and bool((gp[w > 0] > 0).all())
    assert bool((gp[w < 0] == 0).all()) and bool((gm[w < 0] > 0).all())
    assert bool((g[:, w == 0] == 0).all())
    torch.testing.assert_close(gp + gm, w.abs() * g_max / expand_rows(w_max, lay), rtol=1e-6, atol=0)
    at_max = _tile_max_mask(w, lay, w_max)
    torch.testing.assert_close((gp + gm)[at_max], torch.full((int(at_max.sum()),), g_max), rtol=2.5e-7, atol=0)
    # each non-zero tile (resp. column chunk, layer) has at least one device at g_max
    if granularity == "tile":
        for rs, re in lay.row_bounds:
            for cs, ce in lay.col_bounds:
                if bool((w[cs:ce, rs:re] != 0).any()):
                    assert float((gp + gm)[cs:ce, rs:re].max()) == pytest.approx(g_max, rel=2.5e-7)


@HYPO
@given(**shapes)
def test_property_round_trip(out: int, rows: int, tile_rows: int, tile_cols: int, seed: int, log_scale: float,
                             granularity: str, g_max: float) -> None:
    """Property: conductances_to_weights(weights_to_conductances(W)) == W (rtol 1e-6) for any shape, scale,
    layout and granularity, because no entry exceeds its own w_max (no clamp acts)."""
    w = _random_weight(out, rows, seed, 10.0**log_scale)
    lay = make_layout(out, rows, tile_rows=tile_rows, tile_cols=tile_cols)
    w_max = weight_scale(w, lay, granularity)
    back = conductances_to_weights(weights_to_conductances(w, w_max, lay, g_max), w_max, lay, g_max)
    torch.testing.assert_close(back, w, rtol=1e-6, atol=0)


def test_round_trip_float64_is_near_exact() -> None:
    w = _random_weight(30, 40, 5, 1.0).double()
    lay = make_layout(30, 40, tile_rows=16, tile_cols=8)
    w_max = weight_scale(w, lay, "tile")
    back = conductances_to_weights(weights_to_conductances(w, w_max, lay, 25.0), w_max, lay, 25.0)
    torch.testing.assert_close(back, w, rtol=1e-14, atol=0)


def test_conductances_to_weights_of_noisy_pair() -> None:
    """Back-mapping is linear in the conductances: adding δ to g+ adds δ·w_max/g_max to W (scale per tile)."""
    w_max = weight_scale(W_HAND, LAY_HAND, "tile")
    g = weights_to_conductances(W_HAND, w_max, LAY_HAND, 25.0)
    g_noisy = g.clone()
    g_noisy[0] += 0.5
    g_noisy[1] += 0.25
    back = conductances_to_weights(g_noisy, w_max, LAY_HAND, 25.0)
    scale = torch.tensor([[4.0] * 3 + [3.0] * 3] * 2 + [[2.0] * 3 + [6.0] * 3] * 2)
    torch.testing.assert_close(back, W_HAND + 0.25 * scale / 25.0, rtol=1e-6, atol=1e-7)


def test_weights_larger_than_w_max_are_clamped_to_g_max() -> None:
    """With a scale smaller than max|W| (e.g. a stale w_max) the conductances saturate at g_max instead of
    exceeding it."""
    lay = make_layout(1, 3)
    g = weights_to_conductances(torch.tensor([[2.0, -3.0, 0.5]]), torch.tensor([[1.0]]), lay, 25.0)
    assert g[0].tolist() == [[25.0, 0.0, 12.5]] and g[1].tolist() == [[0.0, 25.0, 0.0]]


def test_tile_max_maps_to_g_max_bit_exactly() -> None:
    """Regression: W·(g_max/w_max) put the max |W| at 24.999998 µS in float32; W/w_max·g_max is exact."""
    w = torch.tensor([[1.7, -1.0]])  # 1.7·(25/1.7) = 24.999998 in float32
    lay = make_layout(1, 2)
    g = weights_to_conductances(w, weight_scale(w, lay, "tile"), lay, 25.0)
    assert float(g[0, 0, 0]) == 25.0
