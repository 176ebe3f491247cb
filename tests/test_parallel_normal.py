"""Output noise drawn on several cores (``aimc.nn.parallel_normal``): Gaussian moments, independent parts, and the
same numbers whatever the thread count (a seeded forward must not depend on ``torch.set_num_threads``)."""

import dataclasses

import pytest
import torch
from torch import nn

import aimc
from aimc.nn import parallel_normal
from aimc.nn.parallel_normal import MIN_SPLIT, PARTS, normal_


@pytest.fixture
def threads():
    """Set torch's thread count inside a test; restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _draw(n, seed, n_threads, set_threads, inference=False):
    set_threads(n_threads)
    t = torch.empty(n)
    with torch.inference_mode(inference):
        if inference:
            t = torch.empty(n)
        return normal_(t, 0.5, torch.Generator().manual_seed(seed)).clone()


@pytest.mark.parametrize("n", [MIN_SPLIT, 3 * MIN_SPLIT + 5])
def test_same_numbers_at_any_thread_count(n, threads):
    """The split into parts is fixed by the size alone: 1, 2 and 4 threads (and inference mode, which the pool's
    threads must take over) give bit-identical tensors; another seed gives other numbers."""
    one = _draw(n, 7, 1, threads)
    assert torch.equal(one, _draw(n, 7, 2, threads))
    assert torch.equal(one, _draw(n, 7, 4, threads))
    assert torch.equal(one, _draw(n, 7, 2, threads, inference=True))
    assert not torch.equal(one, _draw(n, 8, 2, threads))


def test_parts_are_gaussian_and_independent(threads):
    """Each part has mean 0 and std 0.5 (within 5 standard errors: n = 2^18 / 4 per part, 5 SE ≈ 1 % of σ on the
    mean, 0.7 % on the std), and neighbouring parts are uncorrelated (|r| ≤ 5/√n): parts drawn from one stream, or
    from generators seeded alike, or left unfilled, would fail."""
    n = 1 << 18
    t = _draw(n, 3, 2, threads).double()
    parts = t.view(PARTS, -1)
    m = parts.shape[1]
    for p in parts:
        assert abs(float(p.mean())) <= 5 * 0.5 / m**0.5
        assert abs(float(p.std()) / 0.5 - 1) <= 5 / (2 * m) ** 0.5
    for a, b in zip(parts[:-1], parts[1:]):
        r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        assert abs(r) <= 5 / m**0.5


def test_small_tensors_are_one_draw_of_the_generator():
    """Below MIN_SPLIT nothing changes: exactly ``Tensor.normal_`` with the layer's generator."""
    t = normal_(torch.empty(MIN_SPLIT - 16), 0.2, torch.Generator().manual_seed(1))
    assert torch.equal(t, torch.empty(MIN_SPLIT - 16).normal_(0.0, 0.2, generator=torch.Generator().manual_seed(1)))


def test_forked_child_gets_its_own_pool(threads):
    """The worker pool is per process: a pool inherited by a forked child has no threads and would hang."""
    threads(2)
    _draw(MIN_SPLIT, 0, 2, threads)
    pid, pool = parallel_normal._pool
    parallel_normal._pool = (pid + 1, pool)  # as seen from a child: another pid
    try:
        _draw(MIN_SPLIT, 0, 2, threads)
        assert parallel_normal._pool[0] == pid and parallel_normal._pool[1] is not pool
    finally:
        pool.shutdown()


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv2d(16, 16, 3, padding=1), (64, 16, 16, 16)),  # unfolded path, noise drawn for the batch
    (lambda: nn.Conv2d(16, 16, 3, padding=1, groups=4), (64, 16, 16, 16)),
    (lambda: nn.Linear(64, 32), (4096, 64)),
])
@pytest.mark.parametrize("static", [False, True])
def test_noisy_forward_is_the_same_at_1_and_2_threads(make, shape, static, threads):
    """aihwkit_default (output noise, DAC, ADC, bound management): one seeded forward gives the same numbers at
    1, 2 and 3 threads, on outputs large enough to be split (≥ MIN_SPLIT elements); the ungrouped convolution's
    chunks (5 of 14 images) run on that many threads (``aimc.nn.unfold``)."""
    cfg = aimc.presets.aihwkit_default()
    if static:
        cfg = dataclasses.replace(cfg, periphery=dataclasses.replace(cfg.periphery, input_range="static",
                                                                     input_bound=3.0))
    torch.manual_seed(0)
    a = aimc.convert(make(), cfg).eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    outs = []
    for n in (1, 2, 3):
        threads(n)
        aimc.program(a, seed=0)
        aimc.at_time(a, 3600.0, seed=0)  # resets the forward's noise generator
        with torch.inference_mode():
            outs.append(a(x))
    assert outs[0].numel() >= MIN_SPLIT
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
