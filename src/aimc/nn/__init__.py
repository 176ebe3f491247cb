"""Analog layers (each subclasses the torch layer it replaces), the analog weight and the conversion table."""

from aimc.nn.attention import AnalogMultiheadAttention as AnalogMultiheadAttention
from aimc.nn.conv import AnalogConv3d as AnalogConv3d
from aimc.nn.conv import AnalogConvTranspose1d as AnalogConvTranspose1d
from aimc.nn.conv import AnalogConvTranspose2d as AnalogConvTranspose2d
from aimc.nn.conversion import ConversionReport as ConversionReport
from aimc.nn.convert import LAYER_MAP as LAYER_MAP
from aimc.nn.convert import analog_layers as analog_layers
from aimc.nn.layers import AnalogConv1d as AnalogConv1d
from aimc.nn.layers import AnalogConv2d as AnalogConv2d
from aimc.nn.layers import AnalogLinear as AnalogLinear
from aimc.nn.lstm import AnalogGRU as AnalogGRU
from aimc.nn.lstm import AnalogLSTM as AnalogLSTM
from aimc.nn.lstm import AnalogRNN as AnalogRNN
from aimc.nn.tile import AnalogMatrix as AnalogMatrix
from aimc.nn.weight import AnalogWeight as AnalogWeight

__all__ = ["AnalogLinear", "AnalogConv1d", "AnalogConv2d", "AnalogConv3d", "AnalogConvTranspose1d",
           "AnalogConvTranspose2d", "AnalogLSTM", "AnalogGRU", "AnalogRNN", "AnalogMultiheadAttention",
           "AnalogMatrix", "AnalogWeight", "LAYER_MAP", "ConversionReport", "analog_layers"]
