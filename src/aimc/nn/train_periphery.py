"""Training MVMs through the periphery: mixed-precision training (``MixedPrecision(..., periphery=True)``) and
hardware-aware training with ``TrainingConfig.periphery`` (``aimc.nn.hwa_periphery``, which sets
``TileRun.ideal_backward``: the backward read is then the exact digital δ·W, as in aihwkit's ``InferenceRPUConfig``).

Each forward MVM y = W·x and each backward MVM δ_in = Wᵀ·δ is one read of the crossbar tiles of the layer's
mapping (``layer.analog.layout``: 512×512 tiles by default), each tile with its own periphery, exactly as at
inference (:func:`aimc.periphery.tiled_mvm`): input scaling into [−1, 1] → DAC → MVM with the devices' per-read
noise → + output noise → iterative bound management → ADC at ±out_bound → undo the scaling; the partial outputs
of the row tiles are summed digitally.

* forward: the input range of the layer's config (static: the layer's range, set by calibration, by
  ``periphery.input_bound`` or tracked as the running max |x| during training; dynamic: per-vector abs-max);
* backward: the errors δ span orders of magnitude during training, so they are always scaled per vector by their
  abs-max (aihwkit's backward noise management ``ABS_MAX``), then go through the same DAC/ADC/noise;
* weight gradient δ·xᵀ: the exact digital outer product of the layer's input and error vectors (as without the
  periphery); biases stay digital.

Gradients pass the quantisers straight through: the input gradient is the transposed analog read itself.
Weights are in weight units (``output_units = "weight"``) or divided by the matrix's weight range β·g_sat
(``"normalized"``: full-scale conductance difference = 1), so out_noise and out_bound mean what they mean at
inference. Convolutions are unfolded into patch vectors (``F.unfold``; its backward sums the patches' input
gradients back onto the input, as the transposed reads of a crossbar would).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from aimc.config import PeripheryConfig
from aimc import mapping, periphery


class TileRun(NamedTuple):
    """What one analog matrix's periphery MVMs need: its tile layout, periphery, forward input range (``None`` =
    per vector), weight scale (1 or the weight range, see the module docstring; a number, or an ``(out,
    n_row_tiles)`` tensor per column and row tile), the noise generator (``None``: torch's default) and whether the
    backward read of the input gradient is the exact digital δ·W (``ideal_backward``, straight-through) instead of
    a transposed read through the periphery."""

    layout: object
    periphery: PeripheryConfig
    static_range: float | None
    w_scale: float | torch.Tensor
    generator: torch.Generator | None
    ideal_backward: bool = False


def tiled_mvm(x: torch.Tensor, w: torch.Tensor, var: torch.Tensor | None, run: TileRun, *,
              transposed: bool = False) -> torch.Tensor:
    """Periphery MVM of every tile: ``x`` ``(M, groups·rows)`` → ``(M, out)`` (or, ``transposed``, ``δ`` ``(M, out)``
    → ``(M, groups·rows)``). ``w``, ``var``: ``(out, rows)`` weights and per-read noise variances (weight units;
    ``None`` = no read noise). The reference MVM of inference, :func:`aimc.periphery.tiled_mvm`, on weights divided
    by ``run.w_scale``."""
    p, s_w = run.periphery, run.w_scale
    if transposed:  # backward: per-vector abs-max scaling of δ whatever the forward's input range
        p = dataclasses.replace(p, input_range="dynamic")
    s_rows = s_w
    if isinstance(s_w, torch.Tensor):  # per (column, row tile): the scale of every weight, (out, rows)
        if transposed:
            raise NotImplementedError("a transposed periphery read with per-tile weight scales")
        s_rows = mapping.expand_rows(s_w, run.layout)
    return periphery.tiled_mvm(x, w / s_rows, run.layout, p, run.generator,
                               static_range=None if transposed else run.static_range, out_scale=s_w,
                               read_var=var / (s_rows * s_rows) if var is not None else None, transposed=transposed)


class _PeripheryMVM(torch.autograd.Function):
    """y = tiled_mvm(x, w); backward: ∂x = tiled_mvm(δ, w, transposed) (``run.ideal_backward``: the exact δ·W per
    group), ∂w = δᵀ·x per group (digital)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, var: torch.Tensor | None,  # noqa: ANN001
                run: TileRun) -> torch.Tensor:
        ctx.save_for_backward(x, w, var)
        ctx.run = run
        with torch.no_grad():
            return tiled_mvm(x, w, var, run)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # noqa: ANN205
        x, w, var = ctx.saved_tensors
        run = ctx.run
        gx = gw = None
        lay = run.layout
        rows, out_pg = lay.rows, lay.out_features // lay.groups
        if ctx.needs_input_grad[0]:
            if run.ideal_backward:
                gx = torch.cat([gy[:, g * out_pg:(g + 1) * out_pg] @ w[g * out_pg:(g + 1) * out_pg]
                                for g in range(lay.groups)], dim=1)
            else:
                gx = tiled_mvm(gy, w, var, run, transposed=True)
        if ctx.needs_input_grad[1]:
            gw = torch.cat([gy[:, g * out_pg:(g + 1) * out_pg].t() @ x[:, g * rows:(g + 1) * rows]
                            for g in range(lay.groups)])
        return gx, gw, None, None


def periphery_forward(layer: nn.Module, name: str, x: torch.Tensor, w: torch.Tensor, var: torch.Tensor | None,
                      run: TileRun) -> torch.Tensor:
    """The training forward of an analog layer (without bias) through :func:`tiled_mvm`.

    ``name`` = "" for Linear/Conv (``x`` its input), an LSTM weight's name for an LSTM matrix (``x`` ``(N, in)``).
    """
    if name or isinstance(layer, nn.Linear):
        lead = x.shape[:-1]
        y = _PeripheryMVM.apply(x.reshape(-1, x.shape[-1]), w, var, run)
        return y.reshape(*lead, w.shape[0])
    one_d = x.dim() == 3
    x = layer._pad(x)
    if one_d:
        x = x.unsqueeze(2)
    n, _, h, wd = x.shape
    k, dil, st, (ho, wo) = layer._geometry(h, wd, one_d)
    cols = F.unfold(x, k, dilation=dil, stride=st)  # (N, C·kh·kw, L); its backward folds the patches back
    vec = cols.transpose(1, 2).reshape(n * ho * wo, -1)
    w2 = w.reshape(w.shape[0], -1)
    y = _PeripheryMVM.apply(vec, w2, var.reshape(w2.shape) if var is not None else None, run)
    y = y.view(n, ho * wo, -1).transpose(1, 2).reshape(n, -1, ho, wo)
    return y.squeeze(2) if one_d else y
