"""Training MVMs of mixed-precision training: analog weights plus per-read device read noise, forward and backward.

Each MVM is one read of the crossbar. Device read noise (independent per device and per read, σ_ij in weight
units for the pair of weight ij) adds to every output the sum of its devices' noise weighted by the input, so
an output of the forward MVM y = W·x gets Gaussian noise of variance Σ_j σ_ij²·x_j², and an output of the
backward MVM δ_in = Wᵀ·δ gets variance Σ_i σ_ij²·δ_i². Drawing these output-referred terms is exact in
distribution for one read per input vector, and cheaper than drawing a noisy copy of W: one extra MVM with σ²
and x² instead of a Gaussian draw per weight. The weight gradient δ·xᵀ is not an MVM on the array: it stays the
exact digital outer product.

The layers of ``aimc.nn`` call :class:`MVMHook` from their training forward when ``MixedPrecision`` has attached
it (the layers' documented attribute ``aimc_train_mvm``). With ``MixedPrecision(..., periphery=True)`` the hook sends the MVMs
through the layers' DAC/ADC/output noise per tile instead (``aimc.nn.train_periphery``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from aimc.nn.train_periphery import periphery_forward
from aimc.periphery import add_read_noise_


class _NoisyLinear(torch.autograd.Function):
    """Linear MVM with explicit formulas: x ``(N, in)``, w/var ``(out, in)``, bias ``(out,)`` or None;
    y = x·wᵀ + b + sqrt(x²·varᵀ)·ξ (x² and var are ≥ 0, so x²·varᵀ is too: no clamp needed)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, var: torch.Tensor,  # noqa: ANN001
                gen: torch.Generator) -> torch.Tensor:
        ctx.save_for_backward(x, w, var)
        ctx.gen = gen
        y = x @ w.t() if bias is None else torch.addmm(bias, x, w.t())
        return add_read_noise_(y, x, var.t(), gen)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # noqa: ANN205
        x, w, var = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = add_read_noise_(gy @ w, gy, var, ctx.gen)
        if ctx.needs_input_grad[1]:
            gw = gy.t() @ x
        if ctx.needs_input_grad[2]:
            gb = gy.sum(0)
        return gx, gw, gb, None, None


class _NoisyMVM(torch.autograd.Function):
    """Any MVM op linear in x (convolutions): y = op(x, w) + sqrt(op(x², var))·ξ; backward: ∂x = op_x^T(δ) +
    sqrt(op_x^T(δ², var))·ξ′ (vector-Jacobian products of the recorded ops), ∂w exact."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, var: torch.Tensor,  # noqa: ANN001
                op: Callable, gen: torch.Generator) -> torch.Tensor:
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.enable_grad():
            xd = x.detach().requires_grad_(need_x)
            wd = w.detach().requires_grad_(need_w)
            y = op(xd, wd)
            x2 = (x.detach() * x.detach()).requires_grad_(need_x)
            v = op(x2, var)
        ctx.graph = (xd, wd, y, x2, v)
        ctx.gen = gen
        z = torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
        return y.detach() + torch.sqrt(v.detach().clamp_min(0.0)) * z

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # noqa: ANN205
        xd, wd, y, x2, v = ctx.graph
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        inputs = [t for t, need in ((xd, need_x), (wd, need_w)) if need]
        grads = list(torch.autograd.grad(y, inputs, gy)) if inputs else []
        gx = grads.pop(0) if need_x else None
        gw = grads.pop(0) if need_w else None
        if need_x:
            (gv,) = torch.autograd.grad(v, x2, gy * gy)
            z = torch.randn(gx.shape, generator=ctx.gen, device=gx.device, dtype=gx.dtype)
            gx = gx + torch.sqrt(gv.clamp_min(0.0)) * z
        ctx.graph = None
        return gx, gw, None, None, None


def _dead(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    return MVMHook(None)


class MVMHook:
    """Attached to an analog layer by ``MixedPrecision``; called as ``hook(layer, name, x)`` from its training
    forward (``name`` = "" for Linear/Conv, the weight's name for an LSTM matrix). Holds the optimizer weakly: a
    deep copy keeps it (and falls back to a noise-free MVM for parameters the optimizer does not own), a pickled
    model drops it."""

    def __init__(self, opt: object | None):
        self._ref = weakref.ref(opt) if opt is not None else None

    def __deepcopy__(self, memo: dict) -> MVMHook:
        return self

    def __reduce__(self):  # noqa: ANN204
        return (_dead, ())


    def __call__(self, layer: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
        w = getattr(layer, name) if name else layer.weight
        opt = self._ref() if self._ref is not None else None
        if opt is not None and opt.periphery and w in opt._pairs.slices:
            y = periphery_forward(layer, name, x, w, opt.read_variance(w), opt._tile_run(layer, name, w))
            bias = None if name else layer.bias
            return y if bias is None else y + bias.view((1, -1) + (1,) * (y.dim() - 2))
        if name:  # LSTM matrix: x (N, in) → (N, 4H), no bias
            op = F.linear
            bias = None
        elif isinstance(layer, nn.Linear):
            op, bias = F.linear, layer.bias
        else:  # convolution (padding modes and string paddings handled by the layer's own _conv_forward)
            op, bias = (lambda inp, wt: layer._conv_forward(inp, wt, None)), layer.bias
        var = opt.read_variance(w) if opt is not None else None
        gen = opt._gen if var is not None else None
        if op is F.linear:
            if var is None:
                return F.linear(x, w, bias)
            if x.dim() == 2:
                return _NoisyLinear.apply(x, w, bias, var, gen)
            lead = x.shape[:-1]
            y = _NoisyLinear.apply(x.reshape(-1, x.shape[-1]), w, bias, var, gen)
            return y.reshape(*lead, w.shape[0])
        y = op(x, w) if var is None else _NoisyMVM.apply(x, w, var, op, gen)
        return y if bias is None else y + bias.view((1, -1) + (1,) * (y.dim() - 2))
