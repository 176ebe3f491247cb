"""The fast periphery paths (``aimc.nn.mvm``: unfolded columns, static convolutions) against the reference MVM
:func:`aimc.periphery.tiled_mvm` on explicitly unfolded patches: equal to float rounding with noise off, equal in
distribution (sampled moments vs the equations) with noise on."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aimc
from aimc.nn import layers, unfold
from aimc.periphery import block_mvm, tiled_mvm


def _patches(layer, x):
    """Input vectors of the layer's MVM ``(M, rows)`` and how to fold outputs back (None for a Linear)."""
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        return x, None
    one_d = isinstance(layer, nn.Conv1d)
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    xp = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)
    if one_d:
        xp = xp.unsqueeze(2)
    k = (1, *layer.kernel_size) if one_d else layer.kernel_size
    dil = (1, *layer.dilation) if one_d else layer.dilation
    st = (1, *layer.stride) if one_d else layer.stride
    cols = F.unfold(xp, k, dilation=dil, stride=st)
    b, _, n_l = cols.shape
    h = (xp.shape[2] - dil[0] * (k[0] - 1) - 1) // st[0] + 1
    return cols.transpose(1, 2).reshape(b * n_l, -1), (b, n_l, h, one_d)


def _fold(y, fold):
    b, n_l, h, one_d = fold
    y = y.reshape(b, n_l, -1).transpose(1, 2)
    return y if one_d else y.reshape(b, -1, h, n_l // h)


def _reference(layer, x, generator=None):
    """The layer's analog MVM by the reference :func:`aimc.periphery.tiled_mvm`, plus the digital bias."""
    mat = layer.analog
    p = mat.config.periphery
    vec, fold = _patches(layer, x)
    static = mat.static_range(layer.aimc_name) if p.input_range == "static" else None
    if mat.w_analog.numel():
        y = tiled_mvm(vec, mat.w_analog, mat.layout, p, generator, static_range=static, out_scale=mat.out_scale)
    else:  # ideal output side: the layer folds the digital scales into its cached weights
        y = tiled_mvm(vec, mat.w_eff, mat.layout, p, generator, static_range=static)
    if fold is not None:
        y = _fold(y, fold)
    return y if layer.bias is None else y + layer.bias.view(1, -1, *([1] * (y.dim() - 2)))


def _cfg(**p):
    base = aimc.presets.aihwkit_default()
    per = dataclasses.replace(base.periphery, out_noise=0.0, **p)
    return dataclasses.replace(base, mapping=aimc.MappingConfig(40, 24, "tile"), periphery=per)


LAYERS = [
    (lambda: nn.Conv2d(8, 30, 3, padding=1, stride=2), (4, 8, 9, 9)),
    (lambda: nn.Conv2d(8, 30, 3, padding=2, dilation=2, groups=2, bias=False), (4, 8, 9, 9)),
    (lambda: nn.Conv2d(8, 30, (3, 2), padding=(1, 2), padding_mode="reflect"), (4, 8, 9, 9)),
    (lambda: nn.Conv1d(8, 30, 5, padding=3, dilation=2), (4, 8, 11)),
    (lambda: nn.Linear(70, 50), (20, 70)),
    # one column tile (20 outputs), two row tiles (the layers above: two column tiles), through
    # aimc.nn.unfold.batched_forward's whole-batch periphery
    (lambda: nn.Conv2d(8, 20, 3, padding=1, stride=2), (4, 8, 9, 9)),
    (lambda: nn.Conv2d(8, 20, (3, 2), padding=(1, 2), padding_mode="reflect"), (4, 8, 9, 9)),
    (lambda: nn.Conv1d(8, 20, 5, padding=3, dilation=2), (4, 8, 11)),
    # packed groups (40x24 tiles): depthwise 3x3, 4 groups a tile, the last tile 2; grouped, 2 groups a tile;
    # depthwise Conv1d, 8 groups a tile, the last 2
    (lambda: nn.Conv2d(10, 10, 3, padding=1, groups=10), (4, 10, 9, 9)),
    (lambda: nn.Conv2d(12, 24, 3, padding=1, stride=2, groups=6, bias=False), (4, 12, 9, 9)),
    (lambda: nn.Conv1d(10, 10, 5, padding=2, groups=10), (4, 10, 11)),
]
PERIPHERY = [dict(), dict(out_bound=2.0), dict(input_range="static", input_bound=2.5),
             dict(input_range="static", input_bound=2.5, out_bound=0.8),
             dict(input_range="static", input_bound=2.5, bound_management="none"),
             dict(input_range="static", input_bound=2.5, adc_bits=None, out_bound=None, bound_management="none")]


def _analog(make, cfg, seed=0, t=3600.0, dtype=torch.float64):
    torch.manual_seed(seed)
    layer = make().to(dtype)
    a = aimc.convert(layer, cfg).eval()
    aimc.program(a, seed=seed)
    aimc.at_time(a, t, seed=seed)
    return layer, a


@pytest.mark.parametrize("make,shape", LAYERS)
@pytest.mark.parametrize("kw", PERIPHERY)
@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_fast_paths_equal_reference_to_float_rounding(make, shape, kw, chunk_bytes, monkeypatch):
    """Noise off, float64: every fast path (unfolded columns in chunks, static convolution, bound-management
    retries) gives the reference's numbers up to float rounding: no ADC level may differ (an ADC step is ~1e-2,
    the tolerance 1e-9). The inputs are scaled by 2, so bound management retries in the configs with a bound."""
    if chunk_bytes is not None:  # a convolution's columns built one image at a time instead of all at once
        monkeypatch.setattr(layers, "_CHUNK_BYTES", chunk_bytes)
    _, a = _analog(make, _cfg(**kw))
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        fast, ref = a(x), _reference(a, x)
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("static", [False, True])
def test_bound_management_retries_clipped_vectors_in_fast_path(static):
    """With a tiny out_bound most vectors clip at factor 1; the fast paths (static: the convolution falls back to
    the unfolded path) retry them exactly like the reference, and far better than clipping."""
    kw = dict(out_bound=0.3, input_range="static", input_bound=6.0) if static else dict(out_bound=0.3)
    make = lambda: nn.Conv2d(4, 6, 3, padding=1)  # noqa: E731
    plain, a = _analog(make, _cfg(**kw), seed=1, t=25.0)
    _, no_bm = _analog(make, _cfg(bound_management="none", **kw), seed=1, t=25.0)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        ideal, fast, clipped = plain(x), a(x), no_bm(x)
    err = lambda y: float((y - ideal).norm() / ideal.norm())  # noqa: E731
    assert err(fast) < 0.5 * err(clipped)
    torch.testing.assert_close(fast, _reference(a, x), rtol=1e-9, atol=1e-9)


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
    ours = unfold.window_max(a, k, dil, stride, *ref.shape[-2:])
    assert torch.equal(ours, ref)


NOISY = [
    # (layer, input shape, periphery, tiles): dynamic ranges take the unfolded path, a static range keeps a
    # convolution a convolution (static_conv_forward); 40x24 tiles sum several row tiles' noise
    (lambda: nn.Conv2d(8, 30, 3, padding=1, stride=2), (16, 8, 16, 16), dict(), None),
    (lambda: nn.Conv2d(8, 30, 3, padding=1, stride=2), (16, 8, 16, 16), dict(input_range="static", input_bound=3.0),
     None),
    (lambda: nn.Conv2d(8, 30, 3, padding=1, groups=2), (8, 8, 16, 16), dict(input_range="static", input_bound=3.0),
     (40, 24)),
    (lambda: nn.Conv2d(8, 30, 3, padding=1, stride=2), (16, 8, 16, 16), dict(), (40, 24)),
    # one column tile, two row tiles: both row tiles' noise drawn for the whole batch, split over several streams
    # (327,680 outputs ≥ aimc.nn.parallel_normal.MIN_SPLIT)
    (lambda: nn.Conv2d(8, 20, 3, padding=1), (16, 8, 32, 32), dict(), (40, 24)),
    (lambda: nn.Linear(70, 30), (1000, 70), dict(), None),
    (lambda: nn.Linear(70, 30), (1000, 70), dict(input_range="static", input_bound=3.0), (40, 24)),
    # packed depthwise tiles (4 groups a 40x24 tile, the last 2): the dynamic range spans the tile's groups
    (lambda: nn.Conv2d(10, 10, 3, padding=1, groups=10), (40, 10, 16, 16), dict(), (40, 24)),
]


@pytest.mark.parametrize("make,shape,kw,tiles", NOISY)
@pytest.mark.parametrize("chunk_bytes", [1, None])
def test_fast_path_output_noise_matches_the_equation(make, shape, kw, tiles, chunk_bytes, monkeypatch):
    """(noisy − noise-free) output of the fast path is Gaussian with mean 0 and, per output, variance
    out_noise² · Σ_k (input range of row tile k · digital scale of the output on tile k)² (the reference's noise).

    Standardised by that std, the sample mean and std must be within 5 standard errors of 0 and 1 (n ≥ 30,000
    draws: 5 SE ≈ 3 % of σ on the mean, 2 % on the std). The convolution is chunked one image at a time (noise drawn
    into each chunk's slice of the output) or not (several images a product: grouped layers add a noise tensor)."""
    if chunk_bytes is not None:
        monkeypatch.setattr(layers, "_CHUNK_BYTES", chunk_bytes)
    sigma = 0.06
    base = aimc.presets.aihwkit_default()  # dynamic per-vector input range, 7-bit DAC

    def cfg(noise):
        per = dataclasses.replace(base.periphery, out_noise=noise, adc_bits=None, out_bound=None,
                                  bound_management="none", **kw)
        comp = dataclasses.replace(base.compensation, gdc=False)  # the GDC read-out would see the noise too
        mapping = aimc.MappingConfig(*tiles, "tile") if tiles else base.mapping
        return dataclasses.replace(base, periphery=per, compensation=comp, mapping=mapping)

    _, noisy = _analog(make, cfg(sigma), dtype=torch.float32)
    _, clean = _analog(make, cfg(0.0), dtype=torch.float32)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        d = (noisy(x) - clean(x)).double()
    mat, p = noisy.analog, noisy.analog.config.periphery
    vec, fold = _patches(noisy, x.double())
    lay = mat.layout
    out_pg = lay.out_features // lay.groups
    var = torch.zeros(vec.shape[0], lay.out_features, dtype=torch.float64)
    for k, (s, e) in enumerate(lay.row_bounds):
        for cs, ce in lay.col_bounds:
            g0, g1 = cs // out_pg, -(-ce // out_pg)  # a packed tile's groups: all their input lines
            xk = vec[:, g0 * lay.rows + s: g0 * lay.rows + e] if g1 - g0 == 1 else vec[:, g0 * lay.rows: g1 * lay.rows]
            sc = xk.abs().amax(1, keepdim=True) if p.input_range == "dynamic" else mat.static_range("")
            var[:, cs:ce] += (sigma * sc * mat.out_scale[cs:ce, k].double()) ** 2
    std = var.sqrt()
    if fold is not None:
        std = _fold(std, fold)
    z = (d / std).flatten()
    n = z.numel()
    assert n >= 30_000
    assert abs(float(z.mean())) <= 5 / n**0.5
    assert abs(float(z.std()) - 1.0) <= 5 / (2 * n) ** 0.5


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


def _explicit_packed(a, x, per_tile, tile_range):
    """A packed depthwise/grouped convolution computed without the layout's helpers: the patches of each tile's
    groups (``per_tile`` consecutive groups, the last tile the remainder), the explicit ``torch.block_diag`` of their
    analog weights, :func:`aimc.periphery.block_mvm` at the input range ``tile_range(patches)``, × range × scales."""
    mat, conv = a.analog, a
    p = mat.config.periphery
    vec, fold = _patches(conv, x)
    g_n, rows = conv.groups, mat.layout.rows
    out_pg = conv.out_channels // g_n
    w = mat.w_analog.view(g_n, out_pg, rows)
    gen = torch.Generator().manual_seed(0)
    y = torch.zeros(vec.shape[0], conv.out_channels, dtype=vec.dtype)
    for g0 in range(0, g_n, per_tile):
        g1 = min(g_n, g0 + per_tile)
        block = torch.block_diag(*w[g0:g1])  # ((g1-g0)·out_pg, (g1-g0)·rows), zeros off the blocks
        xt = vec[:, g0 * rows: g1 * rows]
        sc = tile_range(xt)
        cols = slice(g0 * out_pg, g1 * out_pg)
        y[:, cols] = block_mvm(xt / sc, block, p, gen) * sc * mat.out_scale[cols, 0]
    y = _fold(y, fold)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("kw", [dict(), dict(out_bound=0.3),
                                dict(input_range="static", input_bound=2.5, out_bound=0.3)])
@pytest.mark.parametrize("make,per_tile", [(lambda: nn.Conv2d(10, 10, 3, padding=1, groups=10), 4),
                                           (lambda: nn.Conv2d(12, 24, 3, padding=1, groups=6), 2)])
def test_packed_tiles_equal_block_mvm_on_the_explicit_block_diagonal_matrix(make, per_tile, kw, monkeypatch):
    """Noise off, float64: a layer whose groups are packed into tiles (40x24 tiles: 4 depthwise 3x3 groups, or 2
    groups of 2 channels x 3x3 and 4 outputs) gives exactly what the reference one-tile MVM gives on each tile's
    explicit block-diagonal matrix, with the input range of the whole tile (abs-max over all its groups' inputs),
    bound management included (out_bound 0.3 re-reads vectors; a static range then leaves the convolution path).
    The same weights with each group's own input range give other numbers: the test would see a packed tile
    computed as separate groups."""
    _, a = _analog(make, _cfg(**kw))
    assert a.analog.layout.groups_per_tile == per_tile
    x = torch.randn(3, a.in_channels, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    static = kw.get("input_bound")

    def tile_range(xt):
        return static if static is not None else xt.abs().amax(1, keepdim=True).clamp_min(1e-30)

    from aimc.nn import mvm

    retried = []  # vectors the fast path re-read (bound management), through the one-tile reference
    monkeypatch.setattr(mvm, "block_mvm",
                        lambda xs, *args, **kw_: retried.append(len(xs)) or block_mvm(xs, *args, **kw_))
    with torch.no_grad():
        fast = a(x)
    assert (sum(retried) > 0) == ("out_bound" in kw)
    torch.testing.assert_close(fast, _explicit_packed(a, x, per_tile, tile_range), rtol=1e-9, atol=1e-9)
    if static is None:  # the same weights as one tile per group (each group's own input range): other numbers
        assert not torch.allclose(fast, _explicit_packed(a, x, 1, tile_range), rtol=1e-6, atol=1e-6)


def test_packed_tiles_share_one_weight_scale_and_one_gdc_factor():
    """``scale="tile"``: the |W| mapped to g_max is the max over all groups of a packed tile; the GDC read-out
    (aihwkit's identity read-out, whose last tile has fewer input lines) gives one finite factor per packed tile,
    equal without noise and ADC to mean |w| of the tile's explicit block-diagonal matrix over all its cells
    (zeros included: a one-hot input on a line of group g reads zeros on the other groups' columns)."""
    base = aimc.presets.aihwkit_default()
    per = dataclasses.replace(base.periphery, out_noise=0.0, adc_bits=None)
    cfg = dataclasses.replace(base, mapping=aimc.MappingConfig(40, 24, "tile"), periphery=per,
                              device=aimc.devices.PCM(prog_noise_scale=0.0, read_noise_scale=0.0))
    torch.manual_seed(0)
    conv = nn.Conv2d(10, 10, 3, padding=1, groups=10, bias=False).double()
    a = aimc.convert(conv, cfg).eval()
    aimc.program(a, seed=0)
    mat = a.analog
    w = conv.weight.detach().reshape(10, 9)
    for g0, g1 in [(0, 4), (4, 8), (8, 10)]:
        torch.testing.assert_close(mat.w_max[g0:g1, 0], w[g0:g1].abs().amax().expand(g1 - g0))
    w_a = mat._analog_weights(mat.device_state(a._matrix()).g_prog).view(10, 9)  # regenerated (issue 20)
    expect = torch.stack([torch.block_diag(*w_a[g0:g1, None, :]).abs().mean() for g0, g1 in [(0, 4), (4, 8), (8, 10)]])
    assert mat.gdc_base.shape == (3, 1)
    torch.testing.assert_close(mat.gdc_base[:, 0], expect.clamp_min(1e-4), rtol=1e-9, atol=1e-12)


def test_state_with_another_tile_count_is_refused_with_the_fix():
    """A device state stored with one tile per group (before packing) does not fit a packed layer: loading it says
    so and how to go on, instead of indexing GDC factors of the wrong tiles."""
    _, a = _analog(lambda: nn.Conv2d(10, 10, 3, padding=1, groups=10), _cfg())
    state = a.state_dict()
    state["analog.gdc_base"] = torch.ones(10, 1, dtype=torch.float64)  # per-group tiles
    with pytest.raises(aimc.errors.FileFormatError, match="program again"):
        a.load_state_dict(state)


@pytest.mark.parametrize("unfolded", [False, True])
def test_packed_equals_per_group_tiles_where_a_tile_shares_nothing(unfolded, monkeypatch):
    """Per-column weight scales, a static input range, no GDC and no clipping: nothing is shared over a tile, so a
    packed layer and the same layer with one tile per group (``make_layout(pack=False)``) give the same numbers
    (the same devices are programmed with the same noise: the packing adds no device, changes no statistics)."""
    from aimc.mapping import make_layout

    if unfolded:  # the batched grouped path instead of one grouped convolution
        monkeypatch.setattr(layers, "static_conv_forward", lambda layer, x: None)
    base = _cfg(input_range="static", input_bound=2.5)
    cfg = dataclasses.replace(base, mapping=aimc.MappingConfig(40, 24, "column"),
                              compensation=dataclasses.replace(base.compensation, gdc=False))
    make = lambda: nn.Conv2d(10, 10, 3, padding=1, groups=10).double()  # noqa: E731
    outs = []
    for pack in (True, False):
        torch.manual_seed(0)
        a = aimc.convert(make(), cfg).eval()
        a.analog.layout = make_layout(10, 9, groups=10, row_unit=9, tile_rows=40, tile_cols=24, pack=pack)
        aimc.program(a, seed=0)
        aimc.at_time(a, 3600.0, seed=0)
        assert a.analog.layout.n_tiles == (3 if pack else 10)
        x = torch.randn(3, 10, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            outs.append(a(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(out_bound=0.3), dict(input_range="static", input_bound=6.0, out_bound=0.3)])
@pytest.mark.parametrize("chunk_bytes", [None, 1])
@pytest.mark.parametrize("out_channels", [20, 30])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_whole_batch_periphery_retries_like_the_reference(kw, chunk_bytes, out_channels, n_threads, monkeypatch):
    """``aimc.nn.unfold.batched_forward`` (ungrouped; two row tiles of 40 and 32 lines, one or two column tiles of
    24 outputs): with a tiny out_bound vectors of several images clip on every tile; their re-reads (one block_mvm
    call per tile for the whole batch, on inputs unfolded again from the zero-padded input; a vector is re-read on
    the tile where it clipped, and its value is written over the one its chunk's periphery made) give the
    reference's numbers, the columns built one image at a time or all at once, the chunks on one or two lanes."""
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        _retries_like_the_reference(kw, chunk_bytes, out_channels, monkeypatch)
    finally:
        torch.set_num_threads(before)


def _retries_like_the_reference(kw, chunk_bytes, out_channels, monkeypatch):
    if chunk_bytes is not None:
        monkeypatch.setattr(layers, "_CHUNK_BYTES", chunk_bytes)

    retried = []
    monkeypatch.setattr(unfold, "block_mvm", lambda xs, *args, **kw_: retried.append(len(xs)) or block_mvm(xs, *args,
                                                                                                            **kw_))
    _, a = _analog(lambda: nn.Conv2d(8, out_channels, 3, padding=1), _cfg(**kw))
    lay = a.analog.layout
    assert len(lay.row_bounds) == 2 and len(lay.col_bounds) == (1 if out_channels <= 24 else 2)
    x = torch.randn(5, 8, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 3
    with torch.no_grad():
        fast = a(x)
    assert len(retried) == lay.n_tiles and min(retried) > 10
    torch.testing.assert_close(fast, _reference(a, x), rtol=1e-9, atol=1e-9)
