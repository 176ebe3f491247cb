"""Frozen, documented parameter sets of the energy / latency model, each constant with its source.

Every number comes from ``/work/shared/reference/energy-latency-facts.md`` (cited as "facts §x.y") and carries one
of its tags in :attr:`HardwareParams.sources`:

* ``[P]`` primary text (paper, abstract), ``[C]`` public simulator code, ``[S]`` secondary reproduction,
* ``[D]`` our arithmetic on tagged inputs (the formula is in the text and in the code below),
* ``[A]`` an assumption of ours, needed because no source gives the number (see facts §7.7).

Units: joules, seconds, bits. Energies are per event (one conversion, one tile-MVM phase, one element, one byte);
the model in :mod:`aimc.cost.model` multiplies them by the event counts of :mod:`aimc.cost.mapping`.

The presets themselves (HERMES, the 14 nm speech chip, ISAAC; the digital baselines) are in
:mod:`aimc.cost.presets`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from aimc.errors import ConfigError

__all__ = ["HardwareParams", "DigitalBaseline", "LARGEST_PUBLISHED_TILE"]

LARGEST_PUBLISHED_TILE = (512, 2048)
"""(rows, columns) of PCM devices of the largest published PCM crossbar tile: Ambrogio et al. 2023 (facts §2, [P])."""

_INT_FIELDS = ("tile_rows", "tile_cols", "n_tiles", "devices_per_cell", "dac_bits", "adc_bits", "cols_per_adc",
               "phases", "activation_bits", "write_heads_per_tile")
_OPTIONAL = ("mvm_overhead_s", "post_time_s", "step_overhead_s", "program_energy_per_device_j")


@dataclass(frozen=True)
class HardwareParams:
    """An AIMC chip as a set of per-event energies and times (all > 0; ``None`` where a field allows it).

    Tile geometry (the reference tile the constants were measured on; other tile sizes scale per cell, row, column):
        tile_rows, tile_cols: unit cells of one crossbar tile (input lines × output lines).
        n_tiles: tiles on one chip.
        devices_per_cell: PCM devices per unit cell on that chip (information; the mapping counts devices with its
            own ``devices_per_weight``).
    Inputs and outputs:
        input_encoding: ``"pwm"`` (pulse-width/duration: one DAC conversion per row per MVM) or ``"bit_serial"``
            (``input_bits / dac_bits`` cycles, each with its own DAC and ADC conversions).
        dac_bits: reference input resolution (PWM) or bits per cycle (bit-serial).
        adc_bits: reference ADC resolution of ``adc_energy_j`` / ``adc_time_s``.
        adc_kind: ``"time"`` (CCO / ramp counters: energy and time ×2 per extra bit) or ``"sar"`` (energy and time
            ∝ bits + 2, MNSIM's ADC model, facts §3.4).
        cols_per_adc: output lines sharing one ADC.
        phases: read phases per MVM (HERMES 4-phase mode: 4).
    Energies, J:
        array_energy_j: crossbar (read currents) of one full-tile MVM phase / cycle, all cells active.
        dac_energy_j: one input conversion (one row, one phase / cycle).
        adc_energy_j: one output conversion at ``adc_bits``.
        post_energy_j: digital post-processing of one ADC result (gain/offset, shift-and-add, links).
        psum_energy_j: one digital partial-sum addition (a layer spanning several row tiles).
        bn_energy_j, activation_energy_j, residual_energy_j, pool_energy_j: per element (pool: per input element).
        data_energy_per_byte_j: moving one activation byte to / from the tiles (on-chip buffer).
        digital_mac_energy_j: one MAC of a layer that stays digital.
        offchip_energy_per_byte_j: one byte between chips (when a network needs several chips).
        program_energy_per_device_j: programming one PCM device; ``None`` = unknown (no source gives it).
    Times, s:
        input_time_unit_s: PWM: time per input LSB; bit-serial: crossbar read time per cycle.
        adc_time_s: one conversion at ``adc_bits``.
        mvm_overhead_s: fixed time per MVM phase / cycle (``None`` = 0).
        post_time_s: digital post-processing per ADC result, per tile (tiles run in parallel; ``None`` = 0,
            overlapped).
        step_overhead_s: per input vector and layer (link aggregation, off-chip digital; ``None`` = 0).
        digital_ops_per_s: throughput of the digital unit for layers kept digital and pooling.
        program_time_per_device_s, write_heads_per_tile: reprogramming speed (tiles program in parallel).
    Other:
        activation_bits: bits per activation moved between layers.
        sources: field name → "[tag] where the number comes from".
    """

    name: str
    description: str
    tile_rows: int
    tile_cols: int
    n_tiles: int
    devices_per_cell: int
    input_encoding: Literal["pwm", "bit_serial"]
    dac_bits: int
    adc_bits: int
    adc_kind: Literal["time", "sar"]
    cols_per_adc: int
    phases: int
    array_energy_j: float
    dac_energy_j: float
    adc_energy_j: float
    post_energy_j: float
    psum_energy_j: float
    bn_energy_j: float
    activation_energy_j: float
    residual_energy_j: float
    pool_energy_j: float
    data_energy_per_byte_j: float
    digital_mac_energy_j: float
    offchip_energy_per_byte_j: float
    input_time_unit_s: float
    adc_time_s: float
    digital_ops_per_s: float
    program_time_per_device_s: float
    write_heads_per_tile: int
    mvm_overhead_s: float | None = None
    post_time_s: float | None = None
    step_overhead_s: float | None = None
    program_energy_per_device_j: float | None = None
    activation_bits: int = 8
    sources: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        p: list[str] = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("name", "description", "sources"):
                continue
            if f.name == "input_encoding":
                if v not in ("pwm", "bit_serial"):
                    p.append(f"input_encoding={v!r} must be 'pwm' or 'bit_serial'")
                continue
            if f.name == "adc_kind":
                if v not in ("time", "sar"):
                    p.append(f"adc_kind={v!r} must be 'time' or 'sar'")
                continue
            if v is None and f.name in _OPTIONAL:
                continue
            if f.name in _INT_FIELDS:
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    p.append(f"{f.name}={v!r} must be an integer ≥ 1")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                extra = " or null (not counted)" if f.name in _OPTIONAL else ""
                p.append(f"{f.name}={v!r} must be a finite number > 0{extra}")
        if not p and self.input_encoding == "pwm" and self.dac_bits < 2:
            p.append(f"dac_bits={self.dac_bits} must be ≥ 2 for PWM inputs (a sign and at least one magnitude bit)")
        if p:
            raise ConfigError(f"hardware parameters {self.name!r}: " + "; ".join(p)
                              + ". Zero, negative or non-finite constants are not physical; take the values of a "
                              "preset (aimc.cost.get_hardware(...)) and change only what you know.")

    def source(self, name: str) -> str:
        """Where the value of field ``name`` comes from ("[tag] text"); "[A] unspecified" when not recorded."""
        return self.sources.get(name, "[A] unspecified (set by the user)")

    def replace(self, **changes: object) -> HardwareParams:
        """A copy with ``changes`` applied; their sources become "[A] set by the user" (validated again)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown hardware parameter(s) {sorted(unknown)}; known: "
                              f"{[f.name for f in fields(self) if f.name != 'sources']}.")
        src = dict(self.sources)
        for k in changes:
            src[k] = f"[A] set by the user (preset value {getattr(self, k)!r}: {self.source(k)})"
        return dataclasses.replace(self, sources=src, **changes)

    def table(self) -> list[tuple[str, object, str]]:
        """(field, value, source) of every constant, for documentation."""
        return [(f.name, getattr(self, f.name), self.source(f.name)) for f in fields(self)
                if f.name not in ("name", "description", "sources")]


@dataclass(frozen=True)
class DigitalBaseline:
    """The same network run fully digital: energy = MACs·mac_energy_j + elements·elementwise_energy_j
    (+ bytes·byte_energy_j: every weight once and every activation in and out once per inference);
    latency = MACs / macs_per_s (compute-bound lower bound).

    ``byte_energy_j = None`` means data movement is already inside ``mac_energy_j`` (a chip-level TOPS/W figure).
    """

    name: str
    description: str
    precision: str
    processor: str
    mac_energy_j: float
    macs_per_s: float
    elementwise_energy_j: float
    byte_energy_j: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        p = []
        for k in ("mac_energy_j", "macs_per_s", "elementwise_energy_j", "byte_energy_j"):
            v = getattr(self, k)
            if v is None and k == "byte_energy_j":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                p.append(f"{k}={v!r} must be a finite number > 0")
        if p:
            raise ConfigError(f"digital baseline {self.name!r}: " + "; ".join(p) + ".")

    def source(self, name: str) -> str:
        return self.sources.get(name, "[A] unspecified (set by the user)")
