"""``MixedPrecision(..., periphery=True)``: the training MVMs through DAC, output noise, ADC per tile.

Checked against the equations: with an ideal periphery the MVMs equal the ones without it; the output variance of
a read is the devices' read-noise variance plus the output noise (in output units: out_noise·input scale), within
5 standard errors of a sampled variance; ADC outputs lie on the ADC grid and inside ±out_bound; the backward MVM
is the transposed read of δ scaled per vector, quantised by the DAC; and a small network still learns.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aimc
from aimc.config import PeripheryConfig
from aimc.devices import PCMTrainingDevice
from aimc.errors import ConfigError
from aimc.periphery import adc_step, dac_step
from aimc.train import MixedPrecision

NO_NOISE = PCMTrainingDevice(read_noise=(0.0, 0.0), drift_nu=0.0)


def convert(net: nn.Module, tile: int = 512, **periphery) -> nn.Module:
    base = aimc.presets.joshi2020()
    cfg = dataclasses.replace(base, training=aimc.TrainingConfig(noise="none", clip="none"),
                              mapping=dataclasses.replace(base.mapping, tile_rows=tile, tile_cols=tile),
                              periphery=PeripheryConfig(**periphery))
    return aimc.convert(net, cfg).train()


NETS = [
    (lambda: nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 4)), (16, 30)),
    (lambda: nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 4)),
     (8, 3, 7, 7)),
    (lambda: nn.Sequential(nn.Conv1d(4, 6, 3, padding=2, dilation=2, groups=2), nn.Flatten(), nn.Linear(6 * 9, 4)),
     (8, 4, 9)),
]


@pytest.mark.parametrize("make, shape", NETS)
def test_ideal_periphery_equals_the_plain_training_mvms(make, shape) -> None:
    """No DAC/ADC/noise: outputs and gradients equal the path without the periphery (18×18 tiles: the partial
    sums of several tiles only reorder the additions)."""
    x, y = torch.randn(*shape), torch.randint(0, 4, (shape[0],))
    out = {}
    for periphery in (False, True):
        torch.manual_seed(0)
        model = convert(make(), tile=18, input_range="dynamic")
        opt = MixedPrecision(model, lr=0.1, seed=0, device=NO_NOISE, periphery=periphery)
        xx = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xx), y)
        opt.zero_grad()
        loss.backward()
        out[periphery] = (loss.detach(), xx.grad, [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-4, atol=1e-6)
    for a, b in zip(out[True][2], out[False][2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("units, s_w", [("weight", 1.0), ("normalized", 0.7)])
def test_read_and_output_noise_add_up_as_the_equations_say(units, s_w) -> None:
    """Var(y_i) = Σ_j σ²_ij·x_j² + (out_noise·s_x·s_w)², s_x = max|x| (dynamic range); s_w = 1 in weight units,
    the weight range (here 0.7) in normalized units. 4,000 reads: the sampled variance has a relative standard
    error √(2/3999) = 2.2 %; 5 standard errors allowed."""
    torch.manual_seed(0)
    model = convert(nn.Linear(12, 5, bias=False), input_range="dynamic", out_noise=0.05, output_units=units)
    opt = MixedPrecision(model, lr=0.1, seed=3, periphery=True, weight_range=0.7)
    x = torch.randn(1, 12)
    with torch.no_grad():
        reads = torch.cat([model(x) for _ in range(4000)])
    var = opt.read_variance(model.weight)
    s_x = float(x.abs().max())
    expected = (x.square() @ var.t()).squeeze(0) + (0.05 * s_x * s_w) ** 2
    # detach(): the digital reference (x @ model.weight.t() would itself run on the layer's crossbar, issue 17)
    torch.testing.assert_close(reads.mean(0), (x @ model.weight.detach().t()).squeeze(0),
                               atol=float(5 * (expected / 4000).sqrt().max()), rtol=0)
    rel = reads.var(0) / expected
    assert float((rel - 1).abs().max()) < 5 * math.sqrt(2 / 3999), rel


def test_adc_outputs_lie_on_the_grid_and_inside_the_bound() -> None:
    """Static range r, 6-bit ADC at out_bound 1.5, no noise: y/r is a multiple of the ADC step and |y/r| ≤ 1.5."""
    torch.manual_seed(1)
    model = convert(nn.Linear(10, 8, bias=False), input_range="static", input_bound=2.0, dac_bits=5, adc_bits=6,
                    out_bound=1.5)
    opt = MixedPrecision(model, lr=0.1, seed=0, device=NO_NOISE, periphery=True)  # noqa: F841 (hooks hold it weakly)
    with torch.no_grad():
        model.weight.mul_(4.0)  # push some outputs past the bound
        y = model(torch.randn(64, 10) * 2) / 2.0
    st = adc_step(6, 1.5)
    assert float(y.abs().max()) <= 1.5 + 1e-5
    assert float((y.abs().max(1).values >= 1.5 - 1e-5).float().mean()) > 0.05  # the bound is reached
    torch.testing.assert_close(y / st, (y / st).round(), atol=1e-3, rtol=0)


def test_backward_is_the_transposed_read_through_the_dac() -> None:
    """δ_in = Σ over row tiles of DAC(δ/s_δ)·W·s_δ with s_δ = max|δ| per vector (no noise, no ADC), per tile."""
    torch.manual_seed(2)
    model = convert(nn.Linear(10, 7, bias=False), tile=4, input_range="dynamic", dac_bits=4)
    opt = MixedPrecision(model, lr=0.1, seed=0, device=NO_NOISE, periphery=True)  # noqa: F841 (hooks hold it weakly)
    x = torch.randn(5, 10, requires_grad=True)
    g = torch.randn(5, 7)
    model(x).backward(g)
    w = model.weight.detach()
    st = dac_step(4)
    ref = torch.zeros(5, 10)
    for cs in range(0, 7, 4):  # column tiles hold the δ slices of the transposed read
        d = g[:, cs:cs + 4]
        s = d.abs().amax(1, keepdim=True)
        dq = torch.round(d / s / st) * st
        ref += dq @ w[cs:cs + 4] * s
    torch.testing.assert_close(x.grad, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.weight.grad, g.t() @ x.detach(), rtol=1e-5, atol=1e-6)  # digital outer product


def test_a_network_learns_through_the_aihwkit_periphery() -> None:
    """The aihwkit_default periphery (7-bit DAC per vector, 9-bit ADC, output noise, bound management) in both
    MVMs: a separable 3-class problem is learned (loss falls well below log 3; accuracy > 90 %)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 20, generator=g) * 2
    y = torch.randint(0, 3, (300,), generator=g)
    x = centers[y] + 0.5 * torch.randn(300, 20, generator=g)
    torch.manual_seed(0)
    p = aimc.presets.aihwkit_default().periphery
    model = convert(nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3)),
                    **{f.name: getattr(p, f.name) for f in dataclasses.fields(p)})
    opt = MixedPrecision(model, lr=0.2, seed=0, periphery=True)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    loss = float(loss.detach())
    assert loss < 0.5 * math.log(3) and acc > 0.9, (loss, acc)


def test_periphery_flag_is_checked() -> None:
    model = convert(nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="periphery"):
        MixedPrecision(model, lr=0.1, periphery="yes")
