"""The cached weights of a drifted matrix: in which dtype they are held, and how a forward gets them back.

``aimc.at_time`` runs the device physics (regeneration, drift, read noise, GDC) in float32 or wider and caches the
result for all following forward passes: the effective weight ``w_eff`` (ideal periphery) or the analog weight
``w_analog`` (matrix path). The cache is held in

* float32 by default (float64 for a float64 model): for bfloat16 / float16 master weights too, since the cached
  weights are conductances in weight units and bfloat16's step near 25 µS (0.125 µS) is half the off-device's
  programming noise. The forward pass of such a model runs its analog products in float32 and returns the
  model's dtype;
* float16 on request (``aimc.at_time(..., cache_dtype=torch.float16)``; 2 B per weight instead of 4 B): float16's
  relative step 2⁻¹¹ is 0.012 µS at 25 µS, about 20× below the smallest programming noise (0.26 µS at 0 µS of
  the PCM model). The forward computes in float32: a linear layer upcasts a block of ~0.5 M weights at a time
  (:func:`linear`: cache-sized, so it costs about nothing next to the product), other layers (convolutions, the
  matrix path, ``torch.compile``) one layer at a time. A matrix whose largest |weight| lies outside [2⁻⁸, 2¹⁵) is
  held as float16 × 2ᵉ (a power of two, exact), so that float16 neither overflows nor loses precision to
  subnormals.

The device physics never runs in float16 or bfloat16: only the finished result is rounded, once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aimc.errors import ConfigError

__all__ = ["cache_dtype", "to_cache", "upcast", "half_choice", "in_dtype", "linear"]

_LOW, _HIGH = 2.0**-8, 2.0**15  # largest |w| in this range: held as float16 without a factor
_BLOCK = 1 << 19  # float16 weights upcast at once by linear() (2 MB in float32: stays in the CPU cache)


def half_choice(cache_dtype: object) -> bool | None:
    """``cache_dtype`` argument of ``aimc.at_time`` as "hold in float16?" (``None``: keep each matrix's setting)."""
    if cache_dtype is None:
        return None
    name = str(cache_dtype).removeprefix("torch.")
    if name in ("float16", "half"):
        return True
    if name in ("float32", "float"):
        return False
    raise ConfigError(f"cache_dtype={cache_dtype!r}: the cached analog weights are held in torch.float32 (default) or "
                      "torch.float16 (half the memory, step 2^-11 of the weight); bfloat16 would round conductances to "
                      "0.125 µS at 25 µS and is not offered.")


def cache_dtype(master: torch.dtype, half: bool) -> torch.dtype:
    """dtype the cached weights are held in for master weights of dtype ``master``: float16 when asked for, else
    float32 or wider (never bfloat16/float16 because the master is)."""
    return torch.float16 if half else torch.promote_types(master, torch.float32)


def to_cache(w: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """``w`` (float32+, owned by the caller: scaled in place when needed) in ``dtype`` and the factor ``s`` with
    ``w ≈ held · s`` (1.0 unless float16 needs a power of two to keep ``w`` in its normal range)."""
    if dtype != torch.float16:
        return w.to(dtype), 1.0
    lo, hi = torch.aminmax(w) if w.numel() else (torch.zeros(()), torch.zeros(()))
    m = max(-float(lo), float(hi))  # max |w| without an |w| copy of the matrix
    scale = 1.0
    if math.isfinite(m) and m > 0 and not _LOW <= m < _HIGH:
        scale = 2.0 ** (math.frexp(m)[1] - 15)  # largest |w| / scale in [2^14, 2^15)
        w.mul_(1.0 / scale)  # a power of two: exact
    return w.to(torch.float16), scale


def upcast(w: torch.Tensor, scale: float) -> torch.Tensor:
    """The cached weight ``w`` in the dtype the products run in: unchanged unless held in float16, else a new
    float32 tensor (× ``scale``)."""
    if w.dtype != torch.float16:
        return w
    w = w.float()
    return w if scale == 1.0 else w.mul_(scale)


def in_dtype(dtype: torch.dtype, fn, x: torch.Tensor, *rest: object) -> torch.Tensor:  # noqa: ANN001
    """``fn(x, *rest)`` with ``x`` and the floating tensors of ``rest`` cast to ``dtype`` (the matrix's
    ``compute_dtype``) and the result cast back to ``x``'s dtype; no cast at all when ``x`` is already ``dtype``."""
    if x.dtype == dtype or not x.is_floating_point():
        return fn(x, *rest)
    cast = [r.to(dtype) if isinstance(r, torch.Tensor) and r.is_floating_point() else r for r in rest]
    return fn(x.to(dtype), *cast).to(x.dtype)


def linear(mat, x: torch.Tensor, bias: torch.Tensor | None, name: str) -> torch.Tensor:  # noqa: ANN001
    """Ideal-output forward of a linear product on ``mat`` (an ``AnalogMatrix``): ``dac(x) @ w_eff.T + bias``, in
    ``mat.compute_dtype`` and returned in ``x``'s dtype. ``x`` ``(*, in)``, result ``(*, out)``."""
    w, s = mat.w_eff, mat._w_eff_scale

    def run(x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        x = mat.static_dac(x, name)
        if w.dtype != torch.float16 or torch.compiler.is_compiling() or x.device.type != "cpu":
            return F.linear(x, upcast(w, s), b)
        # a block of output rows at a time: each block's float32 copy is cache-sized, no layer-sized copy
        x2 = x.reshape(-1, x.shape[-1])
        y = x2.new_empty(x2.shape[0], w.shape[0])
        step = max(1, _BLOCK // max(w.shape[1], 1))
        for c in range(0, w.shape[0], step):
            y[:, c:c + step] = x2 @ upcast(w[c:c + step], s).t()
        if b is not None:
            y.add_(b)
        return y.reshape(*x.shape[:-1], w.shape[0])

    return in_dtype(mat.compute_dtype, run, x, bias)
