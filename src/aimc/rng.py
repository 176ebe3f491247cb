"""Counter-based random numbers from torch integer operations (Threefry-2x32-20), the same on CPU and CUDA.

A counter-based generator is a keyed bijection: ``threefry2x32(counter, key)`` maps a 64-bit counter (two 32-bit
words) and a 64-bit key to 64 random bits. Any element's random numbers can therefore be computed on their own,
from (seed, draw, element index) alone, with no stored state: a tile of devices can be regenerated without the rest
of the matrix, and the same seed gives the same numbers on any device torch runs on (only integer add, rotate and
xor, then a Box–Muller transform).

Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; Random123's
known-answer vectors are checked in ``tests/test_rng.py``). The 32-bit words are held in int32 tensors; on CPU at
one torch thread the rounds run on numpy uint32 arrays instead (the same arithmetic, faster there; tested equal).

Public pieces:
    threefry2x32: the raw generator on tensors of counters.
    uniform: floats in (0, 1) from (key, draw, element indices).
    normal: standard normals (Box–Muller on the two 32-bit words of a counter; one counter gives two normals,
        element e and element e + ⌈size/2⌉ of the same draw).
    CounterStream: a noise source with ``torch.Generator``'s role in the device models (``aimc.devices``): each
        ``normal`` call is a new draw; elements are numbered by their flat index in the full tensor, so a part of
        it (``index=``) gets exactly the numbers it gets inside the whole.
    standard_normal: ``torch.randn`` for a ``torch.Generator``, ``CounterStream.normal`` for a counter stream (the
        one call the device models make, so each equation has one implementation for both).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = ["threefry2x32", "uniform", "normal", "CounterStream", "standard_normal", "split_key",
           "use_compiled_rounds"]

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

    Args:
        c0, c1: int64 tensors (or an int for ``c1``) of 32-bit counter words, values in [0, 2³²); broadcast.
        key: two 32-bit key words.

    Returns:
        Two int64 tensors of 32-bit outputs, values in [0, 2³²).
    """
    c1 = torch.as_tensor(c1, dtype=torch.int64, device=c0.device)
    a, b = torch.broadcast_tensors(_to_i32(c0), _to_i32(c1))
    x0, x1 = _rounds(a.clone(), b.clone(), (int(key[0]), int(key[1])))  # a tuple: the constants are cached by key
    return x0.to(torch.int64) & _MASK, x1.to(torch.int64) & _MASK


def _rounds(x0: torch.Tensor, x1: torch.Tensor, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 rounds on int32 words ``x0``, ``x1`` (same shape; overwritten and returned).

    int32 two's-complement wrap-around is addition modulo 2³², and torch shifts signed integers as their unsigned
    bits to the left; the right shift is arithmetic, so its sign bits are masked. One scratch tensor, every other
    operation in place (1.5x faster than allocating a temporary per operation). The constants are int32 0-d tensors
    (:func:`_constants`): with a Python int, torch's integer kernels take a slower scalar path (1.2-2.8x per
    operation on 2¹⁶ words, CPU)."""
    inject, rot = _constants(key, x0.device)
    x0.add_(inject[0][0])
    x1.add_(inject[0][1])
    t = torch.empty_like(x1)
    for i in range(20):
        left, right, mask = rot[i % 8]
        x0.add_(x1)
        torch.bitwise_right_shift(x1, right, out=t).bitwise_and_(mask)
        x1.bitwise_left_shift_(left).bitwise_or_(t).bitwise_xor_(x0)
        if i % 4 == 3:
            k0, k1 = inject[(i + 1) // 4]
            x0.add_(k0)
            x1.add_(k1)
    return x0, x1


@functools.lru_cache(maxsize=64)
def _key_schedule(key: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """The six key injections of the rounds (s = 0..5): words ks[s % 3] and ks[(s + 1) % 3] + s modulo 2³², with
    ks = (k0, k1, parity ^ k0 ^ k1); the one schedule the torch, numpy and compiled rounds take their constants from."""
    k0, k1 = int(key[0]) & _MASK, int(key[1]) & _MASK
    ks = (k0, k1, _PARITY ^ k0 ^ k1)
    return tuple((ks[s % 3], (ks[(s + 1) % 3] + s) & _MASK) for s in range(6))


@functools.lru_cache(maxsize=64)
def _constants(key: tuple[int, int], device: torch.device) -> tuple[tuple, tuple]:
    """The rounds' constants as int32 0-d tensors on ``device``: the key injections (:func:`_key_schedule`) and per
    rotation r the shifts r, 32 − r and the mask 2ʳ − 1 (cached: a draw asks once per pass of counters)."""
    def c(v: int) -> torch.Tensor:
        return torch.tensor(_s32(v), dtype=torch.int32, device=device)

    inject = tuple((c(a), c(b)) for a, b in _key_schedule(key))
    rot = tuple((c(r), c(32 - r), c((1 << r) - 1)) for r in _ROT)
    return inject, rot


def _index(n: int | None, index: torch.Tensor | None, device: torch.device | str | None) -> torch.Tensor:
    if index is not None:
        return index.to(device=device, dtype=torch.int64) if device is not None else index.to(torch.int64)
    return torch.arange(int(n), dtype=torch.int64, device=device)


# counters per pass on CPU and torch thread: the rounds' int32 words stay in the cores' caches (2.5x faster than one
# pass over everything), and each elementwise operation gives every thread 2^16 words (at 2 threads, 2^17 counters
# a pass were 1.4x faster than 2^16: fewer, larger parallel regions); the numbers do not depend on it
_CHUNK = 1 << 16


def _check_draw(draw: int) -> None:
    if draw < 0 or draw >= 1 << 16:
        raise ValueError(f"draw={draw} must lie in [0, 65536)")


def _words(key: tuple[int, int], draw: int, c: torch.Tensor, *, low: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's two int32 words for int64 counters ``c`` (element numbers < 2⁴⁸) of draw ``draw``:
    counter = (c low word, draw · 2¹⁶ + c high word). ``low``: the caller knows every c < 2³² (high word 0).

    On CPU at one torch thread the rounds run as numpy uint32 operations (:func:`_rounds_numpy`, the same integer
    arithmetic, so the same words: tested): 1.25x faster here, as numpy's logical right shift needs no mask and its
    operations cost less to call; with more threads torch's own parallel operations are faster."""
    if _compiled is not None:
        hi = (torch.full(c.shape, _s32(draw << 16), dtype=torch.int32, device=c.device) if low
              else ((c >> 32) + (draw << 16)).to(torch.int32))
        return _compiled(c.to(torch.int32), hi, _injections(key, c.device))
    if c.device.type == "cpu" and torch.get_num_threads() == 1:
        c32 = c.numpy().astype(np.uint32)  # the low 32 bits (numpy's integer casts wrap)
        hi = (np.full(c32.shape, draw << 16, dtype=np.uint32) if low
              else ((c >> 32) + (draw << 16)).numpy().astype(np.uint32))
        x0, x1 = _rounds_numpy(c32, hi, key)
        return torch.from_numpy(x0.view(np.int32)), torch.from_numpy(x1.view(np.int32))
    # int64 -> int32 keeps the low 32 bits (two's complement; tests/test_rng.py checks this torch behaviour)
    if low:
        return _rounds(c.to(torch.int32), torch.full(c.shape, _s32(draw << 16), dtype=torch.int32, device=c.device),
                       key)
    return _rounds(c.to(torch.int32), ((c >> 32) + (draw << 16)).to(torch.int32), key)


_NP_ROT = tuple((np.uint32(r), np.uint32(32 - r)) for r in _ROT)


@functools.lru_cache(maxsize=64)
def _numpy_injections(key: tuple[int, int]) -> tuple[tuple[np.uint32, np.uint32], ...]:
    return tuple((np.uint32(a), np.uint32(b)) for a, b in _key_schedule(key))


def _rounds_numpy(x0: np.ndarray, x1: np.ndarray, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_rounds` on numpy uint32 words ``x0``, ``x1`` (same shape; overwritten and returned): additions wrap
    modulo 2³² and the right shift is logical, as Threefry's are."""
    inject, rot = _numpy_injections(key), _NP_ROT
    np.add(x0, inject[0][0], out=x0)
    np.add(x1, inject[0][1], out=x1)
    t = np.empty_like(x1)
    for i in range(20):
        left, right = rot[i % 8]
        np.add(x0, x1, out=x0)
        np.right_shift(x1, right, out=t)
        np.left_shift(x1, left, out=x1)
        np.bitwise_or(x1, t, out=x1)
        np.bitwise_xor(x1, x0, out=x1)
        if i % 4 == 3:
            a, b = inject[(i + 1) // 4]
            np.add(x0, a, out=x0)
            np.add(x1, b, out=x1)
    return x0, x1


_compiled = None  # the compiled rounds, when switched on (use_compiled_rounds)


def _rounds_functional(x0: torch.Tensor, x1: torch.Tensor, inject: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_rounds` written without in-place operations, for ``torch.compile`` to fuse into one loop; the key
    injections are an int32 ``(6, 2)`` tensor (:func:`_injections`), so a new key needs no new compilation."""
    x0 = x0 + inject[0, 0]
    x1 = x1 + inject[0, 1]
    for i in range(20):
        r = _ROT[i % 8]
        x0 = x0 + x1
        x1 = ((x1 << r) | ((x1 >> (32 - r)) & ((1 << r) - 1))) ^ x0
        if i % 4 == 3:
            x0 = x0 + inject[(i + 1) // 4, 0]
            x1 = x1 + inject[(i + 1) // 4, 1]
    return x0, x1


@functools.lru_cache(maxsize=64)
def _injections(key: tuple[int, int], device: torch.device) -> torch.Tensor:
    """:func:`_key_schedule` as an int32 ``(6, 2)`` tensor on ``device`` (the compiled rounds' input)."""
    return torch.tensor([[_s32(a), _s32(b)] for a, b in _key_schedule(key)], dtype=torch.int32, device=device)


def use_compiled_rounds(on: bool = True) -> None:
    """Opt-in speed-up: run the Threefry rounds as one compiled kernel (``torch.compile``; on CPU it needs a C++
    compiler). Integer arithmetic only, so every word, normal and chip is the same as without it, bit for bit
    (tested). The rounds were 30 % of ``aimc.at_time`` on SmolLM2 at one thread; compiled they cost 2.2 instead of
    9.2 ns per counter here. Switching on compiles at once (23–38 s on this 2-core machine the first time;
    torch keeps a disk cache) and torch compiles again for each new thread count (about 10 s), so it pays off over
    several ``program``/``at_time`` calls.

    Raises:
        RuntimeError: the rounds could not be compiled (the reason, and ``use_compiled_rounds(False)`` to go on).
    """
    global _compiled
    if not on:
        _compiled = None
        return
    fn = torch.compile(_rounds_functional, dynamic=True)
    c = torch.arange(1024, dtype=torch.int32)
    try:
        a, b = fn(c, torch.zeros_like(c), _injections((1, 2), c.device))
    except Exception as e:  # noqa: BLE001 - torch.compile raises many kinds (no compiler, backend errors)
        raise RuntimeError(f"aimc.rng.use_compiled_rounds: torch.compile could not compile the Threefry rounds "
                           f"({type(e).__name__}: {e}); the eager rounds stay in use (needs a C++ compiler on "
                           "CPU, Triton on CUDA).") from e
    e0, e1 = _rounds(c.clone(), torch.zeros_like(c), (1, 2))
    if not (torch.equal(a, e0) and torch.equal(b, e1)):
        raise RuntimeError("aimc.rng.use_compiled_rounds: the compiled rounds differ from the eager ones on this "
                           "machine; the eager rounds stay in use.")
    _compiled = fn


def _step(device: torch.device) -> int:
    return _CHUNK * max(1, torch.get_num_threads()) if device.type == "cpu" else 1 << 24  # GPUs: few large kernels


def _unit(x: torch.Tensor) -> torch.Tensor:
    """float64 uniforms in (0, 1) from int32 words: (x + 2³¹ + ½) / 2³², i.e. the word's unsigned value with its
    top bit flipped, plus ½, over 2³² (a bijection of the 2³² words onto the cell centres)."""
    c = _bm_constants(x.device)
    return x.to(torch.float64).add_(c[0]).mul_(c[1])


def _box_muller(x0: torch.Tensor, x1: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both Box–Muller normals (r·cos θ, r·sin θ), float32, from two int32 words: r = sqrt(−2 ln u) with u from all
    32 bits of ``x0`` in float64 (tails to |z| ≤ 6.66), θ = 2π·(top 24 bits of ``x1`` + ½)/2²⁴ in float32 (exact
    up to the product with 2π). ``out``: two float32 tensors of ``x0``'s shape to write them into.

    On CPU the float64 logarithm and square root are numpy's (in place on the tensor's memory): 2.5x faster than
    torch's vectorised float64 ones here, and the square root is correctly rounded. The radius is rounded to float32
    afterwards, so the libraries' last-bit differences in float64 (0.2 % of logarithms, 1.3 % of roots) change it
    only when they cross a float32 rounding boundary, with probability about 2⁻²⁹ each: none of 2²⁸ normals
    differed from torch's, nor the SmolLM2 chips' weights."""
    u, (_, _, m2, sh, a_theta, m_theta) = _unit(x0), _bm_constants(x0.device)
    if u.device.type == "cpu":
        a = u.numpy()
        np.log(a, out=a)
        u.mul_(m2)
        np.sqrt(a, out=a)
    else:
        u.log_().mul_(m2).sqrt_()
    r = u.to(torch.float32)
    theta = torch.bitwise_right_shift(x1, sh).to(torch.float32).add_(a_theta).mul_(m_theta)
    if out is None:
        return torch.cos(theta).mul_(r), torch.sin(theta).mul_(r)
    return torch.cos(theta, out=out[0]).mul_(r), torch.sin(theta, out=out[1]).mul_(r)


@functools.lru_cache(maxsize=8)
def _bm_constants(device: torch.device) -> tuple[torch.Tensor, ...]:
    """0-d tensors of :func:`_unit`'s and :func:`_box_muller`'s constants (float64: 2³¹ + ½, 2⁻³², −2; int32: 8;
    float32: 2²³ + ½, 2π·2⁻²⁴), the values torch would use for the Python numbers, without its slower scalar path."""
    f64 = [torch.tensor(v, dtype=torch.float64, device=device) for v in (2.0**31 + 0.5, 2.0**-32, -2.0)]
    f32 = [torch.tensor(v, dtype=torch.float32, device=device) for v in (2.0**23 + 0.5, 2.0 * math.pi * 2.0**-24)]
    return (*f64, torch.tensor(8, dtype=torch.int32, device=device), *f32)


def _pairs(idx: torch.Tensor, half: int) -> torch.Tensor | None:
    """The first half of ``idx`` when ``idx`` is two halves, the second the first + ``half`` and the first below
    ``half`` (the two devices of a block of differential pairs: one counter for both), else ``None``."""
    m = idx.numel()
    if m and m % 2 == 0 and torch.equal(idx[m // 2:], idx[:m // 2] + half) and bool(idx[:m // 2].max() < half):
        return idx[:m // 2]
    return None


def uniform(key: int, draw: int, n: int | None = None, *, index: torch.Tensor | None = None,
            device: torch.device | str | None = None) -> torch.Tensor:
    """float64 uniforms in (0, 1) for elements ``arange(n)`` or ``index``: the first word of element e's
    counter, as in :func:`_unit`."""
    _check_draw(draw)
    k = split_key(key)
    idx = _index(n, index, device)
    out = torch.empty(idx.shape, dtype=torch.float64, device=idx.device)
    step = _step(idx.device)
    for s in range(0, idx.numel(), step):
        out[s:s + step] = _unit(_words(k, draw, idx[s:s + step])[0])
    return out


def normal(key: int, draw: int, n: int | None = None, *, index: torch.Tensor | None = None,
           size: int | None = None, device: torch.device | str | None = None,
           _first: torch.Tensor | None | bool = False) -> torch.Tensor:
    """float32 standard normals for the elements ``arange(n)`` of a draw of ``n`` elements, or for the elements
    ``index`` (int64 flat indices) of a draw of ``size`` elements.

    One counter gives two normals (Box–Muller's cosine and sine): with H = ⌈size/2⌉, element e < H is the cosine
    of counter e and element e ≥ H the sine of counter e − H. So a draw of ``size`` elements costs ⌈size/2⌉
    counters, and any subset of it (``index``) gets exactly the numbers it has in the whole. An ``index`` made of
    two halves, the second the first + H (the two devices of a block of differential pairs), computes each
    counter once; any other index computes one counter per element. (``_first``: :func:`_pairs` of ``index``,
    when the caller has it: :class:`CounterStream` analyses its index once for all its draws.)
    """
    _check_draw(draw)
    k = split_key(key)
    if index is None:
        size = int(n)
        half = (size + 1) // 2
        dev = torch.device(device) if device is not None else torch.device("cpu")
        out = torch.empty(2 * half, dtype=torch.float32, device=dev)
        step = _step(dev)
        for s in range(0, half, step):
            e = min(half, s + step)
            _box_muller(*_words(k, draw, torch.arange(s, e, device=dev), low=half <= 1 << 32),
                        out=(out[s:e], out[half + s:half + e]))
        return out[:size]
    if size is None:
        raise ValueError("normal(index=...) needs size=, the number of elements of the whole draw")
    idx = _index(None, index, device)
    half = (int(size) + 1) // 2
    m = idx.numel()
    step = _step(idx.device)
    first = _pairs(idx, half) if _first is False else _first
    if first is not None:
        return _paired(k, draw, first, half)
    out = torch.empty(m, dtype=torch.float32, device=idx.device)
    for s in range(0, m, step):
        i = idx[s:s + step]
        second = i >= half
        cos, sin = _box_muller(*_words(k, draw, torch.where(second, i - half, i)))
        out[s:s + step] = torch.where(second, sin, cos)
    return out


def _paired(k: tuple[int, int], draw: int, first: torch.Tensor, half: int) -> torch.Tensor:
    """The normals of counters ``first`` (int64, each < ``half``): their cosines, then their sines (elements
    ``first`` and ``first`` + ``half`` of the draw)."""
    m = 2 * first.numel()
    out = torch.empty(m, dtype=torch.float32, device=first.device)
    step = _step(first.device)
    for s in range(0, m // 2, step):
        e = min(m // 2, s + step)
        _box_muller(*_words(k, draw, first[s:e], low=half <= 1 << 32), out=(out[s:e], out[m // 2 + s:m // 2 + e]))
    return out


class CounterStream:
    """A counter-based noise source for the device models, in place of a ``torch.Generator``.

    The ``k``-th ``normal`` call draws ``normal(key, first_draw + k, ...)``: one standard normal per element, the
    element numbered by its flat index in the full tensor. With ``index`` (int64, the flat indices of the elements
    asked for, in order) and ``size`` (the number of elements of the full tensor) the caller gets the same numbers
    those elements get in a call over the whole tensor, so a tile is regenerated without the rest.

    Args:
        key: 64-bit key (e.g. ``aimc.nn.tile.derive_seed(seed, layer, purpose)``).
        index: flat element indices this stream draws for; None = every element of the requested shape.
        size: elements of the full tensor ``index`` points into (required with ``index``).
        first_draw: draw number of the first call.
    """

    def __init__(self, key: int, *, index: torch.Tensor | None = None, size: int | None = None,
                 first_draw: int = 0):
        if index is not None and size is None:
            raise ValueError("CounterStream(index=...) needs size=, the number of elements of the full tensor")
        self.key = int(key)
        self.index = index
        self.size = None if size is None else int(size)
        self.draw = int(first_draw)
        self._first: torch.Tensor | None | bool = False  # not analysed yet

    @classmethod
    def pairs(cls, key: int, start: int, stop: int, size: int, *, device: torch.device | str | None = None,
              first_draw: int = 0) -> "CounterStream":
        """A stream over the elements ``start … stop − 1`` and ``H + start … H + stop − 1`` (in that order) of a
        tensor of ``size`` elements, H = ⌈size/2⌉: the two devices of a block of differential pairs, which share
        counters ``start … stop − 1``. The same numbers as ``CounterStream(key, index=..., size=size)`` with that
        index, without building and analysing the index."""
        half = (int(size) + 1) // 2
        if not 0 <= start <= stop <= half:
            raise ValueError(f"CounterStream.pairs: need 0 ≤ start ≤ stop ≤ ⌈size/2⌉ = {half}, got {start}, {stop}")
        s = cls(key, size=size, first_draw=first_draw)
        s._first = torch.arange(int(start), int(stop), device=device)
        return s

    def with_key(self, key: int, *, first_draw: int = 0) -> "CounterStream":
        """A stream of another key over the same elements (``index``, ``size``), sharing this one's analysis of
        the index."""
        s = CounterStream(key, index=self.index, size=self.size, first_draw=first_draw)
        s._first = self._first
        return s

    def normal(self, shape: torch.Size | tuple[int, ...], *, device: torch.device | str | None,
               dtype: torch.dtype) -> torch.Tensor:
        shape = torch.Size(shape)
        pairs = self.index is None and isinstance(self._first, torch.Tensor)  # CounterStream.pairs
        count = 2 * self._first.numel() if pairs else None if self.index is None else self.index.numel()
        if count is not None and count != shape.numel():
            raise ValueError(f"CounterStream index has {count} elements, the draw asks for "
                             f"{shape.numel()} ({tuple(shape)})")
        if pairs:
            _check_draw(self.draw)
            first = self._first if device is None else self._first.to(device)
            z = _paired(split_key(self.key), self.draw, first, (self.size + 1) // 2)
        elif self.index is None:
            z = normal(self.key, self.draw, shape.numel(), device=device)
        else:
            if self._first is False:  # the index's analysis, once for all draws (and for with_key's streams)
                idx = _index(None, self.index, device)
                self._first = _pairs(idx, (self.size + 1) // 2)
            z = normal(self.key, self.draw, index=self.index, size=self.size, device=device, _first=self._first)
        self.draw += 1
        return z.to(dtype).reshape(shape)


def standard_normal(generator: torch.Generator | CounterStream, shape: torch.Size | tuple[int, ...], *,
                    device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
    """Standard normals of ``shape`` from ``generator``: ``torch.randn`` or a :class:`CounterStream`."""
    if isinstance(generator, CounterStream):
        return generator.normal(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)
