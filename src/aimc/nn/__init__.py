"""Analog layers (each subclasses the torch layer it replaces) and the conversion table."""

from aimc.nn.convert import LAYER_MAP as LAYER_MAP
from aimc.nn.convert import ConversionReport as ConversionReport
from aimc.nn.convert import analog_layers as analog_layers
from aimc.nn.layers import AnalogConv1d as AnalogConv1d
from aimc.nn.layers import AnalogConv2d as AnalogConv2d
from aimc.nn.layers import AnalogLinear as AnalogLinear
from aimc.nn.lstm import AnalogLSTM as AnalogLSTM
from aimc.nn.tile import AnalogMatrix as AnalogMatrix

__all__ = ["AnalogLinear", "AnalogConv1d", "AnalogConv2d", "AnalogLSTM", "AnalogMatrix", "LAYER_MAP",
           "ConversionReport", "analog_layers"]
