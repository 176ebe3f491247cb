"""Strict test settings: seeded, deterministic algorithms, single-threaded for bit-reproducibility."""

import os

import pytest
import torch

# Deterministic algorithms on CUDA: cuBLAS refuses them unless its workspace is fixed before the first CUDA call
# (no effect on CPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# Small test models run fastest on one thread, and two threads on a busy 2-core machine can be 100x slower
# (OpenMP threads waiting for each other).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
