"""Configs: frozen, validated with every problem listed, round-trip through dict/JSON/YAML for every preset."""

import dataclasses
import json

import pytest

import aimc
from aimc.config import AnalogConfig, PeripheryConfig
from aimc.devices import PCM


@pytest.mark.parametrize("name", sorted(aimc.presets.PRESETS))
def test_every_preset_round_trips(name):
    cfg = aimc.presets.get(name)
    assert AnalogConfig.from_dict(cfg.to_dict()) == cfg
    assert AnalogConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert AnalogConfig.from_yaml(cfg.to_yaml()) == cfg
    assert AnalogConfig.from_yaml(cfg.to_yaml()).to_yaml() == cfg.to_yaml()


def test_presets_match_their_sources():
    j = aimc.presets.joshi2020()
    assert j.periphery.is_ideal and j.device == PCM() and j.device.g_max == 25.0
    assert j.training.eta == 0.038 and j.training.clip_alpha == 2.0 and j.mapping.scale == "layer"
    k = aimc.presets.aihwkit_default()
    p = k.periphery
    assert (p.dac_bits, p.adc_bits, p.out_bound, p.out_noise) == (7, 9, 12.0, 0.06)
    assert p.input_range == "dynamic" and p.bound_management == "iterative"
    assert (k.mapping.tile_rows, k.mapping.tile_cols) == (512, 512)
    assert k.compensation.readout == "identity_abs_mean" and k.compensation.gdc


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        aimc.presets.joshi2020().name = "x"


def test_bad_values_are_all_reported():
    with pytest.raises(aimc.ConfigError) as e:
        PeripheryConfig(dac_bits=0, out_noise=-1, input_range="sometimes")
    msg = str(e.value)
    assert "dac_bits=0" in msg and "out_noise=-1" in msg and "input_range='sometimes'" in msg
    with pytest.raises(aimc.ConfigError, match="g_max"):
        PCM(g_max=0)
    with pytest.raises(aimc.ConfigError, match="out_bound"):
        PeripheryConfig(adc_bits=8)
    with pytest.raises(aimc.ConfigError, match="tile_rows"):
        aimc.MappingConfig(tile_rows=0)


def test_from_dict_rejects_unknown_keys_and_versions():
    d = aimc.presets.joshi2020().to_dict()
    d["periphery"]["dac_bitz"] = 8
    d["colour"] = "blue"
    with pytest.raises(aimc.ConfigError) as e:
        AnalogConfig.from_dict(d)
    assert "dac_bitz" in str(e.value) and "colour" in str(e.value)
    d = aimc.presets.joshi2020().to_dict()
    d["version"] = 99
    with pytest.raises(aimc.ConfigError, match="version"):
        AnalogConfig.from_dict(d)
    with pytest.raises(aimc.ConfigError, match="line"):
        AnalogConfig.from_yaml("device: [unclosed")


def test_unknown_preset():
    with pytest.raises(aimc.ConfigError, match="joshi2020"):
        aimc.presets.get("joshi2021")
