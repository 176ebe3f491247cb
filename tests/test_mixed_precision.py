"""Tests of aimc.train.MixedPrecision: χ accumulation, blind pulse transfer, refresh, digital SGD, bad input.

The transfer rule is checked exactly on a deterministic device (no device-to-device spread, no cycle noise in the
checks that count pulses); statistical checks use 5 standard errors as in ``test_pcm_training_device.py``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aimc
from aimc.devices import PCMTrainingDevice
from aimc.errors import ConfigError, StateError
from aimc.train import MixedPrecision, NonFiniteGradientWarning


def cfg() -> aimc.AnalogConfig:
    return dataclasses.replace(aimc.presets.joshi2020(), training=aimc.TrainingConfig(noise="none", clip="none"))


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return aimc.convert(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), cfg())


QUIET = PCMTrainingDevice(d2d_std=0.0, step_std=(0.0, 0.0, 0.0), read_noise=(0.0, 0.0), drift_nu=0.0,
                         g_reset_std=0.0)
"""Deterministic device: every pulse adds exactly μ(G, P)."""


def quiet_opt(model: nn.Module, **kw) -> MixedPrecision:
    kw.setdefault("device", QUIET)
    return MixedPrecision(model, lr=kw.pop("lr", 1.0), seed=0, **kw)


def train(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """``steps`` full-batch cross-entropy steps; the loss of each."""
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_is_a_torch_optimizer_and_scheduler_works() -> None:
    model = linear_model()
    opt = MixedPrecision(model, lr=0.5, seed=0)
    assert isinstance(opt, torch.optim.Optimizer)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    train(model, opt, torch.randn(8, 6), torch.randint(0, 3, (8,)), 1)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_weights_are_device_reads() -> None:
    """The weight parameter is the devices' noise-free weight β·(G+ − G−); read_weights draws one noisy read."""
    model = linear_model()
    w0 = model[0].weight.detach().clone()
    opt = quiet_opt(model)
    st = opt.device_state(model[0].weight)
    assert torch.allclose(model[0].weight.detach(), st["beta"] * (st["g"][0] - st["g"][1]))
    # open-loop programming of the initial weights: within one mean step of the target (first-pulse step 1.83 µS)
    assert float((model[0].weight.detach() - w0).abs().max()) <= st["beta"] * 1.9
    noisy = MixedPrecision(linear_model(), lr=1.0, seed=0)
    w = noisy.param_groups[0]["params"][0]
    clean = w.detach().clone()
    noisy.read_weights(noise=True)
    assert not torch.equal(w.detach(), clean)  # one noisy read of the array
    w.grad = torch.zeros_like(w)
    noisy.step()
    assert torch.equal(w.detach(), clean)  # a training step restores the noise-free weights
    noisy.read_weights(noise=False)
    assert torch.equal(w.detach(), clean)


def test_read_noise_per_mvm_matches_device_variance() -> None:
    """Every training MVM is a fresh read: forward outputs carry variance Σ_j σ_ij²·x_j², backward input
    gradients Σ_i σ_ij²·δ_i² (σ_ij² = β²·(σ_read(G+)² + σ_read(G−)²)). N identical input vectors give N
    independent reads; sample variance within 5 SE (SE = var·√(2/(N−1)), Gaussian)."""
    torch.manual_seed(0)
    model = aimc.convert(nn.Linear(50, 4), cfg())
    opt = MixedPrecision(model, lr=0.1, seed=0, drift=False)
    w, var = model.weight.detach(), opt.read_variance(model.weight)
    n = 20_000
    x1 = torch.randn(50)
    x = x1.expand(n, 50).clone().requires_grad_(True)
    y = model(x)
    d = torch.tensor([1.0, -2.0, 0.5, 3.0])
    (y * d).sum().backward()
    for out, mean, v in ((y.detach(), w @ x1 + model.bias.detach(), var @ (x1 * x1)), (x.grad, w.t() @ d, var.t() @ (d * d))):
        for j in range(out.shape[1]):
            col = out[:, j]
            assert abs(float(col.mean()) - float(mean[j])) < 5 * math.sqrt(float(v[j]) / n)
            assert abs(float(col.var()) - float(v[j])) < 5 * float(v[j]) * math.sqrt(2 / (n - 1))
    # weight gradient: the exact digital outer product Σ_samples δ·xᵀ
    assert torch.allclose(model.weight.grad, n * d[:, None] * x1[None, :], rtol=1e-4, atol=1e-3)
    model.eval()
    assert torch.equal(model(x1[None]), model(x1[None]))  # eval mode: no hook, the stored weights


def test_transfer_rule_exact() -> None:
    """χ ← χ − lr·g; n = trunc(χ/ε) pulses on G+ (n > 0) or G− (n < 0); χ ← χ − n·ε; pulses counted."""
    model = linear_model()
    opt = quiet_opt(model, refresh=False, lr=0.5)
    w = model[0].weight
    st = opt.device_state(w)
    eps = st["eps"]
    g_before = st["g"].clone()
    grad = torch.zeros_like(w)
    grad[0, 0], grad[0, 1], grad[1, 0], grad[2, 2] = -2.5 * eps / 0.5, 1.2 * eps / 0.5, -0.7 * eps / 0.5, 0.1
    w.grad = grad
    opt.step()
    chi = opt.device_state(w)["chi"]
    assert float(chi[0, 0]) == pytest.approx(0.5 * eps, rel=1e-5)   # 2.5ε → 2 pulses on G+
    assert float(chi[0, 1]) == pytest.approx(-0.2 * eps, rel=1e-5)  # −1.2ε → 1 pulse on G−
    assert float(chi[1, 0]) == pytest.approx(0.7 * eps, rel=1e-5)   # below ε: kept, no pulse
    assert float(chi[2, 2]) == pytest.approx(-0.05, rel=1e-5)
    dg = st["g"] - g_before
    assert float(dg[0, 0, 0]) > 0 and float(dg[1, 0, 0]) == 0
    assert float(dg[1, 0, 1]) > 0 and float(dg[0, 0, 1]) == 0
    changed = (dg != 0).sum()
    assert int(changed) == 2 + (1 if abs(0.05) >= eps else 0)
    rep = opt.epoch_report()
    assert rep.pulses == 3 + (int(abs(0.05) // eps) if abs(0.05) >= eps else 0)
    assert rep.steps == 1 and rep.weights == 6 * 5 + 5 * 3


def test_chi_accumulates_small_updates_and_ablation_drops_them() -> None:
    """Updates of 0.3ε: with χ the 4th step fires one pulse (χ = 1.2ε → 0.2ε); without χ nothing ever fires."""
    for accumulate, expect in ((True, [0, 0, 0, 1, 0, 0, 1]), (False, [0] * 7)):
        model = linear_model()
        opt = quiet_opt(model, refresh=False, accumulate=accumulate)
        w = model[0].weight
        eps = opt.device_state(w)["eps"]
        got = []
        for _ in range(7):
            g = torch.zeros_like(w)
            g[0, 0] = -0.3 * eps
            w.grad = g
            opt.step()
            got.append(opt.epoch_report().pulses)
        assert got == expect, accumulate
        if not accumulate:
            assert float(opt.device_state(w)["chi"].abs().max()) == 0.0
    # without χ an update ≥ ε/2 is rounded to the nearest whole number of pulses
    model = linear_model()
    opt = quiet_opt(model, refresh=False, accumulate=False)
    w = model[0].weight
    eps = opt.device_state(w)["eps"]
    g = torch.zeros_like(w)
    g[0, 0], g[0, 1] = -0.6 * eps, 1.6 * eps
    w.grad = g
    opt.step()
    assert opt.epoch_report().pulses == 1 + 2


def test_stochastic_rounding_is_unbiased() -> None:
    """χ = 1.3ε everywhere: n ∈ {1, 2} with E[n] = 1.3; mean over M weights within 5 SE (SE = √(0.21/M))."""
    torch.manual_seed(0)
    model = aimc.convert(nn.Linear(200, 100), cfg())
    opt = quiet_opt(model, refresh=False, rounding="stochastic")
    eps = opt.device_state(model.weight)["eps"]
    model.weight.grad = torch.full_like(model.weight, -1.3 * eps)
    opt.step()
    m = model.weight.numel()
    mean_n = opt.epoch_report().pulses / m
    assert abs(mean_n - 1.3) < 5 * math.sqrt(0.3 * 0.7 / m)
    chi = opt.device_state(model.weight)["chi"] / eps
    assert torch.all(chi.abs() < 1.0)


def test_refresh_resets_saturated_pairs_and_keeps_the_difference() -> None:
    model = linear_model()
    opt = quiet_opt(model)
    w = model[0].weight
    st = opt.device_state(w)
    eps, beta = st["eps"], st["beta"]
    st["hist"][:, :2, :2] = 0.0  # settled history: the next step at 9 µS is μ(9, 0)
    for key in ("g", "g_read"):
        st[key][0, 0, 0], st[key][1, 0, 0] = 9.0, 4.0  # W = 5 µS·β; larger > 0.75·g_sat, smaller > 0.25·g_sat
        st[key][0, 1, 1], st[key][1, 1, 1] = 9.0, 1.0  # smaller below 0.25·g_sat: no refresh
    g = torch.zeros_like(w)
    g[0, 0] = g[1, 1] = -1.0 * eps
    w.grad = g
    opt.step()
    rep = opt.epoch_report()
    assert rep.refreshes == 1 and rep.refresh_pulses >= 1
    gp, gm = float(st["g"][0, 0, 0]), float(st["g"][1, 0, 0])
    assert gm == pytest.approx(QUIET.g_reset, abs=1e-6)  # re-written onto G+ only
    n_re = int(QUIET.nominal_pulses(torch.tensor([9.0 + float(QUIET.step_stats(torch.tensor(9.0),
                                                                               torch.tensor(0.0))[0]) - 4.0]))[0])
    assert gp == pytest.approx(float(QUIET.mean_trajectory(n_re)[-1]), abs=1e-4)
    assert abs((gp - gm) - 5.0) < 1.5  # within about one step of the old difference
    assert float(st["g"][0, 1, 1]) > 9.0 and float(st["g"][1, 1, 1]) == 1.0


def test_cached_weights_and_variances_match_the_devices() -> None:
    """The weights W = β·(G+ − G−) and read-noise variances β²·(σ(G+)² + σ(G−)²), σ = r1·G + r0, are caches
    rewritten only where devices change: after steps with pulses, refreshes and drift (past t0) they equal a fresh
    computation from g_read, and the read-noise MVMs use them."""
    torch.manual_seed(0)
    model = aimc.convert(nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4)), cfg())
    opt = MixedPrecision(model, lr=2.0, seed=0, seconds_per_batch=2.0, drift_every=7)
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    train(model, opt, x, y, 60)
    rep = opt.epoch_report()
    assert rep.pulses > 100 and rep.refreshes > 0 and opt.simulated_time > PCMTrainingDevice().drift_t0
    r1, r0 = opt.device.read_noise
    for layer in (model[0], model[2]):
        st = opt.device_state(layer.weight)
        gp, gm = st["g_read"][0], st["g_read"][1]
        assert torch.allclose(layer.weight.detach(), st["beta"] * (gp - gm), rtol=1e-6, atol=1e-7)
        var = st["beta"] ** 2 * ((r1 * gp + r0) ** 2 + (r1 * gm + r0) ** 2)
        assert torch.allclose(opt.read_variance(layer.weight), var, rtol=1e-5, atol=0.0)
        assert torch.all(st["g_read"] <= st["g"])  # drifted reads, never above the programmed value
        assert torch.any(st["g_read"] < st["g"])


def test_digital_parameters_use_sgd() -> None:
    model = linear_model()
    opt = quiet_opt(model, lr=0.3)
    b = model[0].bias
    b0 = b.detach().clone()
    b.grad = torch.arange(5, dtype=torch.float32)
    opt.step()
    assert torch.allclose(b, b0 - 0.3 * torch.arange(5, dtype=torch.float32))


def test_nan_gradient_skips_step_and_warns() -> None:
    model = linear_model()
    opt = MixedPrecision(model, lr=0.5, seed=0)
    w, b = model[0].weight, model[0].bias
    w.grad = torch.full_like(w, 0.1)
    opt.step()
    chi0 = opt.device_state(w)["chi"]
    w_before, b_before = w.detach().clone(), b.detach().clone()
    w.grad = torch.full_like(w, float("nan"))
    b.grad = torch.ones_like(b)
    with pytest.warns(NonFiniteGradientWarning, match="skipped"):
        opt.step()
    assert torch.equal(opt.device_state(w)["chi"], chi0)
    assert torch.equal(w.detach(), w_before) and torch.equal(b.detach(), b_before)
    rep = opt.epoch_report()
    assert rep.skipped_steps == 1 and rep.steps == 1


def test_model_without_analog_layers_raises() -> None:
    with pytest.raises(StateError, match="aimc.convert"):
        MixedPrecision(nn.Sequential(nn.Linear(3, 2)), lr=0.1)


@pytest.mark.parametrize("kw, word", [({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"),
                                      ({"weight_range": -1.0}, "weight_range"), ({"rounding": "up"}, "rounding"),
                                      ({"refresh_upper": 0.2, "refresh_lower": 0.5}, "refresh"),
                                      ({"max_pulses": 0}, "max_pulses"), ({"seconds_per_batch": -1.0}, "seconds"),
                                      ({"device": aimc.devices.PCM()}, "PCMTrainingDevice")])
def test_invalid_arguments_raise(kw: dict, word: str) -> None:
    kw.setdefault("lr", 0.1)
    with pytest.raises(ConfigError, match=word):
        MixedPrecision(linear_model(), **kw)


def test_zero_initial_weights_need_a_range() -> None:
    model = linear_model()
    with torch.no_grad():
        model[0].weight.zero_()
    with pytest.raises(ConfigError, match="weight_range"):
        MixedPrecision(model, lr=0.1)
    MixedPrecision(model, lr=0.1, weight_range=0.5)


def test_max_pulses_caps_and_keeps_the_rest_in_chi() -> None:
    model = linear_model()
    opt = quiet_opt(model, refresh=False, max_pulses=2)
    w = model[0].weight
    eps = opt.device_state(w)["eps"]
    g = torch.zeros_like(w)
    g[0, 0] = -5.0 * eps
    w.grad = g
    opt.step()
    assert opt.epoch_report().pulses == 2
    assert float(opt.device_state(w)["chi"][0, 0]) == pytest.approx(3.0 * eps, rel=1e-5)


@pytest.mark.parametrize("kind", ["conv", "lstm"])
def test_conv_and_lstm_layers_train(kind: str) -> None:
    """Conv2d and LSTM analog layers: loss falls on a tiny fixed batch; every analog matrix gets pulses."""
    torch.manual_seed(0)
    if kind == "conv":
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        x = torch.randn(32, 1, 8, 8)
    else:
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(5, 8, batch_first=True)
                self.fc = nn.Linear(8, 3)

            def forward(self, x):
                return self.fc(self.lstm(x)[0][:, -1])
        net = Net()
        x = torch.randn(32, 6, 5)
    s = x.reshape(32, -1)[:, :4].sum(1) if kind == "conv" else x[:, -1, :2].sum(1)
    y = (s > -0.5).long() + (s > 0.5).long()  # a learnable rule
    model = aimc.convert(net, cfg())
    opt = MixedPrecision(model, lr=0.5 if kind == "conv" else 2.0, seed=1)
    losses = train(model, opt, x, y, 40)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    rep = opt.epoch_report()
    assert len(rep.layers) == (2 if kind == "conv" else 3)
    assert all(v["pulses"] > 0 for v in rep.layers.values()), rep.layers


def test_drift_lowers_unprogrammed_weights_over_time() -> None:
    dev = dataclasses.replace(QUIET, drift_nu=0.04)
    model = linear_model()
    opt = MixedPrecision(model, lr=1.0, seed=0, device=dev, seconds_per_batch=100.0, drift_every=1)
    w = model[0].weight
    w0 = w.detach().clone()
    for _ in range(3):
        w.grad = torch.zeros_like(w)
        opt.step()
    factor = (300.0 / 38.6) ** -0.04
    nz = w0.abs() > 0
    assert torch.allclose(w.detach()[nz], w0[nz] * factor, rtol=1e-4)


def test_state_dict_round_trip() -> None:
    model = linear_model()
    opt = MixedPrecision(model, lr=0.5, seed=3)
    train(model, opt, torch.randn(8, 6), torch.randint(0, 3, (8,)), 3)
    sd = opt.state_dict()
    model2 = linear_model()
    model2.load_state_dict(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt2 = MixedPrecision(model2, lr=0.5, seed=99)
    opt2.load_state_dict(sd)
    for a, b in ((model[0].weight, model2[0].weight), (model[2].weight, model2[2].weight)):
        assert torch.equal(opt.device_state(a)["chi"], opt2.device_state(b)["chi"])
        assert torch.equal(opt.device_state(a)["g"], opt2.device_state(b)["g"])
    assert opt2.simulated_time == opt.simulated_time


def test_hook_survives_copy_and_pickle_and_detaches() -> None:
    """A deep copy or a pickled model trains as a plain analog model (the copy's weights are not the optimizer's);
    ``detach()`` removes the hooks."""
    import copy
    import io

    model = linear_model()
    opt = MixedPrecision(model, lr=0.1, seed=0)
    x = torch.randn(4, 6)
    clone = copy.deepcopy(model)
    assert torch.equal(clone(x), clone(x))  # no read noise: not the optimizer's parameters
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x), loaded(x))
    assert not torch.equal(model(x), model(x))  # the original: fresh read noise per MVM
    opt.detach()
    assert torch.equal(model(x), model(x))


def test_experiment_script_quick_and_resume(tmp_path) -> None:
    """examples/mixed_precision/run_experiments.py --quick: rows for both methods, a re-run skips them."""
    import csv
    import sys
    from pathlib import Path

    from helpers import load_example, require_mnist

    require_mnist()
    script = Path(__file__).resolve().parents[1] / "examples" / "mixed_precision" / "run_experiments.py"
    mod = load_example(script, "mp_run_experiments")
    try:
        args = ["--quick", "--out", str(tmp_path), "--only", "mlp,mlp_periphery", "--seeds", "0"]
        assert mod.main(args) == 0
        path = tmp_path / mod.CSV_NAME
        rows = list(csv.DictReader(path.open()))
        assert tuple(rows[0]) == mod.COLUMNS
        acc = {(r["experiment"], r["method"]): float(r["value"]) for r in rows if r["metric"] == "test_accuracy"}
        assert set(acc) == {("mlp", "fp"), ("mlp", "mixed_precision"), ("mlp_periphery", "mixed_precision")}
        assert all(0.5 < a <= 1.0 for a in acc.values())
        mtime = path.stat().st_mtime_ns
        assert mod.main(args) == 0  # resume: nothing to do
        assert path.stat().st_mtime_ns == mtime
        assert mod.main(["--report", "--out", str(tmp_path)]) == 0
        assert (tmp_path / "mixed_precision_curves.png").is_file()
    finally:
        del sys.modules["mp_run_experiments"]


# ---- moving or casting the model after the optimizer was built (issue 18 item 7) ---------------------------------
@pytest.mark.parametrize("move", ["double", "to_float64", "half", "data"])
@pytest.mark.parametrize("read_noise", [True, False])
def test_moving_the_model_after_building_raises_instead_of_training_nothing(move: str, read_noise: bool) -> None:
    """Old behaviour: after model.double() 20 steps applied 1,141 pulses to devices the model no longer read, and
    its weights never changed (with read noise off; with it on, a dtype RuntimeError deep in the MVM)."""
    model = linear_model()
    opt = MixedPrecision(model, lr=0.5, seed=0, read_noise=read_noise)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    train(model, opt, x, y, 1)  # fine before the move
    if move == "double":
        model.double()
    elif move == "to_float64":
        model.to(torch.float64)
    elif move == "half":
        model.half()
    else:
        model[0].weight.data = model[0].weight.data.clone()
    dtype = next(model.parameters()).dtype
    with pytest.raises(StateError, match=r"no longer share memory.*build MixedPrecision"):
        F.cross_entropy(model(x.to(dtype)), y).backward()  # the training MVM checks
    model[0].weight.grad = torch.zeros_like(model[0].weight)
    with pytest.raises(StateError, match=r"\['0'"):
        opt.step()  # and so does the step, before touching any device
    with pytest.raises(StateError):
        opt.read_weights()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_cast_before_building_trains_in_its_dtype(dtype: torch.dtype) -> None:
    model = linear_model().to(dtype)
    opt = MixedPrecision(model, lr=0.5, seed=0)
    assert all(p.dtype == dtype for p in model.parameters())
    w0 = model[0].weight.detach().clone()
    x, y = torch.randn(32, 6, dtype=dtype), torch.randint(0, 3, (32,))
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x).float(), y).backward()
        opt.step()
    assert opt.epoch_report().pulses > 0
    assert not torch.equal(model[0].weight.detach(), w0)  # the pulses reach the model's weights
    # device state in the model's dtype, never below float32
    assert opt.device_state(model[0].weight)["g"].dtype == torch.promote_types(dtype, torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_moving_to_another_device_raises() -> None:
    model = linear_model()
    opt = MixedPrecision(model, lr=0.5, seed=0)
    model.cuda()
    x, y = torch.randn(8, 6, device="cuda"), torch.randint(0, 3, (8,), device="cuda")
    with pytest.raises(StateError, match="no longer share memory"):
        F.cross_entropy(model(x), y).backward()
    with pytest.raises(StateError):
        opt.step()
