"""Analog layers: exactness with ideal devices, both forward paths, modes, errors, reproducibility."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import aimc
from aimc.nn import AnalogConv1d, AnalogConv2d, AnalogLinear, AnalogLSTM
from tests.helpers import ideal_pcm_free, small_cnn


def _programmed(model, cfg, t=3600.0, seed=0):
    a = aimc.convert(model, cfg).eval()
    aimc.program(a, seed=seed)
    aimc.at_time(a, t, seed=seed)
    return a


LAYERS = [
    (lambda: nn.Linear(40, 21), (5, 40)),
    (lambda: nn.Linear(40, 21, bias=False), (2, 3, 40)),
    (lambda: nn.Conv1d(6, 10, 3, stride=2, padding=1), (2, 6, 17)),
    (lambda: nn.Conv1d(6, 10, 3, padding=2, dilation=2, padding_mode="reflect"), (2, 6, 17)),
    (lambda: nn.Conv2d(6, 10, 3, padding=1), (2, 6, 9, 9)),
    (lambda: nn.Conv2d(6, 12, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=3), (2, 6, 9, 9)),
    (lambda: nn.Conv2d(4, 8, 3, padding="same", padding_mode="circular", bias=False), (2, 4, 7, 7)),
    (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), (2, 4, 6, 6)),
]


@pytest.mark.parametrize("make,shape", LAYERS)
def test_ideal_device_equals_torch_on_both_paths(make, shape):
    """Ideal device + ideal periphery reproduce the torch layer; so does the unfolded per-tile path."""
    torch.manual_seed(0)
    layer = make().eval()
    x = torch.randn(shape)
    ref = layer(x)
    fast = _programmed(layer, ideal_pcm_free())
    torch.testing.assert_close(fast(x), ref, rtol=1e-5, atol=1e-5)
    # out_bound far above any output forces the per-tile matrix path (unfold) without changing the result
    slow = _programmed(layer, ideal_pcm_free(out_bound=1e6))
    assert slow[0].analog.config.periphery.needs_matrix_path if isinstance(slow, nn.Sequential) else True
    torch.testing.assert_close(slow(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(num_layers=1), dict(num_layers=2, bidirectional=True, batch_first=True),
                                dict(num_layers=1, bias=False)])
def test_ideal_lstm_equals_torch(kw):
    torch.manual_seed(0)
    lstm = nn.LSTM(7, 20, **kw).eval()
    x = torch.randn(4, 5, 7)
    ref, (h, c) = lstm(x)
    for cfg in (ideal_pcm_free(), ideal_pcm_free(out_bound=1e6)):
        a = _programmed(nn.Sequential(lstm), cfg)
        assert isinstance(a[0], AnalogLSTM)
        out, (h2, c2) = a(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(h2, h, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(c2, c, rtol=1e-4, atol=1e-5)
    # unbatched input
    a = _programmed(nn.Sequential(lstm), ideal_pcm_free())
    torch.testing.assert_close(a(x[:, 0])[0], lstm(x[:, 0])[0], rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(out=st.integers(1, 40), inp=st.integers(1, 40), tile=st.integers(1, 12),
       scale=st.sampled_from(["tile", "column", "layer"]))
def test_ideal_device_equals_linear_any_tiling(out, inp, tile, scale):
    """Property: with an ideal device, any tile size and any scale granularity give the nn.Linear output."""
    torch.manual_seed(out * 100 + inp)
    lin = nn.Linear(inp, out).eval()
    x = torch.randn(3, inp)
    cfg = dataclasses.replace(aimc.presets.ideal(), mapping=aimc.MappingConfig(tile, tile, scale))
    a = _programmed(nn.Sequential(lin), cfg)
    torch.testing.assert_close(a(x), lin(x), rtol=1e-5, atol=1e-5)


def test_layers_subclass_torch_and_keep_state_dict_keys():
    m = small_cnn()
    a = aimc.convert(m, aimc.presets.joshi2020())
    assert isinstance(a[0], nn.Conv2d) and isinstance(a[0], AnalogConv2d)
    assert isinstance(a[7], nn.Linear) and isinstance(a[7], AnalogLinear)
    keys = set(a.state_dict())
    assert set(m.state_dict()) <= keys
    assert "0.analog.g_prog" in keys
    assert isinstance(aimc.convert(nn.Sequential(nn.Conv1d(2, 3, 1)), aimc.presets.ideal())[0], AnalogConv1d)


def test_convert_leaves_original_untouched_and_reports_digital_layers():
    m = small_cnn()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    a = aimc.convert(m, aimc.presets.joshi2020(), exclude=["9"])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert type(m[0]) is nn.Conv2d
    rep = a.aimc_report
    assert [n for n, *_ in rep.analog] == ["0", "3", "7"]
    digital = {n: why for n, _, why in rep.digital}
    assert digital["9"] == "excluded by the caller" and "digital" in digital["1"]
    assert "BatchNorm2d" in str(rep)


def test_convert_errors():
    with pytest.raises(aimc.UnsupportedLayerError, match="no layer"):
        aimc.convert(nn.Sequential(nn.ReLU()), aimc.presets.ideal())
    with pytest.raises(aimc.ConfigError, match="exclude"):
        aimc.convert(small_cnn(), aimc.presets.ideal(), exclude=["nope"])
    with pytest.raises(aimc.ConfigError):
        aimc.convert(small_cnn(), "joshi2020")
    a = aimc.convert(small_cnn(), aimc.presets.ideal())
    with pytest.raises(aimc.UnsupportedLayerError, match="already"):
        aimc.convert(a, aimc.presets.ideal())
    with pytest.raises(aimc.UnsupportedLayerError, match="proj_size"):
        aimc.convert(nn.Sequential(nn.LSTM(3, 4, proj_size=2)), aimc.presets.ideal())
    att = aimc.convert(nn.Sequential(nn.MultiheadAttention(8, 2, add_bias_kv=True), nn.Linear(8, 2)),
                       aimc.presets.ideal())  # no analog version with add_bias_kv: digital, and out_proj with it
    digital = {n: why for n, _, why in att.aimc_report.digital}
    assert "add_bias_kv" in digital["0"] and "MultiheadAttention" in digital["0.out_proj"]


def test_modes_and_state_errors():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    a = aimc.convert(nn.Sequential(lin), aimc.presets.joshi2020())
    x = torch.randn(2, 8)
    a.eval()
    torch.testing.assert_close(a(x), lin(x))  # before programming: digital master weights
    with pytest.raises(aimc.StateError, match="program"):
        aimc.at_time(a, 10.0, seed=0)
    aimc.program(a, seed=0)
    with pytest.raises(aimc.StateError, match="at_time"):
        a(x)
    aimc.at_time(a, 10.0, seed=0)
    assert not torch.allclose(a(x), lin(x))
    with pytest.raises(aimc.StateError, match="no analog layers"):
        aimc.program(nn.Linear(2, 2), seed=0)


def test_bad_inputs_raise():
    a = _programmed(nn.Sequential(nn.Linear(8, 4)), aimc.presets.joshi2020())
    with pytest.raises(aimc.ShapeError, match="in_features=8"):
        a(torch.randn(2, 7))
    bad = torch.randn(2, 8)
    bad[0, 3] = float("nan")
    with pytest.raises(aimc.NonFiniteError):
        a(bad)
    c = _programmed(nn.Sequential(nn.Conv2d(3, 4, 3)), aimc.presets.joshi2020())
    with pytest.raises(aimc.ShapeError):
        c(torch.randn(2, 5, 8, 8))
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight[0, 0] = float("inf")
    with pytest.raises(aimc.NonFiniteError, match="program"):
        aimc.program(aimc.convert(nn.Sequential(lin), aimc.presets.joshi2020()), seed=0)
    for bad_t in (-1.0, float("nan"), "soon"):
        with pytest.raises(aimc.ConfigError):
            aimc.at_time(a, bad_t, seed=0)
    for bad_seed in (-1, 1.5, None):
        with pytest.raises(aimc.ConfigError):
            aimc.program(a, seed=bad_seed)


def test_fixed_seed_is_bit_identical_and_seeds_differ():
    m = small_cnn().eval()
    x = torch.randn(4, 3, 8, 8)
    for cfg in (aimc.presets.joshi2020(), aimc.presets.aihwkit_default()):
        outs = [_programmed(m, cfg, t=86400.0, seed=s)(x) for s in (3, 3, 4)]
        assert torch.equal(outs[0], outs[1])
        assert not torch.equal(outs[0], outs[2])


def test_at_time_shares_programming_noise_but_not_read_noise():
    a = _programmed(nn.Sequential(nn.Linear(30, 20)), aimc.presets.joshi2020(), t=100.0)
    mat = a[0].analog
    g_prog = mat.device_state(a[0].weight).g_prog.clone()
    w1 = mat.effective_weight().clone()
    aimc.at_time(a, 100.0, seed=1)
    assert torch.equal(mat.device_state(a[0].weight).g_prog, g_prog)
    assert not torch.equal(mat.effective_weight(), w1)
    aimc.at_time(a, 100.0, seed=0)
    assert torch.equal(mat.effective_weight(), w1)  # same (seed, t): same read noise


def test_training_noise_statistics_and_gradients():
    """HWA noise: additive Gaussian with std = eta·max|W|; gradients reach the clean master weights."""
    torch.manual_seed(0)
    lin = nn.Linear(200, 100)
    a = aimc.convert(nn.Sequential(lin), aimc.presets.joshi2020()).train()
    layer = a[0]
    w = layer.weight
    noise = torch.stack([layer.analog.train_weight(w) - w for _ in range(20)]).detach()
    expected = 0.038 * float(w.detach().abs().max())
    n = noise.numel()
    assert abs(float(noise.std()) - expected) < 5 * expected / (2 * n) ** 0.5  # 5 standard errors of a std
    assert abs(float(noise.mean())) < 5 * expected / n**0.5
    x = torch.randn(4, 200)
    a(x).sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    y1, y2 = a(x), a(x)
    assert not torch.equal(y1, y2)  # re-drawn on every forward call


def test_clip_bounds_weights_at_alpha_sigma():
    torch.manual_seed(0)
    lin = nn.Linear(300, 50)
    with torch.no_grad():
        lin.weight.mul_(1 + 5 * (torch.rand_like(lin.weight) > 0.99))  # heavy tail
    a = aimc.convert(nn.Sequential(lin, nn.LSTM(4, 3)), aimc.presets.joshi2020())
    std = float(a[0].weight.detach().std())
    w_hh = a[1].weight_hh_l0
    with torch.no_grad():
        w_hh[0, 0] = 10.0
    std_hh = float(w_hh.detach().std())
    assert float(a[0].weight.detach().abs().max()) > 2.0 * std and float(w_hh.detach().abs().max()) > 2.0 * std_hh
    aimc.clip(a)
    assert float(a[0].weight.detach().abs().max()) <= 2.0 * std + 1e-7
    assert float(w_hh.detach().abs().max()) <= 2.0 * std_hh + 1e-7  # each LSTM matrix clipped on its own
    with pytest.raises(aimc.StateError):
        aimc.clip(nn.Linear(2, 2))


def test_static_dac_needs_a_range_and_calibration_sets_it():
    cfg = dataclasses.replace(aimc.presets.joshi2020(), periphery=aimc.PeripheryConfig(dac_bits=8))
    m = nn.Sequential(nn.Linear(10, 5))
    a = _programmed(m, cfg)
    x = torch.randn(6, 10)
    with pytest.raises(aimc.StateError, match="calibrate_input_ranges"):
        a(x)
    aimc.calibrate_input_ranges(a, [(x, None)], quantile=1.0)
    assert float(a[0].analog.input_range) == pytest.approx(float(x.abs().max()))
    aimc.at_time(a, 3600.0, seed=0)
    y = a(x)
    assert torch.isfinite(y).all()


def test_resnet32_device_count_is_twice_the_conv_and_fc_weights():
    from aimc.models import resnet32_cifar

    m = resnet32_cifar()
    n = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear)))
    rep = aimc.convert(m, aimc.presets.joshi2020()).aimc_report
    assert rep.n_devices == 2 * n == 2 * 461_872
    assert len(rep.analog) == 32 and rep.n_tiles == 41  # 9 layers of 576 rows take 2 row tiles of 512
