"""Periphery of one crossbar tile: DAC, output noise, ADC, bound management.

All functions work on matrices: ``x_n`` of shape ``(N, r)`` holds N input vectors already divided by their input
range (so the DAC's full scale is ±1), ``w`` of shape ``(c, r)`` is the tile's analog weight matrix. The order of
operations follows aihwkit's ``IOParameters`` (reference B.9): DAC quantisation and clipping → MVM → + output
noise → (bound management: if an output clips, halve the input and repeat) → ADC quantisation and clipping.
"""

from __future__ import annotations

import torch

from aimc.config import PeripheryConfig

__all__ = ["dac_step", "adc_step", "quantize", "block_mvm", "quantize_input", "bm_allows", "add_read_noise_"]


def bm_allows(factor: float, p: PeripheryConfig) -> bool:
    """Whether iterative bound management may use this input down-scaling factor."""
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
    x_q = quantize_input(x_n, p)
    y = x_q @ w.t()
    if read_var is not None:
        y = add_read_noise_(y, x_q, read_var.t(), generator)
    if p.out_noise > 0:
        y = y + p.out_noise * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return y


def block_mvm(x_n: torch.Tensor, w: torch.Tensor, p: PeripheryConfig,
              generator: torch.Generator | None, *, start_factor: float = 1.0,
              read_var: torch.Tensor | None = None) -> torch.Tensor:
    """One tile's MVM through the periphery.

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
    y = _analog(x_n / start_factor if start_factor != 1.0 else x_n, w, p, generator, read_var)
    factor = None
    if p.bound_management == "iterative" and p.out_bound is not None and y.numel():
        bound = p.out_bound
        factor = torch.full((x_n.shape[0], 1), start_factor, dtype=x_n.dtype, device=x_n.device)
        step = dac_step(p.dac_bits) if p.dac_bits is not None else 0.0
        todo = y.abs().amax(dim=1) >= bound
        while bool(todo.any()):
            idx = todo.nonzero().squeeze(1)
            f = factor[idx] * 2.0
            ok = (f[:, 0] <= p.max_bm_factor) & (f[:, 0] * step <= p.max_bm_res)  # as bm_allows, per vector
            idx, f = idx[ok], f[ok]
            if idx.numel() == 0:
                break
            factor[idx] = f
            y_new = _analog(x_n[idx] / f, w, p, generator, read_var)
            y[idx] = y_new
            todo = torch.zeros_like(todo)
            todo[idx] = y_new.abs().amax(dim=1) >= bound
    if p.adc_bits is not None:
        y = quantize(y, adc_step(p.adc_bits, p.out_bound), p.out_bound)
    elif p.out_bound is not None:
        y = torch.clamp(y, -p.out_bound, p.out_bound)
    if factor is None:
        return y * start_factor if start_factor != 1.0 else y
    return y * factor
