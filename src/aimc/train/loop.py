"""A minimal, seeded training loop used by the demo (plain PyTorch; analog layers add noise in train mode)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from aimc.inference import model_device
from aimc.nn.convert import analog_layers
from aimc.train.hwa import clip

__all__ = ["fit"]


def fit(model: nn.Module, data: Iterable, *, epochs: int, lr: float = 1e-3, weight_decay: float = 0.0,
        on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train with Adam + cosine learning-rate decay; after each step ``aimc.clip`` if the model is analog.

    Args:
        model: a torch model (plain: floating-point training; converted: hardware-aware training).
        data: iterable of ``(inputs, labels)`` batches, re-iterated each epoch (e.g. a seeded DataLoader).
        epochs: number of passes over ``data``.
        lr: initial learning rate.
        weight_decay: Adam weight decay.
        on_epoch: called with (epoch, mean loss) after each epoch.

    Returns:
        Mean training loss of each epoch.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    is_analog = any(True for _ in analog_layers(model))
    losses = []
    dev = model_device(model)
    model.train()
    for epoch in range(epochs):
        total, n = 0.0, 0
        for x, y in data:
            x, y = x.to(dev), y.to(dev)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if is_analog:
                clip(model)
            total += float(loss.detach()) * len(y)
            n += len(y)
        sched.step()
        losses.append(total / max(n, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    model.eval()
    return losses
