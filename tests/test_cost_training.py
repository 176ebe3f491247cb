"""aimc.cost.training_energy: each component is the stated count × the stated per-event energy."""

import pytest
from torch import nn

import aimc
from aimc.cost.training import FP32_ADD_J, FP32_MUL_J, sram_access_energy, training_energy


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 250), nn.ReLU(), nn.Linear(250, 10))


def test_components_follow_the_counts() -> None:
    w = 784 * 250 + 250 * 10
    r = training_energy(_mlp(), "hermes_1phase", input_shape=(1, 784), pulses_per_image=2.0,
                        set_pulse_energy_j=1e-11)
    mac = FP32_MUL_J + FP32_ADD_J
    assert r.weights == w
    assert r.mixed_precision["gradient + χ update (FP32)"] == pytest.approx(w * mac)
    assert r.digital["forward MACs (FP32)"] == pytest.approx(w * mac)
    assert r.digital["backward MACs (FP32)"] == pytest.approx(250 * 10 * mac)  # the first layer needs no δ_in
    assert r.mixed_precision["SET pulses"] == pytest.approx(2e-11)
    e = sram_access_energy(4 * w)
    assert e == pytest.approx(50e-12)  # 776 KB of χ: Horowitz's 1 MB figure, halved for 32 bits
    assert r.mixed_precision["χ read + write (SRAM)"] == pytest.approx(2 * w * e)
    assert r.digital["weight traffic (SRAM)"] == pytest.approx(4 * w * e)
    inference = aimc.cost.estimate(_mlp(), "hermes_1phase", input_shape=(1, 784)).totals["energy_j"]
    assert r.mixed_precision["forward MVMs (crossbar)"] == pytest.approx(inference)
    assert 0 < r.mixed_precision["backward MVMs (crossbar)"] < inference
    assert r.ratio == pytest.approx(r.digital_total / r.mixed_precision_total)


def test_batch_shares_memory_traffic_only() -> None:
    r1 = training_energy(_mlp(), input_shape=(1, 784))
    r64 = training_energy(_mlp(), input_shape=(1, 784), batch=64)
    assert r64.mixed_precision["χ read + write (SRAM)"] == pytest.approx(r1.mixed_precision["χ read + write (SRAM)"] / 64)
    assert r64.mixed_precision["gradient + χ update (FP32)"] == r1.mixed_precision["gradient + χ update (FP32)"]
    assert "SET pulses" not in r1.mixed_precision  # unknown pulse energy: not counted, and said so
    assert any("not counted" in n for n in r1.notes)


@pytest.mark.parametrize("kw", [{"pulses_per_image": -1.0}, {"pulses_per_image": float("nan")},
                                {"set_pulse_energy_j": 0.0}, {"batch": 0}])
def test_bad_values_are_refused(kw: dict) -> None:
    with pytest.raises(aimc.ConfigError):
        training_energy(_mlp(), input_shape=(1, 784), **kw)
