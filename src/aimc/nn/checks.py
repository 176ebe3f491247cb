"""NaN/Inf checks of the analog forward: one check per batch at the model's input and output, not one per layer.

A check reads a tensor on the host (``bool(...)``): on a GPU that waits for every queued kernel, so a check in
every layer would serialise the forward. NaN and Inf propagate through every analog MVM (DAC, ADC and clipping
keep NaN, an Inf input gives Inf or NaN), so checking the model's input and output is enough to *detect* them.
To *locate* them the batch is run once more with a check at every analog layer's input (the forward generators'
states restored afterwards, so the failed call changes no later result), and the error names the first layer
whose input holds NaN/Inf, as a per-layer check would.

:func:`install` adds the two checks as forward hooks of the model ``aimc.program`` is called on. They are
skipped in ``train()`` mode and inside ``torch.compile`` graphs (``aimc.evaluation.accuracy`` checks a compiled
model's input and output itself).
"""

from __future__ import annotations

import contextvars

import torch
from torch import nn

from aimc.errors import NonFiniteError

__all__ = ["has_non_finite", "check_layer_input", "install"]

_PER_LAYER = contextvars.ContextVar("aimc_per_layer_checks", default=False)


def has_non_finite(x: torch.Tensor) -> bool:
    """``x`` holds a NaN or Inf. A sum is NaN/Inf whenever an element is (cheaper than an elementwise isfinite);
    confirmed elementwise, since huge finite values can also overflow the sum. One host read when finite."""
    return not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all())


def check_layer_input(x: torch.Tensor, name: str) -> None:
    """An analog layer's input check: active only while :func:`_locate` re-runs a batch whose output was not
    finite (no host read in the normal forward)."""
    # is_compiling first: dynamo cannot trace ContextVar.get, and a graph break in every layer undid torch.compile
    if not torch.compiler.is_compiling() and _PER_LAYER.get() and has_non_finite(x):
        raise NonFiniteError(f"layer {name!r}: the input holds NaN/Inf; analog hardware cannot represent it. "
                             "Check the data and the preceding layers.")


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() or obj.is_complex() else []
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _skip(module: nn.Module) -> bool:
    return torch.compiler.is_compiling() or module.training or _PER_LAYER.get()  # is_compiling first: as above


def _input_hook(module: nn.Module, args: tuple) -> None:
    if _skip(module):
        return
    if any(has_non_finite(t) for t in _tensors(args)):
        raise NonFiniteError("the model's input holds NaN/Inf; analog hardware cannot represent it. Check the data "
                             "(e.g. torch.isfinite(x).all()) before the forward pass.")


def _output_hook(module: nn.Module, args: tuple, out: object) -> None:
    if _skip(module):
        return
    if any(has_non_finite(t) for t in _tensors(out)):
        _locate(module, args)


def _locate(module: nn.Module, args: tuple) -> None:
    """Run the batch again with every analog layer checking its input (raises at the first non-finite one)."""
    gens = [m._forward_gen for m in module.modules() if getattr(m, "_forward_gen", None) is not None]
    states = [g.get_state() for g in gens]
    token = _PER_LAYER.set(True)
    try:
        with torch.no_grad():
            module(*args)
    finally:
        _PER_LAYER.reset(token)
        for g, s in zip(gens, states):
            g.set_state(s)
    raise NonFiniteError("the model's output holds NaN/Inf although its input and every analog layer's input are "
                         "finite: a digital layer after the last analog layer produced it (or an MVM overflowed). "
                         "Check those layers.")


def install(model: nn.Module) -> None:
    """Add the input and output checks to ``model`` as forward hooks (once; copies and pickles keep them)."""
    if _input_hook not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_input_hook)
    if _output_hook not in model._forward_hooks.values():
        model.register_forward_hook(_output_hook)
