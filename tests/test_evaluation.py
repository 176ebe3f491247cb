"""aimc.evaluate: grid, statistics, reproducibility, restoration of BN state, errors."""

import math

import pandas as pd
import pytest
import torch
from scipy import stats

import aimc
from aimc.evaluation import accuracy, summarize
from tests.helpers import batches, small_cnn


@pytest.fixture(scope="module")
def analog():
    return aimc.convert(small_cnn(), aimc.presets.joshi2020())


def test_grid_rows_columns_and_reproducibility(analog, tmp_path):
    data = batches()
    kw = dict(times=[25, 3600], seeds=[0, 1, 2], compensation=("none", "gdc", "gdc+bn"), calib=batches(seed=5),
              n_calib=20, progress=False)
    res = aimc.evaluate(analog, data, **kw)
    t = res.table
    assert list(t.columns) == ["model", "compensation", "t_seconds", "seed", "accuracy"]
    assert len(t) == 2 * 3 * 3 and not t.duplicated(["compensation", "t_seconds", "seed"]).any()
    assert t["accuracy"].between(0, 1).all()
    pd.testing.assert_frame_equal(t, aimc.evaluate(analog, data, **kw).table)  # seeded ⇒ identical
    s = res.summary()
    assert len(s) == 6 and {"mean", "std", "n", "ci95_low", "ci95_high"} <= set(s.columns)
    res.plot(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "| analog | gdc+bn |" in res.to_markdown()


def test_bn_statistics_restored_after_gdc_bn(analog):
    bn = analog[1]
    before = bn.running_mean.clone()
    aimc.evaluate(analog, batches(), [3600], [0], "gdc+bn", calib=batches(seed=3), progress=False)
    assert torch.equal(bn.running_mean, before)


def test_summary_confidence_interval_is_student_t():
    table = pd.DataFrame({"compensation": ["gdc"] * 4, "t_seconds": [1.0] * 4, "seed": range(4),
                          "accuracy": [0.9, 0.8, 0.85, 0.95]})
    s = summarize(table).iloc[0]
    a = table["accuracy"]
    half = stats.t.ppf(0.975, 3) * a.std() / math.sqrt(4)
    assert s["mean"] == pytest.approx(a.mean()) and s["ci95_high"] == pytest.approx(a.mean() + half)


def test_accuracy_of_digital_model_and_bad_data():
    m = small_cnn().eval()
    data = batches()
    manual = sum(int((m(x).argmax(1) == y).sum()) for x, y in data) / 64
    assert accuracy(m, data) == pytest.approx(manual)
    with pytest.raises(aimc.DataError, match="empty"):
        accuracy(m, [])
    with pytest.raises(aimc.DataError, match="labels"):
        accuracy(m, [torch.randn(2, 3, 8, 8)])


@pytest.mark.parametrize("kw,match", [
    (dict(times=[], seeds=[0]), "empty"),
    (dict(times=[1.0], seeds=[]), "empty"),
    (dict(times=[-5.0], seeds=[0]), "≥ 0"),
    (dict(times=[1.0], seeds=[-1]), "seed"),
    (dict(times=[1.0], seeds=[0], compensation="magic"), "unknown compensation"),
    (dict(times=[1.0], seeds=[0], compensation="gdc+bn"), "calib"),
])
def test_bad_grids_raise_config_error(analog, kw, match):
    with pytest.raises(aimc.ConfigError, match=match):
        aimc.evaluate(analog, batches(), progress=False, **kw)


def test_no_compensation_loses_accuracy_over_time_on_a_trained_model():
    """A trained digits-size model: drift without compensation costs accuracy; GDC recovers most of it."""
    from aimc.data import digits
    from aimc.models import digits_cnn
    from aimc.train.loop import fit
    from torch.utils.data import DataLoader

    tr, te = digits("train"), digits("test")
    m = digits_cnn()
    fit(m, DataLoader(tr, 64, shuffle=True, generator=torch.Generator().manual_seed(0)), epochs=4, lr=3e-3)
    a = aimc.convert(m, aimc.presets.joshi2020())
    res = aimc.evaluate(a, DataLoader(te, 512), [25, 3.15e7], range(3), ("none", "gdc"), progress=False)
    s = res.summary().set_index(["compensation", "t_seconds"])["mean"]
    assert s[("none", 3.15e7)] < s[("none", 25.0)] - 0.2
    assert s[("gdc", 3.15e7)] > s[("none", 3.15e7)] + 0.3
