"""The shortcuts of program/at_time against the full computations they stand for: programming only the conductances,
drift statistics computed once, a stream's index analysed once, the constant high counter word, the GDC read of a
whole row band; and the same chip at one and two threads."""

import dataclasses

import pytest
import torch

import aimc
import aimc.rng as rng
from aimc.devices import PCM, Hermes
from aimc.mapping import make_layout
from aimc.nn import gdc
from aimc.periphery import block_mvm
from aimc.rng import CounterStream

DEVICES = [PCM(), PCM(prog_noise_scale=0.5, drift_scale=2.0, read_noise_scale=3.0), Hermes(num_devices=1),
           Hermes(num_devices=2), Hermes(prog_noise_scale=0.0, drift_scale=0.5)]


def _targets(dev, n=20_000, seed=0):
    g = torch.rand(2, n // 2, generator=torch.Generator().manual_seed(seed)) * dev.g_max
    g[:, :50] = 0.0  # the off device of a pair and the extremes
    g[:, 50:60] = dev.g_max
    return g


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("counter", [True, False])
def test_program_conductance_is_programs_first_draw(dev, counter):
    g = _targets(dev)
    make = (lambda: CounterStream(11)) if counter else (lambda: torch.Generator().manual_seed(11))  # noqa: E731
    full = dev.program(g, generator=make())
    assert torch.equal(dev.program_conductance(g, generator=make()), full.g_prog)


@pytest.mark.parametrize("dev", DEVICES)
def test_given_drift_stats_give_the_same_devices_and_bounds(dev):
    g = _targets(dev)
    stats = dev.drift_stats(g)
    kept = [s.clone() for s in stats]
    a = dev.program(g, generator=CounterStream(5))
    b = dev.program(g, generator=CounterStream(5), drift_stats=stats)
    for k in ("g_target", "g_prog", "nu"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert all(torch.equal(s, k) for s, k in zip(stats, kept))  # not modified: the GDC bounds use them next
    assert gdc.physical_bounds(dev, g, 86_400.0, drift_stats=stats) == gdc.physical_bounds(dev, g, 86_400.0)


@pytest.mark.parametrize("dev", DEVICES)
def test_device_equations_as_written(dev):
    """Program and read follow the equations term by term (the in-place evaluation changes no number)."""
    g = _targets(dev)
    n1, n2, n3 = (rng.normal(3, d, g.numel()).reshape(g.shape) for d in range(3))
    st = dev.program(g, generator=CounterStream(3))
    assert torch.equal(st.g_prog, torch.clamp(g + dev.prog_noise_scale * dev.prog_std(g) * n1, min=0.0))
    mu, sig = dev.drift_stats(g)
    assert torch.equal(st.nu, (mu + sig * n2).abs() * dev.drift_scale)
    t = 3600.0
    g_d = st.g_prog * torch.exp(-st.nu * torch.log(torch.tensor((t + dev.t0) / dev.t0)).item())
    sigma = g_d.abs() * dev.read_q_s(st.g_prog) * dev.read_time_factor(t) * dev.read_noise_scale
    got = dev.read(st, t, generator=CounterStream(3, first_draw=2))
    assert torch.equal(got, torch.clamp(g_d + sigma * n3, min=0.0))


@pytest.mark.parametrize("nd", [1, 2])
def test_hermes_branches_equal_a_plain_where(nd):
    from aimc.devices.hermes import _DRIFT_MEAN, HERMES_VARIANTS, _branch

    r = torch.cat([torch.rand(50_000, generator=torch.Generator().manual_seed(1)) * 1.2, torch.zeros(3),
                   torch.tensor([1e-7, 0.0945, 0.3039, 0.3055, 0.16, 0.1591])])
    for spec in (_DRIFT_MEAN, HERMES_VARIANTS[nd]["drift_std"], HERMES_VARIANTS[nd]["read_q"]):
        split, a, b, lo, hi, poly = spec
        high = torch.zeros_like(r)
        for c in poly:
            high = high * r + c
        ref = torch.where(r < split, torch.clamp(a * torch.log(r) + b, lo, hi), high)
        assert torch.equal(_branch(r, spec), ref)


def test_stream_with_key_and_its_index_analysis():
    out, rows = 7, 9
    size = 2 * out * rows
    paired = torch.cat([torch.arange(10, 40), torch.arange(10, 40) + size // 2])
    other = torch.tensor([5, 120, 3, 64, 63])
    for idx in (paired, other):
        s = CounterStream(1, index=idx, size=size)
        s.normal(idx.shape, device=None, dtype=torch.float32)
        t = s.with_key(2)
        for _ in range(2):
            assert torch.equal(t.normal(idx.shape, device=None, dtype=torch.float32),
                               rng.normal(2, t.draw - 1, index=idx, size=size))
        assert torch.equal(rng.normal(2, 0, index=idx, size=size), rng.normal(2, 0, size)[idx])


@pytest.mark.parametrize("draw", [0, 1, 32767, 32768, 65535])
def test_constant_high_word_below_2_pow_32(draw):
    c = torch.tensor([0, 1, 12345, 2**31 - 1, 2**31, 2**32 - 1], dtype=torch.int64)
    k = rng.split_key(-7)
    for a, b in zip(rng._words(k, draw, c.clone(), low=True), rng._words(k, draw, c.clone())):
        assert torch.equal(a, b)
    # and the general path still carries the high word above 2^32
    assert not torch.equal(rng._words(k, draw, c + 2**32)[0], rng._words(k, draw, c)[0])


@pytest.mark.parametrize("kw", [dict(), dict(adc_bits=None), dict(out_noise=0.05), dict(bound_management="iterative")])
def test_gdc_read_of_a_row_band_equals_the_tiles(kw):
    base = aimc.presets.llm_hermes().periphery
    p = dataclasses.replace(base, input_bound=2.0, out_bound=3.0, **kw)
    lay = make_layout(50, 70, tile_rows=24, tile_cols=16)
    w = torch.randn(50, 70, generator=torch.Generator().manual_seed(0)) * 0.2

    def x_of(k, r):
        return gdc.correlation_inputs(8, r, 100 + k, dtype=w.dtype, device=w.device)

    got = gdc.tile_reads(w, lay, p, torch.Generator().manual_seed(3), x_of)
    gen = torch.Generator().manual_seed(3)
    for k, (s, e) in enumerate(lay.row_bounds):
        ref = torch.cat([block_mvm(x_of(k, e - s), w[cs:ce, s:e], p, gen) for cs, ce in lay.col_bounds], dim=1)
        assert torch.equal(got[k], ref)


@pytest.mark.parametrize("preset", ["llm_hermes", "hermes", "joshi2020"])
def test_the_same_chip_at_one_and_two_threads(preset):
    """Regeneration blocks and generator passes scale with the thread count; the numbers do not."""
    cfg = aimc.presets.get(preset)
    cfg = dataclasses.replace(cfg, periphery=dataclasses.replace(cfg.periphery, input_bound=2.0),
                              mapping=dataclasses.replace(cfg.mapping, tile_rows=256, tile_cols=256))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(576, 700), torch.nn.Linear(700, 90))
    n = torch.get_num_threads()
    states = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a = aimc.convert(net, cfg).eval()
            aimc.program(a, seed=4)
            aimc.at_time(a, 86_400.0, seed=4)
            states.append({k: v.clone() for k, v in a.state_dict().items()}
                          | {f"{i}.w": (m.analog.w_analog if m.analog.w_analog.numel() else m.analog.w_eff).clone()
                             for i, m in enumerate(a)})
    finally:
        torch.set_num_threads(n)
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_program_at_one_thread_count_drift_and_save_at_another(tmp_path):
    """The weight checksum is summed on one thread: a chip programmed at one thread count is drifted and saved at
    another (a parallel float64 sum adds in another order and refused it), and a changed weight is still caught."""
    cfg = dataclasses.replace(aimc.presets.llm_hermes(), periphery=dataclasses.replace(
        aimc.presets.llm_hermes().periphery, input_bound=2.0))
    torch.manual_seed(0)
    a = aimc.convert(torch.nn.Sequential(torch.nn.Linear(1500, 800)), cfg).eval()
    n = torch.get_num_threads()
    try:
        for first, second in ((1, 2), (2, 1)):
            torch.set_num_threads(first)
            aimc.program(a, seed=1)
            torch.set_num_threads(second)
            aimc.at_time(a, 3600.0, seed=1)
            aimc.save(a, tmp_path / f"m{first}.safetensors")
        with torch.no_grad():
            a[0].weight[3, 7] += 1e-6
        with pytest.raises(aimc.StateError, match="master weight changed"):
            aimc.at_time(a, 3600.0, seed=1)
    finally:
        torch.set_num_threads(n)
