"""The crossbar MVM through its periphery (DAC, output noise, ADC, bound management): the reference implementation.

:func:`block_mvm` is one tile; :func:`tiled_mvm` is a whole weight matrix on its tiles. Both are written to be
read, one input vector at a time; the fast inference paths (``aimc.nn.mvm``) compute the same thing on whole
batches and convolution layouts and are tested against these two (``tests/test_mvm_paths.py``: equal to float
rounding with noise off, equal in distribution with noise on); mixed-precision training calls them directly.

Shapes: ``x_n`` ``(N, r)`` holds N input vectors already divided by their input range (so the DAC's full scale is
±1), ``w`` ``(c, r)`` is the tile's analog weight matrix. The order of operations follows aihwkit's
``IOParameters`` (reference B.9): DAC quantisation and clipping → MVM → + output noise → (bound management: if an
output reaches ±out_bound, halve the input and read again) → ADC quantisation and clipping.
"""

from __future__ import annotations

import torch

from aimc.config import PeripheryConfig

__all__ = ["dac_step", "adc_step", "quantize", "block_mvm", "quantize_input", "bm_may_retry", "add_read_noise_",
           "tiled_mvm"]


def bm_may_retry(factor: float, p: PeripheryConfig) -> bool:
    """After an attempt at input down-scaling ``factor`` clipped: whether iterative bound management doubles the
    factor and tries again.

    As aihwkit: the attempt at ``factor`` is computed first and the limits are checked afterwards, so the last
    attempt may use the first factor beyond them (7-bit DAC, ``max_bm_res`` 0.25: 8 · 1/63 ≤ 0.25, so 16 is still
    tried; 16 · 1/63 > 0.25, so 16 is the last).
    """
    step = dac_step(p.dac_bits) if p.dac_bits is not None else 0.0
    return factor <= p.max_bm_factor and factor * step <= p.max_bm_res


def dac_step(bits: int) -> float:
    """DAC step in units of the input range: 2 / (2^bits − 2) (7 bits ↦ 1/63, levels −63…63)."""
    return 2.0 / (2**bits - 2)


def adc_step(bits: int, bound: float) -> float:
    """ADC step in output units: 2·bound / (2^bits − 2) (9 bits, bound 12 ↦ 0.0471)."""
    return 2.0 * bound / (2**bits - 2)


def quantize(x: torch.Tensor, step: float, bound: float) -> torch.Tensor:
    """Round to the nearest multiple of ``step`` and clip to ±``bound``."""
    return torch.clamp(torch.round(x / step) * step, -bound, bound)


def quantize_input(x_n: torch.Tensor, p: PeripheryConfig) -> torch.Tensor:
    """DAC of normalised inputs: quantised to ``dac_step`` and clipped to ±1; unchanged when there is no DAC."""
    if p.dac_bits is None:
        return x_n
    return quantize(x_n, dac_step(p.dac_bits), 1.0)


def add_read_noise_(y: torch.Tensor, x: torch.Tensor, var_t: torch.Tensor,
                    generator: torch.Generator | None) -> torch.Tensor:
    """In place: the per-read device noise of the MVM ``y = x @ w_t``, output-referred: each output gets Gaussian
    noise of variance Σ_j var_t[j, i]·x_j² (``var_t``: per-weight read variances laid out like ``w_t``)."""
    std = ((x * x) @ var_t).sqrt_()
    return y.addcmul_(std, torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype))


def _analog(x_n: torch.Tensor, w: torch.Tensor, p: PeripheryConfig, generator: torch.Generator | None,
            read_var: torch.Tensor | None = None) -> torch.Tensor:
    """One read of the tile before the ADC: DAC → MVM (→ device read noise) → + output noise."""
    x_q = quantize_input(x_n, p)
    y = x_q @ w.t()
    if read_var is not None:
        y = add_read_noise_(y, x_q, read_var.t(), generator)
    if p.out_noise > 0:
        y = y + p.out_noise * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return y


def _adc(y: torch.Tensor, p: PeripheryConfig) -> torch.Tensor:
    """ADC quantisation and clipping at ±out_bound (only clipping without an ADC; nothing without a bound)."""
    if p.adc_bits is not None:
        return quantize(y, adc_step(p.adc_bits, p.out_bound), p.out_bound)
    if p.out_bound is not None:
        return torch.clamp(y, -p.out_bound, p.out_bound)
    return y


def block_mvm(x_n: torch.Tensor, w: torch.Tensor, p: PeripheryConfig,
              generator: torch.Generator | None, *, start_factor: float = 1.0,
              read_var: torch.Tensor | None = None) -> torch.Tensor:
    """One tile's MVM through the periphery: the reference every fast path is tested against.

    For each input vector: divide by the bound-management factor f (``start_factor``, then 2f, 4f, … while an
    output reaches ±out_bound and :func:`bm_may_retry` allows), DAC, MVM, + output noise, ADC, × f. Each retry is a
    fresh read (new noise). Vectors are retried one by one; aihwkit re-runs the whole batch at the doubled factor
    when any vector clips, which gives the same result for the vectors that clipped and a coarser one (input
    divided by f for nothing) for those that did not.

    Args:
        x_n: ``(N, r)`` inputs in units of the input range.
        w: ``(c, r)`` analog weights of the tile.
        p: periphery settings.
        generator: source of the output noise.
        start_factor: bound-management factor of the first attempt (2 when an attempt at 1 already clipped).
        read_var: ``(c, r)`` per-read noise variance of each weight (units of ``w``²), drawn afresh for every read
            (mixed-precision training); ``None`` = the weights are read without noise.

    Returns:
        ``(N, c)`` outputs in the same units as ``x_n @ w.T`` (bound-management factor already undone).
    """
    f = start_factor
    y = _analog(x_n / f if f != 1.0 else x_n, w, p, generator, read_var)
    if p.bound_management != "iterative" or p.out_bound is None or not y.numel():
        return _adc(y, p) * f if f != 1.0 else _adc(y, p)
    factor = torch.full((x_n.shape[0], 1), f, dtype=x_n.dtype, device=x_n.device)
    todo = torch.arange(x_n.shape[0], device=x_n.device)  # vectors whose last attempt may still be retried
    clipped = y.abs().amax(dim=1) >= p.out_bound
    while bm_may_retry(f, p):
        todo = todo[clipped]
        if todo.numel() == 0:
            break
        f *= 2.0
        factor[todo] = f
        y_new = _analog(x_n[todo] / f, w, p, generator, read_var)
        y[todo] = y_new
        clipped = y_new.abs().amax(dim=1) >= p.out_bound
    return _adc(y, p) * factor


def tiled_mvm(x: torch.Tensor, w: torch.Tensor, layout, p: PeripheryConfig,  # noqa: ANN001
              generator: torch.Generator | None, *, static_range: float | None = None,
              out_scale: torch.Tensor | float = 1.0, read_var: torch.Tensor | None = None,
              transposed: bool = False) -> torch.Tensor:
    """The whole weight matrix on its tiles, one input vector at a time: the reference of an analog layer's MVM.

    For every tile (row band k, column band j; a packed tile of a grouped convolution is its explicit
    block-diagonal matrix, :meth:`aimc.mapping.TileLayout.tile_weights`): input range (``static_range``, else each
    vector's abs-max over the tile's input lines, all packed groups' inputs), :func:`block_mvm` on ``x / range``,
    × range, × ``out_scale[cols of j, k]`` (digital scale and GDC factor); the row tiles' partial outputs are summed
    digitally.

    Args:
        x: ``(M, groups·rows)`` input vectors (``transposed``: ``(M, out)`` error vectors).
        w: ``(out, rows)`` analog weights (``aimc.nn.tile.AnalogMatrix.w_analog``).
        layout: the matrix's :class:`aimc.mapping.TileLayout`.
        p: periphery settings.
        generator: source of the noise.
        static_range: the layer's static input range; ``None`` = per-vector abs-max (dynamic).
        out_scale: ``(out, n_row_tiles)`` digital factors, or one number.
        read_var: ``(out, rows)`` per-read noise variances of the weights (units of ``w``²), or ``None``.
        transposed: the backward read ``δ·W`` (``out_scale`` must then be a number).

    Returns:
        ``(M, out)`` (``transposed``: ``(M, groups·rows)``).
    """
    rows = layout.rows
    y = x.new_zeros(x.shape[0], layout.groups * rows if transposed else layout.out_features)
    for k in range(layout.n_row_tiles):
        for j, (cs, ce) in enumerate(layout.col_bounds):
            r0, r1 = layout.in_bounds(j, k)
            # the tile's explicit matrix: block-diagonal for packed groups (zero, noise-free off the blocks)
            wt = layout.tile_weights(w, j, k)
            vt = layout.tile_weights(read_var, j, k) if read_var is not None else None
            if transposed:
                v, wt, vt = x[:, cs:ce], wt.t(), (vt.t() if vt is not None else None)
            else:
                v = x[:, r0:r1]
            if static_range is not None:
                sc = static_range
            else:
                sc = v.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)  # an all-zero vector: tiny scale, not 0/0
            part = block_mvm(v / sc, wt, p, generator, read_var=vt) * sc
            part = part * (out_scale if isinstance(out_scale, (int, float)) else out_scale[cs:ce, k])
            if transposed:
                y[:, r0:r1] += part
            else:
                y[:, cs:ce] += part
    return y
