"""Device models: the statistical PCM models of inference (Joshi 2020 PCM, HERMES chip) and an ideal device."""

from aimc.devices.ideal import Ideal as Ideal
from aimc.devices.pcm import PCM as PCM
from aimc.devices.pcm import DeviceState as DeviceState
from aimc.devices.hermes import Hermes as Hermes
from aimc.devices.pcm_training import PCMTrainingDevice as PCMTrainingDevice  # mixed-precision training
from aimc.devices.tabulated import Tabulated as Tabulated  # device files, fitting, measured conductances
from aimc.devices.files import FilePCM as FilePCM
from aimc.devices.files import load as load
from aimc.devices.files import save as save
from aimc.devices.fit import FitResult as FitResult
from aimc.devices.fit import fit_pcm as fit_pcm
from aimc.devices.fit import read_measurements as read_measurements

__all__ = ["PCM", "Hermes", "Ideal", "DeviceState", "PCMTrainingDevice",
           "Tabulated", "FilePCM", "load", "save", "fit_pcm", "FitResult", "read_measurements"]
