"""Tests of aimc.periphery: DAC/ADC steps, quantisation, output noise and iterative bound management (ref. B.9).

Statistical tolerance: 5 standard errors (false-failure probability ~6e-7 per check for an arbitrary seed; the
seeds are fixed, so the tests are deterministic).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aimc.config import PeripheryConfig
from aimc.errors import ConfigError
from aimc.periphery import adc_step, block_mvm, dac_step, quantize, quantize_input

HYPO = settings(max_examples=40, derandomize=True, deadline=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand(*shape: int, seed: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(*shape, generator=gen(seed)) * (hi - lo) + lo


def on_grid(y: torch.Tensor, step: float, tol: float = 1e-4) -> bool:
    k = y / step
    return bool(((k - torch.round(k)).abs() <= tol).all())


# ============================================================================ steps and quantiser
def test_dac_step() -> None:
    assert dac_step(7) == 1 / 63
    assert dac_step(8) == 1 / 127
    assert dac_step(2) == 1.0  # levels −1, 0, 1


def test_adc_step() -> None:
    assert adc_step(9, 12) == 24 / 510
    assert adc_step(9, 12) == pytest.approx(0.0471, abs=5e-5)
    assert adc_step(8, 10) == 20 / 254


@HYPO
@given(
    xs=st.lists(st.floats(-10.0, 10.0, allow_nan=False), min_size=1, max_size=30),
    bits=st.integers(2, 12),
    bound=st.sampled_from([1.0, 3.0, 12.0]),
)
def test_property_quantize(xs: list[float], bits: int, bound: float) -> None:
    """Property: quantize(x, step, bound) lies on the grid k·step, within ±bound, is the nearest grid point for
    |x| ≤ bound (error ≤ step/2), saturates at ±bound beyond it, and is monotone in x."""
    x = torch.tensor(sorted(xs), dtype=torch.float64)
    step = adc_step(bits, bound)  # bound is a multiple of the step, so ±bound is on the grid
    q = quantize(x, step, bound)
    assert bool((q.abs() <= bound).all())
    assert on_grid(q, step, 1e-9)
    inside = x.abs() <= bound
    assert bool(((q - x)[inside].abs() <= step / 2 + 1e-12).all())
    assert bool((q[x > bound + step / 2] == bound).all()) and bool((q[x < -bound - step / 2] == -bound).all())
    assert bool((q[1:] >= q[:-1]).all())


def test_quantize_examples() -> None:
    x = torch.tensor([0.0, 0.01, 0.02, -0.024, 0.9, 1.5, -7.0])
    q = quantize(x, 0.05, 1.0)
    torch.testing.assert_close(q, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.9, 1.0, -1.0]), rtol=0, atol=1e-7)
    assert float(quantize(torch.tensor(0.03), 0.05, 1.0)) == pytest.approx(0.05)


def test_quantize_input_levels_and_clip() -> None:
    x = rand(500, seed=1, lo=-1.5, hi=1.5)
    q = quantize_input(x, PeripheryConfig(dac_bits=7))
    levels = q * 63
    assert on_grid(q, 1 / 63) and float(levels.abs().max()) == pytest.approx(63.0)
    torch.testing.assert_close(q, torch.clamp(torch.round(x * 63), -63, 63) / 63, rtol=0, atol=1e-6)
    # no DAC: inputs pass unchanged (documented contract of quantize_input: nothing to quantise or clip)
    assert torch.equal(quantize_input(x, PeripheryConfig()), x)


# ============================================================================ block_mvm
def test_ideal_periphery_is_exact() -> None:
    x, w = rand(64, 40, seed=2), rand(30, 40, seed=3, lo=-0.5, hi=0.5)
    p = PeripheryConfig()
    assert p.is_ideal
    assert torch.equal(block_mvm(x, w, p, gen(0)), x @ w.t())
    assert torch.equal(block_mvm(x, w, p, None), x @ w.t())


def test_dac_only_equals_quantised_input_mvm() -> None:
    x, w = rand(64, 40, seed=4, lo=-1.3, hi=1.3), rand(30, 40, seed=5)
    y = block_mvm(x, w, PeripheryConfig(dac_bits=7), gen(0))
    xq = torch.clamp(torch.round(x * 63), -63, 63) / 63
    torch.testing.assert_close(y, xq @ w.t(), rtol=1e-5, atol=1e-5)
    # and the DAC changes the result (inputs are not on the grid): the test is not vacuous
    assert float((y - x.clamp(-1, 1) @ w.t()).abs().max()) > 1e-3


def test_output_noise_statistics() -> None:
    """(block_mvm − x@wᵀ) is N(0, out_noise²): sample mean and std within 5 SE (n = 160 000 draws)."""
    out_noise = 0.06
    x, w = rand(20_000, 16, seed=6), rand(8, 16, seed=7, lo=-0.3, hi=0.3)
    d = (block_mvm(x, w, PeripheryConfig(out_noise=out_noise), gen(8)) - x @ w.t()).double().flatten()
    n = d.numel()
    assert abs(float(d.mean())) <= 5 * out_noise / math.sqrt(n)
    assert abs(float(d.std()) - out_noise) <= 5 * out_noise / math.sqrt(2 * n)
    # independent across outputs of the same input vector
    c = torch.corrcoef(d.view(20_000, 8).t())
    assert float((c - torch.eye(8, dtype=c.dtype)).abs().max()) <= 5 / math.sqrt(20_000)


def test_output_noise_is_seeded() -> None:
    x, w = rand(50, 10, seed=9), rand(5, 10, seed=10)
    p = PeripheryConfig(out_noise=0.1)
    assert torch.equal(block_mvm(x, w, p, gen(3)), block_mvm(x, w, p, gen(3)))
    assert not torch.equal(block_mvm(x, w, p, gen(3)), block_mvm(x, w, p, gen(4)))


def test_adc_outputs_on_grid_within_bound() -> None:
    p = PeripheryConfig(adc_bits=9, out_bound=12.0)
    step = adc_step(9, 12.0)
    x, w = rand(200, 64, seed=11), rand(20, 64, seed=12, lo=-3.0, hi=3.0)
    exact = x @ w.t()
    assert float(exact.abs().max()) > 12.0  # some outputs clip: the bound is exercised
    y = block_mvm(x, w, p, gen(0))
    assert on_grid(y, step) and float(y.abs().max()) <= 12.0
    inside = exact.abs() < 12.0 - step
    assert float((y - exact)[inside].abs().max()) <= step / 2 + 1e-5
    assert bool((y[exact > 12.0 + step] == 12.0).all()) and bool((y[exact < -12.0 - step] == -12.0).all())


def test_out_bound_without_adc_clips() -> None:
    x, w = rand(100, 64, seed=13), rand(10, 64, seed=14)
    exact = x @ w.t()
    y = block_mvm(x, w, PeripheryConfig(out_bound=5.0), gen(0))
    assert float(exact.abs().max()) > 5.0
    assert torch.equal(y, exact.clamp(-5.0, 5.0))


def _bm(**kw) -> PeripheryConfig:
    return PeripheryConfig(out_bound=12.0, bound_management="iterative", **kw)


def test_bound_management_recovers_clipped_output() -> None:
    """y = 32 > out_bound 12: the input is halved twice (factor 4, 8 < 12), the result is scaled back ⇒ 32 up to
    4 × ADC step/2; plain clipping returns 12. A row that does not clip is untouched."""
    w = torch.full((3, 64), 0.5)
    x = torch.stack([torch.ones(64), torch.full((64,), 0.1)])
    exact = x @ w.t()  # [[32]*3, [3.2]*3]
    step = adc_step(9, 12.0)
    y_bm = block_mvm(x, w, _bm(adc_bits=9), gen(0))
    y_clip = block_mvm(x, w, PeripheryConfig(out_bound=12.0, adc_bits=9), gen(0))
    assert torch.equal(y_clip[0], torch.full((3,), 12.0))
    torch.testing.assert_close(y_bm[0], exact[0], rtol=0, atol=4 * step / 2 + 1e-5)
    assert torch.equal(y_bm[1], y_clip[1])


def test_bound_management_beats_clipping_on_random_data() -> None:
    """Random inputs where a sizeable fraction of outputs clip, with 7-bit DAC, 9-bit ADC and output noise: bound
    management must cut the worst error by > 5× and the mean-squared error by > 10× compared with clipping, and no
    output may come back saturated."""
    x, w = rand(400, 128, seed=15), rand(16, 128, seed=16, lo=-0.4, hi=0.4)
    exact = x @ w.t()
    frac_clip = float((exact.abs() >= 2.0).double().mean())
    assert 0.1 < frac_clip < 0.9
    assert float(exact.abs().max()) < 8 * 2.0  # within reach of the largest factor the 7-bit DAC allows (8)
    kw = dict(out_bound=2.0, adc_bits=9, dac_bits=7, out_noise=0.02)
    y_bm = block_mvm(x, w, PeripheryConfig(bound_management="iterative", **kw), gen(17))
    y_clip = block_mvm(x, w, PeripheryConfig(bound_management="none", **kw), gen(17))
    e_bm, e_clip = (y_bm - exact).abs(), (y_clip - exact).abs()
    assert float(e_bm.max()) * 5 < float(e_clip.max())
    assert float((e_bm**2).mean()) * 10 < float((e_clip**2).mean())
    assert float(y_clip.abs().max()) == 2.0
    assert float(y_bm.abs().max()) > 2.0  # recovered beyond the ADC range


def test_bound_management_is_a_no_op_when_nothing_clips() -> None:
    x, w = rand(100, 32, seed=18), rand(8, 32, seed=19, lo=-0.1, hi=0.1)
    assert float((x @ w.t()).abs().max()) < 6.0
    kw = dict(out_bound=12.0, adc_bits=9, dac_bits=7, out_noise=0.06)
    assert torch.equal(block_mvm(x, w, PeripheryConfig(bound_management="iterative", **kw), gen(20)),
                       block_mvm(x, w, PeripheryConfig(bound_management="none", **kw), gen(20)))


def test_bound_management_limited_by_max_bm_factor() -> None:
    """As aihwkit, the limit is checked after each attempt. max_bm_factor = 1: the attempt at 1 clips (y = 32) and
    1 ≤ 1 allows one doubling; at 2 (16, still clipping) 2 > 1 stops: output = 2 × out_bound = 24."""
    w, x = torch.full((1, 64), 0.5), torch.ones(1, 64)
    assert float(block_mvm(x, w, _bm(max_bm_factor=1), gen(0))) == pytest.approx(24.0)
    # max_bm_factor = 2: 2 ≤ 2 allows the attempt at 4, where 32 / 4 = 8 fits
    assert float(block_mvm(x, w, _bm(max_bm_factor=2), gen(0))) == pytest.approx(32.0)


def test_bound_management_limited_by_max_bm_res() -> None:
    """7-bit DAC, max_bm_res 0.25: the attempt at 8 clips and 8·(1/63) ≤ 0.25 allows 16 (aihwkit checks after the
    attempt); 16·(1/63) > 0.25 makes 16 the last. y = 200 ⇒ 200/16 = 12.5 still clips ⇒ 16 × 12 = 192."""
    w, x = torch.full((1, 100), 2.0), torch.ones(1, 100)
    y = block_mvm(x, w, _bm(dac_bits=7), gen(0))
    assert float(y) == pytest.approx(192.0)
    # max_bm_res 1: factor up to 63 ⇒ stops at 32 (200/32 ≈ 6.25 fits); the DAC quantises the scaled input 1/32 to
    # round(63/32)/63 = 2/63, so the result is 32·(2/63)·200 ≈ 203.17 (a DAC error, amplified by the factor).
    y = block_mvm(x, w, _bm(dac_bits=7, max_bm_res=1.0), gen(0))
    assert float(y) == pytest.approx(32 * (2 / 63) * 200, rel=1e-5)


def test_bound_management_reaches_16_as_aihwkit() -> None:
    """The case of issue 18: 512 inputs of 1.0, weights 0.3 (ideal 153.6) with aihwkit's defaults (7-bit DAC,
    9-bit ADC, bound 12, max_bm_res 0.25). aihwkit reaches factor 16 (153.6 / 16 = 9.6 fits); stopping before the
    limit is exceeded (the old aimc) gave 8 × 12 = 96.0. At 16 the DAC rounds the input 1/16 to 4/63, so the
    result is 16 · (4/63) · 153.6 ≈ 156.0 (the DAC error times the factor), up to half an ADC step times 16."""
    w, x = torch.full((3, 512), 0.3), torch.ones(2, 512)
    p = PeripheryConfig(dac_bits=7, adc_bits=9, out_bound=12.0, bound_management="iterative", max_bm_factor=1000,
                        max_bm_res=0.25)
    y = block_mvm(x, w, p, gen(0))
    expected = 16 * (round(63 / 16) / 63) * 153.6
    torch.testing.assert_close(y, torch.full((2, 3), expected), rtol=0, atol=16 * adc_step(9, 12.0) / 2 + 1e-4)
    assert abs(expected - 153.6) < 2.5  # within 2 % of the ideal output, far from 96


def test_bound_management_retries_only_the_clipped_vectors() -> None:
    """aimc retries per input vector (aihwkit re-runs the whole batch): a vector that fits at factor 1 keeps the
    factor-1 result, bit for bit, even when another vector of the batch needs factor 16."""
    w = torch.full((3, 512), 0.3)
    x = torch.stack([torch.ones(512), torch.full((512,), 0.05)])
    p = PeripheryConfig(dac_bits=7, adc_bits=9, out_bound=12.0, bound_management="iterative")
    both = block_mvm(x, w, p, gen(0))
    alone = block_mvm(x[1:], w, p, gen(0))
    assert torch.equal(both[1], alone[0])
    assert float(both[0, 0]) == pytest.approx(16 * (4 / 63) * 153.6, abs=16 * adc_step(9, 12.0))


def test_bound_management_off_clips_at_out_bound() -> None:
    w, x = torch.full((2, 64), 0.5), torch.stack([torch.ones(64), -torch.ones(64)])
    y = block_mvm(x, w, PeripheryConfig(out_bound=12.0, bound_management="none"), gen(0))
    assert torch.equal(y, torch.tensor([[12.0, 12.0], [-12.0, -12.0]]))


def test_block_mvm_empty_batch() -> None:
    y = block_mvm(torch.zeros(0, 8), torch.ones(3, 8), _bm(adc_bits=9, out_noise=0.1), gen(0))
    assert y.shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs",
    [{"adc_bits": 9}, {"bound_management": "iterative"}, {"dac_bits": 1}, {"out_noise": -0.1},
     {"out_bound": 0.0}, {"bound_management": "halve"}],
)
def test_invalid_periphery_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PeripheryConfig(**kwargs)
