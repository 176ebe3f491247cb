"""Training helpers of hardware-aware training.

* ``noisy_weight``, ``noise_std``, ``quantize_ste``: weight noise, drop-connect and the learned-range DAC of the
  training forward pass, re-exported from ``aimc.nn.noise`` (the analog layers call them, so they live below
  ``aimc.train`` in the layering).
* ``aimc.train.hwa``: ``clip`` after each optimizer step, ``sync_input_ranges``.
* ``aimc.train.distill``: distillation from the digital model (``distillation_loss``, ``distill_step``).
* ``aimc.train.mixed_precision``: ``MixedPrecision``, training on simulated PCM devices (Nandakumar et al. 2020).
"""

from aimc.train.distill import distill_step as distill_step
from aimc.train.distill import distillation_loss as distillation_loss
from aimc.train.hwa import clip as clip
from aimc.train.hwa import clip_bounds as clip_bounds
from aimc.train.hwa import sync_input_ranges as sync_input_ranges
from aimc.train.mixed_precision import MixedPrecision as MixedPrecision  # mixed-precision PCM training
from aimc.train._mp_report import MixedPrecisionReport as MixedPrecisionReport
from aimc.train._mp_report import NonFiniteGradientWarning as NonFiniteGradientWarning
from aimc.nn.noise import noise_std as noise_std
from aimc.nn.noise import noisy_weight as noisy_weight
from aimc.nn.noise import quantize_ste as quantize_ste

__all__ = ["clip", "clip_bounds", "sync_input_ranges", "noisy_weight", "noise_std", "quantize_ste",
           "distillation_loss", "distill_step", "MixedPrecision", "MixedPrecisionReport", "NonFiniteGradientWarning"]
