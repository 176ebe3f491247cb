"""The analog forward reads no tensor values on the host in its layers (no host-device synchronisation on a GPU):
NaN/Inf are checked once per batch at the model's input and output (``aimc.nn.checks``), and only iterative bound
management reads one flag per tile. CPU proxy: count ``bool()``/``float()``/``int()``/``.item()``/``.tolist()``
calls on tensors during the forward; with CUDA also ``torch.cuda.set_sync_debug_mode("error")``."""

import contextlib
import copy
import dataclasses

import pytest
import torch
from torch import nn

import aimc

READS = ("__bool__", "__float__", "__int__", "item", "tolist")


@contextlib.contextmanager
def count_reads(monkeypatch):
    counter = {"n": 0}
    for name in READS:
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):
            counter["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    try:
        yield counter
    finally:
        monkeypatch.undo()


def _model(depth):
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    for _ in range(depth - 1):
        layers += [nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def _cfg(name):
    kit = aimc.presets.aihwkit_default()
    if name == "joshi2020":
        return aimc.presets.joshi2020()
    if name == "kit_dynamic_no_bm":
        return dataclasses.replace(kit, periphery=dataclasses.replace(kit.periphery, bound_management="none"))
    if name == "kit_static_no_bm":
        return dataclasses.replace(kit, periphery=dataclasses.replace(
            kit.periphery, bound_management="none", input_range="static", input_bound=3.0))
    return kit


def _analog(depth, cfg_name, device="cpu"):
    torch.manual_seed(0)
    a = aimc.convert(_model(depth), _cfg(cfg_name)).eval().to(device)
    aimc.program(a, seed=0)
    aimc.at_time(a, 86400.0, seed=0)
    return a


def _layer_by_layer(model, x):
    for m in model:  # each layer's own forward, without the model's input/output checks
        x = m(x)
    return x


@pytest.mark.parametrize("cfg_name", ["joshi2020", "kit_dynamic_no_bm", "kit_static_no_bm", "aihwkit_default"])
def test_analog_forward_reads_no_tensor_values_per_layer(cfg_name, monkeypatch):
    """Layers read nothing (bound management: one flag per tile); the model adds exactly two reads per batch
    (its input and output checks), whatever its depth."""
    x = torch.randn(4, 3, 6, 6)
    reads = {}
    for depth in (1, 4):
        a = _analog(depth, cfg_name)
        tiles = sum(m.analog.layout.n_tiles for m in a.modules() if hasattr(m, "analog"))
        bm = cfg_name == "aihwkit_default"
        with torch.no_grad():
            a(x)  # the first batch after at_time / calibration reads a static input range once
        with torch.no_grad(), count_reads(monkeypatch) as c:
            _layer_by_layer(a, x)
        assert c["n"] == (tiles if bm else 0), cfg_name
        with torch.no_grad(), count_reads(monkeypatch) as c:
            a(x)
        reads[depth] = c["n"] - (tiles if bm else 0)
    assert reads == {1: 2, 4: 2}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cfg_name", ["joshi2020", "kit_dynamic_no_bm", "kit_static_no_bm"])
def test_analog_forward_makes_no_cuda_synchronisation(cfg_name):
    a = _analog(3, cfg_name, device="cuda")
    x = torch.randn(4, 3, 6, 6, device="cuda")
    with torch.no_grad():
        _layer_by_layer(a, x)  # warm-up (allocations, lazy initialisation)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            _layer_by_layer(a, x)
        finally:
            torch.cuda.set_sync_debug_mode("default")


class _Poison(nn.Module):
    """A digital layer that turns its input into NaN (sqrt of negative numbers)."""

    def forward(self, x):
        return torch.sqrt(-x.abs() - 1.0)


@pytest.mark.parametrize("cfg_name", ["joshi2020", "aihwkit_default"])
def test_nan_from_a_middle_layer_names_the_first_analog_layer_that_receives_it(cfg_name):
    """Output NaN with a finite input: the batch is re-run with per-layer checks, the error names the analog layer
    whose input first holds NaN ('2'), and the noise generators end where a plain forward leaves them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), _Poison(), nn.Linear(8, 4))
    a = aimc.convert(model, _cfg(cfg_name)).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 3600.0, seed=0)
    b = copy.deepcopy(a)
    x = torch.randn(5, 8)
    with pytest.raises(aimc.NonFiniteError, match="layer '2'"):
        a(x)
    with torch.no_grad():
        _layer_by_layer(b, x)  # the same draws as the failed call's first pass
        ok = torch.randn(5, 8)
        torch.testing.assert_close(nn.Sequential(a[0])(ok), nn.Sequential(b[0])(ok), rtol=0, atol=0)


def test_nan_input_and_nan_after_the_last_analog_layer():
    torch.manual_seed(0)
    a = aimc.convert(nn.Sequential(nn.Linear(8, 4), _Poison()), aimc.presets.joshi2020()).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 25.0, seed=0)
    bad = torch.randn(2, 8)
    bad[1, 2] = float("inf")
    with pytest.raises(aimc.NonFiniteError, match="model's input"):
        a(bad)
    with pytest.raises(aimc.NonFiniteError, match="after the last analog layer"):
        a(torch.randn(2, 8))
    a.train()  # training forward: no checks (as before)
    assert torch.isnan(a(torch.randn(2, 8))).all()
