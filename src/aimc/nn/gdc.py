"""Global drift compensation (GDC, reference B.7) of one ``AnalogMatrix``: read-out and factor estimate.

Right after programming, every tile is read with fixed inputs (the *baseline*); at time t it is read again with
the same inputs and the GDC factor α = baseline / current multiplies the tile's outputs digitally.

Read-outs (``CompensationConfig.readout``):

* ``"identity_abs_mean"`` (aihwkit): one-hot inputs, mean |output| per tile. Kept exactly as aihwkit computes it,
  biases included: output noise inflates mean |y| (under-compensation), the ADC rounds small outputs (see the
  README, "Global drift compensation").
* ``"correlation"`` (aimc): n random ±1 vectors x. At programming two independent reads y₁, y₂ give the baseline
  b = ⟨y₁·y₂⟩ (mean over the n × c products of a tile; unbiased for the noise-free ⟨s²⟩ since the two reads'
  noises are independent) and the read-noise variance σ² = ⟨(y₁ − y₂)²⟩ / 2; y₁ is stored. At t: c = ⟨y₁·y_t⟩,
  α = b / c.

The correlation factor is a ratio of two noisy means. Its relative standard error (products of independent
Gaussians; s² ≈ b, drift gain a = c / b):

    se(b)² = (2·b·σ² + σ⁴) / n,    se(c)² = ((1 + a²)·b·σ² + σ⁴) / n,    rel = sqrt(se(b)²/b² + se(c)²/c²).

A tile's own factor is used when rel ≤ ``MAX_REL_ERROR``. Otherwise the pooled factor over all tiles of the
matrix (Σ n·b / Σ n·c) when it meets the same bound; otherwise the device model's expected factor for the tile
(:func:`model_factor`). Every factor is then bounded by the physics of the device model at t
(:func:`physical_bounds`: for PCM drift only lowers conductance, so 1 ≤ α ≤ ((t + t0)/t0)^ν_max). Which of
``measured``, ``pooled``, ``model`` was used, and whether a bound applied, is kept per tile (``aimc.gdc_report``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from aimc.periphery import block_mvm, dac_step

__all__ = ["MAX_REL_ERROR", "NU_SIGMAS", "correlation_inputs", "readout_amplitude", "tile_reads", "per_tile_mean",
           "per_column_mean", "group_mean", "estimate", "physical_bounds", "model_factor"]

MAX_REL_ERROR = 0.05
"""Largest relative standard error of a correlation GDC factor that is used as measured (5 %: 20 seeds of a
layer stay within ±20 % of the true factor with 4 standard errors to spare)."""

NU_SIGMAS = 6.0
"""The largest drift exponent the device model allows: max μ_ν + NU_SIGMAS · max σ_ν over the matrix's targets."""

def correlation_inputs(n: int, rows: int, seed: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The fixed ±1 read-out inputs ``(n, rows)`` of one row tile (the same seed at programming and at every t)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    x = torch.randint(0, 2, (n, rows), generator=g, device=device)
    return x.to(dtype) * 2 - 1


def readout_amplitude(w_a: torch.Tensor, layout, p) -> torch.Tensor:  # noqa: ANN001
    """Amplitude a of the ±a correlation read-out inputs of each row tile, ``(n_row_tiles,)`` float64, in units of
    the DAC's full scale, from the programmed analog weights ``w_a`` ``(out, rows)``.

    1 without an output bound. A read on ±a inputs has output std a·‖w_c‖ for column c (‖·‖ over the tile's rows),
    so a = out_bound / (4·max_c ‖w_c‖) keeps the outputs four std inside ±out_bound, where the ADC does not clip
    them (a calibrated ADC range of an LLM layer is far below the output of full-scale ±1 inputs); capped at 1,
    and rounded down to a DAC level (at least one step) so the DAC passes it exactly. The factor b / c does not
    depend on a (both scale with a²); it is fixed at programming (drift only lowers the outputs later).
    """
    amp = torch.ones(layout.n_row_tiles, dtype=torch.float64)
    if p.out_bound is None:
        return amp
    for k, (s, e) in enumerate(layout.row_bounds):
        norm = float(torch.linalg.vector_norm(w_a[:, s:e].double(), dim=1).max()) if w_a.numel() else 0.0
        a = 1.0 if norm <= 0 else min(1.0, p.out_bound / (4.0 * norm))
        if p.dac_bits is not None:
            step = dac_step(p.dac_bits)
            a = max(1, math.floor(a / step + 1e-9)) * step
        amp[k] = a
    return amp


def tile_reads(w_a: torch.Tensor, layout, p, gen: torch.Generator,  # noqa: ANN001
               x_of: Callable[[int, int], torch.Tensor]) -> list[torch.Tensor]:
    """One read of every tile: per row tile k, ``(n, out)`` outputs of :func:`block_mvm` on inputs
    ``x_of(k, input lines of the tile)`` (a packed tile: its block-diagonal matrix on all its groups' lines).

    When the tiles of a row band have different numbers of input lines (packed groups, the last tile holding fewer)
    and ``x_of`` gives fewer vectors for the smaller ones (the identity read-out), the missing outputs are NaN;
    :func:`per_tile_mean` skips them."""
    out = []
    # without output noise and bound management a tile's read is elementwise per output after the product (no
    # draws from gen, nothing shared between columns): the column tiles of a row band are read as one block
    whole = layout.groups == 1 and p.independent_outputs
    for k in range(layout.n_row_tiles):
        if whole:
            s, e = layout.row_bounds[k]
            out.append(block_mvm(x_of(k, e - s), w_a[:, s:e], p, gen))
            continue
        parts, xs = [], {}
        for j in range(layout.n_col_tiles):
            r0, r1 = layout.in_bounds(j, k)
            if r1 - r0 not in xs:  # the same inputs for every tile of the band with as many lines
                xs[r1 - r0] = x_of(k, r1 - r0)
            parts.append(block_mvm(xs[r1 - r0], layout.tile_weights(w_a, j, k), p, gen))
        n = max(y.shape[0] for y in parts)
        out.append(torch.cat([y if y.shape[0] == n else torch.cat([y, y.new_full((n - y.shape[0], y.shape[1]),
                                                                                  math.nan)]) for y in parts], dim=1))
    return out


def per_tile_mean(ys: list[torch.Tensor], layout) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """Mean of ``ys[k]`` over each tile's block and the number of values, both ``(n_col_tiles, n_row_tiles)``."""
    val = torch.zeros(layout.n_col_tiles, layout.n_row_tiles, dtype=ys[0].dtype, device=ys[0].device)
    cnt = torch.zeros_like(val)
    for k, y in enumerate(ys):
        per_col = y.nansum(dim=0)
        n_col = (~torch.isnan(y)).sum(dim=0).to(y.dtype)  # NaN: no read (tile_reads)
        for j, (cs, ce) in enumerate(layout.col_bounds):
            val[j, k] = per_col[cs:ce].sum()
            cnt[j, k] = n_col[cs:ce].sum()
    return val / cnt, cnt


def per_column_mean(ys: list[torch.Tensor], layout) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """Mean of ``ys[k]`` over the read-out vectors of each output column and row tile, and the number of values,
    both ``(out_features, n_row_tiles)`` (GDC per column, ``granularity="column"``; NaN = no read, skipped)."""
    val = torch.stack([y.nanmean(dim=0) for y in ys], dim=1)
    cnt = torch.stack([(~torch.isnan(y)).sum(dim=0).to(y.dtype) for y in ys], dim=1)
    return val, cnt


def group_mean(ys: list[torch.Tensor], layout, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """:func:`per_column_mean` for ``granularity="column"``, else :func:`per_tile_mean` (``"tile"``, ``"layer"``)."""
    return per_column_mean(ys, layout) if granularity == "column" else per_tile_mean(ys, layout)


def physical_bounds(device, g_target: torch.Tensor, t_seconds: float,  # noqa: ANN001
                    drift_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[float, float]:
    """(smallest, largest) GDC factor the device model allows at ``t_seconds`` after programming.

    The factor undoes a drift gain ((t + t0)/t0)^(−ν): α = ((t + t0)/t0)^ν for ν between the smallest and largest
    exponents of the model (μ_ν ± ``NU_SIGMAS`` σ_ν over the targets; ν ≥ 0 when the model folds it, as PCM and
    HERMES do: drift only lowers conductance, so α ≥ 1). A device without drift allows only 1; one whose drift the
    model does not describe (measured tables) is not bounded. ``drift_stats``: ``device.drift_stats(g_target)``
    when the caller has it already.
    """
    if getattr(device, "kind", "") == "ideal":
        return 1.0, 1.0
    if not hasattr(device, "drift_stats") or not g_target.numel():
        return 0.0, math.inf
    mu, sig = device.drift_stats(g_target) if drift_stats is None else drift_stats
    scale = float(getattr(device, "drift_scale", 1.0))
    hi = float((mu + NU_SIGMAS * sig).max()) * scale
    folded = getattr(device, "kind", "") in ("pcm", "hermes") or bool(getattr(device, "fold_drift", False))
    lo = 0.0 if folded else min(0.0, float((mu - NU_SIGMAS * sig).min()) * scale)
    log_t = math.log((t_seconds + device.t0) / device.t0)
    return math.exp(lo * log_t), math.exp(max(hi, 0.0) * log_t)


def model_factor(mat, t_seconds: float, seed: int, *, pooled: bool = False,  # noqa: ANN001
                 g_target: torch.Tensor | None = None, columns: bool = False) -> torch.Tensor:
    """The device model's expected correlation GDC factor per tile at ``t_seconds``, ``(n_col, n_row)``: a fresh
    chip sampled from the model (generator seed ``seed``) for the matrix's targets, not this chip's drift
    exponents; Σ w₀² / Σ w₀·w_t over each tile (``pooled``: over the whole matrix, the same for every tile;
    ``columns``: over each output column of each row tile, ``(out, n_row)``).
    ``g_target``: the matrix's ``(2, out, rows)`` targets in µS (default: its stored ones)."""
    dev, lay = mat.config.device, mat.layout
    g_target = mat.g_target if g_target is None else g_target
    g = torch.Generator(device=g_target.device)
    g.manual_seed(seed)
    state = dev.program(g_target, generator=g)
    w0 = mat._analog_weights(state.g_prog)
    wt = mat._analog_weights(dev.read(state, t_seconds, generator=g))
    if columns and not pooled:
        num = torch.stack([(w0[:, s:e] * w0[:, s:e]).sum(dim=1) for s, e in lay.row_bounds], dim=1)
        den = torch.stack([(w0[:, s:e] * wt[:, s:e]).sum(dim=1) for s, e in lay.row_bounds], dim=1)
        return num / den.clamp_min(1e-30)
    num = torch.empty(lay.n_col_tiles, lay.n_row_tiles, dtype=w0.dtype, device=w0.device)
    den = torch.empty_like(num)
    for k, (s, e) in enumerate(lay.row_bounds):
        for j, (cs, ce) in enumerate(lay.col_bounds):
            a, b = w0[cs:ce, s:e], wt[cs:ce, s:e]
            num[j, k], den[j, k] = (a * a).sum(), (a * b).sum()
    if pooled:
        return (num.sum() / den.sum().clamp_min(1e-30)).expand_as(num).clone()
    return num / den.clamp_min(1e-30)


def estimate(base: torch.Tensor, noise: torch.Tensor, current: torch.Tensor, n: torch.Tensor,
             *, pooled: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correlation factors b / c per tile and which tiles are trustworthy.

    Args:
        base, noise, current, n: ``(n_col, n_row)`` baseline b, read-noise variance σ² (NaN = unknown: a state
            saved before the noise was stored; then the factor is taken as measured), current c, products n.
        pooled: one factor for the whole matrix (``granularity="layer"``).

    Returns:
        (tile factors, their relative standard errors, the pooled factor and its relative standard error as a
        ``(2,)`` tensor).
    """
    def rel_err(b: torch.Tensor, c: torch.Tensor, s2: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        a = c / b
        var_b = (2 * b * s2 + s2 * s2) / m
        var_c = ((1 + a * a) * b * s2 + s2 * s2) / m
        rel = (var_b / (b * b) + var_c / (c * c)).sqrt()
        rel = torch.where(torch.isnan(s2), torch.zeros_like(rel), rel)
        return torch.where((b > 0) & (c > 0), rel, torch.full_like(rel, math.inf))

    nb, nc = (n * base).sum(), (n * current).sum()
    total = n.sum()
    b_pool, c_pool = nb / total, nc / total
    s2_pool = (n * noise).sum() / total
    rel_pool = rel_err(b_pool, c_pool, s2_pool, total)
    pool = torch.stack([b_pool / c_pool, rel_pool])
    if pooled:
        return pool[0].expand_as(base).clone(), rel_pool.expand_as(base).clone(), pool
    return base / current, rel_err(base, current, noise, n), pool
