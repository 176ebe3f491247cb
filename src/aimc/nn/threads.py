"""Both cores in a model's forward: torch's threads handed over to aimc's worker lanes while the model runs.

aimc runs the parallel parts of the analog forward on its own threads, one torch thread each ("lanes"): the output
noise in fixed streams (:mod:`aimc.nn.parallel_normal`) and an ungrouped convolution's chunks
(:mod:`aimc.nn.unfold`). torch's own OpenMP threads busy-wait after every parallel region before they sleep (4–10 ms
measured here with torch's bundled libgomp; ``OMP_WAIT_POLICY=PASSIVE`` turns it off). With two cores, the thread
left spinning by a digital op (batch norm, ReLU, the convolution's own whole-batch steps) took one core from the
lanes of the next analog step, and the analog forward at 2 threads was little faster than at 1.

So for the forward of a model that has such layers (an analog ``Conv1d``/``Conv2d`` with ``groups=1`` on the matrix
path with dynamic input ranges, in ``eval()`` mode, CPU input) and no grouped one on the matrix path,
:func:`install`'s hooks hand torch's threads over: torch runs on one thread
(nothing left spinning) and :func:`lane_count` gives the caller's thread count to aimc's lanes; the thread count
is restored when the forward returns or raises. The digital layers between them then run on one core, while a
worker thread draws the next convolution's output noise (:mod:`aimc.nn.noise_ahead`). Which numbers a forward draws
depends on none of this, so the results are the same at any thread count. Calling a layer on its own (not through
the model) leaves torch's threads as they are; so does a model with grouped convolutions on the matrix path.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from aimc.nn import noise_ahead
from aimc.nn.parallel_normal import HANDED, lane_count

__all__ = ["lane_count", "torch_threads", "install"]

_stack = threading.local()


@contextmanager
def torch_threads() -> Iterator[None]:
    """Within the block torch runs on the thread count handed over to the lanes (for a step that parallelises
    through torch's own threads, such as a grouped convolution's chunks); nothing changes when none was."""
    n = HANDED.get()
    if not n or torch.get_num_threads() == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(1)


_voters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> its layers that have ``aimc_uses_lanes`` (listed at the first forward after :func:`install`: walking
SmolLM2's 607 modules took 1.2 ms, every forward)."""


def _uses_lanes(model: nn.Module) -> bool:
    """``model`` has a layer whose forward runs on aimc's lanes and none that runs on torch's threads (their
    ``aimc_uses_lanes()`` says ``True`` / ``False``, asked at every forward: the answer depends on the layer's
    mode). A model with grouped convolutions keeps torch's threads: handing them over and back at every grouped
    layer measured slower (MobileNetV3-small and EfficientNet-B0 shapes, ``benchmarks/bench_grouped.py``). The
    layers are listed once per :func:`install` (``aimc.program``); a layer added to the model after that is not
    asked until the next ``program``, which only changes who runs on how many threads, never a number."""
    voters = _voters.get(model)
    if voters is None:
        voters = _voters[model] = tuple(m for m in model.modules() if getattr(m, "aimc_uses_lanes", None) is not None)
    votes = {m.aimc_uses_lanes() for m in voters}
    return True in votes and False not in votes


def _on_cpu(args: tuple) -> bool:
    return any(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in args)


def _hand_over(module: nn.Module, args: tuple) -> None:
    if torch.compiler.is_compiling():  # a compiled graph: nothing recorded (_give_back returns alike)
        return
    stack = getattr(_stack, "items", None)
    if stack is None:
        stack = _stack.items = []
    n = torch.get_num_threads()
    if n == 1 or HANDED.get() or not _on_cpu(args) or not _uses_lanes(module):
        stack.append(None)
        return
    stack.append((HANDED.set(n), n, noise_ahead.start(module)))
    torch.set_num_threads(1)


def _give_back(module: nn.Module, args: tuple, out: object) -> None:
    if torch.compiler.is_compiling():
        return
    stack = getattr(_stack, "items", None)
    item = stack.pop() if stack else None
    if item is not None:
        token, n, plan = item
        try:
            noise_ahead.finish(plan)
        finally:
            HANDED.reset(token)
            torch.set_num_threads(n)


def install(model: nn.Module) -> None:
    """Add the hand-over hooks to ``model`` (once; first among its hooks, the restoring one called even when the
    forward raises); its layers are listed again at the next forward."""
    _voters.pop(model, None)
    if _hand_over not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_hand_over, prepend=True)
    if _give_back not in model._forward_hooks.values():
        model.register_forward_hook(_give_back, prepend=True, always_call=True)
