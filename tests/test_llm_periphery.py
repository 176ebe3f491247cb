"""LLM-grade periphery (issue 19 item 2): GDC per output column, the calibrated global ADC range per layer
(``aimc.calibrate_output_ranges``), the correlation read-out's amplitude inside the ADC range, and scoring ``none``
and ``gdc`` of one time from one draw of the conductances (``at_time(keep=True)`` + ``set_gdc``)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

import aimc
from aimc import mapping
from aimc.config import AnalogConfig, CompensationConfig, MappingConfig, PeripheryConfig, TrainingConfig
from aimc.devices import Hermes, Ideal
from aimc.errors import StateError
from aimc.inference import set_gdc
from aimc.nn import gdc
from aimc.nn.tile import AnalogMatrix

DAY, YEAR = 86_400.0, 365 * 86_400.0


def _cfg(*, device=None, periphery=None, granularity="tile", n_readout=64, tile=256):
    return AnalogConfig(device=device or Hermes(), mapping=MappingConfig(tile, tile, "column"),
                        periphery=periphery or PeripheryConfig(),
                        compensation=CompensationConfig(gdc=True, readout="correlation", granularity=granularity,
                                                        n_readout=n_readout),
                        training=TrainingConfig(noise="none", clip="none"), name="t")


def _two_kinds_of_columns(rows=256, out=16):
    """Columns 0..7: one weight at max and the rest about a tenth of it (devices at ~0.1 g_max: HERMES drift
    μ_ν ≈ 0.07); columns 8..15: every weight near max (μ_ν ≈ 0.02–0.03). One tile holds both kinds, so one factor
    per tile cannot fit both."""
    g = torch.Generator().manual_seed(0)
    w = torch.empty(out, rows)
    half = out // 2
    w[:half] = 0.1 * torch.randn(half, rows, generator=g)
    w[:half, 0] = 1.0
    sign = torch.randint(0, 2, (out - half, rows), generator=g) * 2 - 1
    w[half:] = sign * (0.8 + 0.2 * torch.rand(out - half, rows, generator=g))
    lin = nn.Linear(rows, out, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    return lin


def _column_gains(a, lin):
    """Per output column: ⟨W_eff_c, W_c⟩ / ⟨W_c, W_c⟩ with W_eff the drifted weights × scales × GDC factors."""
    mat = a.analog
    w_eff = mat.w_analog * mapping.expand_rows(mat.out_scale, mat.layout) if mat.w_analog.numel() else mat.w_eff
    w = lin.weight.detach()
    return (w_eff * w).sum(dim=1) / (w * w).sum(dim=1)


def test_gdc_per_column_corrects_each_columns_drift_per_tile_cannot():
    """1 year on HERMES: the two kinds of columns drift by different gains (~0.5 vs ~0.7). Per column, every
    column's gain after GDC is within 10 % of 1 (the read-out's error with 256 vectors is a few %); one factor per
    tile leaves the two kinds ≥ 20 % apart."""
    lin = _two_kinds_of_columns()
    gains = {}
    for gran in ("column", "tile"):
        a = aimc.convert(lin, _cfg(granularity=gran, n_readout=256)).eval()
        aimc.program(a, seed=0)
        aimc.at_time(a, YEAR, seed=0, gdc=True)
        shape = a.analog.gdc_alpha.shape
        assert shape == ((16, 1) if gran == "column" else (1, 1))
        gains[gran] = _column_gains(a, lin)
        aimc.at_time(a, YEAR, seed=0, gdc=False)
        raw = _column_gains(a, lin)
        assert float(raw[:8].mean()) < 0.85 * float(raw[8:].mean())  # the setting really drifts differently
    col, tile = gains["column"], gains["tile"]
    assert float((col - 1).abs().max()) < 0.10, col
    assert float(tile[8:].mean()) > 1.2 * float(tile[:8].mean()), tile
    aimc.at_time(a, YEAR, seed=0, gdc=True)
    rep = aimc.gdc_report(a)  # the tile run: one row; the column run is checked below
    assert len(rep) == 1 and rep[0]["column"] is None


def test_gdc_report_per_column_rows():
    lin = _two_kinds_of_columns(rows=64, out=6)
    a = aimc.convert(lin, _cfg(granularity="column", tile=32)).eval()
    aimc.program(a, seed=1)
    aimc.at_time(a, DAY, seed=1)
    rep = aimc.gdc_report(a)
    assert len(rep) == 6 * 2  # 6 columns × 2 row tiles
    assert sorted({(r["column"], r["row_tile"]) for r in rep}) == [(c, k) for c in range(6) for k in range(2)]
    assert all(r["col_tile"] == 0 for r in rep)
    assert [r["factor"] for r in rep] == [float(a.analog.gdc_alpha[r["column"], r["row_tile"]]) for r in rep]


def test_per_column_state_saves_and_loads(tmp_path):
    pytest.importorskip("safetensors")
    lin = _two_kinds_of_columns(rows=64, out=6)
    a = aimc.convert(nn.Sequential(lin), _cfg(granularity="column", tile=32)).eval()
    aimc.program(a, seed=2)
    aimc.at_time(a, DAY, seed=2)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    want = a(x)
    aimc.save(a, tmp_path / "m.safetensors")
    back = aimc.load(tmp_path / "m.safetensors", model=nn.Sequential(nn.Linear(64, 6, bias=False))).eval()
    assert back[0].analog.gdc_base.shape == (6, 2)
    assert torch.equal(back(x), want)


# ------------------------------------------------------------------------------------ none and gdc from one draw
def _llm_periphery(**kw):
    return PeripheryConfig(dac_bits=8, input_range="static", adc_bits=8, out_bound=2.0, out_noise=0.02,
                           output_units="normalized", **kw)


@pytest.mark.parametrize("periphery", [PeripheryConfig(), _llm_periphery()], ids=["ideal_output", "matrix_path"])
def test_set_gdc_is_bit_identical_to_a_fresh_at_time(periphery):
    """Output noise on (the matrix path draws it from the forward generator, which the GDC read-out also
    advances): switching GDC with set_gdc reproduces at_time(gdc=...) bit for bit, in either order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 40, bias=False), nn.ReLU(), nn.Linear(40, 24, bias=False))
    a = aimc.convert(model, _cfg(periphery=periphery, tile=32)).eval()
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(3))
    aimc.calibrate_input_ranges(a, [x])
    aimc.program(a, seed=4)
    want = {}
    with torch.no_grad():
        for on in (False, True):
            aimc.at_time(a, DAY, seed=4, gdc=on)
            want[on] = (a(x), a(x))  # two forwards: the noise stream continues identically
        assert not torch.equal(want[False][0], want[True][0])
        for first in (False, True):
            aimc.at_time(a, DAY, seed=4, gdc=first, keep=True)
            for on in (first, not first, first):
                if on != first or a[0].analog.gdc_on.item() != on:
                    set_gdc(a, on)
                got = (a(x), a(x))
                assert torch.equal(got[0], want[on][0]) and torch.equal(got[1], want[on][1]), (first, on)


def test_set_gdc_needs_keep():
    a = aimc.convert(nn.Linear(8, 4, bias=False), _cfg(tile=8)).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 25.0, seed=0)
    with pytest.raises(StateError, match="keep=True"):
        set_gdc(a, False)


def test_evaluate_draws_each_time_once(monkeypatch):
    """evaluate with none and gdc: one draw of the conductances per time (program's baseline read + 2 times)."""
    calls = []
    real = AnalogMatrix._blocks

    def spy(self, weight, t, name, read_seed=0):
        calls.append(t)
        return real(self, weight, t, name, read_seed)

    monkeypatch.setattr(AnalogMatrix, "_blocks", spy)
    torch.manual_seed(0)
    lin = nn.Linear(16, 3)
    data = [(torch.randn(8, 16), torch.randint(0, 3, (8,)))]
    a = aimc.convert(lin, _cfg(tile=16))
    res = aimc.evaluate(a, data, [25.0, DAY], [0], ("none", "gdc"), progress=False)
    assert len(res.table) == 4
    assert calls == [None, 25.0, DAY]


# --------------------------------------------------------------------------------------- read-out amplitude
def test_readout_amplitude_keeps_reads_inside_the_adc_range():
    w = torch.zeros(3, 10)
    w[0, :4] = 1.0  # ‖w_0‖ = 2 on row tile 0 (rows 0..4), tile 1 (rows 5..9) all zero
    lay = mapping.make_layout(3, 10, tile_rows=5)
    p = PeripheryConfig(dac_bits=8, adc_bits=8, out_bound=2.0)
    amp = gdc.readout_amplitude(w, lay, p)
    step = 2 / 254
    assert amp[0].item() == pytest.approx(math.floor(2.0 / (4 * 2.0) / step + 1e-9) * step)  # 0.25 → 31 steps
    assert amp[0].item() * 4 * 2.0 <= 2.0 and amp[1].item() == 1.0  # zero tile: full scale
    assert torch.equal(gdc.readout_amplitude(w, lay, PeripheryConfig()), torch.ones(2, dtype=torch.float64))
    tiny = gdc.readout_amplitude(w * 1e6, lay, p)
    assert tiny[0].item() == pytest.approx(step)  # never below one DAC step


def test_gdc_factor_unbiased_under_a_small_adc_range(monkeypatch):
    """No read noise, drift on, ADC bound 1.5 (a calibrated LLM layer's range is of this order, while ±1 inputs
    on 256 rows give outputs of std ~8): the correlation factor equals the exact ratio Σw₀²/Σw₀w_t of the tile's
    weights to 2 %. With full-scale read-out inputs (the amplitude forced to 1) the ADC clips the reads and the
    factor is off by more than 5 %."""
    dev = Hermes(read_noise_scale=0.0)
    per = PeripheryConfig(adc_bits=8, out_bound=1.5, output_units="normalized")
    torch.manual_seed(0)
    lin = nn.Linear(256, 64, bias=False)

    def factor_error():
        a = aimc.convert(lin, _cfg(device=dev, periphery=per)).eval()
        aimc.program(a, seed=0)
        mat = a.analog
        w = lin.weight.detach()
        w0 = mat._analog_weights(mat.device_state(w).g_prog)
        aimc.at_time(a, YEAR, seed=0, gdc=True)
        aimc.at_time(a, YEAR, seed=0, gdc=False)
        wt = mat.w_analog
        exact = float((w0 * w0).sum() / (w0 * wt).sum())
        aimc.at_time(a, YEAR, seed=0, gdc=True)
        return abs(float(mat.gdc_alpha[0, 0]) / exact - 1), exact

    err, exact = factor_error()
    assert exact > 1.1 and err < 0.02
    monkeypatch.setattr(gdc, "readout_amplitude",
                        lambda w_a, layout, p: torch.ones(layout.n_row_tiles, dtype=torch.float64))
    err_full, _ = factor_error()
    assert err_full > 0.05


# ------------------------------------------------------------------------------------------ ADC calibration
def _mlp():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(40, 24, bias=False), nn.ReLU(), nn.Linear(24, 8, bias=False))
    with torch.no_grad():
        m[0].weight[3, 5] = 2.0  # an outlier: its column's scale differs from the others'
    return m


def _brute_bound(layer_w, x, r, row_bounds, q):
    """The tile outputs in normalised units written out tile by tile, column by column."""
    out, rows = layer_w.shape
    vals = []
    for s, e in row_bounds:
        for c in range(out):
            wc = layer_w[c, s:e]
            wn = wc / wc.abs().max()
            xn = (x[:, s:e] / r).clamp(-1, 1)
            vals.append((xn @ wn).abs())
    v = torch.cat(vals).sort(descending=True).values
    k = max(1, math.ceil((1 - q) * v.numel()))
    return float(v[k - 1])


@pytest.mark.parametrize("q", [1.0, 0.99])
def test_calibrate_output_ranges_matches_the_tile_outputs(q):
    m = _mlp()
    per = PeripheryConfig(dac_bits=8, input_range="static", adc_bits=8, out_bound=14.0, output_units="normalized")
    cfg = _cfg(device=Ideal(), periphery=per, tile=16)
    a = aimc.convert(m, cfg).eval()
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(30, 40, generator=g) for _ in range(3)]
    aimc.calibrate_input_ranges(a, data)
    bounds = aimc.calibrate_output_ranges(a, data, n_batches=2, quantile=q)
    assert set(bounds) == {"0", "2"}
    x0 = torch.cat(data[:2])
    h = torch.relu(x0 @ m[0].weight.detach().t())
    for name, x in (("0", x0), ("2", h)):
        layer = a.get_submodule(name)
        lay = layer.analog.layout
        assert len(lay.row_bounds) == (3 if name == "0" else 2)  # 40 and 24 rows on tiles of 16
        want = _brute_bound(m.get_submodule(name).weight.detach(), x, float(layer.analog.input_range),
                            lay.row_bounds, q)
        assert bounds[name] == pytest.approx(want, rel=1e-5)
        assert layer.analog.config.periphery.out_bound == bounds[name]
    assert bounds["0"] != bounds["2"]
    # the other periphery settings are untouched, and the bound is what the forward's ADC uses
    assert dataclasses.replace(a[0].analog.config.periphery, out_bound=14.0) == per


def test_calibrated_bounds_survive_save_and_load(tmp_path):
    pytest.importorskip("safetensors")
    per = PeripheryConfig(dac_bits=8, input_range="static", adc_bits=8, out_bound=14.0, output_units="normalized")
    a = aimc.convert(_mlp(), _cfg(periphery=per, tile=16)).eval()
    data = [torch.randn(30, 40, generator=torch.Generator().manual_seed(1))]
    aimc.calibrate_input_ranges(a, data)
    bounds = aimc.calibrate_output_ranges(a, data)
    aimc.program(a, seed=0)
    aimc.at_time(a, DAY, seed=0)
    want = a(data[0])
    aimc.save(a, tmp_path / "m.safetensors")
    back = aimc.load(tmp_path / "m.safetensors", model=_mlp()).eval()
    assert back[2].analog.config.periphery.out_bound == bounds["2"]
    assert torch.equal(back(data[0]), want)


def test_calibrate_output_ranges_errors():
    per = PeripheryConfig(dac_bits=8, input_range="static", adc_bits=8, out_bound=14.0, output_units="normalized")
    a = aimc.convert(_mlp(), _cfg(periphery=per, tile=16)).eval()
    data = [torch.randn(4, 40)]
    with pytest.raises(StateError, match="calibrate_input_ranges"):
        aimc.calibrate_output_ranges(a, data)
    aimc.calibrate_input_ranges(a, data)
    aimc.program(a, seed=0)
    with pytest.raises(StateError, match="before aimc.program"):
        aimc.calibrate_output_ranges(a, data)
    plain = aimc.convert(_mlp(), _cfg(tile=16))  # no ADC: nothing to calibrate
    assert aimc.calibrate_output_ranges(plain, data) == {}
