"""The same chip on CPU and CUDA (skipped without a GPU): the counter-based generator's integer words bit for bit,
its float transforms and a programmed and drifted model's devices and effective weights within a few ulp. The
comparisons are those of ``benchmarks/gpu_check.py`` (``benchmarks/_chip_equality.py``, tested on CPU in
``tests/test_gpu_check.py``)."""

import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import load_example

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def ce():
    mod = load_example(Path(__file__).resolve().parents[1] / "benchmarks" / "_chip_equality.py", "chip_equality_cuda")
    yield mod
    del sys.modules["chip_equality_cuda"]


@cuda
def test_cuda_generator_words_bit_identical_and_normals_within_ulps(ce):
    d = ce.rng_distances(torch.device("cuda"), 1 << 18)
    assert d["threefry_words_differing"] == 0
    assert d["uniform_ulp"] == 0  # (word + 1/2) / 2^32 is exact in float64
    assert d["normal_ulp"] <= ce.ULP_NORMAL


@cuda
@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default", "hermes"])
@pytest.mark.parametrize("t", [None, 86400.0])
def test_cuda_programmed_and_drifted_chip_equals_the_cpu_chip(ce, preset, t):
    cpu, dev = torch.device("cpu"), torch.device("cuda")
    d = ce.chip_distances(ce.programmed(preset, cpu, 3, t), ce.programmed(preset, dev, 3, t))
    assert ce.chip_verdict(d), d
    # and another seed is another chip on the GPU too (the comparison can tell them apart)
    assert not ce.chip_verdict(ce.chip_distances(ce.programmed(preset, cpu, 3, t), ce.programmed(preset, dev, 4, t)))
