"""Counter-based random numbers from torch integer operations (Threefry-2x32-20), the same on CPU and CUDA.

A counter-based generator is a keyed bijection: ``threefry2x32(counter, key)`` maps a 64-bit counter (two 32-bit
words) and a 64-bit key to 64 random bits. Any element's random numbers can therefore be computed on their own,
from (seed, draw, element index) alone, with no stored state: a tile of devices can be regenerated without the rest
of the matrix, and the same seed gives the same numbers on any device torch runs on (only integer add, rotate and
xor, then one float64 transform).

Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; Random123's
known-answer vectors are checked in ``tests/test_rng.py``). The 32-bit words are held in int32 tensors.

Public pieces:
    threefry2x32: the raw generator on tensors of counters.
    uniform: floats in (0, 1) from (key, draw, element indices).
    normal: standard normals (Box–Muller on two 32-bit uniforms).
    CounterStream: a noise source with ``torch.Generator``'s role in the device models (``aimc.devices``): each
        ``normal`` call is a new draw; elements are numbered by their flat index in the full tensor, so a part of
        it (``index=``) gets exactly the numbers it gets inside the whole.
    standard_normal: ``torch.randn`` for a ``torch.Generator``, ``CounterStream.normal`` for a counter stream (the
        one call the device models make, so each equation has one implementation for both).
"""

from __future__ import annotations

import math

import torch

__all__ = ["threefry2x32", "uniform", "normal", "CounterStream", "standard_normal", "split_key"]

_MASK = 0xFFFFFFFF
_ROT = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA


def split_key(seed: int) -> tuple[int, int]:
    """A 64-bit seed (Python int, any sign) as the two 32-bit key words (low, high)."""
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    return s & _MASK, s >> 32


def _s32(v: int) -> int:
    """A 32-bit word as the signed int32 value with the same bits."""
    v &= _MASK
    return v - (1 << 32) if v >= 1 << 31 else v


def _to_i32(x: torch.Tensor) -> torch.Tensor:
    """int64 tensor of 32-bit words in [0, 2³²) to int32 with the same bits."""
    x = x.to(torch.int64) & _MASK
    return torch.where(x >= 1 << 31, x - (1 << 32), x).to(torch.int32)


def threefry2x32(c0: torch.Tensor, c1: torch.Tensor | int, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32-20 of the counters ``(c0, c1)`` under ``key``.

    The words are computed in int32 tensors (two's-complement wrap-around is addition modulo 2³², and torch shifts
    signed integers as their unsigned bits to the left; the right shift is arithmetic, so its sign bits are masked).

    Args:
        c0, c1: int64 tensors (or an int for ``c1``) of 32-bit counter words, values in [0, 2³²); broadcast.
        key: two 32-bit key words.

    Returns:
        Two int64 tensors of 32-bit outputs, values in [0, 2³²).
    """
    k0, k1 = int(key[0]) & _MASK, int(key[1]) & _MASK
    ks = (k0, k1, _PARITY ^ k0 ^ k1)
    c1 = torch.as_tensor(c1, dtype=torch.int64, device=c0.device)
    a, b = torch.broadcast_tensors(_to_i32(c0), _to_i32(c1))
    x0 = a.add(_s32(ks[0]))
    x1 = b.add(_s32(ks[1]))
    for i in range(20):
        r = _ROT[i % 8]
        x0.add_(x1)
        x1 = (x1 << r).bitwise_or_((x1 >> (32 - r)).bitwise_and_((1 << r) - 1)).bitwise_xor_(x0)
        if i % 4 == 3:
            s = (i + 1) // 4
            x0.add_(_s32(ks[s % 3]))
            x1.add_(_s32(ks[(s + 1) % 3] + s))
    return x0.to(torch.int64) & _MASK, x1.to(torch.int64) & _MASK


def _index(n: int | None, index: torch.Tensor | None, device: torch.device | str | None) -> torch.Tensor:
    if index is not None:
        return index.to(device=device, dtype=torch.int64) if device is not None else index.to(torch.int64)
    return torch.arange(int(n), dtype=torch.int64, device=device)


_CHUNK = 1 << 16  # elements per pass: the ~20 int32 temporaries of the rounds stay in the CPU cache (2.5x faster)


def _transform(key: int, draw: int, idx: torch.Tensor, f) -> torch.Tensor:  # noqa: ANN001
    """``f(x0, x1)`` of the generator's words for each element of ``idx``, computed in cache-sized chunks."""
    if draw < 0 or draw >= 1 << 16:
        raise ValueError(f"draw={draw} must lie in [0, 65536)")
    k = split_key(key)
    out = torch.empty(idx.shape, dtype=torch.float64, device=idx.device)
    step = _CHUNK if idx.device.type == "cpu" else 1 << 24  # GPUs: few large kernels
    for s in range(0, idx.numel(), step):
        i = idx[s:s + step]
        # counter: (element index low word, draw · 2¹⁶ + element index high word): distinct for 2⁴⁸ elements
        out[s:s + step] = f(*threefry2x32(i & _MASK, (i >> 32) + (draw << 16), k))
    return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x.to(torch.float64) + 0.5) * 2.0**-32


def uniform(key: int, draw: int, n: int | None = None, *, index: torch.Tensor | None = None,
            device: torch.device | str | None = None) -> torch.Tensor:
    """float64 uniforms in (0, 1) (the 32-bit output + ½, over 2³²) for elements ``arange(n)`` or ``index``."""
    return _transform(key, draw, _index(n, index, device), lambda x0, x1: _unit(x0))


def _box_muller(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(-2.0 * torch.log(_unit(x0))) * torch.cos((2.0 * math.pi) * _unit(x1))


def normal(key: int, draw: int, n: int | None = None, *, index: torch.Tensor | None = None,
           device: torch.device | str | None = None) -> torch.Tensor:
    """float64 standard normals for elements ``arange(n)`` or ``index``: Box–Muller (cosine branch) on the two
    32-bit outputs of one counter, each + ½ over 2³² (|z| ≤ 6.8 by construction, P(|z| > 6.8) ≈ 1e-11)."""
    return _transform(key, draw, _index(n, index, device), _box_muller)


class CounterStream:
    """A counter-based noise source for the device models, in place of a ``torch.Generator``.

    The ``k``-th ``normal`` call draws ``normal(key, first_draw + k, ...)``: one standard normal per element, the
    element numbered by its flat index in the full tensor. With ``index`` (int64, the flat indices of the elements
    asked for, in order) the caller gets the same numbers those elements get in a call over the whole tensor, so a
    tile is regenerated without the rest.

    Args:
        key: 64-bit key (e.g. ``aimc.nn.tile.derive_seed(seed, layer, purpose)``).
        index: flat element indices this stream draws for; None = every element of the requested shape.
        first_draw: draw number of the first call.
    """

    def __init__(self, key: int, *, index: torch.Tensor | None = None, first_draw: int = 0):
        self.key = int(key)
        self.index = index
        self.draw = int(first_draw)

    def normal(self, shape: torch.Size | tuple[int, ...], *, device: torch.device | str | None,
               dtype: torch.dtype) -> torch.Tensor:
        shape = torch.Size(shape)
        if self.index is not None and self.index.numel() != shape.numel():
            raise ValueError(f"CounterStream index has {self.index.numel()} elements, the draw asks for "
                             f"{shape.numel()} ({tuple(shape)})")
        z = normal(self.key, self.draw, shape.numel(), index=self.index, device=device)
        self.draw += 1
        return z.to(dtype).reshape(shape)


def standard_normal(generator: torch.Generator | CounterStream, shape: torch.Size | tuple[int, ...], *,
                    device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
    """Standard normals of ``shape`` from ``generator``: ``torch.randn`` or a :class:`CounterStream`."""
    if isinstance(generator, CounterStream):
        return generator.normal(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)
