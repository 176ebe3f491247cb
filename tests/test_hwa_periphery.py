"""Hardware-aware training through the periphery (``TrainingConfig.periphery``, issue 18 item 4)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import yaml
from torch import nn

import aimc
from aimc.config import AnalogConfig, MappingConfig, TrainingConfig
from aimc.errors import ConfigError
from aimc.experiment.spec import experiment_from_dict
from aimc.periphery import adc_step, dac_step
from tests.arch_models import Conv1D


def _cfg(base: AnalogConfig, *, periphery: bool = True, noise: str = "none", **per) -> AnalogConfig:
    tr = dataclasses.replace(base.training, periphery=periphery, noise=noise)
    return dataclasses.replace(base, training=tr, periphery=dataclasses.replace(base.periphery, **per))


def _twins(model: nn.Module, cfg_a: AnalogConfig, cfg_b: AnalogConfig) -> tuple[nn.Module, nn.Module]:
    a, b = aimc.convert(model, cfg_a), aimc.convert(model, cfg_b)
    b.load_state_dict(a.state_dict())
    return a.train(), b.train()


def _grads(model: nn.Module, x: torch.Tensor, g: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Output, input gradient and parameter gradients for the loss sum(y·g) (g fixed, so the gradients do not
    depend on y's value)."""
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = model(x)
    (y * g).sum().backward()
    return (y.detach(), x.grad, *[p.grad.clone() for p in model.parameters() if p.grad is not None])


# ---- configuration --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["yes", 1, None, 1.0])
def test_bad_values_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="training.periphery"):
        TrainingConfig(periphery=bad)
    with pytest.raises(ConfigError, match="training.periphery"):
        AnalogConfig.from_dict({"training": {"periphery": bad}})


def test_round_trip_dict_yaml_and_experiment_stage() -> None:
    cfg = _cfg(aimc.presets.aihwkit_default(), noise="additive")
    assert cfg.to_dict()["training"]["periphery"] is True
    assert AnalogConfig.from_dict(cfg.to_dict()) == cfg
    assert AnalogConfig.from_yaml(cfg.to_yaml()) == cfg
    assert AnalogConfig().training.periphery is False
    exp = {"name": "t", "model": {"name": "digits_cnn"}, "data": {"name": "digits"},
           "analog": {"aihwkit": {"preset": "aihwkit_default"}},
           "training": [{"name": "hwa", "kind": "hwa", "epochs": 1, "training": {"periphery": True}}]}
    e = experiment_from_dict(yaml.safe_load(yaml.safe_dump(exp)))
    assert e.stage_config(e.training[0]).training.periphery is True
    exp["training"][0]["training"]["periphery"] = "on"
    with pytest.raises(ConfigError, match="periphery"):
        experiment_from_dict(exp)


# ---- ideal periphery: nothing changes -------------------------------------------------------------------------
def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 5))


@pytest.mark.parametrize("noise", ["none", "additive"])
def test_ideal_periphery_is_exactly_the_plain_training_forward(noise: str) -> None:
    base = aimc.presets.joshi2020()
    assert base.periphery.is_ideal
    on, off = _twins(_net(), _cfg(base, noise=noise), _cfg(base, periphery=False, noise=noise))
    x, g = torch.randn(4, 2, 6, 6), torch.randn(4, 5)
    for a, b in zip(_grads(on, x, g), _grads(off, x, g)):
        assert torch.equal(a, b)


# ---- aihwkit_default: the periphery is in the training forward ------------------------------------------------
def _linear(cfg: AnalogConfig, n_in: int = 40, n_out: int = 6, scale: float = 0.1) -> nn.Module:
    torch.manual_seed(2)
    lin = nn.Linear(n_in, n_out, bias=False)
    with torch.no_grad():
        lin.weight.normal_(0, scale)
    return aimc.convert(lin, cfg).train()


def test_outputs_are_dac_then_adc_of_the_tile() -> None:
    """One tile, no noise, no bound management: y = ADC(DAC(x/s)·Wᵀ)·s with s = max|x| per vector."""
    cfg = _cfg(aimc.presets.aihwkit_default(), out_noise=0.0, bound_management="none")
    layer = _linear(cfg)
    x = torch.randn(64, 40)
    y = layer(x).detach()
    w = layer.weight.detach()
    s = x.abs().amax(dim=1, keepdim=True)
    d, a = dac_step(7), adc_step(9, 12.0)
    expect = torch.clamp(torch.round((torch.round(x / s / d) * d) @ w.t() / a) * a, -12, 12) * s
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-6)
    on_grid = y / s / a
    assert (on_grid - on_grid.round()).abs().max() < 1e-3  # every output on the ADC grid
    assert not torch.allclose(y, x @ w.t(), rtol=1e-3, atol=1e-4)  # and not the ideal product
    # the DAC alone (no ADC, static range r): y = (round(x/r/d)·d·r)·Wᵀ
    r = 2.0
    cfg_s = _cfg(aimc.presets.aihwkit_default(), out_noise=0.0, bound_management="none", adc_bits=None,
                 out_bound=None, input_range="static", input_bound=r)
    layer_s = _linear(cfg_s)
    x_q = torch.clamp(torch.round(x / r / d) * d, -1, 1) * r
    torch.testing.assert_close(layer_s(x).detach(), x_q @ layer_s.weight.detach().t(), rtol=1e-5, atol=1e-6)


def test_convolution_outputs_are_the_patch_mvms_through_the_periphery() -> None:
    cfg = _cfg(aimc.presets.aihwkit_default(), out_noise=0.0, bound_management="none")
    torch.manual_seed(3)
    conv = aimc.convert(nn.Conv2d(2, 4, 3, padding=1, bias=True), cfg).train()
    x = torch.randn(3, 2, 5, 5)
    y = conv(x).detach()
    cols = nn.functional.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 18)  # (N·L, C·k·k)
    s = cols.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
    d, a = dac_step(7), adc_step(9, 12.0)
    w = conv.weight.detach().reshape(4, -1)
    ref = torch.clamp(torch.round((torch.round(cols / s / d) * d) @ w.t() / a) * a, -12, 12) * s
    ref = ref.view(3, 25, 4).transpose(1, 2).reshape(3, 4, 5, 5) + conv.bias.detach().view(1, -1, 1, 1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("units", ["weight", "normalized"])
def test_output_noise_variance_matches_the_equation(units: str) -> None:
    """Two row tiles (tile_rows 20 of 40 inputs), dynamic ranges: y − y_noise-free = Σ_k s_k·c_k·N(0, σ²), so
    z = (y − y₀) / (σ·sqrt(Σ_k (s_k·c_k)²)) has mean 0 and variance 1 (c_k = 1 in weight units, the tile's
    max|W| for normalised outputs). n = 4000·6 samples: SE(mean) = 1/√n, SE(var) ≈ √(2/n); tolerance 5 SE."""
    sigma = 0.05
    base = dataclasses.replace(aimc.presets.aihwkit_default(), mapping=MappingConfig(tile_rows=20, tile_cols=512))
    kw = dict(adc_bits=None, out_bound=None, bound_management="none", output_units=units)
    noisy, clean = _cfg(base, out_noise=sigma, **kw), _cfg(base, out_noise=0.0, **kw)
    a, b = _linear(noisy), _linear(clean)
    x = torch.randn(4000, 40)
    torch.manual_seed(5)
    y = a(x).detach()
    y0 = b(x).detach()
    w = a.weight.detach()
    s = torch.stack([x[:, :20].abs().amax(1), x[:, 20:].abs().amax(1)], dim=1)  # (N, 2)
    if units == "normalized":
        c = torch.stack([w[:, :20].abs().max(), w[:, 20:].abs().max()])  # scale 'tile': one max per tile
    else:
        c = torch.ones(2)
    std = sigma * ((s * c) ** 2).sum(1, keepdim=True).sqrt()
    z = ((y - y0) / std).flatten()
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    torch.manual_seed(5)
    assert torch.equal(a(x).detach(), y)  # torch's default generator: seeded, reproducible
    assert not torch.equal(a(x).detach(), y)  # and fresh on every forward


@pytest.mark.parametrize("noise", ["none", "additive"])
def test_gradients_are_straight_through(noise: str) -> None:
    """The backward pass is the ideal MVM of the (noisy) weights: input and weight gradients equal those of the
    plain training forward (same seed, so the same weight-noise draw), for Conv2d, Linear, a grouped Conv1d and a
    Hugging Face-style ``Conv1D`` with an ``(in, out)`` weight (each layer alone: in a network the activations, hence the later gradients, differ)."""
    base = aimc.presets.aihwkit_default()
    torch.manual_seed(1)
    cases = [(nn.Conv2d(2, 3, 3, padding=1), torch.randn(4, 2, 6, 6), torch.randn(4, 3, 6, 6)),
             (nn.Linear(30, 5), torch.randn(4, 30), torch.randn(4, 5)),
             (nn.Conv1d(4, 6, 3, groups=2), torch.randn(2, 4, 7), torch.randn(2, 6, 5)),
             (Conv1D(5, 30), torch.randn(4, 30), torch.randn(4, 5))]  # an (in, out) projection
    for layer, x, g in cases:
        on, off = _twins(layer, _cfg(base, noise=noise), _cfg(base, periphery=False, noise=noise))
        ya, *ga = _grads(on, x, g)
        yb, *gb = _grads(off, x, g)
        assert not torch.allclose(ya, yb, atol=1e-3)  # the forward did change
        for a, b in zip(ga, gb):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradients_pass_clipped_outputs_straight_through() -> None:
    """Outputs beyond the ADC range (no bound management) clip in the forward; the gradient is still the ideal
    one (aihwkit: backward is ideal), finite."""
    cfg = _cfg(aimc.presets.aihwkit_default(), out_noise=0.0, bound_management="none", out_bound=0.5)
    on = _linear(cfg, scale=1.0)
    off = _linear(_cfg(aimc.presets.aihwkit_default(), periphery=False), scale=1.0)
    x, g = torch.ones(8, 40), torch.randn(8, 6)
    ya, *ga = _grads(on, x, g)
    yb, *gb = _grads(off, x, g)
    assert float(ya.abs().max()) <= 0.5 * float(x.abs().max()) + 1e-6 < float(yb.abs().max())  # it clipped
    for a, b in zip(ga, gb):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lstm_matrices_train_through_the_periphery() -> None:
    torch.manual_seed(4)
    lstm = nn.LSTM(6, 5)
    base = aimc.presets.aihwkit_default()
    on, off = _twins(lstm, _cfg(base), _cfg(base, periphery=False))
    x = torch.randn(3, 2, 6)
    ya, ga = on(x)[0], off(x)[0]
    assert not torch.allclose(ya, ga, atol=1e-4)
    assert torch.allclose(ya, ga, atol=0.1)
    ya.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in on.parameters())


class _Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x)[0]


@pytest.mark.parametrize("make", [lambda: nn.GRU(6, 5), lambda: nn.RNN(6, 5), lambda: _Attn()],
                         ids=["gru", "rnn", "attention"])
def test_matrix_layers_train_through_the_periphery(make) -> None:  # noqa: ANN001
    """Layers whose matrices go through aimc.nn.matrix.mvm: the training forward changes with the periphery
    (finite gradients) and is exactly the plain one with an ideal periphery."""
    torch.manual_seed(6)
    m = make()
    x = torch.randn(3, 2, 6) if not isinstance(m, _Attn) else torch.randn(3, 2, 8)
    out = (lambda mod: mod(x)[0]) if not isinstance(m, _Attn) else (lambda mod: mod(x))
    base = aimc.presets.aihwkit_default()
    on, off = _twins(m, _cfg(base), _cfg(base, periphery=False))
    ya, yb = out(on), out(off)
    assert not torch.allclose(ya, yb, atol=1e-4)
    ya.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in on.parameters() if p.requires_grad)
    ideal = aimc.presets.joshi2020()
    on, off = _twins(m, _cfg(ideal), _cfg(ideal, periphery=False))
    assert torch.equal(out(on), out(off))


@pytest.mark.parametrize("make", [lambda: nn.Conv3d(2, 3, 2), lambda: nn.ConvTranspose2d(2, 3, 2)],
                         ids=["conv3d", "conv_transpose2d"])
def test_unsupported_layers_say_so(make) -> None:  # noqa: ANN001
    from aimc.errors import UnsupportedLayerError

    layer = aimc.convert(make(), _cfg(aimc.presets.aihwkit_default())).train()
    x = torch.randn(1, 2, 4, 4, 4) if isinstance(layer, nn.Conv3d) else torch.randn(1, 2, 4, 4)
    with pytest.raises(UnsupportedLayerError, match="training.periphery"):
        layer(x)


def test_eval_and_inference_are_unchanged() -> None:
    """training.periphery only changes train-mode forwards: the digital eval forward stays the master weights."""
    layer = _linear(_cfg(aimc.presets.aihwkit_default()))
    x = torch.randn(5, 40)
    torch.testing.assert_close(layer.eval()(x), x @ layer.weight.t(), rtol=0, atol=0)


def test_comparison_script_runs_and_summarises() -> None:
    """examples/hwa_periphery.py on a tiny budget: both variants trained from the same FP model, every cell
    scored, the summary names the step-cost ratio."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "hwa_periphery.py"
    spec = importlib.util.spec_from_file_location("hwa_periphery_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    df = mod.run("digits", seeds=1, eval_seeds=1, fp_epochs=1, hwa_epochs=1, train_limit=128)
    assert len(df) == 2 * 2 * len(mod.TIMES)  # periphery × compensation × time
    assert set(df.periphery) == {False, True} and df.fp_digital.nunique() == 1
    assert df.accuracy.between(0, 1).all() and (df.step_seconds > 0).all()
    assert "ratio" in mod.summary(df)
