"""Hardware-aware training through the periphery (``TrainingConfig.periphery``).

Without it, a training forward of an analog layer is ``F.linear`` (or the convolution) on the noisy weights of
``aimc.train.noise``: the network never sees the DAC, the ADC or the output noise it will meet at inference. With
it, each training forward MVM is the reference crossbar MVM of inference, :func:`aimc.periphery.tiled_mvm`, on the
noisy weights, tile by tile (the same code path as mixed-precision training's ``periphery=True``,
``aimc.nn.train_periphery``): per tile, input range (the layer's static range, or each vector's abs-max) → DAC →
MVM → + output noise (torch's default generator, like the weight noise) → iterative bound management → ADC →
× range × digital scale, row tiles summed digitally. This is what aihwkit's ``InferenceRPUConfig`` trains with.

Backward (aihwkit: "backward and update passes are ideal"): the input gradient is the exact δ·W of the noisy
weights W and the weight gradient δᵀ·x, i.e. the DAC/ADC rounding, their clipping and the output noise are passed
straight through. Where nothing rounds or clips the gradients are those of the plain training forward.

Weights: in weight units (``output_units = "weight"``), or divided by the weight range of the layer's mapping
(``aimc.mapping.weight_scale`` of the master weights: the max|W| mapped to g_max per tile, column or layer) for
``"normalized"``, so ``out_noise`` and ``out_bound`` mean what they mean at inference. Not modelled in training:
the saturation of weights beyond ``mapping.clip_std`` (``aimc.clip`` bounds the weights instead).

Covered: ``AnalogLinear``, ``AnalogConv1d``/``AnalogConv2d`` (unfolded into patch vectors) and every layer whose
matrices go through ``aimc.nn.matrix.mvm`` (``AnalogLSTM``/``AnalogGRU``/``AnalogRNN``, ``AnalogMultiheadAttention``,
the ``(in, out)``-weight projections). ``AnalogConv3d`` and the transposed convolutions raise
``UnsupportedLayerError`` in training with it. With an ideal periphery (``PeripheryConfig.is_ideal``) nothing
changes (exactly the plain forward).
Under ``aimc.train.MixedPrecision`` its own ``periphery=`` argument decides instead.
"""

from __future__ import annotations

import torch
from torch import nn

from aimc import mapping
from aimc.errors import UnsupportedLayerError
from aimc.nn.train_periphery import TileRun, periphery_forward

__all__ = ["uses_periphery", "periphery_train_forward"]


def uses_periphery(mat: nn.Module) -> bool:
    """Whether training forwards of the ``AnalogMatrix`` ``mat`` go through its periphery."""
    cfg = mat.config
    return bool(cfg.training.periphery) and not cfg.periphery.is_ideal


def periphery_train_forward(layer: nn.Module, name: str, x: torch.Tensor, w: torch.Tensor, master: torch.Tensor,
                            mat: nn.Module) -> torch.Tensor:
    """Training forward of one analog matrix through its periphery, without bias.

    Args:
        layer: the analog layer (``AnalogLinear``, ``AnalogConv1d/2d`` or ``AnalogLSTM``).
        name: "" for Linear/Conv, the LSTM weight's name for an LSTM matrix.
        x: the layer's (training) input: ``(*, in)`` for Linear, ``(N, C, *spatial)`` for a convolution,
            ``(N, in)`` for an LSTM matrix.
        w: the noisy training weights (``AnalogMatrix.train_weight``), shape of the layer's weight; gradients flow
            to it.
        master: the master weights (shape of ``w``): the weight range of ``output_units = "normalized"``.
        mat: the layer's ``AnalogMatrix`` for this weight.

    Returns:
        The output without bias: ``(*, out)`` or ``(N, C_out, *spatial_out)``.
    """
    p = mat.config.periphery
    label = f"{getattr(layer, 'aimc_name', '')}.{name}" if name else getattr(layer, "aimc_name", "")
    if not name and not isinstance(layer, nn.Linear) and len(getattr(layer, "kernel_size", ())) > 2:
        raise UnsupportedLayerError(f"layer {label!r}: training.periphery supports 1-d and 2-d convolutions, not "
                                    f"{type(layer).__name__}; exclude the layer or set training.periphery to false.")
    static = mat.static_range(label) if p.input_range == "static" else None
    if p.output_units == "normalized":
        m = mat.config.mapping
        w_scale = mapping.weight_scale(master.detach().reshape(master.shape[0], -1), mat.layout, m.scale,
                                       clip_std=m.clip_std)
    else:
        w_scale = 1.0
    run = TileRun(mat.layout, p, static, w_scale, None, ideal_backward=True)
    return periphery_forward(layer, name, x, w, None, run)
