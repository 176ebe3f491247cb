"""Cached weights held in float16 on request (``aimc.at_time(..., cache_dtype=torch.float16)``, ``aimc.nn.cache``):
2 B per weight, results within float16 rounding of the float32 cache (far below the device noise), device physics
still in float32, never bfloat16; save/load, the matrix path, torch.compile and training keep working."""

import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aimc
from aimc.errors import ConfigError
from aimc.inference import device_state_bytes
from aimc.nn.cache import to_cache, upcast
from aimc.nn.convert import analog_layers
from tests.helpers import small_cnn

T = 86400.0
HALF_STEP = 2.0**-11  # float16's relative rounding error is at most half of its step 2^-10


def _mats(model):
    return [(mat, w.reshape(w.shape[0], -1)) for _, layer in analog_layers(model)
            for mat, w in layer.analog_matrices().values()]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 64)).eval()


def _drifted(make=_mlp, preset="joshi2020", seed=0, cache=None):
    m = aimc.convert(make(), aimc.presets.get(preset)).eval()
    aimc.program(m, seed=seed)
    aimc.at_time(m, T, seed=seed, cache_dtype=cache)
    return m


def _rms(a):
    return float(a.float().pow(2).mean().sqrt())


def test_float16_cache_halves_the_bytes_and_rounds_each_weight_once():
    full, half = _drifted(), _drifted(cache=torch.float16)
    assert device_state_bytes(full)["cache_bytes_per_weight"] == 4.0
    assert device_state_bytes(half)["cache_bytes_per_weight"] == 2.0
    for (mf, _), (mh, _) in zip(_mats(full), _mats(half)):
        assert mh.w_eff.dtype == torch.float16 and bool(mh.half_cache) and not bool(mf.half_cache)
        assert torch.equal(mf.gdc_alpha, mh.gdc_alpha)  # the GDC factors come from the float32 physics
        w32, w16 = mf.effective_weight(), mh.effective_weight()
        assert w16.dtype == torch.float32
        # round to nearest: |error| ≤ 2^-11 |w| in float16's normal range, 2^-25 in its subnormals below 6.1e-5
        # (bfloat16 would reach 2^-9 |w|)
        assert bool(((w16 - w32).abs() <= HALF_STEP * w32.abs() + 2.0**-25).all())
        assert float((w16 - w32).abs().max()) > 0  # it was rounded, not kept in float32


def test_float16_forward_differs_from_float32_far_less_than_the_device_noise():
    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))
    full, half = _drifted(), _drifted(cache=torch.float16)
    other_chip = _drifted(seed=1)  # another programming/drift/read-noise draw of the same model
    with torch.no_grad():
        y32, y16, y_other = full(x), half(x), other_chip(x)
    rounding, device = _rms(y16 - y32), _rms(y_other - y32)
    # measured ~1e-4 of the output rms vs a few % for another chip: 100x apart at least
    assert 0 < rounding < 0.01 * device, (rounding, device)


def test_device_physics_is_float32_with_a_float16_cache():
    half = _drifted(cache=torch.float16)
    full = _drifted()
    for (mh, wh), (mf, wf) in zip(_mats(half), _mats(full)):
        sh, sf = mh.device_state(wh), mf.device_state(wf)
        assert sh.g_prog.dtype == torch.float32 and torch.equal(sh.g_prog, sf.g_prog) and torch.equal(sh.nu, sf.nu)


@pytest.mark.parametrize("size", [1e-7, 1e-3, 3e4, 1e7])
def test_float16_cache_keeps_tiny_and_huge_weights_with_a_power_of_two(size):
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float32) * size
    held, s = to_cache(w.clone(), torch.float16)
    back = upcast(held, s)
    assert torch.isfinite(held).all()
    assert s == 1.0 if 2.0**-8 <= float(w.abs().max()) < 2.0**15 else s != 1.0
    # within float16's relative rounding of each weight; subnormals (absolute step 2^-24 after scaling) cost at
    # most 2^-17 of the largest weight since that is held at 2^-8 or more (0.0002 µS at 25 µS)
    err = (back - w).abs()
    assert bool((err <= HALF_STEP * w.abs() + 2.0**-17 * float(w.abs().max())).all())


def test_the_choice_is_kept_by_later_at_time_calls_and_saved(tmp_path):
    m = _drifted(cache="float16")
    aimc.at_time(m, 3600.0, seed=0)  # None: keep the model's choice
    assert all(mat.w_eff.dtype == torch.float16 for mat, _ in _mats(m))
    x = torch.randn(8, 256)
    with torch.no_grad():
        y = m(x)
    aimc.save(m, tmp_path / "m.safetensors")
    loaded = aimc.load(tmp_path / "m.safetensors", model=aimc.convert(_mlp(), aimc.presets.joshi2020()))
    assert all(mat.w_eff.dtype == torch.float16 for mat, _ in _mats(loaded.eval()))
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    aimc.at_time(m, 3600.0, seed=0, cache_dtype=torch.float32)
    assert all(mat.w_eff.dtype == torch.float32 for mat, _ in _mats(m))


def test_bfloat16_is_refused_as_a_cache():
    m = aimc.convert(_mlp(), aimc.presets.joshi2020()).eval()
    aimc.program(m, seed=0)
    with pytest.raises(ConfigError, match="bfloat16"):
        aimc.at_time(m, T, seed=0, cache_dtype=torch.bfloat16)


def test_bfloat16_master_weights_cache_and_compute_in_float32_or_float16():
    ref = _drifted()
    bf = aimc.convert(_mlp(), aimc.presets.joshi2020()).eval()
    bf.load_state_dict(ref.state_dict())  # device state and all
    bf.to(torch.bfloat16)
    with torch.no_grad():
        for p, q in zip(bf.parameters(), ref.parameters()):
            q.copy_(p.float())  # the same bfloat16-representable master weights in both
    for model in (bf, ref):
        aimc.program(model, seed=0)
        aimc.at_time(model, T, seed=0)
    for (mb, _), (mr, _) in zip(_mats(bf), _mats(ref)):
        assert mb.w_eff.dtype == torch.float32 and torch.equal(mb.w_eff, mr.w_eff)
    x = torch.randn(4, 256).to(torch.bfloat16)
    layer, layer_ref = bf[0], ref[0]
    with torch.no_grad():
        y = layer(x)
        # the product runs in float32 on the float32 cache; only the result is rounded to the model's dtype
        want = F.linear(x.float(), layer_ref.analog.effective_weight(), layer_ref.bias).to(torch.bfloat16)
        assert y.dtype == torch.bfloat16 and torch.equal(y, want)
        assert bf(x).dtype == torch.bfloat16
    aimc.at_time(bf, T, seed=0, cache_dtype=torch.float16)
    assert all(mat.w_eff.dtype == torch.float16 for mat, _ in _mats(bf))
    with torch.no_grad():
        assert bf(x).dtype == torch.bfloat16


@pytest.mark.parametrize("make", [_mlp, small_cnn])
def test_matrix_path_with_a_float16_cache(make):
    x = torch.randn(16, 256) if make is _mlp else torch.randn(4, 3, 8, 8)
    full = _drifted(make, "aihwkit_default")
    half = _drifted(make, "aihwkit_default", cache=torch.float16)
    other_chip = _drifted(make, "aihwkit_default", seed=1)
    for mat, _ in _mats(half):
        assert mat.w_analog.dtype == torch.float16 and mat.out_scale.dtype == torch.float32
    with torch.no_grad():
        y32, y16, y_other = full(x), half(x), other_chip(x)
    assert all(mat.w_analog.dtype == torch.float16 for mat, _ in _mats(half))  # restored after the forward
    # same output-noise draws; the ADC may round a few outputs to the neighbouring level
    assert _rms(y16 - y32) < 0.1 * _rms(y_other - y32)


def test_torch_compile_with_a_float16_cache():
    half = _drifted(cache=torch.float16)
    x = torch.randn(8, 256)
    with torch.no_grad():
        eager = half(x)
        compiled = torch.compile(half)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_training_after_a_float16_at_time_uses_the_master_weights():
    m = _drifted(cache=torch.float16)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(32, 256), torch.randint(0, 64, (32,))
    F.cross_entropy(m(x), y).backward()
    opt.step()
    assert all(p.grad is not None and p.dtype == torch.float32 for p in m.parameters())
    m.eval()
    aimc.program(m, seed=0)
    aimc.at_time(m, T, seed=0)  # the float16 choice is kept across programming
    assert all(mat.w_eff.dtype == torch.float16 for mat, _ in _mats(m))


def test_checksum_in_blocks_equals_the_whole_sum_and_is_unchanged_for_one_block():
    from aimc.nn import tile

    g = torch.Generator().manual_seed(0)
    small = torch.randn(300, 700, generator=g)  # one block: the checksum files saved before blocks hold
    whole = torch.stack([small.sum(dtype=torch.float64), torch.linalg.vector_norm(small, 1, dtype=torch.float64)])
    assert torch.equal(tile._checksum(small), whole)
    big = torch.randn(3000, 700, generator=g)  # 2.1 M weights: three blocks
    exact = big.double().sum(), big.double().abs().sum()
    got = tile._checksum(big)
    torch.testing.assert_close(got, torch.stack(exact), rtol=1e-12, atol=1e-9)
    changed = big.clone()
    changed[2999, 0] += 1e-3
    assert not torch.equal(tile._checksum(changed), got)


def test_at_time_over_the_model_equals_each_matrix_in_model_order():
    # aimc.at_time runs the largest matrices first (memory); each matrix's numbers must not depend on the order
    cfg = aimc.presets.joshi2020()

    def grows():  # the smaller matrix first: sorted by size, the order is reversed
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 1024)).eval()

    a = aimc.convert(grows(), cfg).eval()
    b = aimc.convert(grows(), cfg).eval()
    for m in (a, b):
        aimc.program(m, seed=2)
    aimc.at_time(a, T, seed=2)
    for name, layer in analog_layers(b):
        for sfx, (mat, w) in layer.analog_matrices().items():
            mat.at_time(T, seed=2, name=name + sfx, gdc=True, weight=w.reshape(w.shape[0], -1))
    for (ma, _), (mb, _) in zip(_mats(a), _mats(b)):
        assert torch.equal(ma.w_eff, mb.w_eff) and torch.equal(ma.gdc_alpha, mb.gdc_alpha)


def test_program_drops_the_cached_weights_before_programming():
    m = _drifted(cache=torch.float16)
    aimc.program(m, seed=1)
    assert all(mat.w_eff.numel() == 0 and mat.w_analog.numel() == 0 for mat, _ in _mats(m))


def test_float16_linear_upcasts_block_by_block_like_the_whole_layer():
    torch.manual_seed(0)
    m = aimc.convert(nn.Sequential(nn.Linear(1024, 1500)), aimc.presets.joshi2020()).eval()  # 3 blocks of 512 rows
    aimc.program(m, seed=0)
    aimc.at_time(m, T, seed=0, cache_dtype=torch.float16)
    layer = m[0]
    x = torch.randn(2, 3, 1024)
    with torch.no_grad():
        y = layer(x)
        want = F.linear(x, layer.analog.effective_weight(), layer.bias)  # the whole layer upcast at once
    assert y.shape == (2, 3, 1500)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default"])
def test_a_bfloat16_cnn_runs_its_analog_products_in_float32(preset):
    torch.manual_seed(0)
    m = aimc.convert(small_cnn(), aimc.presets.get(preset)).eval().to(torch.bfloat16)
    aimc.program(m, seed=0)
    aimc.at_time(m, T, seed=0)
    assert all(mat.compute_dtype == torch.float32 for mat, _ in _mats(m))
    assert all(b.dtype != torch.bfloat16 for mat, _ in _mats(m) for b in (mat.w_eff, mat.w_analog, mat.out_scale))
    with torch.no_grad():
        y = m(torch.randn(2, 3, 8, 8).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_heap_trimmed_after_large_matrices_and_at_the_end_with_the_same_numbers(monkeypatch):
    """``program``/``at_time`` hand freed temporaries' pages back (``inference._trim_heap``) after each matrix of ≥
    ``_TRIM_WEIGHTS`` weights and once at the end; the numbers are those of a run without any trim."""
    import aimc.inference as inf

    def run(trim: bool) -> tuple[torch.Tensor, int]:
        calls = []
        monkeypatch.setattr(inf, "_TRIM_WEIGHTS", 256 * 512)  # the first Linear only
        monkeypatch.setattr(inf, "_trim_heap", (lambda: calls.append(1)) if not trim else
                            (lambda real=inf._trim_heap: (calls.append(1), real())))
        model = aimc.convert(_mlp(), aimc.presets.joshi2020()).eval()
        aimc.program(model, seed=3)
        aimc.at_time(model, T, seed=3)
        with torch.no_grad():
            return model(torch.randn(4, 256, generator=torch.Generator().manual_seed(0))), len(calls)

    with_trim, n = run(True)
    without, _ = run(False)
    assert n == 4  # program: after the large matrix and at the end; at_time: the same
    assert torch.equal(with_trim, without)
    if platform.libc_ver()[0] == "glibc":
        assert inf._malloc_trim() is not None  # the real trim ran above
