"""The same chip on CPU and CUDA (skipped without a GPU): the counter-based generator's integer words bit for bit,
its float transforms and a programmed and drifted model's devices and effective weights within a few ulp. The
comparisons are those of ``benchmarks/gpu_check.py`` (tested on CPU in ``tests/test_gpu_check.py``)."""

from pathlib import Path

import pytest
import torch

from tests.helpers import load_example

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def gc():
    mod = load_example(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py", "gpu_check_for_cuda")
    yield mod
    del __import__("sys").modules["gpu_check_for_cuda"]


@cuda
def test_cuda_generator_words_bit_identical_and_normals_within_ulps(gc):
    d = gc.rng_distances(torch.device("cuda"), 1 << 18)
    assert d["threefry_words_differing"] == 0
    assert d["uniform_ulp"] == 0  # (word + 1/2) / 2^32 is exact in float64
    assert d["normal_ulp"] <= gc.ULP_NORMAL


@cuda
@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default", "hermes"])
@pytest.mark.parametrize("t", [None, 86400.0])
def test_cuda_programmed_and_drifted_chip_equals_the_cpu_chip(gc, preset, t):
    cpu, dev = torch.device("cpu"), torch.device("cuda")
    d = gc.chip_distances(gc.programmed(preset, cpu, 3, t), gc.programmed(preset, dev, 3, t))
    assert gc.chip_verdict(d), d
    # and another seed is another chip on the GPU too (the comparison can tell them apart)
    assert not gc.chip_verdict(gc.chip_distances(gc.programmed(preset, cpu, 3, t), gc.programmed(preset, dev, 4, t)))
