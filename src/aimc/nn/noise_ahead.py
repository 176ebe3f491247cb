"""The next convolution's output noise drawn ahead, on the worker thread that the digital layers leave idle.

While torch's threads are handed over to aimc's lanes (:mod:`aimc.nn.threads`), the digital layers between two
analog convolutions (batch norm, ReLU, residual additions) run on the caller's thread and the second core waits.
A layer's output noise depends only on its generator's state and the output's shape, not on its input, so it can
be drawn before the layer runs. Each forward records the order in which the ungrouped convolutions
(:func:`aimc.nn.unfold.batched_forward`) ran and their noise shapes; in the next forward of the same model, as soon
as a convolution's chunks are done, a worker thread starts on the noise that the next one drew last time, and that
layer, when it runs, helps with the parts not started yet (:func:`take`).

The numbers are those of :func:`aimc.nn.parallel_normal.normal_` on each tensor in turn: the same seeds, parts and
generators, whoever draws a part. A draw the forward does not use as planned (another layer, another shape, or none:
the model's control flow changed) is finished and the layer's generator put back to its state before it
(:meth:`_Draw.discard`), so the layer then draws exactly as without it.
"""

from __future__ import annotations

import collections
import contextvars
import threading
import weakref
from collections.abc import Callable

import torch
from torch import nn

from aimc.nn.parallel_normal import MIN_SPLIT, lane_count, split, worker_pool

__all__ = ["start", "finish", "take", "done"]

_PLAN: contextvars.ContextVar[_Plan | None] = contextvars.ContextVar("aimc_noise_plan", default=None)
_ORDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> [(layer, noise shapes, std, dtype)] of its last forward, in call order."""


class _Draw:
    """``normal_`` of new tensors of the given shapes from ``generator``, one after the other, started on a worker
    thread: it draws each tensor's seeds and first part (the generator's own stream, in order), then the other parts
    from the front while :meth:`wait` takes them from the back."""

    def __init__(self, shapes: list[tuple[int, ...]], std: float, generator: torch.Generator,
                 dtype: torch.dtype) -> None:
        self.key = (tuple(shapes), std, dtype)
        self.generator = generator
        self._state = generator.get_state()
        self._inference = torch.is_inference_mode_enabled()
        self.tensors = [torch.empty(s, dtype=dtype) for s in shapes]
        self._cond = threading.Condition()
        self._ready: collections.deque[Callable[[], None]] = collections.deque()
        self._left = 0  # parts handed out or waiting, not finished
        self._chain_done = False
        self._failed = False
        self._future = worker_pool().submit(self._work)

    def _run(self, task: Callable[[], None]) -> None:
        try:
            with torch.inference_mode(self._inference):
                task()
        finally:
            with self._cond:
                self._left -= 1
                self._cond.notify_all()

    def _work(self) -> None:
        std = self.key[1]
        try:
            with torch.inference_mode(self._inference):
                for t in self.tensors:
                    if t.numel() < MIN_SPLIT:
                        t.normal_(0.0, std, generator=self.generator)
                        continue
                    parts, gens = split(t, self.generator, own=True)
                    parts[0].normal_(0.0, std, generator=gens[0])
                    with self._cond:
                        self._ready.extend(lambda p=p, g=g: p.normal_(0.0, std, generator=g)
                                           for p, g in zip(parts[1:], gens[1:]))
                        self._left += len(parts) - 1
                        self._cond.notify_all()
        except BaseException:
            with self._cond:
                self._failed = True
            raise
        finally:
            with self._cond:
                self._chain_done = True
                self._cond.notify_all()
        while True:
            with self._cond:
                if not self._ready:
                    return
                task = self._ready.popleft()
            self._run(task)

    def wait(self) -> list[torch.Tensor]:
        """The drawn tensors, once every part is drawn (this thread drawing the parts not started)."""
        while True:
            with self._cond:
                while not self._ready and not (self._chain_done and self._left == 0) and not self._failed:
                    self._cond.wait()
                if self._failed or not self._ready:
                    break
                task = self._ready.pop()
            self._run(task)
        self._future.result()  # re-raises the worker's error
        return self.tensors

    def discard(self) -> None:
        """Finish the draw and put the generator back to its state before it."""
        try:
            self.wait()
        finally:
            self.generator.set_state(self._state)


class _Plan:
    """One forward: the order recorded in the previous forward, the order so far, the draw under way."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.prev = _ORDERS.get(model, [])
        self.now: list[tuple] = []
        self.pending: tuple[nn.Module, _Draw] | None = None

    def submit(self, i: int) -> None:
        """Start the draw of the ``i``-th recorded layer (when it has noise and nothing else is under way)."""
        if self.pending is not None or i >= len(self.prev):
            return
        layer, shapes, std, dtype = self.prev[i]
        gen = getattr(layer.analog, "_forward_gen", None)
        if std > 0 and gen is not None and gen.device.type == "cpu":
            self.pending = (layer, _Draw(shapes, std, gen, dtype))


def start(model: nn.Module) -> contextvars.Token | None:
    """A forward of ``model`` begins (threads handed over): start the first recorded layer's draw."""
    if lane_count() < 2:
        return None
    plan = _Plan(model)
    plan.submit(0)
    return _PLAN.set(plan)


def finish(token: contextvars.Token | None) -> None:
    """The forward ended: an unused draw is discarded, the order recorded for the next forward."""
    if token is None:
        return
    plan = _PLAN.get()
    _PLAN.reset(token)
    if plan is None:
        return
    pending, plan.pending = plan.pending, None
    _ORDERS[plan.model] = plan.now
    if pending is not None:
        pending[1].discard()


def take(layer: nn.Module, shapes: list[tuple[int, ...]], std: float, generator: torch.Generator | None,
         dtype: torch.dtype) -> list[torch.Tensor] | None:
    """The noise tensors drawn ahead for ``layer`` with these shapes, or ``None`` (then draw them as usual); a draw
    under way for anything else is discarded first."""
    plan = _PLAN.get()
    if plan is None or plan.pending is None:
        return None
    (ahead, draw), plan.pending = plan.pending, None
    if ahead is layer and draw.generator is generator and draw.key == (tuple(shapes), std, dtype):
        return draw.wait()
    draw.discard()
    return None


def done(layer: nn.Module, shapes: list[tuple[int, ...]], std: float, dtype: torch.dtype) -> None:
    """``layer``'s products are done: record it, and start the next recorded layer's draw if the forward follows
    the recorded order so far."""
    plan = _PLAN.get()
    if plan is None:
        return
    i = len(plan.now)
    plan.now.append((layer, list(shapes), std, dtype))
    if i < len(plan.prev) and plan.prev[i][0] is layer:
        plan.submit(i + 1)
