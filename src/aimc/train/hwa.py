"""Hardware-aware training (Joshi et al. 2020): weight clipping after each optimizer step.

Weight-noise injection itself lives in the analog layers' training forward pass (std = eta·max|W|, re-drawn on
every forward call from torch's default generator, like dropout; gradients flow through the noisy weights and the
optimizer updates the clean master weights). This module adds the clipping step::

    loss.backward(); opt.step(); aimc.clip(model)
"""

from __future__ import annotations

import torch
from torch import nn

from aimc.errors import StateError
from aimc.nn.convert import analog_layers

__all__ = ["clip"]


def clip(model: nn.Module) -> None:
    """Clip every analog layer's master weights at ±alpha·std(W) (per layer, ``training.clip = "gaussian"``).

    In place; call after each optimizer step. Works with any torch optimizer. Layers whose config says
    ``clip = "none"`` are left alone. For an LSTM each weight matrix is clipped on its own.
    """
    layers = list(analog_layers(model))
    if not layers:
        raise StateError("aimc.clip needs a converted model (aimc.convert); this one has no analog layers.")
    with torch.no_grad():
        for _, layer in layers:
            tr = layer.analog_config.training
            if tr.clip != "gaussian":
                continue
            for _, (_, w) in layer.analog_matrices().items():
                if w.numel() < 2:
                    continue
                bound = tr.clip_alpha * float(w.std())
                w.clamp_(-bound, bound)
