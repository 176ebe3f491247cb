"""The same code on CUDA (skipped on machines without a GPU)."""

import pytest
import torch

import aimc
from tests.helpers import small_cnn

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default"])
def test_cuda_pipeline_runs_and_matches_cpu_statistically(preset):
    a = aimc.convert(small_cnn(), aimc.presets.get(preset)).eval()
    b = aimc.convert(small_cnn(), aimc.presets.get(preset)).cuda().eval()
    x = torch.randn(16, 3, 8, 8)
    for m in (a, b):
        aimc.program(m, seed=0)
        aimc.at_time(m, 86400.0, seed=0)
    ya, yb = a(x), b(x.cuda()).cpu()
    assert torch.isfinite(yb).all() and yb.shape == ya.shape
    # different generators on CPU and CUDA: same statistics, not the same draws
    rel = float((ya - yb).norm() / ya.norm())
    assert rel < 1.0
    res = aimc.evaluate(b, [(x.cuda(), torch.zeros(16, dtype=torch.long).cuda())], [25.0], [0], "gdc", progress=False)
    assert 0 <= float(res.table["accuracy"].iloc[0]) <= 1
