"""The counter-based generator (aimc.rng): known answers, uniformity, independence, normal moments and tails."""

import math

import pytest
import torch

from aimc import rng

# Random123 kat_vectors, threefry2x32_20: (counter, key) -> output
KAT = [((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
       ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
       ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0))]

N = 200_000


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_threefry_known_answers(counter, key, expected):
    a, b = rng.threefry2x32(torch.tensor([counter[0]]), torch.tensor([counter[1]]), key)
    assert (int(a), int(b)) == expected


def test_int64_to_int32_keeps_the_low_word():
    """The generator feeds counters to its int32 rounds by torch's int64 -> int32 cast, which must wrap."""
    x = torch.tensor([0, 5, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, (1 << 32) + 7, (3 << 40) + (1 << 31) + 9])
    low = x & 0xFFFFFFFF
    assert torch.equal(x.to(torch.int32).to(torch.int64), torch.where(low >= 1 << 31, low - (1 << 32), low))
    assert torch.equal(rng.normal(4, 0, index=x, size=1 << 48),
                       torch.cat([rng.normal(4, 0, index=x[i:i + 1], size=1 << 48) for i in range(len(x))]))


def test_threefry_batched_equals_single():
    c0 = torch.tensor([k[0][0] for k in KAT[:2]])
    c1 = torch.tensor([k[0][1] for k in KAT[:2]])
    a, b = rng.threefry2x32(c0, c1, KAT[0][1])  # both counters under key (0, 0)
    a0, b0 = rng.threefry2x32(c0[1:], c1[1:], KAT[0][1])
    assert (int(a[0]), int(b[0])) == KAT[0][2]
    assert (int(a[1]), int(b[1])) == (int(a0), int(b0))


def test_uniform_is_uniform():
    u = rng.uniform(7, 0, N)
    assert u.dtype == torch.float64 and float(u.min()) > 0 and float(u.max()) < 1
    # chi-square over 100 bins: 99 dof, mean 99, sd 14; 5 sd ~ 1e-6 false alarm
    counts = torch.histc(u, bins=100, min=0, max=1)
    chi2 = float(((counts - N / 100) ** 2 / (N / 100)).sum())
    assert chi2 < 99 + 5 * math.sqrt(2 * 99)
    # Kolmogorov-Smirnov: sqrt(N)·D < 1.95 at 0.1 %
    s, _ = torch.sort(u)
    i = torch.arange(1, N + 1, dtype=torch.float64)
    d = float(torch.maximum(i / N - s, s - (i - 1) / N).max())
    assert math.sqrt(N) * d < 1.95
    # every bit of the 32-bit word is fair: each bit's mean within 5 sd (sd = 0.5/sqrt(N))
    x0, x1 = rng.threefry2x32(torch.arange(N), 0, (7, 0))
    for w in (x0, x1):
        bits = torch.stack([(w >> k) & 1 for k in range(32)]).double().mean(1)
        assert float((bits - 0.5).abs().max()) < 5 * 0.5 / math.sqrt(N)


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_independence_across_keys_draws_and_neighbouring_counters():
    tol = 5 / math.sqrt(N)  # correlation of independent samples has sd 1/sqrt(N)
    base = rng.normal(1, 0, N)
    assert abs(_corr(base, rng.normal(2, 0, N))) < tol  # neighbouring key
    assert abs(_corr(base, rng.normal(1 + (1 << 32), 0, N))) < tol  # key differing in the high word
    assert abs(_corr(base, rng.normal(1, 1, N))) < tol  # next draw
    assert abs(_corr(base[1:], base[:-1])) < tol  # neighbouring counters (lag 1)
    assert abs(_corr(base[64:], base[:-64])) < tol
    u = rng.uniform(1, 0, N)
    assert abs(_corr(u[1:], u[:-1])) < tol
    # the two words of one counter are independent too (Box-Muller needs it)
    x0, x1 = rng.threefry2x32(torch.arange(N), 0, (1, 0))
    assert abs(_corr(x0.double(), x1.double())) < tol
    # and squares are uncorrelated (a dependence that correlation of values misses)
    assert abs(_corr(base[1:] ** 2, base[:-1] ** 2)) < tol * math.sqrt(3)


def test_normal_moments_and_tails():
    z = rng.normal(11, 3, 1_000_000)
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z**3).mean())) < 5 * math.sqrt(15 / n)
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)
    for k in (1.0, 2.0, 3.0, 4.0):
        p = math.erfc(k / math.sqrt(2))  # P(|z| > k)
        obs = float((z.abs() > k).double().mean())
        assert abs(obs - p) < 5 * math.sqrt(p * (1 - p) / n) + 1 / n, (k, obs, p)
    assert float(z.abs().max()) < 6.67  # r = sqrt(-2 ln u) with u >= 2^-33


def test_index_gives_the_same_numbers_as_the_whole():
    whole = rng.normal(5, 2, 1000)
    idx = torch.tensor([999, 3, 500, 0])
    assert torch.equal(rng.normal(5, 2, index=idx, size=1000), whole[idx])
    big = torch.tensor([(1 << 33) + 5])  # elements beyond 2^32 get their own counters
    assert not torch.equal(rng.normal(5, 2, index=big, size=1 << 40), whole[5:6])
    with pytest.raises(ValueError, match="size"):
        rng.normal(5, 2, index=idx)


@pytest.mark.parametrize("size", [10, 11, 1, 2 * 3 * 70_001])
def test_paired_index_equals_the_whole_and_the_general_path(size):
    """A block of differential pairs (two halves, the second = first + H) takes the paired fast path; it must give
    the whole draw's numbers, as the one-counter-per-element path does for the same elements in another order."""
    whole = rng.normal(8, 1, size)
    half = (size + 1) // 2
    lo, hi = size // 7, max(size // 7 + 1, (size // 2) - 1)
    first = torch.arange(lo, min(hi, half))
    paired = torch.cat([first, first + half]) if size % 2 == 0 else torch.cat([first, (first + half)[first + half < size]])
    assert torch.equal(rng.normal(8, 1, index=paired, size=size), whole[paired])
    perm = paired[torch.randperm(paired.numel(), generator=torch.Generator().manual_seed(0))]
    assert torch.equal(rng.normal(8, 1, index=perm, size=size), whole[perm])


def test_the_two_normals_of_one_counter_are_independent():
    """Element e and e + H share a counter (cosine and sine): uncorrelated, also in their squares, and each half is
    standard normal on its own."""
    z = rng.normal(3, 0, 2 * N)
    a, b = z[:N], z[N:]
    tol = 5 / math.sqrt(N)
    assert abs(_corr(a, b)) < tol
    assert abs(_corr(a**2, b**2)) < tol * math.sqrt(3)
    for h in (a, b):
        assert abs(float(h.mean())) < 5 / math.sqrt(N) and abs(float(h.var()) - 1) < 5 * math.sqrt(2 / N)


def test_counter_stream_draws_and_parts():
    s = rng.CounterStream(9)
    a = s.normal((2, 3), device="cpu", dtype=torch.float32)
    b = s.normal((2, 3), device="cpu", dtype=torch.float32)
    assert a.shape == (2, 3) and a.dtype == torch.float32 and not torch.equal(a, b)
    part = rng.CounterStream(9, index=torch.tensor([4, 5]), size=6)
    assert torch.equal(part.normal((2,), device="cpu", dtype=torch.float32), a.flatten()[4:])
    assert torch.equal(part.normal((2,), device="cpu", dtype=torch.float32), b.flatten()[4:])
    with pytest.raises(ValueError):
        part.normal((3,), device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="size"):
        rng.CounterStream(9, index=torch.tensor([4, 5]))
    g = torch.Generator().manual_seed(0)
    assert rng.standard_normal(g, (4,), device="cpu", dtype=torch.float32).shape == (4,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_give_the_same_numbers():
    cpu = rng.normal(123, 4, 100_000)
    gpu = rng.normal(123, 4, 100_000, device="cuda").cpu()
    assert torch.equal(rng.uniform(123, 4, 100_000), rng.uniform(123, 4, 100_000, device="cuda").cpu())
    assert torch.allclose(cpu, gpu, rtol=0, atol=1e-5)  # same bits in; float32 cos/sin may differ in the last ulp


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_numpy_rounds_give_the_known_answers(counter, key, expected):
    """The numpy uint32 rounds (CPU at one torch thread) against Random123's vectors."""
    np = pytest.importorskip("numpy")
    x0, x1 = rng._rounds_numpy(np.array([counter[0]], np.uint32), np.array([counter[1]], np.uint32), key)
    assert (int(x0[0]), int(x1[0])) == expected


def test_numpy_and_torch_rounds_give_the_same_words(one_thread):
    """The two implementations of the rounds on 2^18 counters (high words past 2^31 included) and 5 keys, and
    normal() of the same draw at 1 thread (numpy rounds) and 2 threads (torch rounds): identical."""
    far = torch.randint(0, 1 << 47, (1 << 17,), generator=torch.Generator().manual_seed(3))
    c = torch.cat([torch.arange(1 << 17), far])
    for seed in (0, 1, 2**32 + 5, -7, 0x9E3779B97F4A7C15):
        k = rng.split_key(seed)
        a0, a1 = rng._words(k, 3, c)  # numpy
        torch.set_num_threads(2)
        b0, b1 = rng._words(k, 3, c)  # torch
        torch.set_num_threads(1)
        assert torch.equal(a0, b0) and torch.equal(a1, b1)
    z1 = rng.normal(11, 2, 300_001)
    torch.set_num_threads(2)
    assert torch.equal(z1, rng.normal(11, 2, 300_001))


def test_box_muller_radius_equals_torchs_float64_computation():
    """The radius's float64 log and sqrt come from numpy on CPU; the float32 normals equal those of torch's own
    float64 log and sqrt on 2^20 counters (a last-bit float64 difference reaches float32 with probability ~2^-29:
    the expected number of differing normals here is ~3e-5), and a wrong factor (−2) or a float32 log would fail."""
    x0, x1 = rng.threefry2x32(torch.arange(1 << 20), 0, (21, 4))
    x0, x1 = rng._to_i32(x0), rng._to_i32(x1)
    cos, sin = rng._box_muller(x0, x1)
    u = (x0.to(torch.float64) + (2.0**31 + 0.5)) * 2.0**-32
    r = torch.sqrt(-2.0 * torch.log(u)).to(torch.float32)
    theta = (x1 >> 8).to(torch.float32).add_(2.0**23 + 0.5).mul_(2.0 * math.pi * 2.0**-24)
    assert torch.equal(cos, torch.cos(theta) * r) and torch.equal(sin, torch.sin(theta) * r)


def test_pairs_stream_equals_the_index_stream():
    """CounterStream.pairs (a block of differential pairs' columns c0:c1 in a (2, out, rows) tensor) draws what the
    explicit flat index draws, over several draws and with with_key; bad ranges are refused."""
    out, rows, (c0, c1) = 7, 5, (2, 6)
    index = (torch.arange(2).view(2, 1, 1) * (out * rows) + torch.arange(c0, c1).view(1, -1, 1) * rows
             + torch.arange(rows).view(1, 1, -1)).flatten()
    a = rng.CounterStream(9, index=index, size=2 * out * rows)
    b = rng.CounterStream.pairs(9, c0 * rows, c1 * rows, 2 * out * rows)
    for _ in range(3):
        assert torch.equal(a.normal((2, c1 - c0, rows), device=None, dtype=torch.float32),
                           b.normal((2, c1 - c0, rows), device=None, dtype=torch.float32))
    assert torch.equal(a.with_key(4).normal((index.numel(),), device=None, dtype=torch.float32),
                       b.with_key(4).normal((index.numel(),), device=None, dtype=torch.float32))
    whole = rng.normal(9, 0, 2 * out * rows)
    assert torch.equal(rng.CounterStream.pairs(9, c0 * rows, c1 * rows, 2 * out * rows).normal(
        (index.numel(),), device=None, dtype=torch.float32), whole[index])
    with pytest.raises(ValueError, match="elements"):
        b.normal((3,), device=None, dtype=torch.float32)
    with pytest.raises(ValueError, match="start"):
        rng.CounterStream.pairs(9, 0, out * rows + 1, 2 * out * rows)


@pytest.mark.slow
def test_compiled_rounds_give_the_same_numbers():
    """aimc.rng.use_compiled_rounds (torch.compile, opt-in): the same normals as the eager rounds (numpy at one
    thread, torch at two), for the whole-draw, index and pairs paths and a far counter (high word ≠ 0); switched
    off again afterwards. Slow: the first compilation takes 23-38 s on 2 cores."""
    n = torch.get_num_threads()
    far = torch.tensor([5, (1 << 40) + 3, (3 << 44) + 11])
    try:
        eager = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            eager[threads] = (rng.normal(3, 1, 70_001), rng.normal(3, 1, index=far, size=1 << 48),
                              rng.CounterStream.pairs(8, 10, 5000, 20_000).normal((9980,), device=None,
                                                                                  dtype=torch.float32))
        try:
            rng.use_compiled_rounds(True)
        except RuntimeError as e:
            pytest.skip(str(e))
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got = (rng.normal(3, 1, 70_001), rng.normal(3, 1, index=far, size=1 << 48),
                   rng.CounterStream.pairs(8, 10, 5000, 20_000).normal((9980,), device=None, dtype=torch.float32))
            assert all(torch.equal(a, b) for a, b in zip(got, eager[threads]))
    finally:
        rng.use_compiled_rounds(False)
        torch.set_num_threads(n)
    assert rng._compiled is None
