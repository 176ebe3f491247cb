"""Energy and latency of one inference from a mapping report and a hardware parameter set.

Per analog matrix (counts from :class:`~aimc.cost.layout.LayerMapping`, constants from
:class:`~aimc.cost.params.HardwareParams`; ``k`` = phases, ``c`` = input cycles: input_bits/dac_bits when
bit-serial, else 1)::

    array    = k·c · mvms · weights · array_energy_j / (tile_rows·tile_cols of the preset)   [× 2^(b_in − dac_bits), PWM]
    dac      = k·c · dac_conversions · dac_energy_j
    adc      = k·c · adc_conversions · E_adc(adc_bits)       E_adc: ×2 per bit ("time"), ∝ bits+2 ("sar")
    post     =   c · adc_conversions · post_energy_j         (phases accumulate in the ADC counter)
    psum     = partial_sums · psum_energy_j
    bn, activation, residual, pool = elements · their energy
    data     = (input + output elements) · bytes per activation · data_energy_per_byte_j

Time of one input vector through a layer (its tiles run in parallel)::

    t_phase = mvm_overhead + max(t_input, t_adc(adc_bits) · min(cols in a tile, cols_per_adc))
              t_input = 2^(b_in−1) · input_time_unit (PWM) or input_time_unit per cycle (bit-serial)
    t_step  = k·c·t_phase + post_time · cols in a tile · c + step_overhead
    layer   = mvms · t_step

* layer-serial latency = Σ layers + digital layers (MACs / digital_ops_per_s) + pooling;
* pipelined (one layer per tile set, all weights resident): a new inference every max(layer) (the bottleneck);
  the latency of one inference is about max(layer) + Σ layers' fill time, where a layer's successor can start
  after ≈ 2 rows of its output (2·⌈√mvms⌉ steps; an assumption).

Assumptions (stated in every report): energy scales with active cells, rows and columns (unused lines are not
driven or converted); a tile of another size than the preset's keeps its per-cell / per-line constants and its
times; inputs are full scale; static power is inside the measured constants of the calibrated presets only.

When the network needs more tiles than one chip has (``n_tiles`` × preset tile area, re-cut into the requested
tile size), ``on_overflow`` decides: ``"error"`` (say how many tiles are needed), ``"chips"`` (as many chips as
needed; activations crossing a chip boundary pay ``offchip_energy_per_byte_j``) or ``"reprogram"`` (one chip,
layer groups reprogrammed for every batch of ``batch`` inferences; needs ``program_energy_per_device_j``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from aimc.cost.layout import OPS, LayerMapping, MappingReport, mapping
from aimc.cost.params import DigitalBaseline, HardwareParams
from aimc.cost.presets import get_baseline, get_hardware
from aimc.errors import ConfigError

__all__ = ["estimate", "CostReport", "LayerCost", "COMPONENTS", "ASSUMPTIONS"]

COMPONENTS = ("array", "dac", "adc", "post", "psum", "bn", "activation", "residual", "pool", "data")
"""Energy components of an analog layer, in the order of the breakdown plots."""
OVERFLOW = ("chips", "error", "reprogram")
ASSUMPTIONS = (
    "energy scales with active cells (crossbar), rows (DAC) and columns (ADC); unused lines cost nothing",
    "a tile size other than the preset's keeps the preset's per-cell / per-line energies and its MVM time",
    "inputs at full scale (PWM pulses and read currents at their maximum)",
    "no weight replication; each layer processes its output positions one after another on its tiles",
    "PCM programming, refresh and static power outside the measured MVM / ResNet-9 figures are not counted",
    "pipelined latency: a layer can start after about two output rows of its predecessor",
)


@dataclass(frozen=True)
class LayerCost:
    """Energy (J, by component) and time (s) of one analog matrix per inference."""

    layer: LayerMapping
    energy: dict[str, float]
    step_s: float
    latency_s: float

    @property
    def energy_j(self) -> float:
        return sum(self.energy.values())


@dataclass(frozen=True)
class CostReport:
    """Cost of one inference of a mapped network on a hardware preset, next to a digital baseline."""

    mapping: MappingReport
    hardware: HardwareParams
    baseline: DigitalBaseline
    input_bits: int
    adc_bits: int
    layers: tuple[LayerCost, ...]
    totals: dict[str, float | int]
    on_overflow: str
    batch: int
    notes: tuple[str, ...] = field(default=())

    def breakdown(self) -> dict[str, float]:
        """Energy per component over the whole network (J), including digital layers and off-chip traffic."""
        return dict(self.totals["energy_breakdown_j"])

    def to_dict(self) -> dict:
        """JSON-ready: model, hardware, baseline, settings, ``layers``, ``digital_layers``, ``totals``."""
        hw, bl = self.hardware, self.baseline
        layers = []
        for lc in self.layers:
            d = lc.layer.to_dict()
            d.update(energy_j=lc.energy_j, energy_breakdown_j=dict(lc.energy), latency_s=lc.latency_s,
                     step_s=lc.step_s)
            layers.append(d)
        return {
            "model": self.mapping.model, "input_shape": list(self.mapping.input_shape),
            "hardware": {"name": hw.name, "description": hw.description},
            "baseline": {"name": bl.name, "description": bl.description, "precision": bl.precision,
                         "processor": bl.processor},
            "settings": {"tile_rows": self.mapping.tile_rows, "tile_cols": self.mapping.tile_cols,
                         "devices_per_weight": self.mapping.devices_per_weight, "input_bits": self.input_bits,
                         "adc_bits": self.adc_bits, "on_overflow": self.on_overflow, "batch": self.batch},
            "layers": layers,
            "digital_layers": [{"name": d.name, "type": d.kind, "reason": d.reason, "macs": d.macs}
                               for d in self.mapping.digital],
            "totals": self.totals, "assumptions": list(ASSUMPTIONS), "notes": list(self.notes),
        }

    def to_frame(self):  # noqa: ANN201
        """Per-layer table (pandas DataFrame): mapping columns, energy per component and latency."""
        import pandas as pd

        rows = []
        for lc in self.layers:
            d = lc.layer.to_dict()
            d.pop("weight_shape")
            d["weight_shape"] = "×".join(str(s) for s in lc.layer.weight_shape)
            d.update({f"energy_{k}_j": v for k, v in lc.energy.items()})
            d.update(energy_j=lc.energy_j, latency_s=lc.latency_s)
            rows.append(d)
        return pd.DataFrame(rows)


# ---- per-event helpers (shared with the headline checks) -------------------------------------------------------------
def _check_bits(name: str, bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 24:
        raise ConfigError(f"{name}={bits!r} must be an integer number of bits in [1, 24] (e.g. 8).")
    return bits


def adc_energy(hw: HardwareParams, bits: int) -> float:
    """Energy of one conversion at ``bits`` (J)."""
    if hw.adc_kind == "time":
        return hw.adc_energy_j * 2.0 ** (bits - hw.adc_bits)
    return hw.adc_energy_j * (bits + 2) / (hw.adc_bits + 2)


def adc_time(hw: HardwareParams, bits: int) -> float:
    """Time of one conversion at ``bits`` (s)."""
    if hw.adc_kind == "time":
        return hw.adc_time_s * 2.0 ** (bits - hw.adc_bits)
    return hw.adc_time_s * (bits + 2) / (hw.adc_bits + 2)


def cycles(hw: HardwareParams, input_bits: int) -> int:
    """Input cycles per MVM phase: ⌈input_bits / dac_bits⌉ when bit-serial, else 1."""
    return math.ceil(input_bits / hw.dac_bits) if hw.input_encoding == "bit_serial" else 1


def cell_energy(hw: HardwareParams, input_bits: int) -> float:
    """Crossbar energy per active cell per phase / cycle (J); PWM: ∝ pulse length 2^(b−1)."""
    e = hw.array_energy_j / (hw.tile_rows * hw.tile_cols)
    return e * 2.0 ** (input_bits - hw.dac_bits) if hw.input_encoding == "pwm" else e


def mvm_time(hw: HardwareParams, input_bits: int, adc_bits: int, max_cols: int) -> float:
    """Analog part of one MVM (all phases and input cycles) on tiles with ``max_cols`` active columns (s)."""
    t_in = hw.input_time_unit_s * (2.0 ** (input_bits - 1) if hw.input_encoding == "pwm" else 1.0)
    t_conv = adc_time(hw, adc_bits) * min(max_cols, hw.cols_per_adc)
    t_phase = (hw.mvm_overhead_s or 0.0) + max(t_in, t_conv)
    return hw.phases * cycles(hw, input_bits) * t_phase


def step_time(hw: HardwareParams, input_bits: int, adc_bits: int, max_cols: int) -> float:
    """Time for one input vector through one layer whose fullest tile has ``max_cols`` active columns (s)."""
    post = (hw.post_time_s or 0.0) * max_cols * cycles(hw, input_bits)
    return mvm_time(hw, input_bits, adc_bits, max_cols) + post + (hw.step_overhead_s or 0.0)


def layer_cost(hw: HardwareParams, lm: LayerMapping, input_bits: int, adc_bits: int) -> LayerCost:
    """Energy and time of one analog matrix per inference."""
    k, c = hw.phases, cycles(hw, input_bits)
    byte = math.ceil(hw.activation_bits / 8)
    e = {
        "array": k * c * lm.mvms * lm.weights * cell_energy(hw, input_bits),
        "dac": k * c * lm.dac_conversions * hw.dac_energy_j,
        "adc": k * c * lm.adc_conversions * adc_energy(hw, adc_bits),
        "post": c * lm.adc_conversions * hw.post_energy_j,
        "psum": lm.partial_sums * hw.psum_energy_j,
        "bn": lm.ops.get("bn", 0) * hw.bn_energy_j,
        "activation": lm.ops.get("activation", 0) * hw.activation_energy_j,
        "residual": lm.ops.get("residual", 0) * hw.residual_energy_j,
        "pool": lm.ops.get("pool", 0) * hw.pool_energy_j,
        "data": (lm.input_elements + lm.output_elements) * byte * hw.data_energy_per_byte_j,
    }
    step = step_time(hw, input_bits, adc_bits, lm.max_cols)
    return LayerCost(lm, e, step, lm.mvms * step)


# ---- whole network ---------------------------------------------------------------------------------------------------
def _capacity(hw: HardwareParams, rows: int, cols: int) -> int:
    cap = (hw.n_tiles * hw.tile_rows * hw.tile_cols) // (rows * cols)
    if cap < 1:
        raise ConfigError(f"a {rows} × {cols} tile is larger than the whole {hw.name} chip ({hw.n_tiles} tiles of "
                          f"{hw.tile_rows} × {hw.tile_cols}); use a smaller tile.")
    return cap


def _overflow(hw: HardwareParams, mp: MappingReport, costs: Sequence[LayerCost], cap: int, policy: str,
              batch: int) -> tuple[int, float, float, float, list[str]]:
    """(chips, off-chip energy, reprogram energy, reprogram time) per inference, and notes."""
    need = sum(lm.tiles for lm in mp.layers)
    if need <= cap:
        return 1, 0.0, 0.0, 0.0, []
    n_chips = math.ceil(need / cap)
    what = (f"{mp.model} needs {need} tiles of {mp.tile_rows} × {mp.tile_cols}; one {hw.name} chip holds {cap} "
            f"({hw.n_tiles} tiles of {hw.tile_rows} × {hw.tile_cols})")
    if policy == "error":
        raise ConfigError(f"{what}. Use on_overflow='chips' ({n_chips} chips) or on_overflow='reprogram' (reuse "
                          "the tiles, reprogrammed for every batch), or a smaller network.")
    if policy == "chips":
        byte = math.ceil(hw.activation_bits / 8)
        used, crossing = 0, 0
        for lc in costs:  # layers are placed in order; a layer that spans chips or ends a chip sends its outputs on
            first, used = used, used + lc.layer.tiles
            if first // cap != (used - 1) // cap or (used % cap == 0 and used < need):
                crossing += lc.layer.output_elements * byte
        return n_chips, crossing * hw.offchip_energy_per_byte_j, 0.0, 0.0, [
            f"{what}: {n_chips} chips; activations crossing a chip boundary ({crossing:,} bytes per inference) "
            "are charged as off-chip traffic"]
    if hw.program_energy_per_device_j is None:
        raise ConfigError(
            f"{what}; on_overflow='reprogram' needs the energy to program one PCM device, which no source in the "
            "reference sheet gives. Set it as an explicit assumption, e.g. hardware=aimc.cost.get_hardware("
            f"'{hw.name}').replace(program_energy_per_device_j=1e-9), or use on_overflow='chips'.")
    loads = math.ceil(need / cap)
    devices = sum(lm.devices for lm in mp.layers)
    t_load = mp.tile_rows * mp.tile_cols * mp.devices_per_weight / hw.write_heads_per_tile \
        * hw.program_time_per_device_s
    e = devices * hw.program_energy_per_device_j / batch
    t = loads * t_load / batch
    return 1, 0.0, e, t, [f"{what}: {loads} loads of the chip per batch of {batch}; reprogramming "
                          f"{devices:,} devices per batch costs {e * batch:.3g} J and {t * batch:.3g} s"]


def estimate(model: nn.Module | MappingReport, hardware: str | HardwareParams = "hermes_4phase", *,
             baseline: str | DigitalBaseline = "a100_int8", input_shape: Sequence[int] | None = None,
             example_input=None, tile: int | str | Sequence[int] | None = None, config=None,  # noqa: ANN001
             exclude: Sequence[str] = (), devices_per_weight: int = 2, input_bits: int | None = None,
             adc_bits: int | None = None, on_overflow: str = "chips", batch: int = 1,
             name: str | None = None) -> CostReport:
    """Energy and latency per inference of ``model`` on ``hardware``, next to a digital baseline.

    Args:
        model: a torch model, a converted model, or a :class:`MappingReport` (then the mapping arguments are unused).
        hardware: a preset name (:data:`aimc.cost.HARDWARE`) or :class:`HardwareParams`.
        baseline: a digital baseline name (:data:`aimc.cost.BASELINES`) or :class:`DigitalBaseline`.
        input_shape, example_input, exclude, devices_per_weight, name: as in :func:`aimc.cost.mapping`.
        tile: tile size; default: ``config``'s tile, a converted model's own tile, else the preset's tile.
        config: :class:`aimc.AnalogConfig`; its tile size and DAC / ADC bits are used unless given here.
        input_bits: input (DAC) resolution; default: ``config.periphery.dac_bits``, else the preset's (8 for PWM).
        adc_bits: ADC resolution; default: ``config.periphery.adc_bits``, else the preset's.
        on_overflow: ``"chips"``, ``"error"`` or ``"reprogram"`` when one chip has too few tiles.
        batch: inferences per reprogramming (``on_overflow="reprogram"`` only).

    Returns:
        A :class:`CostReport`; ``report.totals`` holds ``devices``, ``tiles``, ``energy_j``, ``latency_s`` and more.
    """
    hw = get_hardware(hardware)
    bl = get_baseline(baseline)
    if on_overflow not in OVERFLOW:
        raise ConfigError(f"on_overflow={on_overflow!r} must be one of {list(OVERFLOW)}.")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch={batch!r} must be an integer ≥ 1.")
    per = config.periphery if config is not None and hasattr(config, "periphery") else None
    if input_bits is None:
        input_bits = per.dac_bits if per is not None and per.dac_bits is not None else \
            (hw.dac_bits if hw.input_encoding == "pwm" else 8)
    if adc_bits is None:
        adc_bits = per.adc_bits if per is not None and per.adc_bits is not None else hw.adc_bits
    input_bits, adc_bits = _check_bits("input_bits", input_bits), _check_bits("adc_bits", adc_bits)
    if hw.input_encoding == "pwm" and input_bits < 2:
        raise ConfigError(f"input_bits={input_bits} must be ≥ 2 for PWM inputs (a sign and a magnitude bit).")
    if isinstance(model, MappingReport):
        mp = model
    else:
        from aimc.nn.convert import analog_layers

        if tile is None and config is None and isinstance(model, nn.Module) and \
                not any(True for _ in analog_layers(model)):
            tile = (hw.tile_rows, hw.tile_cols)
        mp = mapping(model, input_shape=input_shape, example_input=example_input, tile=tile, config=config,
                     exclude=exclude, devices_per_weight=devices_per_weight, name=name)
    costs = tuple(layer_cost(hw, lm, input_bits, adc_bits) for lm in mp.layers)
    cap = _capacity(hw, mp.tile_rows, mp.tile_cols)
    n_chips, e_off, e_prog, t_prog, notes = _overflow(hw, mp, costs, cap, on_overflow, batch)

    breakdown = {k: sum(lc.energy[k] for lc in costs) for k in COMPONENTS}
    un = mp.unattributed_ops
    for k in OPS:
        breakdown[k] += un.get(k, 0) * getattr(hw, f"{k}_energy_j")
    tot_map = mp.totals
    dig_macs = tot_map["digital_macs"]
    breakdown["digital_layers"] = dig_macs * hw.digital_mac_energy_j
    breakdown["offchip"] = e_off
    breakdown["reprogram"] = e_prog
    energy = sum(breakdown.values())

    t_layers = [lc.latency_s for lc in costs]
    t_digital = (dig_macs + tot_map["pool_elements"]) / hw.digital_ops_per_s
    serial = sum(t_layers) + t_digital + t_prog
    interval = max(max(t_layers, default=0.0), t_digital)
    fill = sum(lc.step_s * min(lc.layer.mvms, 2 * math.ceil(math.sqrt(max(lc.layer.mvms, 1)))) for lc in costs)
    pipelined = min(serial, interval + fill + t_prog)

    macs = tot_map["macs"] + dig_macs
    elements = sum(tot_map[f"{k}_elements"] for k in OPS)
    base_e = macs * bl.mac_energy_j + elements * bl.elementwise_energy_j
    if bl.byte_energy_j is not None:
        moved = tot_map["weights"] + sum(lm.input_elements + lm.output_elements for lm in mp.layers)
        base_e += moved * bl.byte_energy_j
    base_t = macs / bl.macs_per_s
    totals = {
        **tot_map, "chip_tiles": cap, "n_chips": n_chips, "energy_j": energy, "energy_breakdown_j": breakdown,
        "mvm_energy_j": breakdown["array"] + breakdown["dac"] + breakdown["adc"],
        "latency_s": serial, "latency_pipelined_s": pipelined, "pipeline_interval_s": interval,
        "throughput_per_s": 1.0 / interval if interval > 0 else math.inf,
        "tops_per_w": 2 * macs / energy / 1e12 if energy > 0 else math.nan,
        "baseline_energy_j": base_e, "baseline_latency_s": base_t,
        "energy_ratio": base_e / energy if energy > 0 else math.nan,
    }
    if any(d.macs for d in mp.digital):
        notes.append(f"{sum(1 for d in mp.digital if d.macs)} weight layer(s) stay digital: "
                     f"{dig_macs:,} MACs at {hw.digital_mac_energy_j * 1e12:.2f} pJ each")
    return CostReport(mp, hw, bl, input_bits, adc_bits, costs, totals, on_overflow, batch, tuple(notes))
