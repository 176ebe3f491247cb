"""The fast periphery paths (unfolded columns, static convolutions) against a direct per-vector reference built
from ``aimc.periphery.block_mvm`` on explicitly unfolded patches."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aimc
from aimc.config import PeripheryConfig
from aimc.nn import layers
from aimc.periphery import adc_step, block_mvm


def _reference(layer, x):
    """Per tile, per input vector: scale, DAC, MVM, (noise off), BM, ADC, unscale, digital scale; summed."""
    mat, p = layer.analog, layer.analog.config.periphery
    if isinstance(layer, nn.Conv2d):
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        xp = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)
        cols = F.unfold(xp, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)
        b, _, n_l = cols.shape
        rows = cols.transpose(1, 2).reshape(b * n_l, -1)
    else:
        rows = x
    lay = mat.layout
    out_pg = lay.out_features // lay.groups
    y = rows.new_zeros(rows.shape[0], lay.out_features)
    for k, (s, e) in enumerate(lay.row_bounds):
        for cs, ce in lay.col_bounds:
            g = cs // out_pg
            xk = rows[:, g * lay.rows + s: g * lay.rows + e]
            sc = xk.abs().amax(1, keepdim=True).clamp_min(1e-30) if p.input_range == "dynamic" else \
                mat.static_range(layer.aimc_name)
            yk = block_mvm(xk / sc, mat.w_analog[cs:ce, s:e], p, None) * sc
            y[:, cs:ce] += yk * mat.out_scale[cs:ce, k]
    if isinstance(layer, nn.Conv2d):
        h = (xp.shape[2] - layer.dilation[0] * (layer.kernel_size[0] - 1) - 1) // layer.stride[0] + 1
        y = y.reshape(b, n_l, -1).transpose(1, 2).reshape(b, -1, h, n_l // h)
        return y if layer.bias is None else y + layer.bias.view(1, -1, 1, 1)
    return y if layer.bias is None else y + layer.bias


def _cfg(**p):
    base = aimc.presets.aihwkit_default()
    per = dataclasses.replace(base.periphery, out_noise=0.0, **p)
    return dataclasses.replace(base, mapping=aimc.MappingConfig(40, 24, "tile"), periphery=per)


LAYERS = [
    lambda: nn.Conv2d(8, 30, 3, padding=1, stride=2),
    lambda: nn.Conv2d(8, 30, 3, padding=2, dilation=2, groups=2, bias=False),
    lambda: nn.Conv2d(8, 30, (3, 2), padding=(1, 2), padding_mode="reflect"),
    lambda: nn.Linear(70, 50),
]


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("kw", [dict(), dict(out_bound=2.0), dict(input_range="static", input_bound=2.5),
                                dict(input_range="static", input_bound=2.5, out_bound=0.8)])
@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_fast_paths_match_per_vector_reference(make, kw, chunk_bytes, monkeypatch):
    if chunk_bytes is not None:  # a convolution's columns built one image at a time instead of all at once
        monkeypatch.setattr(layers, "_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    layer = make()
    a = aimc.convert(layer, _cfg(**kw)).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 3600.0, seed=0)
    x = torch.randn(4, 8, 9, 9) if isinstance(layer, nn.Conv2d) else torch.randn(20, 70)
    with torch.no_grad():
        fast, ref = a(x), _reference(a, x)
    p = a.analog.config.periphery
    # the two paths order floating-point operations differently, so an ADC level can flip where a value lies
    # exactly between two levels: allow rare flips of at most one ADC step (times the digital scales)
    step = adc_step(p.adc_bits, p.out_bound) * float(a.analog.out_scale.max()) * float(x.abs().max())
    diff = (fast - ref).abs()
    assert float((diff > 1e-5).float().mean()) < 0.01
    assert float(diff.max()) <= step * 1.01 + 1e-5


def test_bound_management_retries_clipped_vectors_in_fast_path():
    """With a tiny out_bound, most vectors clip at factor 1; the fast path must retry them like the reference."""
    torch.manual_seed(1)
    layer = nn.Conv2d(4, 6, 3, padding=1)
    a = aimc.convert(layer, _cfg(out_bound=0.3)).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 25.0, seed=0)
    x = torch.randn(2, 4, 6, 6) * 3
    with torch.no_grad():
        plain = layer(x)
        fast = a(x)
    no_bm = aimc.convert(layer, _cfg(out_bound=0.3, bound_management="none")).eval()
    aimc.program(no_bm, seed=0)
    aimc.at_time(no_bm, 25.0, seed=0)
    with torch.no_grad():
        clipped = no_bm(x)
    err = lambda y: float((y - plain).norm() / plain.norm())  # noqa: E731
    assert err(fast) < 0.5 * err(clipped)
    torch.testing.assert_close(fast, _reference(a, x), atol=0.05 * float(plain.abs().max()), rtol=0)


@pytest.mark.parametrize("k,stride,dil", [((3, 3), (1, 1), (1, 1)), ((2, 3), (2, 1), (1, 2)), ((1, 5), (1, 3), (1, 1)),
                                          ((3, 1), (3, 3), (2, 1))])
def test_strided_unfold_equals_torch_unfold(k, stride, dil):
    x = torch.randn(3, 4, 11, 13).transpose(2, 3).contiguous().transpose(2, 3)  # not contiguous
    ho = (x.shape[2] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    wo = (x.shape[3] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    ours = layers._unfold(x[1:], k, dil, stride, ho, wo)
    assert torch.equal(ours, F.unfold(x[1:], k, dilation=dil, stride=stride))


@pytest.mark.parametrize("k,stride,dil", [((3, 3), (1, 1), (1, 1)), ((3, 3), (2, 2), (1, 1)), ((1, 1), (2, 2), (1, 1)),
                                          ((3, 5), (1, 3), (2, 1)), ((1, 7), (1, 1), (1, 2))])
def test_window_max_equals_torch_max_pool(k, stride, dil):
    """The per-patch abs-max of the dynamic input range: elementwise maxima of strided views == F.max_pool2d."""
    a = torch.randn(3, 2, 19, 23).abs()
    ref = F.max_pool2d(a, k, stride=stride, dilation=dil)
    ours = layers._window_max(a, k, dil, stride, *ref.shape[-2:])
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(8, 30, 3, padding=1, stride=2), lambda: nn.Linear(70, 30)])
def test_matrix_path_output_noise_is_gaussian_with_out_noise_std(make, monkeypatch):
    """(noisy − noise-free) output, divided by the per-vector input scale and the digital scale, is N(0, out_noise²).

    Sample mean and std within 5 standard errors (n = 30,720 conv / 30,000 linear draws); the convolution is
    chunked one image at a time, so the noise drawn into each chunk's slice of the output is checked too.
    """
    monkeypatch.setattr(layers, "_CHUNK_BYTES", 1)
    torch.manual_seed(0)
    layer, sigma = make(), 0.06
    base = aimc.presets.aihwkit_default()  # 512x512 tiles: one tile here, dynamic per-vector input range, 7-bit DAC

    def run(noise):
        per = dataclasses.replace(base.periphery, out_noise=noise, adc_bits=None, out_bound=None,
                                  bound_management="none")
        comp = dataclasses.replace(base.compensation, gdc=False)  # the GDC read-out would see the noise too
        a = aimc.convert(layer, dataclasses.replace(base, periphery=per, compensation=comp)).eval()
        aimc.program(a, seed=0)
        aimc.at_time(a, 3600.0, seed=0)
        return a

    conv = isinstance(layer, nn.Conv2d)
    x = torch.randn(16, 8, 16, 16) if conv else torch.randn(1000, 70)
    noisy, clean = run(sigma), run(0.0)
    with torch.no_grad():
        d = noisy(x) - clean(x)
    out_scale = noisy.analog.out_scale[:, 0]
    if conv:
        cols = F.unfold(F.pad(x, layer._reversed_padding_repeated_twice), 3, stride=2)  # (B, 72, L)
        sc = cols.abs().amax(1)  # (B, L)
        z = d.flatten(2) / (sc[:, None, :] * out_scale.view(1, -1, 1))
    else:
        z = d / (x.abs().amax(1, keepdim=True) * out_scale.view(1, -1))
    z = z.double().flatten()
    n = z.numel()
    assert abs(float(z.mean())) <= 5 * sigma / n**0.5
    assert abs(float(z.std()) - sigma) <= 5 * sigma / (2 * n) ** 0.5


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2d(8, 30, 3, padding=(2, 1), stride=2), (5, 8, 9, 7)),
    (lambda: nn.Conv2d(8, 30, 3, padding=1, padding_mode="circular", groups=2), (5, 8, 9, 7)),
    (lambda: nn.Conv1d(8, 30, 5, padding=3, dilation=2), (5, 8, 11)),
])
@pytest.mark.parametrize("kw", [dict(), dict(input_range="static", input_bound=2.5, out_bound=0.8)])
def test_buffered_columns_equal_the_autograd_path(make, shape, kw, monkeypatch):
    """Without a gradient the matrix path pads and unfolds into buffers reused across chunks and scales while
    unfolding; with a gradient to the input it builds new tensors per chunk. Both must give the same numbers."""
    monkeypatch.setattr(layers, "_CHUNK_BYTES", 1)  # one image per chunk: the buffers are reused
    torch.manual_seed(0)
    a = aimc.convert(make(), _cfg(**kw)).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 3600.0, seed=0)
    x = torch.randn(*shape) * 2
    with torch.no_grad():
        buffered = a(x)
    graph = a(x.clone().requires_grad_(True))
    assert graph.requires_grad
    assert torch.equal(buffered, graph.detach())
