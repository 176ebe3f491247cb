"""Global drift compensation (gain after GDC) and batch-norm re-estimation."""

import dataclasses

import pytest
import torch
from torch import nn

import aimc
from aimc.config import CompensationConfig


def mvm_gain(layer: nn.Module, ref: nn.Module, x: torch.Tensor) -> float:
    """Least-squares gain of the analog output against the exact output of the original weights."""
    with torch.no_grad():
        y, y0 = layer(x), ref(x)
    return float((y * y0).sum() / (y0 * y0).sum())


def _layer(cfg, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(256, 256, bias=False)
    a = aimc.convert(lin, cfg).eval()
    aimc.program(a, seed=seed)
    return lin.eval(), a


@pytest.mark.parametrize("t", [3600.0, 86400.0, 3.15e7])
def test_gdc_restores_unit_gain_with_ideal_periphery(t):
    lin, a = _layer(aimc.presets.joshi2020())
    x = torch.randn(512, 256, generator=torch.Generator().manual_seed(1))
    aimc.at_time(a, t, seed=0, gdc=False)
    raw = mvm_gain(a, lin, x)
    aimc.at_time(a, t, seed=0, gdc=True)
    comp = mvm_gain(a, lin, x)
    # mean drift factor at t: (t/t0)^-nu with nu ≈ 0.05–0.1 ⇒ at least 15 % loss after 1 h
    assert raw < 0.85
    assert comp == pytest.approx(1.0, abs=0.03)


def test_identity_readout_undercompensates_under_output_noise_and_correlation_does_not():
    """aihwkit's read-out (identity inputs, mean |y|) is inflated by output noise ⇒ gain < 1; aimc's
    correlation read-out stays unbiased. Same devices, same periphery, same seed."""
    x = torch.randn(512, 256, generator=torch.Generator().manual_seed(1))
    kit = aimc.presets.aihwkit_default()
    gains = {}
    for readout in ("identity_abs_mean", "correlation"):
        cfg = dataclasses.replace(kit, compensation=CompensationConfig(gdc=True, readout=readout))
        lin, a = _layer(cfg)
        gains[readout] = []
        for t in (3600.0, 3.15e7):
            aimc.at_time(a, t, seed=0)
            gains[readout].append(mvm_gain(a, lin, x))
    ident, corr = gains["identity_abs_mean"], gains["correlation"]
    assert ident[0] < 0.9 and ident[1] < ident[0]  # under-compensated, worse as signal shrinks
    assert corr[0] == pytest.approx(1.0, abs=0.05) and corr[1] == pytest.approx(1.0, abs=0.07)


def test_gdc_granularity_layer_gives_one_factor():
    cfg = dataclasses.replace(aimc.presets.joshi2020(), mapping=aimc.MappingConfig(64, 64, "layer"))
    _, a = _layer(cfg)
    aimc.at_time(a, 86400.0, seed=0)
    alpha = a.analog.gdc_alpha
    assert alpha.shape == (4, 4) and torch.all(alpha == alpha[0, 0]) and float(alpha[0, 0]) > 1.2


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_recalibrate_bn_matches_batch_statistics_of_drifted_model():
    m = _bn_model()
    a = aimc.convert(m, aimc.presets.joshi2020()).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 86400.0, seed=0, gdc=False)
    x = torch.randn(400, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pre = a[0](x)  # drifted analog output feeding the BN
    n = aimc.recalibrate_bn(a, [(x, torch.zeros(400))])
    assert n == 400
    bn = a[1]
    torch.testing.assert_close(bn.running_mean, pre.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, pre.var(0, unbiased=True), rtol=1e-4, atol=1e-6)
    assert not a.training and not bn.training and bn.momentum == 0.1


def test_recalibrate_bn_counts_images_and_errors():
    a = aimc.convert(_bn_model(), aimc.presets.joshi2020())
    data = [torch.randn(32, 10) for _ in range(5)]
    assert aimc.recalibrate_bn(a, data, n_images=70) == 70
    with pytest.raises(aimc.DataError):
        aimc.recalibrate_bn(a, [])
    with pytest.raises(aimc.DataError):
        aimc.recalibrate_bn(a, data, n_images=0)
    with pytest.raises(aimc.StateError, match="BatchNorm"):
        aimc.recalibrate_bn(aimc.convert(nn.Linear(3, 3), aimc.presets.ideal()), data)
