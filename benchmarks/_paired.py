"""Paired timing shared by the benchmarks: the median of analog/plain ratios, the two runs alternating in order."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def paired_ratio(plain: Callable[[], object], analog: Callable[[], object], n: int, *, warmup: int = 1) -> float:
    """Median over ``n`` pairs of ``analog()`` time / ``plain()`` time; each pair alternates which runs first (so a
    cache or frequency effect of running second does not favour one side), after ``warmup`` untimed pairs."""
    def once(f: Callable[[], object]) -> float:
        t = time.perf_counter()
        f()
        return time.perf_counter() - t

    for _ in range(warmup):
        once(plain), once(analog)
    ratios = []
    for i in range(n):
        if i % 2:
            a, p = once(analog), once(plain)
        else:
            p, a = once(plain), once(analog)
        ratios.append(a / p)
    return statistics.median(ratios)
