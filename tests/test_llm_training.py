"""AFM-style hardware-aware training pieces: per-channel weight noise, per-channel clipping, distillation loss."""

import dataclasses as dc
import math

import pytest
import torch
import torch.nn.functional as F

import aimc
from aimc.train import distillation_loss, noise_std, noisy_weight


def _rows(scales, n_in=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(len(scales), n_in, generator=g) * 2 - 1
    return w * torch.tensor(scales)[:, None]


def test_channel_noise_std_is_eta_times_each_rows_max():
    w = _rows([1.0, 0.1, 3.0])
    w[1, 7] = 0.5  # an outlier sets row 1's max
    cfg = aimc.TrainingConfig(noise="additive_channel", eta=0.03)
    std = noise_std(w, cfg)
    want = 0.03 * w.abs().amax(dim=1, keepdim=True)
    assert std.shape == (3, 1) and torch.allclose(std, want)
    # a conv kernel: one max per output channel over (in, kh, kw)
    k = torch.randn(5, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(noise_std(k, cfg).flatten(), 0.03 * k.abs().reshape(5, -1).amax(1))


def test_channel_noise_sampled_std_matches_per_row_and_redraws():
    torch.manual_seed(0)
    w = _rows([1.0, 0.1, 3.0])
    cfg = aimc.TrainingConfig(noise="additive_channel", eta=0.05)
    d1, d2 = noisy_weight(w, cfg) - w, noisy_weight(w, cfg) - w
    want = 0.05 * w.abs().amax(dim=1)
    # 4000 samples per row: the sample std's relative error has sd 1/sqrt(2·4000) = 1.1 %; allow 5 %
    assert torch.allclose(d1.std(dim=1), want, rtol=0.05)
    assert d1.mean(dim=1).abs().lt(4 * want / math.sqrt(4000)).all()
    assert not torch.equal(d1, d2)  # a fresh draw every forward
    # layer-wide additive noise would give row 1 (max 0.1) 30x its per-channel std: the test above would fail
    layer = noisy_weight(w, aimc.TrainingConfig(noise="additive", eta=0.05)) - w
    assert layer[1].std() > 10 * want[1]


def test_channel_noise_in_a_converted_linear_training_forward():
    torch.manual_seed(0)
    lin = torch.nn.Linear(2000, 2, bias=False)
    with torch.no_grad():
        lin.weight[0].mul_(10)
    cfg = aimc.presets.llm_hermes()
    analog = aimc.convert(torch.nn.Sequential(lin), cfg)
    layer = analog[0]
    layer.train()
    w_noisy = layer.analog.train_weight(layer.weight)
    d = (w_noisy - layer.weight).detach()
    want = 0.03 * layer.weight.detach().abs().amax(dim=1)
    assert torch.allclose(d.std(dim=1), want, rtol=0.1)  # 2000 samples: sd 1.6 %


def test_channel_clip_bounds_each_row_at_alpha_std():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(3, 300) * torch.tensor([[1.0], [0.01], [5.0]]))
        model[0].weight[:, 0] = torch.tensor([10.0, 10.0, 100.0])  # outliers
    base = aimc.presets.llm_hermes()
    assert base.training.clip == "none"  # AFM's clip wrecked the SmolLM2 fine-tune: opt-in
    cfg = dc.replace(base, training=dc.replace(base.training, clip="channel_gaussian", clip_alpha=2.5))
    analog = aimc.convert(model, cfg)
    before = analog[0].weight.detach().clone()
    aimc.clip(analog)
    after = analog[0].weight.detach()
    bound = 2.5 * before.std(dim=1, keepdim=True)
    assert torch.allclose(after, torch.maximum(torch.minimum(before, bound), -bound))
    # row 1's outlier is clipped at its own row's bound; a layer-wide 2.5·std (≈ 11) would have kept it at 10
    assert float(after[1, 0]) == pytest.approx(float(bound[1])) and float(bound[1]) < 2
    assert 2.5 * float(before.std()) > 10


def _logits(seed, shape=(2, 6, 11)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_distillation_loss_is_t2_kl_over_scored_tokens():
    s, t = _logits(0), _logits(1)
    labels = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(2))
    labels[0, 3] = -100  # position 2 (predicting token 3) not scored
    for temp in (1.0, 2.0):
        got = distillation_loss(s, t, labels, temperature=temp, beta=1.0)
        kls = []
        for b in range(2):
            for p in range(5):
                if labels[b, p + 1] == -100:
                    continue
                pt = F.softmax(t[b, p] / temp, -1)
                kls.append(float((pt * (pt.log() - F.log_softmax(s[b, p] / temp, -1))).sum()))
        assert float(got) == pytest.approx(temp**2 * sum(kls) / len(kls), rel=1e-5)
    assert float(distillation_loss(t, t, labels)) == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_mixes_lm_loss_with_beta():
    s, t = _logits(0), _logits(1)
    labels = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(2))
    lm = F.cross_entropy(s[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    kl = distillation_loss(s, t, labels, temperature=2.0, beta=1.0)
    mixed = distillation_loss(s, t, labels, temperature=2.0, beta=0.25)
    assert float(mixed) == pytest.approx(float(0.75 * lm + 0.25 * kl), rel=1e-5)
    assert float(distillation_loss(s, t, labels, beta=0.0)) == pytest.approx(float(lm), rel=1e-6)
    with pytest.raises(aimc.ConfigError, match="labels"):
        distillation_loss(s, t, None, beta=0.5)
    with pytest.raises(aimc.ShapeError):
        distillation_loss(s, t[:, :-1])


def test_distillation_gradient_pulls_student_to_teacher():
    s = _logits(0).requires_grad_()
    t = _logits(1)
    distillation_loss(s, t).backward()
    # d/dz_s of KL(pt || ps) at T = 1 is (ps − pt)/n for scored positions, 0 for the last position
    n = 2 * 5
    want = (F.softmax(s.detach(), -1) - F.softmax(t, -1)) / n
    want[:, -1] = 0
    assert torch.allclose(s.grad, want, atol=1e-6)


def test_training_config_distill_fields_validate():
    assert aimc.TrainingConfig().distill_beta == 1.0
    with pytest.raises(aimc.ConfigError, match="distill_beta"):
        aimc.TrainingConfig(distill_beta=1.5)
    with pytest.raises(aimc.ConfigError, match="distill_temperature"):
        aimc.TrainingConfig(distill_temperature=0)
    cfg = aimc.presets.llm_hermes()
    assert aimc.AnalogConfig.from_dict(cfg.to_dict()) == cfg
