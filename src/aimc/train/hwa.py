"""Hardware-aware training (Joshi et al., Nat. Commun. 11, 2473 (2020)): weight clipping after each optimizer step.

Weight noise and drop-connect live in the analog layers' training forward pass (``aimc.nn.noise``: re-drawn
on every forward call from torch's default generator, like dropout; gradients flow through the noisy weights and
the optimizer updates the clean master weights). This module adds the step after the optimizer::

    loss.backward(); opt.step(); aimc.clip(model)

Clip types (``TrainingConfig.clip``; aihwkit ``WeightClipType``, reference B.8), each weight matrix on its own
(an LSTM's input-to-hidden and hidden-to-hidden matrices separately), std = sample std (n − 1):

* ``"gaussian"``: W ← clamp(W, −α·std(W), α·std(W)) (aihwkit LAYER_GAUSSIAN);
* ``"fixed"``: W ← clamp(W, −clip_value, clip_value) (aihwkit FIXED_VALUE);
* ``"channel_gaussian"``: row i of the ``(out, rows)`` matrix (output channel i; for a convolution the whole
  kernel of that channel) ← clamp(W_i, −α·std(W_i), α·std(W_i));
* ``"none"``: unchanged.

A matrix (or row) with fewer than 2 weights has no std and is left alone by the Gaussian types.

``clip`` also copies learned DAC input ranges (``TrainingConfig.learn_input_range``) into the inference buffer
``AnalogMatrix.input_range`` and keeps them ≥ ``aimc.nn.noise.MIN_INPUT_RANGE``.
"""

from __future__ import annotations

import torch
from torch import nn

from aimc.config import TrainingConfig
from aimc.errors import StateError
from aimc.nn.convert import analog_layers
from aimc.nn.noise import MIN_INPUT_RANGE

__all__ = ["clip", "clip_bounds", "sync_input_ranges"]


def clip_bounds(w: torch.Tensor, cfg: TrainingConfig) -> torch.Tensor | None:
    """Upper bound b of ``cfg.clip`` for a ``(out, rows)`` matrix (weights are clipped to ±b).

    Returns:
        ``None`` when nothing is clipped; a 0-d tensor (per matrix) or an ``(out, 1)`` tensor
        (``"channel_gaussian"``), in weight units.
    """
    w = w.detach()
    if cfg.clip == "fixed":
        return torch.tensor(float(cfg.clip_value), dtype=w.dtype, device=w.device)
    if cfg.clip == "gaussian" and w.numel() >= 2:
        return cfg.clip_alpha * w.std()
    if cfg.clip == "channel_gaussian" and w.shape[-1] >= 2:
        return cfg.clip_alpha * w.std(dim=1, keepdim=True)
    return None


def clip(model: nn.Module) -> None:
    """Clip every analog layer's master weights as its ``training.clip`` says (types in the module docstring).

    In place; call after each optimizer step. Works with any torch optimizer. Also copies learned input ranges
    into the inference buffers (:func:`sync_input_ranges`).

    Raises:
        StateError: the model has no analog layers (it was not converted with ``aimc.convert``).
    """
    layers = list(analog_layers(model))
    if not layers:
        raise StateError("aimc.clip needs a converted model (aimc.convert); this one has no analog layers.")
    with torch.no_grad():
        for _, layer in layers:
            for sfx, (mat, w2d) in layer.analog_matrices().items():
                _sync(mat)
                bound = clip_bounds(w2d, mat.config.training)
                if bound is None:
                    continue
                # clamp the parameter itself: for a non-contiguous kernel (channels_last) the (out, rows) matrix
                # is a copy, and clamping the copy would do nothing
                param = w2d if isinstance(w2d, nn.Parameter) or sfx else getattr(layer, "weight", w2d)
                clamped = torch.maximum(torch.minimum(w2d, bound), -bound)
                param.copy_(clamped.reshape(param.shape))


def sync_input_ranges(model: nn.Module) -> None:
    """Copy every learned DAC input range into its inference buffer (``aimc.clip`` does it after each step).

    Call it yourself only if you train with ``learn_input_range`` but without ``aimc.clip``.
    """
    with torch.no_grad():
        for _, layer in analog_layers(model):
            for mat, _ in layer.analog_matrices().values():
                _sync(mat)


def _sync(mat: nn.Module) -> None:
    """Keep a learned range ≥ MIN_INPUT_RANGE and copy it into ``input_range`` (skipped while uninitialised)."""
    r = getattr(mat, "learned_input_range", None)
    if r is None:
        return
    r.clamp_(min=MIN_INPUT_RANGE)  # NaN (not yet initialised) stays NaN
    mat.input_range.copy_(torch.where(torch.isnan(r), mat.input_range, r))
