"""Energy per training image of mixed-precision training (Nandakumar et al. 2020) next to a 32-bit digital design.

Per training image (batch 1 by default; a batch shares the memory traffic), for a network of analog layers with ``W`` weights:

mixed precision (computational memory + digital unit)
    * forward MVMs on the crossbars: :func:`aimc.cost.estimate`'s inference energy (DAC, array, ADC, digital
      post-processing, activations, data movement) on the chosen hardware preset;
    * backward MVMs (δ through Wᵀ) on the same tiles, for every analog layer but the first (the input needs no
      gradient): costed as that layer's forward MVM energy ``[A]`` (same tiles, conversions and post-processing);
    * the weight gradient and χ accumulation, digital: one FP32 multiply and one FP32 add per weight (δ_i·x_j
      scaled and added to χ_ij), 3.7 pJ + 0.9 pJ ``[S]`` (Horowitz, ISSCC 2014, 45 nm), plus reading and writing
      χ: two 32-bit accesses per weight to an SRAM of χ's size (Horowitz: 64-bit reads of 10 / 20 / 100 pJ for
      8 KB / 32 KB / 1 MB; a 32-bit access is taken as half of the 64-bit figure ``[A]``);
    * SET pulses: ``pulses_per_image`` × ``set_pulse_energy_j`` — no source gives the pulse energy of the
      paper's devices ``[U]``: pass one explicitly, or ``None`` to leave the term out (reported as not counted).

32-bit digital design
    forward MACs + backward MACs (layers after the first) + update MACs (one per weight), each an FP32 MAC
    (4.6 pJ ``[S]``), plus weight traffic: every weight read in the forward and the backward pass and read and
    written in the update (four 32-bit accesses per weight) from an SRAM of the weights' size.

The paper's published estimate is 83.2 nJ against 14.35 µJ per image (172×), with assumptions nobody outside could
check (``[U]``, reference sheet energy-latency-facts §5); :func:`training_energy` states every one of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from aimc.cost.model import estimate
from aimc.errors import ConfigError

__all__ = ["TrainingEnergy", "training_energy", "FP32_MUL_J", "FP32_ADD_J", "sram_access_energy"]

FP32_MUL_J = 3.7e-12
"""One 32-bit float multiply, 45 nm (Horowitz, ISSCC 2014) [S]."""
FP32_ADD_J = 0.9e-12
"""One 32-bit float add, 45 nm (Horowitz, ISSCC 2014) [S]."""
_SRAM_64BIT_READ_J = ((8 * 1024, 10e-12), (32 * 1024, 20e-12), (1024 * 1024, 100e-12))  # Horowitz [S]


def sram_access_energy(size_bytes: int) -> float:
    """Energy of one 32-bit access to an SRAM of ``size_bytes``: half of Horowitz's 64-bit read at the smallest of
    8 KB / 32 KB / 1 MB that holds it [A: access width scaling; sizes above 1 MB use the 1 MB figure, a lower
    bound]."""
    for size, e in _SRAM_64BIT_READ_J:
        if size_bytes <= size:
            return e / 2
    return _SRAM_64BIT_READ_J[-1][1] / 2


@dataclass(frozen=True)
class TrainingEnergy:
    """Energy per training image, J, by component; ``ratio`` = digital total / mixed-precision total."""

    mixed_precision: dict[str, float]
    digital: dict[str, float]
    weights: int
    pulses_per_image: float
    notes: tuple[str, ...] = field(default=())

    @property
    def mixed_precision_total(self) -> float:
        return sum(self.mixed_precision.values())

    @property
    def digital_total(self) -> float:
        return sum(self.digital.values())

    @property
    def ratio(self) -> float:
        return self.digital_total / self.mixed_precision_total


def training_energy(model: nn.Module, hardware: str = "hermes_4phase", *, input_shape: Sequence[int] | None = None,
                    pulses_per_image: float = 0.0, set_pulse_energy_j: float | None = None,
                    count_memory: bool = True, batch: int = 1) -> TrainingEnergy:
    """Energy per training image (batch 1) of ``model`` trained with mixed precision vs a 32-bit digital design.

    Args:
        model: the network (plain or converted); its Linear/Conv/LSTM layers are the analog ones.
        hardware: an :data:`aimc.cost.HARDWARE` preset for the crossbar MVMs.
        input_shape: one input, e.g. ``(1, 784)``; default: inferred as in :func:`aimc.cost.mapping`.
        pulses_per_image: SET pulses applied per training image, averaged (from the optimizer's report:
            pulses per weight per epoch × weights / training images), ≥ 0.
        set_pulse_energy_j: energy of one SET pulse, J (> 0), or ``None``: not counted (unknown).
        count_memory: include the SRAM traffic of χ (mixed precision) and of the weights (digital).
        batch: images per update; memory traffic (χ, weights) is shared by the batch, arithmetic is not.

    Returns:
        :class:`TrainingEnergy` with the components of both designs.
    """
    if not (isinstance(pulses_per_image, (int, float)) and math.isfinite(pulses_per_image) and pulses_per_image >= 0):
        raise ConfigError(f"pulses_per_image={pulses_per_image!r} must be a finite number ≥ 0 (average SET pulses "
                          "per training image).")
    if set_pulse_energy_j is not None and not (isinstance(set_pulse_energy_j, (int, float))
                                               and math.isfinite(set_pulse_energy_j) and set_pulse_energy_j > 0):
        raise ConfigError(f"set_pulse_energy_j={set_pulse_energy_j!r} must be a number > 0 (J per SET pulse), or "
                          "None to leave the pulses out.")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch={batch!r} must be an integer ≥ 1 (training images per update).")
    rep = estimate(model, hardware, input_shape=input_shape)
    layers = rep.mapping.layers
    weights = sum(lm.weights for lm in layers)
    macs = sum(lm.weights * lm.mvms for lm in layers)
    back_macs = sum(lm.weights * lm.mvms for lm in layers[1:])
    fwd = sum(sum(lc.energy.values()) for lc in rep.layers)
    back = sum(sum(lc.energy[k] for k in ("array", "dac", "adc", "post", "psum")) for lc in rep.layers[1:])
    notes = ["backward MVMs costed as the same layers' forward MVMs [A]",
             "FP32 multiply 3.7 pJ, add 0.9 pJ (Horowitz 2014, 45 nm) [S]"]
    mp = {"forward MVMs (crossbar)": fwd, "backward MVMs (crossbar)": back,
          "gradient + χ update (FP32)": weights * (FP32_MUL_J + FP32_ADD_J)}
    dig = {"forward MACs (FP32)": macs * (FP32_MUL_J + FP32_ADD_J),
           "backward MACs (FP32)": back_macs * (FP32_MUL_J + FP32_ADD_J),
           "weight update (FP32)": weights * (FP32_MUL_J + FP32_ADD_J)}
    if count_memory:
        e_acc = sram_access_energy(4 * weights)
        mp["χ read + write (SRAM)"] = 2 * weights * e_acc / batch
        dig["weight traffic (SRAM)"] = 4 * weights * e_acc / batch
        notes.append(f"SRAM: {4 * weights / 1024:.0f} KB of 32-bit words, {e_acc * 1e12:.0f} pJ per access "
                     "(half of Horowitz's 64-bit read) [A], shared by a batch of {batch}")
    if set_pulse_energy_j is None:
        notes.append("SET pulse energy unknown: pulses not counted")
    else:
        mp["SET pulses"] = pulses_per_image * set_pulse_energy_j
    return TrainingEnergy(mp, dig, int(weights), float(pulses_per_image), tuple(notes))
