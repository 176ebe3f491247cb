"""The row-band Linear path (``aimc.nn.bands``) against the per-tile path it replaces (``aimc.nn.mvm.tiles_forward``)
and the reference :func:`aimc.periphery.tiled_mvm`: the same numbers (same products, same elementwise periphery in
the same order), at any thread count. ``tests/test_mvm_paths.py`` also checks Linear layers with a static range
against the reference in float64."""

import dataclasses

import pytest
import torch
from torch import nn

import aimc
from aimc.nn import bands, layers
from aimc.nn.layers import linear_tiles
from aimc.nn.mvm import tiles_forward
from aimc.periphery import tiled_mvm


def _cfg(**p):
    """The LLM preset on small tiles (3 row bands, the last partial; 4 column tiles), with periphery changes."""
    base = aimc.presets.llm_hermes()
    return dataclasses.replace(base, mapping=dataclasses.replace(base.mapping, tile_rows=24, tile_cols=16),
                               periphery=dataclasses.replace(base.periphery, input_bound=2.0, **p),
                               training=dataclasses.replace(base.training, learn_input_range=False))


def _layer(cfg, *, bias=True, seed=0, half=False):
    torch.manual_seed(seed)
    a = aimc.convert(nn.Sequential(nn.Linear(70, 50, bias=bias)), cfg).eval()
    aimc.program(a, seed=seed)
    aimc.at_time(a, 86_400.0, seed=seed, cache_dtype=torch.float16 if half else None)
    return a[0]


def _per_tile(layer, x):
    """The layer's product by the per-tile path (what AnalogLinear ran before the row bands), plus the bias."""
    cols = x.reshape(-1, x.shape[-1]).t().unsqueeze(0)
    y = layer.analog.run_tiles(tiles_forward, layer.analog, cols, layer.aimc_name)[0].t()
    y = y if layer.bias is None else y + layer.bias
    return y.reshape(*x.shape[:-1], -1)


PERIPHERY = [dict(), dict(adc_bits=None), dict(adc_bits=None, out_bound=0.5), dict(adc_bits=6, out_bound=0.4),
             dict(dac_bits=None), dict(dac_bits=None, adc_bits=None, out_bound=1.0)]


@pytest.mark.parametrize("kw", PERIPHERY)
@pytest.mark.parametrize("bias", [True, False])
def test_row_bands_equal_the_per_tile_path(kw, bias, monkeypatch):
    """Bit for bit in float32 (the products are the same sums; a different summation would flip ADC levels), with
    inputs beyond the static range (DAC clipping) and outputs beyond the ADC range (ADC clipping)."""
    layer = _layer(_cfg(**kw), bias=bias)
    assert bands.bands_apply(layer.analog)
    calls = []
    monkeypatch.setattr(layers, "bands_forward", lambda *a, f=bands.bands_forward: calls.append(1) or f(*a))
    x = torch.randn(3, 40, 70, generator=torch.Generator().manual_seed(1)) * 1.5
    with torch.no_grad():
        fast, ref = layer(x), _per_tile(layer, x)
    assert calls, "the row-band path was not taken"
    assert fast.shape == (3, 40, 50) and fast.is_contiguous()
    assert torch.equal(fast, ref)
    # the reference MVM (a vector at a time) agrees to float rounding
    mat = layer.analog
    full = tiled_mvm(x.reshape(-1, 70), mat.w_analog, mat.layout, mat.config.periphery, None,
                     static_range=mat.static_range(layer.aimc_name), out_scale=mat.out_scale)
    full = full if layer.bias is None else full + layer.bias
    torch.testing.assert_close(fast.reshape(-1, 50), full, rtol=1e-5, atol=1e-5)


def test_row_bands_with_a_float16_cache_and_autograd():
    """The float16 cache is upcast for the call (run_tiles); an input that needs gradients gets them, and the
    values equal the no-grad ones."""
    layer = _layer(_cfg(), half=True)
    assert layer.analog.w_analog.dtype == torch.float16
    x = torch.randn(30, 70, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = _per_tile(layer, x)
    xg = x.clone().requires_grad_(True)
    y = layer(xg)
    assert torch.equal(y.detach(), ref)
    y.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_matrix_mvm_takes_the_row_bands():
    """The matrix layers' product (``aimc.nn.matrix``: attention, ...) runs the same path as AnalogLinear."""
    layer = _layer(_cfg())
    x = torch.randn(2, 9, 70, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = linear_tiles(x, layer.analog, layer.aimc_name, layer.bias)
    assert torch.equal(y, _per_tile(layer, x))


@pytest.mark.parametrize("kw", [dict(out_noise=0.02), dict(input_range="dynamic"),
                                dict(bound_management="iterative")])
def test_row_bands_only_where_they_are_the_same_physics(kw):
    """Output noise (drawn per tile), dynamic ranges (per tile and vector) and bound management (per tile retries)
    stay on the per-tile path."""
    assert not bands.bands_apply(_layer(_cfg(**kw)).analog)


def test_row_bands_same_numbers_at_one_and_two_threads():
    layer = _layer(_cfg())
    x = torch.randn(512, 70, generator=torch.Generator().manual_seed(4)) * 2
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one = layer(x)
        torch.set_num_threads(2)
        with torch.no_grad():
            two = layer(x)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(one, two)
