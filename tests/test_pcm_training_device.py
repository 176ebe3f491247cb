"""Tests of aimc.devices.PCMTrainingDevice: the pulse-level PCM model for training against its equations.

Equations and constants: Nandakumar et al., J. Appl. Phys. 124, 152135 (2018), via srnn-pcm (reference
``pcm-training-facts.md`` §1.2). Units: µS, seconds, pulses.

Statistical tolerances (as in ``test_devices.py``): every sampled statistic is compared with its closed form within
Z = 5 standard errors of that statistic. For an asymptotically normal estimator P(|Z| > 5) ≈ 5.7e-7, so a check
fails by chance with probability ~6e-7 for a random seed (the seeds are fixed, so the tests are deterministic).
With n = 200 000 samples, 5 SE of the mean is 1.1 % of σ and 5 SE of the std is 0.8 % of σ, so a wrong slope, a
missing history term or a double-counted device-to-device spread (tens of per cent) is always caught.
SE of the mean: σ/√n. SE of the sample std of a Gaussian: σ/√(2n). One SET step of the model is Gaussian given
the device gain γ; over devices it is γ·μ + σ_c2c·ξ with γ Gaussian too, so the sum is exactly Gaussian.
"""

from __future__ import annotations

import math

import pytest
import torch

from aimc.devices import PCMTrainingDevice
from aimc.errors import ConfigError, NonFiniteError

N = 200_000
Z = 5.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_step(dev: PCMTrainingDevice, g: float, p_before: float, seed: int) -> tuple[torch.Tensor, float]:
    """ΔG of one SET pulse on N fresh devices at conductance g and history p_before (decayed before the step)."""
    gg = gen(seed)
    gain = dev.sample_gain((N,), generator=gg)
    g0 = torch.full((N,), g)
    g1, _ = dev.pulse(g0, torch.full((N,), p_before), gain, 1, generator=gg)
    return g1 - g0, p_before * math.exp(-1 / dev.history_decay)


@pytest.mark.parametrize("g, p, seed", [(1.5, 0.0, 1), (3.0, 0.0, 2), (5.0, 0.0, 3), (8.0, 0.3, 4), (10.0, 0.5, 5),
                                         (11.0, 0.0, 6)])
def test_step_mean_and_spread_match_equations(g: float, p: float, seed: int) -> None:
    """Over devices and cycles one step has mean m1·G + c1 + A1·P and std m2·G + c2 + A2·P (P after decay).

    The upper bound is lifted (g_max = 1e6) and the states are chosen with G + μ > 5.3·σ, so the lower clip at
    0 has probability < 1e-7 per sample (none is seen). G = 11 µS lies beyond g_sat: a negative mean step.
    """
    dev = PCMTrainingDevice(g_max=1e6)
    dg, p_dec = one_step(dev, g, p, seed)
    m1, c1, a1 = dev.step_mean
    m2, c2, a2 = dev.step_std
    mu, sd = m1 * g + c1 + a1 * p_dec, m2 * g + c2 + a2 * p_dec
    assert g + mu > 5.3 * sd
    assert int((g + dg <= 0).sum()) == 0
    assert abs(float(dg.mean()) - mu) < Z * sd / math.sqrt(N)
    assert abs(float(dg.std()) - sd) < Z * sd / math.sqrt(2 * N)


def test_step_shrinks_towards_saturation() -> None:
    """The mean step falls with G and is zero at g_sat = −c1/m1 ≈ 10.5 µS (settled history)."""
    dev = PCMTrainingDevice()
    mus = [float(dev.step_stats(torch.tensor(g), torch.tensor(0.0))[0]) for g in (0.0, 2.0, 5.0, 8.0, 10.0)]
    assert all(a > b for a, b in zip(mus, mus[1:]))
    assert dev.g_sat == pytest.approx(0.880 / 0.084)
    assert float(dev.step_stats(torch.tensor(dev.g_sat), torch.tensor(0.0))[0]) == pytest.approx(0.0, abs=1e-6)


def test_device_to_device_part_of_the_spread() -> None:
    """The per-device mean step (many cycles of the same device at the same state) spreads by d2d_std·μ.

    K = 400 cycles per device, M = 2000 devices: the per-device average has c2c noise σ_c2c/√K, so the sample
    variance of the averages estimates (d2d·μ)² + σ_c2c²/K; its std SE over M devices is ≈ s/√(2M).
    """
    dev = PCMTrainingDevice()
    m, k, g, p = 2000, 400, 2.0, 0.0
    gg = gen(7)
    gain = dev.sample_gain((m,), generator=gg)
    g0 = torch.full((m, k), g)
    g1, _ = dev.pulse(g0, torch.zeros(m, k), gain[:, None].expand(m, k), 1, generator=gg)
    avg = (g1 - g0).mean(dim=1)
    mu = float(dev.step_stats(torch.tensor(g), torch.tensor(0.0))[0])
    c2c = float(dev.c2c_std(torch.tensor(g), torch.tensor(0.0)))
    expect = math.sqrt((dev.d2d_std * mu) ** 2 + c2c**2 / k)
    assert abs(float(avg.std()) - expect) < Z * expect / math.sqrt(2 * m)
    # and with d2d_std = 0 all devices share one mean step
    dev0 = PCMTrainingDevice(d2d_std=0.0)
    assert torch.all(dev0.sample_gain((10,), generator=gen(1)) == 1.0)


def test_mean_trajectory_matches_published_anchors() -> None:
    """Mean-law trajectory from RESET: ≈ 1.9 / 5.8 / 7.8 / 9.4 µS after 1 / 5 / 10 / 20 pulses (reference §1.2)."""
    traj = PCMTrainingDevice().mean_trajectory(20)
    for n, g in ((1, 1.9), (5, 5.8), (10, 7.8), (20, 9.4)):
        assert float(traj[n]) == pytest.approx(g, abs=0.06)


def test_first_pulse_after_reset_uses_history() -> None:
    """Pulse 1 after RESET: mean 1.83 µS, std 1.73 µS (reference §1.2 derived anchors), sampled within 5 SE."""
    dev = PCMTrainingDevice(g_max=1e6)  # no upper clip; the lower clip at 0 only matters for steps < −0.1 µS
    gg = gen(11)
    g, p = dev.reset((N,), generator=gg)
    g1, p1 = dev.pulse(g, p, dev.sample_gain((N,), generator=gg), 1, generator=gg)
    mu, sd = (float(t) for t in dev.step_stats(torch.tensor(0.1), torch.tensor(math.exp(-1 / 2.6))))
    assert mu == pytest.approx(1.83, abs=0.01) and sd == pytest.approx(1.73, abs=0.01)
    dg = g1 - g
    # ΔG below −G is clipped (probability Φ((−0.1 − 1.83)/1.73) ≈ 13 %), so compare the unclipped part's median
    assert abs(float(dg.median()) - mu) < Z * sd * math.sqrt(math.pi / 2) / math.sqrt(N)
    assert torch.allclose(p1, torch.full_like(p1, math.exp(-1 / 2.6)))


def test_reset_statistics_and_bounds() -> None:
    dev = PCMTrainingDevice()
    g, p = dev.reset((N,), generator=gen(3))
    assert torch.all(p == 1.0)
    assert abs(float(g.mean()) - dev.g_reset) < Z * dev.g_reset_std / math.sqrt(N)
    assert abs(float(g.std()) - dev.g_reset_std) < Z * dev.g_reset_std / math.sqrt(2 * N)


def test_conductance_stays_in_bounds_under_many_pulses() -> None:
    """Property: G ∈ [0, g_max] after any number of pulses (noise can push steps negative or past g_max)."""
    dev = PCMTrainingDevice()
    r = dev.pulse_response(60, 3000, generator=gen(5))
    assert r.shape == (61, 3000)
    assert float(r.min()) >= 0.0 and float(r.max()) <= dev.g_max


def test_zero_pulses_change_nothing_and_counts_vary_per_device() -> None:
    dev = PCMTrainingDevice()
    g = torch.tensor([1.0, 2.0, 3.0])
    p = torch.tensor([0.5, 0.2, 0.0])
    g1, p1 = dev.pulse(g, p, torch.ones(3), torch.tensor([0, 1, 3]), generator=gen(0))
    assert g1[0] == g[0] and p1[0] == p[0]
    d = math.exp(-1 / 2.6)
    assert float(p1[1]) == pytest.approx(0.2 * d) and float(p1[2]) == 0.0


def test_mixed_pulse_counts_match_single_pulses_in_distribution() -> None:
    """Devices with different counts in one call (sorted internally, pulse k on the devices with n > k) end where
    n one-pulse calls take them: per count group, mean and std of G agree within 5 SE of the difference of two
    independent estimates (mean: √2·σ/√m; std: √2·σ/√(2m) = σ/√m); P is deterministic."""
    dev = PCMTrainingDevice()
    m = 40_000
    n = torch.tensor([0, 1, 2, 3, 5]).repeat_interleave(m)[torch.randperm(5 * m, generator=gen(0))]
    g0, p0 = torch.full((5 * m,), 1.0), torch.full((5 * m,), 0.4)
    gain = dev.sample_gain((5 * m,), generator=gen(1))
    g_all, p_all = dev.pulse(g0, p0, gain, n, generator=gen(2))
    for k in (0, 1, 2, 3, 5):
        sel = n == k
        g, p = g0[sel], p0[sel]
        gg = gen(10 + k)
        for _ in range(k):
            g, p = dev.pulse(g, p, gain[sel], 1, generator=gg)
        assert torch.allclose(p_all[sel], p)
        a, b = g_all[sel], g
        if k == 0:
            assert torch.equal(a, b)
            continue
        se = float(b.std()) / math.sqrt(int(sel.sum()))
        assert abs(float(a.mean()) - float(b.mean())) < Z * math.sqrt(2) * se
        assert abs(float(a.std()) - float(b.std())) < Z * se


def test_drift_and_read_noise() -> None:
    """Drift (age/t0)^−ν after t0, none before; read noise σ = 0.03·G + 0.13 µS, fresh per read."""
    dev = PCMTrainingDevice()
    g = torch.full((N,), 5.0)
    assert torch.allclose(dev.read(g, 10.0, generator=None, read_noise=False), g)
    age = 1000 * dev.drift_t0
    gd = dev.read(g, age, generator=None, read_noise=False)
    assert float(gd[0]) == pytest.approx(5.0 * 1000 ** -0.04, rel=1e-5)
    r = dev.read(g, 0.0, generator=gen(2))
    sd = 0.03 * 5.0 + 0.13
    assert abs(float(r.mean()) - 5.0) < Z * sd / math.sqrt(N)
    assert abs(float(r.std()) - sd) < Z * sd / math.sqrt(2 * N)
    assert not torch.equal(r, dev.read(g, 0.0, generator=gen(3)))


def test_nominal_pulses_inverts_mean_trajectory() -> None:
    dev = PCMTrainingDevice()
    traj = dev.mean_trajectory(30) - dev.g_reset
    n = dev.nominal_pulses(traj[:15].float())
    assert torch.equal(n, torch.arange(15))
    assert int(dev.nominal_pulses(torch.tensor([0.3]))) == 0
    assert int(dev.nominal_pulses(torch.tensor([100.0]))) < 100  # beyond reach: capped where steps vanish
    with pytest.raises(NonFiniteError):
        dev.nominal_pulses(torch.tensor([float("nan")]))


def test_granularity_is_mean_step_at_low_conductance() -> None:
    dev = PCMTrainingDevice()
    assert dev.epsilon == pytest.approx(-0.084 * 0.1 + 0.880)
    assert PCMTrainingDevice(eps_g_ref=5.0).epsilon == pytest.approx(-0.084 * 5 + 0.88)


@pytest.mark.parametrize("kwargs, word", [
    ({"g_max": 0.0}, "g_max"), ({"g_max": -1.0}, "g_max"), ({"g_max": float("nan")}, "g_max"),
    ({"step_mean": (-0.084, 0.0, 1.4)}, "c1"), ({"step_mean": (-0.084, -0.5, 1.4)}, "c1"),
    ({"step_mean": (0.1, 0.88, 1.4)}, "m1"), ({"step_std": (0.091, -0.26, 2.15)}, "step_std"),
    ({"eps_g_ref": 11.0}, "ε"), ({"d2d_std": 0.9}, "d2d_std"), ({"d2d_std": -0.1}, "d2d_std"),
    ({"history_decay": 0}, "history_decay"), ({"read_noise": (0.03,)}, "read_noise"),
    ({"g_reset": 20.0}, "g_reset"),
])
def test_invalid_parameters_raise(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        PCMTrainingDevice(**kwargs)


def test_negative_or_fractional_pulse_counts_raise() -> None:
    dev = PCMTrainingDevice()
    g = torch.ones(3)
    with pytest.raises(ConfigError, match="≥ 0"):
        dev.pulse(g, g, g, torch.tensor([1, -1, 0]), generator=gen(0))
    with pytest.raises(ConfigError, match="integers"):
        dev.pulse(g, g, g, torch.tensor([0.5, 1.0, 0.0]), generator=gen(0))
    with pytest.raises(ConfigError):
        dev.pulse_response(-1, 3, generator=gen(0))


def test_frozen_and_pure() -> None:
    dev = PCMTrainingDevice()
    with pytest.raises(AttributeError):
        dev.g_max = 5.0  # type: ignore[misc]
    g, p = torch.full((5,), 2.0), torch.zeros(5)
    g_copy = g.clone()
    a, _ = dev.pulse(g, p, torch.ones(5), 2, generator=gen(4))
    b, _ = dev.pulse(g, p, torch.ones(5), 2, generator=gen(4))
    assert torch.equal(g, g_copy) and torch.equal(a, b)
