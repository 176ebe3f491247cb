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
from aimc.metrics import batch_size, float_dtype, model_inputs, move_batch

__all__ = ["recalibrate_bn"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def recalibrate_bn(model: nn.Module, data: Iterable, n_images: int | None = None) -> int:
    """Re-estimate the running statistics of every BatchNorm layer on the model as it is now (drifted).

    Analog layers stay in eval mode (drifted weights), BN layers use cumulative averaging over all calibration
    samples (``momentum=None``); labels, if present, are ignored. In place when it succeeds; if it fails or is
    interrupted (an error, Ctrl-C), every BN layer is left with the statistics it had before.

    Args:
        model: a (converted, programmed, ``at_time``-ed) model with BatchNorm layers.
        data: iterable of batches, the same kinds :func:`aimc.evaluate` takes: input tensors, ``(inputs, labels)``
            tuples, or dicts (passed to the model as keyword arguments without ``"labels"``). Floating-point
            inputs are cast to the model's dtype.
        n_images: stop after this many samples (Joshi et al. use 2,600 CIFAR-10 images); ``None`` = all of
            ``data``.

    Returns:
        The number of samples used.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        raise StateError("recalibrate_bn: the model has no BatchNorm layer with running statistics; "
                         "use compensation 'gdc' instead of 'gdc+bn'.")
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1):
        raise DataError(f"n_images={n_images!r} must be a positive integer (or None for all of the data).")
    modes = [(m, m.training) for m in model.modules()]
    saved = [(m, m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    used = 0
    dev, dtype = model_device(model), float_dtype(model)
    ok = False
    try:
        with torch.no_grad():
            for batch in data:
                batch = move_batch(batch, dev)
                n = None if n_images is None else n_images - used
                args, kwargs = model_inputs(batch, dtype, n=n)
                size = batch_size(args, kwargs)
                if size == 0:
                    break
                model(*args, **kwargs)
                used += size
                if n_images is not None and used >= n_images:
                    break
        if used == 0:
            raise DataError("recalibrate_bn got no calibration images; pass a non-empty iterable of batches.")
        ok = True
    finally:
        for m, mom, state in saved:
            m.momentum = mom
            if not ok:
                m.load_state_dict(state)
        for m, training in modes:
            m.training = training
    return used
