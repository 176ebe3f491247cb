"""Hardware-aware training toolbox: noise types, drop-connect, clip types, learned DAC input ranges, config.

Statistical checks use 5 standard errors (SE): for n independent N(0, σ²) samples the sample mean has SE σ/√n and
the sample std has SE ≈ σ/√(2n); a Bernoulli(p) fraction has SE √(p(1−p)/n). With the seeded generator the tests
are deterministic; 5 SE means a correct implementation would fail for < 1 seed in 10⁶, while a wrong formula
(e.g. a missing factor) is off by far more than 5 SE at these sample sizes.
"""

import dataclasses
import statistics

import pytest
import torch
from torch import nn

import aimc
from aimc.config import AnalogConfig, PeripheryConfig, TrainingConfig
from aimc.errors import ConfigError
from aimc.devices import PCM
from aimc.train import clip_bounds, noise_std, noisy_weight, quantize_ste

C = (0.26348, 1.9650, -1.1731)  # PCM programming-noise polynomial, µS at g_max = 25 µS (reference B.2)


def _weights(n_out=100, n_in=400, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, n_in, generator=g) * 0.1
    w[w.abs() < 1e-3] = 1e-3  # no (near-)zero weights: multiplicative noise divides by them below
    return w


def _draws(w, cfg, k=5):
    return torch.stack([noisy_weight(w, cfg) - w for _ in range(k)])


def _check_standard_normal(z):
    n = z.numel()
    assert abs(float(z.mean())) < 5 / n**0.5  # SE of the mean of N(0, 1) samples
    assert abs(float(z.std()) - 1) < 5 / (2 * n) ** 0.5  # SE of the std of N(0, 1) samples


# ---- noise types -----------------------------------------------------------------------------------------------
def test_additive_noise_std_is_eta_times_max_abs_w():
    w = _weights()
    cfg = TrainingConfig(noise="additive", eta=0.05)
    sigma = 0.05 * float(w.abs().max())
    _check_standard_normal(_draws(w, cfg) / sigma)


def test_multiplicative_noise_std_is_eta_times_abs_w():
    w = _weights()
    cfg = TrainingConfig(noise="multiplicative", eta=0.1, clip="none")
    _check_standard_normal(_draws(w, cfg) / (0.1 * w.abs()))


@pytest.mark.parametrize("eta", [0.038, 0.076])
def test_pcm_programming_noise_follows_the_device_polynomial(eta):
    w = _weights()
    cfg = TrainingConfig(noise="pcm_programming", eta=eta)
    w_max = float(w.abs().max())
    r = w.abs() / w_max  # = g_T / g_max
    sigma = w_max * (C[0] + C[1] * r + C[2] * r * r) / 25.0 * (eta / 0.038)  # formula written out independently
    _check_standard_normal(_draws(w, cfg) / sigma)
    # at eta = 0.038 the std relative to max|W| is the device's σ_prog / g_max: 1.05 % at w = 0, 4.2 % at |w| = max
    z = torch.tensor([[0.0, 1.0]])
    rel = noise_std(z, TrainingConfig(noise="pcm_programming")) / 1.0
    assert rel[0, 0].item() == pytest.approx(0.26348 / 25, rel=1e-6)
    assert rel[0, 1].item() == pytest.approx(sum(C) / 25, rel=1e-6)


def test_pcm_programming_uses_the_configured_pcm_polynomial():
    w = _weights(20, 50)
    dev = PCM(prog_coeffs=(0.5, 0.0, 0.0))
    std = noise_std(w, TrainingConfig(noise="pcm_programming", eta=0.038), device=dev)
    assert torch.allclose(std, torch.full_like(w, float(w.abs().max()) * 0.5 / 25))
    cfg = dataclasses.replace(aimc.presets.joshi2020(), device=dev,
                              training=TrainingConfig(noise="pcm_programming"))
    layer = aimc.convert(nn.Sequential(nn.Linear(400, 100)), cfg).train()[0]
    with torch.no_grad():
        layer.weight.copy_(_weights())
    w = layer.weight.detach()
    noise = torch.stack([layer.analog.train_weight(layer.weight).detach() - w for _ in range(5)])
    _check_standard_normal(noise / (float(w.abs().max()) * 0.5 / 25))


def test_drop_connect_fraction_and_noise_of_the_kept_weights():
    w = _weights()
    p = 0.3
    cfg = TrainingConfig(noise="additive", eta=0.05, drop_connect=p)
    out = torch.stack([noisy_weight(w, cfg) for _ in range(5)])
    dropped = out == 0  # kept weights are w + Gaussian noise, exactly 0 with probability 0
    n = dropped.numel()
    assert abs(float(dropped.float().mean()) - p) < 5 * (p * (1 - p) / n) ** 0.5  # SE of a Bernoulli fraction
    kept = (out - w)[~dropped] / (0.05 * float(w.abs().max()))
    _check_standard_normal(kept)
    # drop-connect alone: kept weights are untouched (no 1/(1-p) rescaling, as aihwkit)
    out = noisy_weight(w, TrainingConfig(noise="none", drop_connect=p))
    assert torch.equal(out[out != 0], w[out != 0])


def test_noise_is_redrawn_per_call_and_off_means_the_weight_itself():
    w = _weights(4, 5)
    cfg = TrainingConfig(noise="additive", drop_connect=0.2)
    assert not torch.equal(noisy_weight(w, cfg), noisy_weight(w, cfg))
    assert noisy_weight(w, TrainingConfig(noise="none")) is w
    assert noisy_weight(w, TrainingConfig(eta=0.0)) is w
    torch.manual_seed(3)
    a = noisy_weight(w, cfg)
    torch.manual_seed(3)
    assert torch.equal(a, noisy_weight(w, cfg))  # torch's default generator, like dropout


@pytest.mark.parametrize("cfg", [
    TrainingConfig(noise="additive"), TrainingConfig(noise="multiplicative", eta=0.2),
    TrainingConfig(noise="pcm_programming", drop_connect=0.5), TrainingConfig(noise="none", drop_connect=0.5),
])
def test_gradients_reach_the_master_weight_straight_through(cfg):
    """∂L/∂W = ∂L/∂W̃: for y = x·W̃ᵀ and L = Σ y that is Σ_n x[n] in every row, whatever the noise or mask."""
    w = nn.Parameter(_weights(6, 5))
    x = torch.randn(7, 5)
    (x @ noisy_weight(w, cfg).T).sum().backward()
    assert torch.allclose(w.grad, x.sum(0).expand(6, 5))
    # through a converted layer, whose train_weight delegates to noisy_weight
    hw = dataclasses.replace(aimc.presets.joshi2020(), training=cfg)
    layer = aimc.convert(nn.Sequential(nn.Linear(5, 6)), hw).train()[0]
    layer(x).sum().backward()
    assert torch.allclose(layer.weight.grad, x.sum(0).expand(6, 5))


# ---- clipping --------------------------------------------------------------------------------------------------
W = [[1.0, -2.0, 3.0, 10.0], [0.1, 0.2, -0.3, 0.0], [-4.0, 0.5, 0.25, -0.75]]


def _converted(clip_cfg):
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W))
    return aimc.convert(nn.Sequential(lin), dataclasses.replace(aimc.presets.joshi2020(), training=clip_cfg))


def _clamp_rows(rows, bounds):
    return torch.tensor([[max(-b, min(b, v)) for v in row] for row, b in zip(rows, bounds)])


def test_gaussian_clip_uses_the_sample_std_of_the_whole_matrix():
    m = _converted(TrainingConfig(clip="gaussian", clip_alpha=1.5))
    aimc.clip(m)
    b = 1.5 * statistics.stdev(v for row in W for v in row)  # sample std (n − 1)
    assert torch.allclose(m[0].weight.detach(), _clamp_rows(W, [b] * 3))


def test_fixed_clip_bounds_at_clip_value():
    m = _converted(TrainingConfig(clip="fixed", clip_value=0.5))
    aimc.clip(m)
    assert torch.allclose(m[0].weight.detach(), _clamp_rows(W, [0.5] * 3))


def test_channel_gaussian_clip_bounds_each_output_row():
    m = _converted(TrainingConfig(clip="channel_gaussian", clip_alpha=1.0))
    aimc.clip(m)
    bounds = [statistics.stdev(row) for row in W]
    assert torch.allclose(m[0].weight.detach(), _clamp_rows(W, bounds))
    top = m[0].weight.detach().abs().amax(dim=1)
    assert top.tolist() == pytest.approx(bounds)  # every row here reaches its own bound, which differ per row


def test_no_clip_leaves_the_weights_alone():
    m = _converted(TrainingConfig(clip="none"))
    aimc.clip(m)
    assert torch.equal(m[0].weight.detach(), torch.tensor(W))


def test_channel_clip_of_a_channels_last_convolution_and_of_each_lstm_matrix():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LSTM(4, 2))
    cfg = dataclasses.replace(aimc.presets.joshi2020(), training=TrainingConfig(clip="channel_gaussian"))
    a = aimc.convert(net, cfg).to(memory_format=torch.channels_last)
    with torch.no_grad():
        a[0].weight[:, 0, 0, 0] = 5.0
        a[2].weight_hh_l0[0, 0] = 5.0
    assert not a[0].weight.is_contiguous()
    conv_w = a[0].weight.detach().reshape(4, -1).clone()
    hh = a[2].weight_hh_l0.detach().clone()
    aimc.clip(a)
    for before, after in ((conv_w, a[0].weight.detach().reshape(4, -1)), (hh, a[2].weight_hh_l0.detach())):
        b = 2.0 * before.std(dim=1, keepdim=True)
        assert torch.allclose(after, torch.maximum(torch.minimum(before, b), -b))
        assert (after.abs() < before.abs()).any()
    assert clip_bounds(torch.ones(3, 1), TrainingConfig(clip="channel_gaussian")) is None  # 1 weight: no std


# ---- configuration ---------------------------------------------------------------------------------------------
def test_fixed_clip_needs_a_positive_clip_value():
    with pytest.raises(aimc.ConfigError, match="clip_value"):
        TrainingConfig(clip="fixed")
    with pytest.raises(aimc.ConfigError, match="clip_value=-1"):
        TrainingConfig(clip="fixed", clip_value=-1.0)
    with pytest.raises(aimc.ConfigError, match="only used by clip='fixed'"):
        TrainingConfig(clip="gaussian", clip_value=1.0)


def test_bad_training_values_are_all_reported():
    with pytest.raises(aimc.ConfigError) as e:
        TrainingConfig(noise="pink", eta=-0.1, clip="sometimes", clip_alpha=0, drop_connect=1.0,
                       learn_input_range="yes")
    msg = str(e.value)
    for part in ("noise='pink'", "eta=-0.1", "clip='sometimes'", "clip_alpha=0", "drop_connect=1.0",
                 "learn_input_range='yes'"):
        assert part in msg
    with pytest.raises(aimc.ConfigError, match="drop_connect=-0.5"):
        TrainingConfig(drop_connect=-0.5)


def test_every_new_field_round_trips_through_yaml():
    tr = TrainingConfig(noise="pcm_programming", eta=0.05, clip="fixed", clip_alpha=2.5, drop_connect=0.1,
                        clip_value=1.5, learn_input_range=True, periphery=True)
    cfg = dataclasses.replace(aimc.presets.joshi2020(), training=tr, periphery=PeripheryConfig(dac_bits=8))
    back = AnalogConfig.from_yaml(cfg.to_yaml())
    assert back == cfg and back.training == tr
    assert cfg.to_dict()["training"] == {"noise": "pcm_programming", "eta": 0.05, "clip": "fixed", "clip_alpha": 2.5,
                                         "drop_connect": 0.1, "clip_value": 1.5, "learn_input_range": True,
                                         "periphery": True, "distill_temperature": 1.0, "distill_beta": 1.0}
    with pytest.raises(ConfigError, match="static DAC"):  # learning a range needs a DAC to learn it for
        dataclasses.replace(aimc.presets.joshi2020(), training=tr)


# ---- learned input ranges --------------------------------------------------------------------------------------
def _dac_config(learn=True, bits=4, **training):
    tr = TrainingConfig(noise="none", clip="none", learn_input_range=learn, **training)
    return dataclasses.replace(aimc.presets.joshi2020(), periphery=PeripheryConfig(dac_bits=bits), training=tr)


def test_quantize_ste_gradients_by_hand():
    x = torch.tensor([0.1, 0.6, 1.5, -2.0], requires_grad=True)
    r = torch.tensor(1.0, requires_grad=True)
    y = quantize_ste(x, r, 3)  # L = 3 levels per side, step 1/3
    assert y.tolist() == pytest.approx([0.0, 2 / 3, 1.0, -1.0])
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]  # passes where |x| < r
    # ∂y/∂r: q − u inside (−0.1, 2/3 − 0.6), sign(x) outside (1, −1); LSQ scale 1/√(numel·L) = 1/√12
    assert float(r.grad) == pytest.approx((-0.1 + (2 / 3 - 0.6) + 1 - 1) / 12**0.5)


def test_learned_input_range_trains_and_lands_in_the_inference_buffer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    a = aimc.convert(net, _dac_config())
    mats = [a[0].analog, a[2].analog]
    assert all(isinstance(m.learned_input_range, nn.Parameter) for m in mats)
    params = {id(p) for p in a.parameters()}
    assert all(id(m.learned_input_range) in params for m in mats)  # the optimizer sees them
    x, y = torch.randn(32, 8) * 2, torch.randint(0, 3, (32,))
    opt = torch.optim.Adam(a.parameters(), lr=0.05)
    a.train()
    first = None
    for step in range(16):
        loss = nn.functional.cross_entropy(a(x), y)
        if step == 0:  # warm-up starts at the running max |x| of the first batch
            assert float(mats[0].learned_input_range.detach()) == pytest.approx(float(x.abs().max()))
        if step == 9:  # the last warm-up batch: r is still the running max, learning starts after it
            first = float(mats[0].learned_input_range.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        aimc.clip(a)
        for m in mats:
            assert float(m.input_range) == float(m.learned_input_range.detach())  # clip copied it into the buffer
    assert float(mats[0].learned_input_range.detach()) != pytest.approx(first, rel=1e-3)
    # the training forward quantises exactly like the inference DAC at the same range
    layer = a[0]
    r = layer.analog.learned_input_range
    xq_train = quantize_ste(x, r, 4)
    assert torch.equal(xq_train, layer._static_dac(x))
    with torch.no_grad():
        assert torch.equal(layer(x), nn.functional.linear(layer._static_dac(x), layer.weight, layer.bias))
    # deploy: the programmed model's DAC uses the learned range
    a.eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 60.0, seed=0)
    assert float(a[0].analog.static_range("0")) == float(r.detach())
    assert torch.isfinite(a(x)).all()


def test_learned_range_starts_from_a_stored_or_calibrated_value():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    a = aimc.convert(nn.Sequential(nn.Linear(8, 4)), _dac_config())
    aimc.calibrate_input_ranges(a, [(x, None)], quantile=0.5)
    calibrated = float(a[0].analog.input_range)
    a.train()(x * 10)
    assert float(a[0].analog.learned_input_range.detach()) == pytest.approx(calibrated)  # not the batch max
    # a reloaded model keeps its learned value (no new warm-up)
    b = aimc.convert(nn.Sequential(nn.Linear(8, 4)), _dac_config())
    b.load_state_dict(a.state_dict())
    b.train()(x * 100)
    assert float(b[0].analog.learned_input_range.detach()) == pytest.approx(calibrated)
    # input_bound is the starting value too
    cfg = dataclasses.replace(_dac_config(), periphery=PeripheryConfig(dac_bits=4, input_bound=0.7))
    c = aimc.convert(nn.Sequential(nn.Linear(8, 4)), cfg)
    assert float(c[0].analog.learned_input_range.detach()) == pytest.approx(0.7)


def test_no_learned_range_without_the_flag_or_a_static_dac():
    a = aimc.convert(nn.Sequential(nn.Linear(8, 4)), _dac_config(learn=False))
    assert a[0].analog.learned_input_range is None
    assert "0.analog.learned_input_range" not in a.state_dict()
    for p in (PeripheryConfig(), PeripheryConfig(dac_bits=4, input_range="dynamic")):  # nothing to learn for
        with pytest.raises(ConfigError, match="static DAC"):
            dataclasses.replace(_dac_config(), periphery=p)
    lstm = aimc.convert(nn.Sequential(nn.LSTM(3, 4)), _dac_config())  # LSTM training does not quantise inputs
    assert all(m.learned_input_range is None for m in lstm[0].analog.values())
    # without learning the running max |x| still sets the static range during training (existing behaviour)
    a = aimc.convert(nn.Sequential(nn.Linear(8, 4)), _dac_config(learn=False)).train()
    x = torch.randn(5, 8)
    a(x)
    assert float(a[0].analog.input_range) == pytest.approx(float(x.abs().max()))
