"""Seeds derived from (user seed, layer name, purpose, time): stable across processes and platforms."""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(*parts: int | float | str) -> int:
    """A 63-bit seed from user seed, layer name, purpose and time, stable across processes and platforms."""
    ints: list[int] = []
    for p in parts:
        if isinstance(p, str):
            ints.append(zlib.crc32(p.encode()))
        elif isinstance(p, float):
            ints.append(int.from_bytes(struct.pack("<d", p), "little"))
        else:
            ints.append(int(p))
    a, b = np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)
