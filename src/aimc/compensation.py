"""Compensation of drift: batch-norm statistics re-estimation on the drifted analog model (AdaBS).

Global drift compensation (GDC) is computed per tile in ``AnalogMatrix.at_time`` (reference B.7). Here: Joshi et
al. 2020's BN re-estimation: push unlabeled calibration images through the *drifted* analog network and recompute
every BN layer's running mean and variance, so the digital BN absorbs the drift-induced shift of each channel.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from aimc.errors import DataError, StateError
from aimc.inference import model_device

__all__ = ["recalibrate_bn"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def recalibrate_bn(model: nn.Module, data: Iterable, n_images: int | None = None) -> int:
    """Re-estimate the running statistics of every BatchNorm layer on the model as it is now (drifted).

    Analog layers stay in eval mode (drifted weights), BN layers use cumulative averaging over all calibration
    images (``momentum=None``); labels, if present, are ignored. In place.

    Args:
        model: a (converted, programmed, ``at_time``-ed) model with BatchNorm layers.
        data: iterable of batches: tensors or ``(inputs, labels)`` tuples.
        n_images: stop after this many images (Joshi et al. use 2,600 for CIFAR-10); ``None`` = all of ``data``.

    Returns:
        The number of images used.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        raise StateError("recalibrate_bn: the model has no BatchNorm layer with running statistics; "
                         "use compensation 'gdc' instead of 'gdc+bn'.")
    if n_images is not None and (not isinstance(n_images, int) or n_images < 1):
        raise DataError(f"n_images={n_images!r} must be a positive integer (or None for all of the data).")
    was_training = model.training
    saved = [(m, m.momentum) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    used = 0
    dev = model_device(model)
    try:
        with torch.no_grad():
            for batch in data:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if n_images is not None:
                    x = x[: n_images - used]
                if len(x) == 0:
                    break
                model(x.to(dev))
                used += len(x)
                if n_images is not None and used >= n_images:
                    break
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was_training)
    if used == 0:
        raise DataError("recalibrate_bn got no calibration images; pass a non-empty iterable of batches.")
    return used
