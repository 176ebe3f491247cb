"""Strict test settings: seeded, deterministic algorithms, single-threaded for bit-reproducibility."""

import pytest
import torch

# Small test models run fastest on one thread, and two threads on a busy 2-core machine can be 100x slower
# (OpenMP threads waiting for each other).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
