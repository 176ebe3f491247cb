"""Training-time perturbations of hardware-aware training: weight noise, drop-connect, learned-range DAC.

Pure tensor functions; the analog layers call them in their training forward pass (``AnalogMatrix.train_weight``
and ``AnalogLayer`` in ``aimc.nn``).

Weight noise (``noisy_weight``), formulas in :class:`aimc.config.TrainingConfig`; sources: Joshi et al.,
Nat. Commun. 11, 2473 (2020) (additive, η = 3.8 %) and aihwkit's ``WeightModifierParameter`` (reference B.8)
for the other types and drop-connect.

* **Gradients: straight through.** The returned tensor is ``weight + delta`` with the perturbation ``delta``
  detached, so the forward pass and the back-propagated errors see the noisy weights, and the master weight
  receives exactly the gradient of the noisy weight (∂L/∂W := ∂L/∂W̃). That is the Joshi et al. / aihwkit
  recipe ("gradients through the noisy weights, update to the clean ones"). For multiplicative and PCM noise
  it deliberately leaves out the ∂delta/∂w term, and drop-connected weights still receive their gradient, as
  in aihwkit (whose weight gradient δ·xᵀ does not depend on the weights), unlike Wan et al. 2013.
* **Randomness: torch's default generator**, like ``nn.Dropout``. The noise is a per-mini-batch training
  perturbation, not device state: it is re-drawn on every call, ``torch.manual_seed`` makes a run reproducible
  (the experiment runner seeds it per epoch), and no generator has to be threaded through ``forward``. Device
  state (programming noise, drift, read noise) keeps its explicit ``seed=`` arguments.
* max|W| is the current largest |w| of the whole layer, detached (aihwkit ``rel_to_actual_wmax``).
"""

from __future__ import annotations

import math

import torch

from aimc.config import TrainingConfig
from aimc.devices import PCM, Hermes
from aimc.periphery import dac_step, quantize

__all__ = ["noisy_weight", "noise_std", "quantize_ste", "ETA_REFERENCE", "MIN_INPUT_RANGE"]

ETA_REFERENCE = 0.038
"""η at which ``noise = "pcm_programming"`` equals the calibrated PCM programming noise (0.94 µS / 25 µS)."""

MIN_INPUT_RANGE = 1e-8
"""Smallest learned input range (input units); the quantiser and ``aimc.clip`` keep r at or above it."""

_REFERENCE_PCM = PCM()


def noise_std(weight: torch.Tensor, cfg: TrainingConfig, *, device: PCM | None = None) -> torch.Tensor:
    """Standard deviation of the weight noise, per weight (broadcastable to ``weight``), in weight units.

    Args:
        weight: the master weight (any shape); only its detached value is used.
        cfg: the training configuration (``noise``, ``eta``).
        device: PCM or HERMES model whose programming-noise polynomial ``"pcm_programming"`` uses; default
            ``aimc.devices.PCM()`` (the calibrated model of reference B.2).

    Returns:
        ``"additive"``: η·max|W| (0-d); ``"additive_channel"``: η·max|W_i| per output channel i (shape
        ``(out, 1, ...)``, the max over every dim but the first); ``"multiplicative"``: η·|w|; ``"pcm_programming"``:
        max|W|·σ_prog(g_T)/g_max·(η/0.038) with g_T = |w|/max|W|·g_max; ``"none"``: 0 (0-d).
    """
    w = weight.detach()
    if cfg.noise == "none" or cfg.eta == 0 or w.numel() == 0:
        return w.new_zeros(())
    if cfg.noise == "multiplicative":
        return cfg.eta * w.abs()
    if cfg.noise == "additive_channel":
        return cfg.eta * w.abs().reshape(w.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (w.dim() - 1)))
    w_max = w.abs().max()
    if cfg.noise == "additive":
        return cfg.eta * w_max
    if cfg.noise == "pcm_programming":
        dev = device if isinstance(device, (PCM, Hermes)) else _REFERENCE_PCM
        g_t = w.abs() / w_max.clamp_min(1e-30) * dev.g_max
        return w_max * (dev.prog_std(g_t) / dev.g_max) * (cfg.eta / ETA_REFERENCE)
    raise ValueError(f"unknown noise type {cfg.noise!r}")  # unreachable: TrainingConfig validates it


def noisy_weight(weight: torch.Tensor, cfg: TrainingConfig, *, device: PCM | None = None) -> torch.Tensor:
    """The weight a training forward pass uses: master weight + fresh noise, then drop-connect.

    Re-drawn on every call (i.e. once per mini-batch and layer) from torch's default generator. Differentiable
    w.r.t. ``weight`` with the straight-through rule of the module docstring: ∂out/∂weight is the identity.

    Args:
        weight: the master weight (any shape, e.g. ``(out, in)`` or a convolution kernel).
        cfg: ``noise``, ``eta`` and ``drop_connect`` are used (formulas in :class:`aimc.config.TrainingConfig`).
        device: PCM model of ``noise = "pcm_programming"`` (default ``aimc.devices.PCM()``).

    Returns:
        Tensor of ``weight``'s shape; dropped weights are exactly 0. ``weight`` itself when nothing is on.
    """
    noise_on = cfg.noise != "none" and cfg.eta > 0
    if not noise_on and cfg.drop_connect == 0:
        return weight
    w = weight.detach()
    if noise_on:
        delta = noise_std(w, cfg, device=device) * torch.randn_like(w)
    else:
        delta = torch.zeros_like(w)
    if cfg.drop_connect > 0:
        dropped = torch.rand_like(w) < cfg.drop_connect
        delta = torch.where(dropped, -w, delta)  # weight + (−w) is exactly 0
    return weight + delta


class _LearnedRangeQuant(torch.autograd.Function):
    """DAC quantiser with a learnable range r: forward exact, backward straight-through (x) and LSQ-style (r)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, r: torch.Tensor, bits: int) -> torch.Tensor:  # noqa: ANN001
        rc = r.clamp_min(MIN_INPUT_RANGE)
        ctx.save_for_backward(x, rc)
        ctx.bits = bits
        return quantize(x / rc, dac_step(bits), 1.0) * rc

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        x, rc = ctx.saved_tensors
        u = x / rc
        q = quantize(u, dac_step(ctx.bits), 1.0)
        inside = u.abs() < 1
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_r = None
        if ctx.needs_input_grad[1]:
            levels = (2**ctx.bits - 2) / 2
            d_r = torch.where(inside, q - u, torch.sign(u))  # ∂x_q/∂r with round() passed straight through
            grad_r = ((grad * d_r).sum() / math.sqrt(max(x.numel(), 1) * levels)).reshape(rc.shape).to(rc.dtype)
        return grad_x, grad_r, None


def quantize_ste(x: torch.Tensor, r: torch.Tensor, bits: int) -> torch.Tensor:
    """Static-range DAC of a training forward pass, differentiable in the input and in the range.

    Forward (identical to the inference DAC ``aimc.periphery.quantize_input`` at range r):
    x_q = clamp(round(x/r·L)/L, −1, 1)·r with L = (2^bits − 2)/2 levels per side (step 1/L = ``dac_step``).

    Backward (round() treated as the identity, u = x/r):
    * ∂x_q/∂x = 1 where |x| < r, else 0 (straight-through estimator, Bengio et al. 2013);
    * ∂x_q/∂r = q(u) − u where |x| < r (the quantisation error), sign(x) where |x| ≥ r (the clipped inputs pull
      r outwards, as in PACT, Choi et al. 2018), i.e. the LSQ gradient (Esser et al., ICLR 2020), summed over
      all elements and scaled by LSQ's 1/√(numel·L) so its size does not grow with the batch.

    Args:
        x: input, any shape, in the layer's input units.
        r: 0-d learnable range (input units); values below ``MIN_INPUT_RANGE`` are used as ``MIN_INPUT_RANGE``.
        bits: DAC resolution (``periphery.dac_bits``).
    """
    return _LearnedRangeQuant.apply(x, r, bits)
