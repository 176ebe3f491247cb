"""Patches of stride-1, width-preserving convolutions built from row-padded inputs (``aimc.nn.unfold._RowPadded``),
on the batched path of ungrouped layers and on the grouped path: the outputs are bit for bit those of fully padded
rows, for every geometry, periphery and lane count."""

import dataclasses as dc

import pytest
import torch
from torch import nn

import aimc
import aimc.nn.unfold as unfold
from aimc.nn.unfold import _RowPadded


def _config(preset: str, **periphery) -> aimc.AnalogConfig:
    base = aimc.presets.get(preset)
    return dc.replace(base, periphery=dc.replace(base.periphery, **periphery)) if periphery else base


def _outputs(layer: nn.Module, x: torch.Tensor, cfg: aimc.AnalogConfig, threads: int) -> dict[bool, torch.Tensor]:
    """The converted layer's output with and without row padding, from the same generator state."""
    torch.manual_seed(0)
    model = aimc.convert(nn.Sequential(layer), cfg).eval()
    aimc.program(model, seed=0)
    aimc.at_time(model, 86400.0, seed=0)
    if cfg.periphery.input_range == "static":
        aimc.calibrate_input_ranges(model, [x])
    gen = model[0].analog._forward_gen
    state = gen.get_state()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    out = {}
    try:
        for flag in (True, False):
            gen.set_state(state)
            unfold.ROW_PADDED = flag
            with torch.inference_mode():
                out[flag] = model(x)
    finally:
        unfold.ROW_PADDED = True
        torch.set_num_threads(before)
    return out


GEOMETRIES = {
    "3x3 pad 1": lambda: nn.Conv2d(8, 6, 3, padding=1),
    "5x5 pad 2": lambda: nn.Conv2d(4, 5, 5, padding=2),
    "3x3 dilation 2": lambda: nn.Conv2d(6, 4, 3, padding=2, dilation=2),
    "3x1 pad (1, 0)": lambda: nn.Conv2d(6, 4, (3, 1), padding=(1, 0)),
    "1x3 pad (0, 1)": lambda: nn.Conv2d(6, 4, (1, 3), padding=(0, 1)),
    "two row tiles": lambda: nn.Conv2d(64, 16, 3, padding=1),  # 576 rows: tiles of 512 and 64
    "conv1d": lambda: nn.Conv1d(8, 6, 5, padding=2),
    # grouped layers (aimc.nn.layers, groups packed into tiles)
    "depthwise 3x3": lambda: nn.Conv2d(12, 12, 3, padding=1, groups=12),
    "depthwise 5x5, three packed tiles": lambda: nn.Conv2d(48, 48, 5, padding=2, groups=48),
    "grouped 3x3, 2 groups": lambda: nn.Conv2d(8, 6, 3, padding=1, groups=2),
    "depthwise conv1d": lambda: nn.Conv1d(8, 8, 3, padding=1, groups=8),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
@pytest.mark.parametrize("threads", [1, 2])
def test_row_padded_patches_give_the_same_outputs(name, threads):
    torch.manual_seed(1)
    layer = GEOMETRIES[name]()
    x = torch.randn((5, layer.in_channels, 9) if "conv1d" in name else (5, layer.in_channels, 7, 9))
    x = torch.relu(x)  # many exact zeros: zero products next to the ±0 of the padded taps
    out = _outputs(layer, x, _config("aihwkit_default"), threads)  # noise, DAC/ADC, bound management
    assert torch.equal(out[True], out[False])


@pytest.mark.parametrize("periphery, used", [
    ({"out_noise": 0.0}, "edge_divisor"),  # products summed from +0.0 with no noise underneath
    # a static range whose outputs clip takes the matrix path (re-reads): patches copied, padded taps cleared
    ({"input_range": "static", "dac_bits": 7, "out_bound": 0.1}, "clear_edges"),
    ({"bound_management": "none", "adc_bits": None}, "edge_divisor"),
])
@pytest.mark.parametrize("groups", [1, 8])
def test_row_padded_patches_with_other_peripheries(periphery, used, groups, monkeypatch):
    calls = []
    real = getattr(_RowPadded, used)
    monkeypatch.setattr(_RowPadded, used, lambda self, t: (calls.append(1), real(self, t))[1])
    torch.manual_seed(2)
    layer = nn.Conv2d(8, 8 if groups > 1 else 6, 3, padding=1, groups=groups)
    x = torch.relu(torch.randn(4, 8, 6, 6))
    x[:, :, :, 0] = 0.0  # a whole column of zeros next to the left padding
    out = _outputs(layer, x, _config("aihwkit_default", **periphery), 1)
    assert calls, f"the row-padded path ({used}) did not run"
    assert torch.equal(out[True], out[False])


@pytest.mark.parametrize("case", ["kernel wider than the input", "float64, channels-last input"])
def test_row_padded_patches_in_corner_cases(case):
    torch.manual_seed(3)
    if case == "kernel wider than the input":  # taps reach two rows back and forth
        layer, x = nn.Conv2d(3, 4, 7, padding=3), torch.randn(3, 3, 5, 2)
    else:
        layer = nn.Conv2d(6, 5, 3, padding=1).double()
        x = torch.randn(3, 6, 6, 7, dtype=torch.float64).to(memory_format=torch.channels_last)
    out = _outputs(layer, x, _config("aihwkit_default"), 1)
    assert torch.equal(out[True], out[False])


def test_geometries_that_keep_fully_padded_rows():
    assert _RowPadded.fits((1, 1, 1, 1), (1, 1), 9, 9)
    assert not _RowPadded.fits((1, 1, 1, 1), (2, 2), 9, 5)  # stride 2
    assert not _RowPadded.fits((0, 0, 0, 0), (1, 1), 9, 7)  # no padding: the input is used as it is
    assert not _RowPadded.fits((1, 0, 1, 0), (1, 1), 9, 8)  # output narrower than the input


def test_edge_divisor_marks_the_padded_taps():
    x = torch.zeros(1, 1, 4, 5)
    rows = _RowPadded(x, 1, (2, 2, 2, 2), (5, 5), (1, 1), 4)
    d = rows.edge_divisor(torch.ones(1, 1, 1, 1, 4, 5))
    inf = torch.isinf(d[0, 0, 0])  # (kw, ho, wo)
    # tap j reads input column x + j - 2: padding where that is < 0 or ≥ 5
    want = torch.tensor([[(c + j - 2 < 0) or (c + j - 2 >= 5) for c in range(5)] for j in range(5)])
    assert torch.equal(inf, want[:, None, :].expand(5, 4, 5))
