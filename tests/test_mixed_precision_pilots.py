"""The validation-split learning-rate pilot of the GAN (examples/mixed_precision/pilot_gan_lr.py) in a tiny run:
it writes one finite row per (method, lr) and never loads the MNIST test set."""

import csv
import math
import sys
from pathlib import Path

import pytest
from helpers import load_example, require_mnist

import aimc.data

DIR = Path(__file__).resolve().parents[1] / "examples" / "mixed_precision"


@pytest.fixture
def pilot(monkeypatch):
    require_mnist()
    monkeypatch.syspath_prepend(str(DIR))
    mod = load_example(DIR / "pilot_gan_lr.py", "pilot_gan_lr")
    monkeypatch.setitem(sys.modules, "pilot_gan_lr", mod)  # removed again after the test
    return mod


def test_gan_pilot_scores_on_held_out_training_images_only(pilot, tmp_path, monkeypatch):
    real_mnist = aimc.data.mnist

    def no_test_set(split="train", **kw):
        assert split != "test", "the pilot must never load the test set"
        return real_mnist(split, **kw)

    monkeypatch.setattr(aimc.data, "mnist", no_test_set)
    assert pilot.main(["--lrs", "0.05,0.1", "--epochs", "1", "--limit", "256", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "mixed_precision_lr_pilot_gan.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], float(r["lr"])) for r in rows] == [("fp", 0.05), ("fp", 0.1), ("mixed_precision", 0.05),
                                                            ("mixed_precision", 0.1)]
    assert all(math.isfinite(float(r["val_classifier_fid"])) and float(r["val_classifier_score"]) >= 1.0 - 1e-6
               for r in rows)
    assert "← best" in (tmp_path / "mixed_precision_lr_pilot_gan.md").read_text()
