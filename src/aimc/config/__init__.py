"""Configuration of an analog model: frozen dataclasses, validated on construction, JSON/YAML round trip.

Edit a config by copy, never by mutation::

    cfg = dataclasses.replace(aimc.presets.joshi2020(), training=aimc.config.TrainingConfig(eta=0.05))

Units: conductances in µS, times in seconds. Every field is documented with its unit and source.

Layout (one job per module): ``aimc.config.parts`` (``MappingConfig``, ``PeripheryConfig``, ``CompensationConfig``,
``TrainingConfig`` and their validation), ``aimc.config.analog`` (``AnalogConfig``, the dict / YAML round trip and
device entries). Import the names from ``aimc.config``.
"""

from aimc.config.analog import CONFIG_VERSION as CONFIG_VERSION
from aimc.config.analog import AnalogConfig as AnalogConfig
from aimc.config.parts import CompensationConfig as CompensationConfig
from aimc.config.parts import MappingConfig as MappingConfig
from aimc.config.parts import PeripheryConfig as PeripheryConfig
from aimc.config.parts import TrainingConfig as TrainingConfig

__all__ = [
    "AnalogConfig",
    "MappingConfig",
    "PeripheryConfig",
    "CompensationConfig",
    "TrainingConfig",
    "CONFIG_VERSION",
]
