"""Strict test settings: seeded, deterministic algorithms, single-threaded for bit-reproducibility."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
