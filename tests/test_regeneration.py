"""Device state from counter-based streams: nothing per device stored, bit-identical regeneration, block-by-block
at_time equal to the whole, files without device tensors, the same chip on CPU and CUDA."""

import pytest
import torch
from safetensors import safe_open

import aimc
import aimc.nn.tile as tile
from aimc.nn.convert import analog_layers
from aimc.rng import CounterStream
from tests.helpers import small_cnn

DEV = ("g_target", "g_prog", "nu")


def _mats(model):
    return [(mat, w.reshape(w.shape[0], -1)) for _, layer in analog_layers(model)
            for mat, w in layer.analog_matrices().values()]


def _programmed(preset="joshi2020", seed=3):
    torch.manual_seed(0)
    a = aimc.convert(small_cnn(), aimc.presets.get(preset)).eval()
    aimc.program(a, seed=seed)
    return a


@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default", "hermes"])
def test_program_and_at_time_twice_are_bit_identical_and_store_no_devices(preset):
    a, b = _programmed(preset), _programmed(preset)
    for mat, _ in _mats(a):
        assert all(getattr(mat, k).numel() == 0 for k in DEV) and not mat.stores_devices
    for t in (0.0, 86400.0):
        aimc.at_time(a, t, seed=1)
        aimc.at_time(b, t, seed=1)
        for (ma, wa), (mb, wb) in zip(_mats(a), _mats(b)):
            sa, sb = ma.device_state(wa), mb.device_state(wb)
            for k in DEV:
                assert torch.equal(getattr(sa, k), getattr(sb, k)), k
            for k in ("w_eff", "w_analog", "gdc_alpha", "gdc_base"):
                assert torch.equal(getattr(ma, k), getattr(mb, k)), k
    c = _programmed(preset, seed=4)
    (ma, wa), (mc, wc) = _mats(a)[0], _mats(c)[0]
    assert not torch.equal(ma.device_state(wa).g_prog, mc.device_state(wc).g_prog)  # another seed, another chip


@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default"])
def test_at_time_block_by_block_equals_the_whole(preset, monkeypatch):
    a = _programmed(preset)
    aimc.at_time(a, 3600.0, seed=2)
    whole = [(m.w_eff.clone(), m.w_analog.clone(), m.gdc_alpha.clone()) for m, _ in _mats(a)]
    monkeypatch.setattr(tile, "_BLOCK", 7)  # a few output columns per block
    aimc.at_time(a, 3600.0, seed=2)
    # the same counters and equations; only the split of the elementwise float32 kernels into vector and scalar
    # parts changes with the block size (an ulp here and there: weights ~0.1, ulp ~7e-9). For the fixed block
    # size at_time uses, regeneration is bit-identical (test above).
    for (m, _), (we, wa, al) in zip(_mats(a), whole):
        for got, ref in ((m.w_eff, we), (m.w_analog, wa), (m.gdc_alpha, al)):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=3e-8)
    # and the blocks are the device equations applied to the whole state with the same streams
    m, w = _mats(a)[-1]
    st = m.device_state(w)
    g = m.config.device.read(st, 3600.0, generator=CounterStream(int(m.read_seed)))
    w_a = m._analog_weights(g)
    got = m.w_analog if m.w_analog.numel() else m.w_eff / tile.mapping.expand_rows(
        m.gdc_alpha[m.layout.col_tile_index()] * m._digital_scale(), m.layout)
    torch.testing.assert_close(got, w_a, rtol=1e-6, atol=1e-7)


def test_a_block_regenerates_alone():
    a = _programmed()
    mat, w = _mats(a)[-1]
    full = mat.regenerate(w)
    part = mat.regenerate(w, cols=(1, 3))
    for k in DEV:
        assert torch.equal(getattr(part, k), getattr(full, k)[:, 1:3]), k


def test_regenerate_needs_a_counter_seed_and_device_state_needs_the_weight():
    a = aimc.convert(small_cnn(), aimc.presets.joshi2020()).eval()
    mat, w = _mats(a)[0]
    with pytest.raises(aimc.errors.StateError, match="program"):
        mat.regenerate(w)
    aimc.program(a, seed=0)
    with pytest.raises(aimc.errors.StateError, match="weight"):
        mat.device_state()


def test_weights_changed_after_programming_are_an_error_not_another_chip(tmp_path):
    a = _programmed()
    with torch.no_grad():
        a[0].weight.mul_(0.5)
    with pytest.raises(aimc.errors.StateError, match="changed since aimc.program"):
        aimc.at_time(a, 60.0, seed=0)
    with pytest.raises(aimc.errors.StateError, match="changed since aimc.program"):
        aimc.save(a, tmp_path / "m.safetensors")
    aimc.program(a, seed=3)
    aimc.at_time(a, 60.0, seed=0)


def test_saved_file_has_no_device_tensors_and_load_is_bit_exact(tmp_path):
    a = _programmed()
    aimc.at_time(a, 86400.0, seed=0)
    path = tmp_path / "m.safetensors"
    aimc.save(a, path)
    with safe_open(str(path), framework="pt") as f:
        sizes = {k: f.get_tensor(k).numel() for k in f.keys()}
    assert all(n == 0 for k, n in sizes.items() if k.rsplit(".", 1)[-1] in DEV)
    assert all(sizes[k] == 1 for k in sizes if k.endswith("prog_seed"))
    b = aimc.load(path, model=small_cnn()).eval()
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=0, equal_nan=True, msg=k)
    for (ma, wa), (mb, wb) in zip(_mats(a), _mats(b)):
        for k in DEV:
            assert torch.equal(getattr(ma.device_state(wa), k), getattr(mb.device_state(wb), k))
        assert torch.equal(ma.w_eff, mb.w_eff)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(a(x), b(x))


def test_bfloat16_master_weights_give_float32_conductances():
    torch.manual_seed(0)
    a = aimc.convert(small_cnn(), aimc.presets.joshi2020()).eval()
    ref = aimc.convert(small_cnn(), aimc.presets.joshi2020()).eval()
    ref.load_state_dict(a.state_dict())
    a.to(torch.bfloat16)
    with torch.no_grad():
        for p, q in zip(a.parameters(), ref.parameters()):
            q.copy_(p.float())  # the same (bfloat16-representable) weights in float32
    aimc.program(a, seed=1)
    aimc.program(ref, seed=1)
    for (m, w), (mr, wr) in zip(_mats(a), _mats(ref)):
        st = m.device_state(w)
        assert st.g_prog.dtype == torch.float32 and st.g_target.dtype == torch.float32
        assert torch.equal(st.g_prog, mr.device_state(wr).g_prog)
    aimc.at_time(a, 3600.0, seed=0)
    aimc.at_time(ref, 3600.0, seed=0)
    for (m, _), (mr, _) in zip(_mats(a), _mats(ref)):  # cached in float32 too: never rounded to bfloat16
        assert m.w_eff.dtype == torch.float32 and torch.equal(m.w_eff, mr.w_eff)
    assert a(torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_chip_on_cpu_and_cuda():
    a = _programmed()
    b = _programmed().cuda()
    aimc.program(b, seed=3)
    for (ma, wa), (mb, wb) in zip(_mats(a), _mats(b)):
        sa, sb = ma.device_state(wa), mb.device_state(wb)
        # the same counters and bits; float32/float64 transforms may differ by an ulp between CPU and CUDA
        torch.testing.assert_close(sa.nu, sb.nu.cpu(), rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(sa.g_prog, sb.g_prog.cpu(), rtol=1e-6, atol=1e-6)
