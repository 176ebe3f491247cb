"""Device models: the statistical PCM model of inference and an ideal device."""

from aimc.devices.ideal import Ideal as Ideal
from aimc.devices.pcm import PCM as PCM
from aimc.devices.pcm import DeviceState as DeviceState

__all__ = ["PCM", "Ideal", "DeviceState"]
