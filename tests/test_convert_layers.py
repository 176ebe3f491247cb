"""New analog layer types against their torch layers: ideal devices reproduce torch on both forward paths
(effective weights, and the per-tile matrix path forced by a huge ``out_bound``); MultiheadAttention in all its
forms; the AnalogWeight interception rules."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aimc
from aimc.nn import AnalogGRU, AnalogMultiheadAttention, AnalogRNN, AnalogWeight
from tests.helpers import ideal_pcm_free


def _programmed(model, cfg, t=3600.0, seed=0):
    a = aimc.convert(model, cfg).eval()
    aimc.program(a, seed=seed)
    aimc.at_time(a, t, seed=seed)
    return a


CFGS = [ideal_pcm_free(), ideal_pcm_free(out_bound=1e6), ideal_pcm_free(out_bound=1e6, input_range="dynamic",
                                                                        dac_bits=None)]


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv3d(3, 5, 2, padding=1, stride=(1, 2, 1)), (2, 3, 4, 6, 5)),
    (lambda: nn.Conv3d(4, 6, (2, 2, 3), groups=2, bias=False), (4, 5, 6, 6)),  # unbatched
    (lambda: nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1), (2, 6, 5, 5)),
    (lambda: nn.ConvTranspose2d(3, 2, (2, 3), stride=(2, 1), dilation=(1, 2), bias=False), (2, 3, 4, 4)),
    (lambda: nn.ConvTranspose1d(5, 3, 4, stride=2, padding=1), (2, 5, 9)),
    (lambda: nn.ConvTranspose1d(5, 3, 3), (5, 7)),  # unbatched
])
@pytest.mark.parametrize("cfg", CFGS, ids=["weights", "tiles", "tiles-dynamic"])
def test_ideal_convolutions_equal_torch(make, shape, cfg):
    torch.manual_seed(0)
    layer = make().eval()
    x = torch.randn(shape)
    a = _programmed(nn.Sequential(layer), cfg)
    torch.testing.assert_close(a(x), layer(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind,kw", [(nn.GRU, dict(num_layers=2, bidirectional=True, batch_first=True)),
                                     (nn.GRU, dict(bias=False)), (nn.RNN, dict(nonlinearity="relu")),
                                     (nn.RNN, dict(num_layers=2, batch_first=True))])
@pytest.mark.parametrize("cfg", CFGS[:2], ids=["weights", "tiles"])
def test_ideal_gru_rnn_equal_torch(kind, kw, cfg):
    torch.manual_seed(0)
    rnn = kind(5, 7, **kw).eval()
    x = torch.randn(3, 4, 5)
    h0 = torch.randn(rnn.num_layers * (2 if rnn.bidirectional else 1), 3 if rnn.batch_first else 4, 7)
    a = _programmed(nn.Sequential(rnn), cfg)
    assert isinstance(a[0], (AnalogGRU, AnalogRNN))
    for args in ((x,), (x, h0)):
        out, h = a[0](*args)
        ref, h_ref = rnn(*args)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-4)
    out, h = a[0](x[0])  # unbatched
    ref, h_ref = rnn(x[0])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


MHA = [dict(batch_first=True), dict(batch_first=False), dict(kdim=6, vdim=5, batch_first=True),
       dict(bias=False, batch_first=False)]


@pytest.mark.parametrize("kw", MHA)
@pytest.mark.parametrize("mode", ["self", "cross", "kv_same"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_equals_torch(kw, mode, need_weights):
    """Packed and separate q/k/v projections, self- and cross-attention, masks, both layouts; ideal tiles."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, **kw).eval()
    bf = mha.batch_first
    lq, lk, n = 4, 6, 3
    shape = (lambda length, d: (n, length, d) if bf else (length, n, d))
    q = torch.randn(shape(lq, 8))
    if mode == "self" and "kdim" not in kw:
        k = v = q = torch.randn(shape(lk, 8))
        lq = lk
    elif mode == "kv_same" and "kdim" not in kw:
        k = v = torch.randn(shape(lk, 8))
    else:
        k, v = torch.randn(shape(lk, kw.get("kdim", 8))), torch.randn(shape(lk, kw.get("vdim", 8)))
    kpm = torch.zeros(n, lk, dtype=torch.bool)
    kpm[0, -2:] = True
    mask = torch.triu(torch.ones(lq, lk, dtype=torch.bool), 1) if lq == lk else None
    args = dict(key_padding_mask=kpm, attn_mask=mask, need_weights=need_weights)
    ref, w_ref = mha(q, k, v, **args)
    for cfg in CFGS[:2]:
        a = _programmed(nn.Sequential(mha), cfg)[0]
        assert isinstance(a, AnalogMultiheadAttention) and isinstance(a.out_proj, aimc.nn.AnalogLinear)
        out, w = a(q, k, v, **args)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        if need_weights:
            torch.testing.assert_close(w, w_ref, rtol=1e-4, atol=1e-4)
        else:
            assert w is None


def test_multihead_attention_unbatched_and_float_mask():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 4).eval()
    x = torch.randn(5, 8)
    fm = torch.randn(5, 5)
    ref = mha(x, x, x, attn_mask=fm, average_attn_weights=False)
    a = _programmed(nn.Sequential(mha), ideal_pcm_free())[0]
    out = a(x, x, x, attn_mask=fm, average_attn_weights=False)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-4, atol=1e-4)


class _Parent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x, img):
        b = self.fc.bias * 2  # another bias than the layer's own
        return F.linear(x, self.fc.weight, b), F.conv2d(img, self.conv.weight, self.conv.bias, padding=1)


def test_parent_products_run_on_the_child_tiles_in_every_mode():
    torch.manual_seed(0)
    p = _Parent()
    x, img = torch.randn(3, 6), torch.randn(1, 2, 5, 5)
    a = aimc.convert(p, aimc.presets.joshi2020())
    assert isinstance(a.fc.weight, AnalogWeight)
    a.eval()
    for got, ref in zip(a(x, img), p(x, img)):  # digital before programming
        torch.testing.assert_close(got, ref)
    aimc.program(a, seed=0)
    aimc.at_time(a, 1e8, seed=0, gdc=False)
    y = a(x, img)
    # analog: the product uses the drifted weights, the parent's bias is kept
    torch.testing.assert_close(y[0], F.linear(x, a.fc.analog.effective_weight(), p.fc.bias * 2))
    assert not torch.allclose(y[0], p(x, img)[0], atol=1e-3)
    assert not torch.allclose(y[1], p(x, img)[1], atol=1e-3)
    a.train()  # training: HWA noise reaches the parent's product, gradients reach the master weight
    out = a(x, img)[0].sum()
    out.backward()
    assert a.fc.weight.grad is not None and a.fc.weight.grad.abs().sum() > 0


def test_unsupported_products_on_a_programmed_weight_raise():
    torch.manual_seed(0)
    a = aimc.convert(nn.Sequential(nn.Linear(4, 3), nn.Conv2d(2, 2, 3)), aimc.presets.joshi2020()).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 10.0, seed=0)
    w = a[0].weight
    with pytest.raises(aimc.StateError, match="'0'"):  # an operator: TypeError would be swallowed by torch
        w @ torch.randn(4, 2)  # (out, in) weight as the left operand: a transposed read of the crossbar
    with pytest.raises(aimc.UnsupportedLayerError, match="mv"):
        torch.mv(w, torch.randn(4))
    with pytest.raises(aimc.UnsupportedLayerError, match="exclude"):
        torch.einsum("oi,bi->bo", w, torch.randn(2, 4))
    with pytest.raises(aimc.UnsupportedLayerError, match="stride"):
        F.conv2d(torch.randn(1, 2, 5, 5), a[1].weight, a[1].bias, stride=2)
    # non-product operations run on the master weight and give plain tensors
    assert type(w * 2) is torch.Tensor and type(a.state_dict()["0.weight"]) is torch.Tensor


def test_clip_and_training_of_a_transposed_convolution_keep_the_weight_layout():
    """aimc.clip on a ConvTranspose clamps each weight in place (its crossbar matrix is a transposed view)."""
    import dataclasses

    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 3, 3, stride=2)
    cfg = aimc.presets.joshi2020()
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, clip="fixed", clip_value=0.05))
    a = aimc.convert(nn.Sequential(layer), cfg)
    aimc.clip(a)
    torch.testing.assert_close(a[0].weight.detach(), layer.weight.detach().clamp(-0.05, 0.05))
    out = a(torch.randn(2, 4, 5, 5)).sum()  # training mode: noisy weights, gradient to the master weight
    out.backward()
    assert a[0].weight.grad.shape == layer.weight.shape and a[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("device", ["meta", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_convert_puts_the_crossbar_state_on_the_model_s_device(device):
    """A model already on another device (CUDA; meta stands in for it without a GPU) gets its analog matrices'
    buffers there too: they were built on the CPU, a device mismatch at program/at_time on CUDA."""
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Conv2d(2, 3, 3), torch.nn.LSTM(3, 4),
                            torch.nn.MultiheadAttention(4, 2)).to(device)
    a = aimc.convert(m, aimc.presets.joshi2020(), inplace=True)
    assert {b.device.type for _, b in a.named_buffers()} == {device}
    assert {p.device.type for p in a.parameters()} == {device}
