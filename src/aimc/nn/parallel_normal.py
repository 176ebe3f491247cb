"""Gaussian output noise drawn on several cores, with numbers that do not depend on how many.

torch draws ``normal_`` from a CPU ``torch.Generator`` on one core (a Mersenne Twister has no cheap skip-ahead,
so ATen cannot split one stream over threads). The output noise of the analog forward is one normal per output
element, about a quarter of the forward's time at one thread and its largest serial part at two.

:func:`normal_` splits a large tensor into :data:`PARTS` fixed contiguous parts. The first part is drawn from the
layer's generator; the others from generators seeded by draws of that generator (one 62-bit seed each, taken
before any part is drawn). The parts are drawn on ``min(PARTS, lane_count())`` threads (the caller's plus a small
pool; ``normal_`` releases the GIL; :func:`lane_count` is torch's thread count, or the count a model's forward
handed over, ``aimc.nn.threads``). Which numbers land where depends only on the tensor's size and
the generator's state, never on the thread count: the same seed gives the same forward at 1 and at 16 threads.
Tensors below :data:`MIN_SPLIT` elements are drawn in one call from the layer's generator, as ``Tensor.normal_``.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import contextvars

import torch

__all__ = ["normal_", "split", "worker_pool", "lane_count", "PARTS", "MIN_SPLIT"]

PARTS = 4
"""Streams a large noise tensor is split into (fixed: the numbers must not depend on the thread count)."""

MIN_SPLIT = 1 << 16
"""Smallest tensor (elements) that is split: below it one draw costs less than handing parts to other threads."""

HANDED = contextvars.ContextVar("aimc_lanes", default=0)
"""Thread count a model's forward handed over to aimc's lanes (``aimc.nn.threads``); 0 when none."""

_pool: tuple[int, ThreadPoolExecutor] | None = None
_lock = threading.Lock()
_local = threading.local()


def worker_pool() -> ThreadPoolExecutor:
    """The process's threads for work beside the caller's (noise parts here, convolution chunks in
    ``aimc.nn.unfold``): one fewer than the CPUs, at least ``PARTS - 1``; re-created in a forked child, whose copy
    of the pool has no threads."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max(PARTS - 1, (os.cpu_count() or 1) - 1),
                                                     thread_name_prefix="aimc"))
        return _pool[1]


def lane_count() -> int:
    """Threads aimc's parallel parts may use: the thread count a model's forward handed over
    (``aimc.nn.threads``), else torch's."""
    return HANDED.get() or torch.get_num_threads()


def _generators(n: int) -> list[torch.Generator]:
    """``n`` CPU generators of the calling thread, reused between calls (they are re-seeded every time)."""
    gens = getattr(_local, "gens", None)
    if gens is None or len(gens) < n:
        gens = _local.gens = [torch.Generator() for _ in range(n)]
    return gens[:n]


def _bounds(numel: int) -> list[tuple[int, int]]:
    """Part boundaries: equal parts, multiples of 16 elements (ATen draws normals 16 at a time), the last the rest."""
    size = numel // PARTS // 16 * 16
    return [(i * size, (i + 1) * size if i < PARTS - 1 else numel) for i in range(PARTS)]


def split(t: torch.Tensor, generator: torch.Generator, *, own: bool = False
          ) -> tuple[list[torch.Tensor], list[torch.Generator]]:
    """The :data:`PARTS` parts of a contiguous CPU tensor of ≥ :data:`MIN_SPLIT` elements (flat views) and the
    generator of each: ``generator`` itself for the first, the others seeded by one draw of it (made here). ``own``:
    new generators for the others (to be used after this thread's next call), else this thread's reused ones."""
    seeds = torch.randint(2**62, (PARTS - 1,), generator=generator).tolist()
    flat = t.view(-1)
    parts = [flat[s:e] for s, e in _bounds(flat.numel())]
    others = [torch.Generator() for _ in seeds] if own else _generators(PARTS - 1)
    return parts, [generator] + [g.manual_seed(s) for g, s in zip(others, seeds)]


def normal_(t: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """In place: ``t`` filled with N(0, std²) draws; split into :data:`PARTS` streams on several cores when large.

    Args:
        t: tensor to fill; split only when contiguous on the CPU with ≥ :data:`MIN_SPLIT` elements.
        std: standard deviation (output units).
        generator: the layer's noise generator (``None``: torch's default generator, never split).

    Returns:
        ``t``.
    """
    if generator is None or t.numel() < MIN_SPLIT or t.device.type != "cpu" or not t.is_contiguous():
        return t.normal_(0.0, std, generator=generator)
    parts, gens = split(t, generator)
    lanes = min(PARTS, lane_count())
    if lanes == 1:
        for part, g in zip(parts, gens):
            part.normal_(0.0, std, generator=g)
        return t

    inference = torch.is_inference_mode_enabled()  # thread-local: the pool's threads take the caller's mode

    def draw(lane: int) -> None:
        with torch.inference_mode(inference):
            for part, g in zip(parts[lane::lanes], gens[lane::lanes]):
                part.normal_(0.0, std, generator=g)

    pool = worker_pool()
    futures: list[Future] = [pool.submit(draw, lane) for lane in range(1, lanes)]
    try:
        draw(0)
    finally:
        for f in futures:
            f.result()
    return t
