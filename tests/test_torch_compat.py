"""aimc on a torch release other than CI's pinned 2.13.0 (marker `torch_compat`, deselected by default).

`.ci/torch_compat VERSION` makes a separate venv with that torch and runs this file together with a quick part of
the suite; it sets AIMC_TORCH so that the first test proves which torch ran. See the README ("Which torch").
"""

import os

import pytest
import torch
from torch.utils.data import DataLoader

import aimc

pytestmark = pytest.mark.torch_compat


def test_running_the_requested_torch():
    want = os.environ.get("AIMC_TORCH")
    if not want:
        pytest.skip("run by .ci/torch_compat VERSION, which sets AIMC_TORCH to the torch it installed")
    assert torch.__version__.split("+")[0] == want


def test_the_whole_loop_on_this_torch(tmp_path):
    """convert -> hardware-aware steps -> program -> at_time -> evaluate (GDC, BN re-estimation, torch.compile)
    -> save/load, on the digits CNN: every torch API aimc relies on is exercised once."""
    train = DataLoader(aimc.data.digits("train"), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    test = DataLoader(aimc.data.digits("test"), batch_size=450)
    analog = aimc.convert(aimc.models.digits_cnn(), aimc.presets.joshi2020())
    opt = torch.optim.Adam(analog.parameters(), 3e-3)
    for _ in range(3):
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(analog(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            aimc.clip(analog)
    res = aimc.evaluate(analog, test, times=[25, 86400], seeds=range(2), compensation=("none", "gdc", "gdc+bn"),
                        calib=train, n_calib=128, progress=False)
    s = res.summary()
    assert len(s) == 6 and (s[s["compensation"] != "none"]["mean"] > 0.9).all(), s  # trained; GDC holds it
    compiled = aimc.evaluate(analog, test, times=[25], seeds=[0], compensation="gdc", progress=False, compile=True)
    eager = aimc.evaluate(analog, test, times=[25], seeds=[0], compensation="gdc", progress=False)
    assert abs(float(compiled.table["accuracy"].iloc[0]) - float(eager.table["accuracy"].iloc[0])) <= 2 / 450
    aimc.save(analog, tmp_path / "m.safetensors", arch="digits_cnn")
    back = aimc.load(tmp_path / "m.safetensors")
    again = aimc.evaluate(back, test, times=[25], seeds=[0], compensation="gdc", progress=False)
    assert again.table["accuracy"].iloc[0] == eager.table["accuracy"].iloc[0]
