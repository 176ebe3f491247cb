"""benchmarks/bench_floor.py: the output normals it replays are exactly those of the analog forward."""

import dataclasses as dc
import sys
from pathlib import Path

import torch

import aimc
from aimc.nn.convert import analog_layers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_floor  # noqa: E402


def test_noise_shapes_count_one_normal_per_output_and_row_tile():
    # without bound management the count is exact: one normal per output element of every row tile
    base = aimc.presets.aihwkit_default()
    cfg = dc.replace(base, periphery=dc.replace(base.periphery, bound_management="none"))
    plain, x = bench_floor.workload("resnet32", 4)
    analog = aimc.convert(plain, cfg).eval()
    aimc.program(analog, seed=0)
    aimc.at_time(analog, 86400.0, seed=0)
    outputs = []
    hooks = [layer.register_forward_hook(
        lambda m, i, o: outputs.append(o.numel() * len(m.analog.layout.row_bounds)))
        for _, layer in analog_layers(analog)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            shapes = bench_floor.noise_shapes(analog, x)
    finally:
        torch.set_num_threads(threads)
        for h in hooks:
            h.remove()
    assert any(n > 1 for n in (len(layer.analog.layout.row_bounds) for _, layer in analog_layers(analog)))
    assert sum(torch.Size(s).numel() for s in shapes) == sum(outputs) > 0
    # the parts of a split tensor are merged back: the first layer's output noise is one tensor, not 4 parts
    first = 4 * 16 * 32 * 32
    assert first >= bench_floor.MIN_SPLIT and shapes[0] == (first,)


def test_quick_run_prints_the_table(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_floor.py", "--quick", "--only", "resnet32", "--threads", "1"])
    threads = torch.get_num_threads()
    try:
        assert bench_floor.main() == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "resnet32" in out and "floor" in out and "noise alone" in out
