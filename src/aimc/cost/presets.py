"""The presets: published chips and digital baselines as :class:`~aimc.cost.params.HardwareParams` /
:class:`~aimc.cost.params.DigitalBaseline`, every constant with its source tag (see :mod:`aimc.cost.params`).

Hardware (:data:`HARDWARE`): ``hermes_4phase`` and ``hermes_1phase`` (IBM HERMES, Le Gallo et al. 2023, calibrated to
its Table I), ``ambrogio2023`` (IBM 14 nm speech chip, chip 4), ``isaac2016`` (ISAAC component table). Digital
baselines (:data:`BASELINES`): ``a100_int8`` (A100 INT8 peak at TDP) and ``horowitz45_int8`` (45 nm INT8 accelerator).
:data:`CALIBRATED` lists, per preset, the constants solved from a published figure and that figure.
"""

from __future__ import annotations

from aimc.cost.params import DigitalBaseline, HardwareParams
from aimc.errors import ConfigError

__all__ = ["HARDWARE", "BASELINES", "CALIBRATED", "IMPLIED", "get_hardware", "get_baseline", "hermes_1phase", "hermes_4phase",
           "ambrogio2023", "isaac2016", "a100_int8", "horowitz45_int8"]

#: Which constants of each hardware preset were *solved* from which published figure (preset → constant → figure,
#: named as in :func:`aimc.cost.headline_checks`). Reproducing such a figure only checks the accounting; the
#: figures not listed here (the ``independent`` headline checks) test the model. Each listed constant's source
#: also says "calibrated on: …".
CALIBRATED: dict[str, dict[str, str]] = {
    "hermes_1phase": {"adc_energy_j": "peak MVM efficiency", "mvm_overhead_s": "MVM latency",
                      "post_energy_j": "ResNet-9 layer energy", "step_overhead_s": "ResNet-9 layer latency"},
    # the 4-phase preset takes its link/aggregation time from the 1-phase row: its own layer latency is a test
    "hermes_4phase": {"adc_energy_j": "peak MVM efficiency", "mvm_overhead_s": "MVM latency",
                      "post_energy_j": "ResNet-9 layer energy",
                      "step_overhead_s": "hermes_1phase: ResNet-9 layer latency"},
    "ambrogio2023": {"array_energy_j": "analog tile peak efficiency", "dac_energy_j": "chip-sustained efficiency",
                     "adc_energy_j": "chip-sustained efficiency"},
    # every ISAAC constant is a row of its component table; the peripheral-circuit lump post_energy_j holds the
    # remaining IMA rows, so the 289 mW IMA total is reproduced by construction
    "isaac2016": {"post_energy_j": "IMA power (12 IMAs per tile)"},
}
"""Preset → {constant: the published figure it was calibrated on}."""

#: Figures that follow from a calibrated figure by the accounting alone (ops = 2·MACs, tiles in parallel): they are
#: calibration checks too (MVM energy = ops / efficiency; throughput = ops / latency).
IMPLIED = {"MVM energy": "peak MVM efficiency", "peak MVM throughput": "MVM latency"}


def _mark(name: str, src: dict[str, str]) -> dict[str, str]:
    """``src`` with "; calibrated on: <figure>" appended to the source of each constant of ``CALIBRATED[name]``."""
    out = dict(src)
    for k, fig in CALIBRATED[name].items():
        out[k] = f"{out[k]}; calibrated on: {fig}"
    return out


# ---- shared digital constants (Horowitz ISSCC 2014, 45 nm; facts §4.1, [S]) ---------------------------------------
_ADD32, _MUL8, _ADD8 = 0.1e-12, 0.2e-12, 0.03e-12
_SRAM32K_BYTE = 20e-12 / 8  # 64-bit read of a 32 KB SRAM, per byte
_HT_BYTE = 10.4 / 6.4e9  # ISAAC Table I: HyperTransport links, 10.4 W at 6.4 GB/s (facts §3.1)
_DIGITAL = dict(
    psum_energy_j=_ADD32, bn_energy_j=_MUL8 + _ADD32, activation_energy_j=_ADD8, residual_energy_j=_ADD8,
    pool_energy_j=_ADD32, data_energy_per_byte_j=_SRAM32K_BYTE, digital_mac_energy_j=_MUL8 + _ADD32,
    offchip_energy_per_byte_j=_HT_BYTE, digital_ops_per_s=1e11)
_DIGITAL_SRC = {
    "psum_energy_j": "[S] Horowitz 2014 (45 nm): 32-bit integer add 0.1 pJ (facts §4.1)",
    "bn_energy_j": "[D] Horowitz 2014: 8-bit multiply 0.2 pJ + 32-bit add 0.1 pJ (an affine scale per element)",
    "activation_energy_j": "[S] Horowitz 2014: 8-bit add 0.03 pJ, [A] taken as the cost of a ReLU compare",
    "residual_energy_j": "[S] Horowitz 2014: 8-bit add 0.03 pJ (INT8 residual add)",
    "pool_energy_j": "[S] Horowitz 2014: 32-bit add 0.1 pJ per input element",
    "data_energy_per_byte_j": "[D] Horowitz 2014: 64-bit read of a 32 KB SRAM 20 pJ → 2.5 pJ/byte; [A] activations "
                              "sit in an on-chip SRAM buffer",
    "digital_mac_energy_j": "[D] Horowitz 2014: 8-bit multiply 0.2 pJ + 32-bit add 0.1 pJ",
    "offchip_energy_per_byte_j": "[D] ISAAC Table I: HyperTransport 10.4 W / 6.4 GB/s = 1.625 nJ/byte (facts §3.1)",
    "digital_ops_per_s": "[A] 100 digital lanes at 1 GHz",
    "activation_bits": "[A] INT8 activations between layers (HERMES LDPU I/O is INT8, facts §1.1 [P])",
}
# HERMES programming scheme (facts §1.1 [P]): 32 write heads per core; SET 250 ns + 50 ns trailing edge; verify read
# with 512 ns PWM pulses; at most 30 iterations. [A] 10 iterations on average.
_PROGRAM = dict(program_time_per_device_s=10 * (300e-9 + 512e-9), write_heads_per_tile=32)
_PROGRAM_SRC = {
    "program_time_per_device_s": "[D] HERMES: 10 × (300 ns SET pulse + 512 ns verify read) = 8.12 µs; pulse and "
                                 "verify times [P] (facts §1.1), [A] 10 program-and-verify iterations (≤ 30 [P])",
    "write_heads_per_tile": "[P] HERMES: 32 write heads (current DACs) per core (facts §1.1)",
    "program_energy_per_device_j": "[U] no source gives PCM programming energy (facts §7.7); set it to use "
                                   "on_overflow='reprogram'",
}


def _hermes(phases: int) -> HardwareParams:
    """IBM HERMES (Le Gallo et al., Nat. Electron. 2023), calibrated to Table I of its 1- or 4-phase read mode."""
    ops_per_core = 2 * 256 * 256
    tops_w, t_mvm, layer_e, layer_t = ((9.76e12, 133e-9, 0.97e-6, 1131e-9) if phases == 1
                                       else (2.48e12, 520e-9, 1.51e-6, 1518e-9))
    e_core = ops_per_core / tops_w  # energy of one core MVM (crossbar + ADCs + PWM), all phases
    e_phase = e_core / phases
    array = 256 * 0.4 * 100e-6 * 128e-9  # 256 lines × 0.4 V × 100 µA × 128 ns: upper bound of the read energy
    dac = 0.39e-12 * 128e-9 / 100e-9  # ISAAC 1-bit DAC energy per 100-ns cycle, stretched to a 128-ns pulse
    adc = (e_phase - array - 256 * dac) / 256
    post = (layer_e - 8 * e_core) / (8 * 256)  # Table I ResNet-9 row: 8 cores, 256 outputs each
    post_time = 2.5e-9
    step = 1131e-9 - 133e-9 - 256 * post_time  # from the 1-phase row; the 4-phase row is then a check
    mode = "1-phase" if phases == 1 else "4-phase (the mode of all its accuracy results)"
    src = {
        "tile_rows": "[P] 256 × 256 unit cells per core (facts §1.1)", "tile_cols": "[P] as tile_rows",
        "n_tiles": "[P] 64 cores (facts §1.1)", "devices_per_cell": "[P] 4 PCM per unit cell (facts §1.1)",
        "input_encoding": "[P] PWM read pulses, 8 bit, 1 ns/LSB (facts §1.1)", "dac_bits": "[P] 8-bit PWM",
        "adc_bits": "[P] Table I figures are for 8-bit inputs and outputs (facts §1.2)",
        "adc_kind": "[P] time-based current ADC on a current-controlled oscillator (facts §1.1)",
        "cols_per_adc": "[P] 256 ADCs per core, one per line (facts §1.1)",
        "phases": f"[P] {mode} (facts §1.1)",
        "array_energy_j": "[D] upper bound 256 lines × 0.4 V × 100 µA × 128 ns = 1.31 nJ per phase (read voltage "
                          "≤ 0.4 V, bit-line current ≤ 100 µA, 128 ns integration [P], facts §1.1/§1.4); [A] the "
                          "crossbar draws this bound",
        "dac_energy_j": "[D] ISAAC 1-bit DAC 0.39 pJ per 100-ns cycle (facts §3.1) × 128/100 for a 128-ns PWM pulse; "
                        "[A] that a PWM row driver costs as much",
        "adc_energy_j": f"[D] remainder: ({e_phase * 1e9:.2f} nJ per core-MVM phase − crossbar − 256 DACs) / 256 "
                        f"ADCs, where {e_core * 1e9:.2f} nJ = 131,072 ops / {tops_w / 1e12:.2f} TOPS/W (Table I "
                        "[P], facts §1.2); the CCO ADC's own energy is [U], so [A] everything else is the ADC",
        "post_energy_j": f"[D] Table I ResNet-9 layer ({mode.split(' ')[0]}): ({layer_e * 1e6:.2f} µJ − 8 core MVMs)"
                         " / (8 × 256 outputs); covers LDPU gain/offset, ReLU, partial-sum/residual adds and on-chip "
                         "links [P]; [A] all 256 outputs of each core are used",
        "post_time_s": "[P] LDPU at 400 MHz handles one ADC output per clock (facts §1.1, §1.2)",
        "step_overhead_s": "[D] 1131 ns − 133 ns MVM − 256 × 2.5 ns LDPU = 358 ns per layer input (1-phase ResNet-9 "
                           "row of Table I [P]); links and aggregation",
        "input_time_unit_s": "[P] 1 ns per PWM LSB (facts §1.1)",
        "adc_time_s": "[P] 128 ns integration with 8-bit PWM inputs (facts §1.4); [A] the CCO counts during this "
                      "window, doubling per extra output bit",
        "mvm_overhead_s": f"[D] {t_mvm * 1e9:.0f} ns / {phases} phase(s) − 128 ns integration (Table I latency [P])",
        **_DIGITAL_SRC, **_PROGRAM_SRC,
    }
    src = _mark(f"hermes_{phases}phase", src)
    return HardwareParams(
        name=f"hermes_{phases}phase",
        description=f"IBM HERMES 64-core PCM chip, 14 nm (Le Gallo et al., Nat. Electron. 6, 680 (2023)), {mode}",
        tile_rows=256, tile_cols=256, n_tiles=64, devices_per_cell=4, input_encoding="pwm", dac_bits=8, adc_bits=8,
        adc_kind="time", cols_per_adc=1, phases=phases, array_energy_j=array, dac_energy_j=dac, adc_energy_j=adc,
        post_energy_j=post, input_time_unit_s=1e-9, adc_time_s=128e-9, mvm_overhead_s=t_mvm / phases - 128e-9,
        post_time_s=post_time, step_overhead_s=step, sources=src, **_DIGITAL, **_PROGRAM)


def hermes_1phase() -> HardwareParams:
    """HERMES in 1-phase mode: 63.1 TOPS at 9.76 TOPS/W peak MVM (Table I)."""
    return _hermes(1)


def hermes_4phase() -> HardwareParams:
    """HERMES in 4-phase mode (all its accuracy results): 16.1 TOPS at 2.48 TOPS/W peak MVM (Table I)."""
    return _hermes(4)


def ambrogio2023() -> HardwareParams:
    """IBM 14 nm analog-AI speech chip (Ambrogio et al., Nature 620, 768 (2023)), chip 4: 12.4 TOPS/W sustained."""
    ops = 2 * 512 * 512
    e_tile = ops / 12.4e12  # sustained: analog tiles + landing pads + transport (facts §2)
    array = ops / 20.0e12  # analog tile peak
    conv = (e_tile - array) / 2 / 512  # [A] half of the rest to the input pads (DAC), half to the output pads (ADC)
    src = {
        "tile_rows": "[P] 512 × 512 weights per tile at 4 PCM per weight (512 × 2,048 PCM; facts §2)",
        "tile_cols": "[P] as tile_rows", "n_tiles": "[P] 34 tiles (facts §2)",
        "devices_per_cell": "[P] 4 PCM per weight (facts §2)",
        "input_encoding": "[P] duration-based inputs, UINT8, 1 ns granularity (facts §2)", "dac_bits": "[P] UINT8",
        "adc_bits": "[P] output landing pads: ramp + counter, UINT8 (facts §2)",
        "adc_kind": "[P] ramp + comparator → duration → counter (a time-based converter)",
        "cols_per_adc": "[P] one capacitor and comparator per column (facts §2)", "phases": "[P] one read",
        "array_energy_j": "[D] 2 × 512 × 512 ops / 20.0 TOPS/W analog tile peak [P] = 26.2 nJ per tile MVM",
        "dac_energy_j": "[D] (2·512² ops / 12.4 TOPS/W sustained [P] − crossbar) / 2 / 512; [A] the rest of the "
                        "sustained energy splits equally between input (ILP) and output (OLP) conversion",
        "adc_energy_j": "[D] the other half of (2·512² ops / 12.4 TOPS/W [P] − crossbar) / 512; [A] equal split "
                        "between input and output landing pads (the per-rail breakdown is [U])",
        "post_energy_j": "[D] Horowitz 2014: 8-bit multiply + 32-bit add (one affine scale per output); [A] off-chip "
                         "digital (the chip has none, facts §2)",
        "post_time_s": "[A] not counted separately: inside step_overhead_s",
        "step_overhead_s": "[P] the paper's system simulation assumes 300 ns of digital work per layer (facts §2)",
        "input_time_unit_s": "[P] 1 ns duration granularity (facts §2)",
        "adc_time_s": "[A] 128-ns ramp at 8 bits (the MAC integration time is [U], facts §2), doubling per bit",
        "mvm_overhead_s": "[A] one MVM per 300-ns time step [P]: 300 ns − 128 ns input",
        **_DIGITAL_SRC, **_PROGRAM_SRC,
    }
    src["write_heads_per_tile"] = "[A] HERMES value (" + _PROGRAM_SRC["write_heads_per_tile"] + ")"
    src = _mark("ambrogio2023", src)
    return HardwareParams(
        name="ambrogio2023", description="IBM 14 nm analog-AI speech chip, 34 tiles (Ambrogio et al., Nature 620, "
        "768 (2023)), chip 4: 12.4 TOPS/W sustained",
        tile_rows=512, tile_cols=512, n_tiles=34, devices_per_cell=4, input_encoding="pwm", dac_bits=8, adc_bits=8,
        adc_kind="time", cols_per_adc=1, phases=1, array_energy_j=array, dac_energy_j=conv, adc_energy_j=conv,
        post_energy_j=_MUL8 + _ADD32, input_time_unit_s=1e-9, adc_time_s=128e-9, mvm_overhead_s=172e-9,
        post_time_s=None, step_overhead_s=300e-9, sources=src, **_DIGITAL, **_PROGRAM)


def isaac2016() -> HardwareParams:
    """ISAAC-style chip from the ISAAC component table (Shafiee et al., ISCA 2016, Table I, 32 nm)."""
    cycle = 100e-9
    post = (0.01e-3 + 0.2e-3 + 1.24e-3 + 0.23e-3) * cycle / 1024  # S&H + shift-and-add + IR + OR per conversion
    src = {
        "tile_rows": "[P] 128 × 128 crossbars (facts §3.1)", "tile_cols": "[P] as tile_rows",
        "n_tiles": "[D] 168 tiles × 12 IMAs × 8 crossbars = 16,128 crossbars (facts §3.1)",
        "devices_per_cell": "[P] one 2-bit memristor cell (ISAAC slices 16-bit weights over 8 cells; [A] not "
                            "modelled: one cell per weight)",
        "input_encoding": "[P] 1-bit inputs applied bit-serially (facts §3.1)", "dac_bits": "[P] 1-bit DACs",
        "adc_bits": "[P] 8-bit ADC", "adc_kind": "[A] SAR-like (MNSIM names SAR designs for ISAAC's ADC, facts §3.4)",
        "cols_per_adc": "[P] 8 ADCs per IMA of 8 crossbars: 128 columns per ADC (facts §3.1)", "phases": "[P] one",
        "array_energy_j": "[D] 0.3 mW per 128 × 128 crossbar × 100 ns = 30 pJ per read cycle (facts §3.1)",
        "dac_energy_j": "[D] 4 mW / 1,024 DACs × 100 ns = 0.39 pJ per row per cycle (facts §3.1)",
        "adc_energy_j": "[D] 2 mW / 1.28 GS/s = 1.56 pJ per conversion (facts §3.1)",
        "post_energy_j": "[D] (S&H 0.01 + shift-and-add 0.2 + input reg. 1.24 + output reg. 0.23 mW) × 100 ns / "
                         "1,024 conversions per IMA cycle (facts §3.1)",
        "post_time_s": "[A] pipelined: hidden behind the next cycle", "step_overhead_s": "[A] pipelined",
        "input_time_unit_s": "[P] 100 ns crossbar read cycle (facts §3.1)",
        "adc_time_s": "[D] 1 / 1.28 GS/s = 0.78 ns (facts §3.1)", "mvm_overhead_s": "[A] none",
        **_DIGITAL_SRC, **_PROGRAM_SRC,
    }
    src["data_energy_per_byte_j"] = "[C] PUMA simulator eDRAM 64 KB: 0.0172 nJ per 256-bit access = 0.54 pJ/byte " \
                                    "(facts §3.3)"
    src["write_heads_per_tile"] = "[A] HERMES value (" + _PROGRAM_SRC["write_heads_per_tile"] + ")"
    src["program_time_per_device_s"] = "[A] HERMES value (" + _PROGRAM_SRC["program_time_per_device_s"] + ")"
    src = _mark("isaac2016", src)
    return HardwareParams(
        name="isaac2016", description="ISAAC-style: ISAAC-CE component table (Shafiee et al., ISCA 2016), 32 nm, "
        "128 × 128 crossbars, bit-serial inputs, 8-bit ADCs",
        tile_rows=128, tile_cols=128, n_tiles=168 * 12 * 8, devices_per_cell=1, input_encoding="bit_serial",
        dac_bits=1, adc_bits=8, adc_kind="sar", cols_per_adc=128, phases=1, array_energy_j=0.3e-3 * cycle,
        dac_energy_j=4e-3 / 1024 * cycle, adc_energy_j=2e-3 / 1.28e9, post_energy_j=post, input_time_unit_s=cycle,
        adc_time_s=1 / 1.28e9, mvm_overhead_s=None, post_time_s=None, step_overhead_s=None, sources=src,
        **{**_DIGITAL, "data_energy_per_byte_j": 0.0172e-9 / 32}, **_PROGRAM)


HARDWARE = {"hermes_4phase": hermes_4phase, "hermes_1phase": hermes_1phase, "ambrogio2023": ambrogio2023,
            "isaac2016": isaac2016}
"""Hardware preset name → function returning its :class:`HardwareParams`."""


def a100_int8() -> DigitalBaseline:
    """NVIDIA A100 SXM4 INT8 tensor cores at peak throughput and TDP: an upper bound on its efficiency."""
    return DigitalBaseline(
        name="a100_int8", description="NVIDIA A100 SXM4, dense INT8 tensor cores at peak (624 TOPS, 400 W TDP); an "
        "upper bound on efficiency and a lower bound on latency: batch-1 inference runs far below peak",
        precision="INT8", processor="GPU (NVIDIA A100 SXM4, 7 nm)", mac_energy_j=2 / 1.56e12,
        macs_per_s=624e12 / 2, elementwise_energy_j=1 / 1.56e12, byte_energy_j=None,
        sources={"mac_energy_j": "[D] 624 TOPS / 400 W = 1.56 TOPS/W, 2 ops per MAC (facts §4.2, [S])",
                 "macs_per_s": "[D] 624 dense INT8 TOPS / 2 (facts §4.2, [S])",
                 "elementwise_energy_j": "[D] one op at 1.56 TOPS/W",
                 "byte_energy_j": "[A] included in the TDP figure (HBM and caches)"})


def horowitz45_int8() -> DigitalBaseline:
    """A 45 nm INT8 digital accelerator from Horowitz's operation energies; weights in a 1 MB SRAM."""
    return DigitalBaseline(
        name="horowitz45_int8", description="INT8 digital accelerator at 45 nm (Horowitz ISSCC 2014 operation "
        "energies): 8-bit multiply + 32-bit accumulate per MAC, every weight and activation read once from SRAM",
        precision="INT8 (32-bit accumulation)", processor="digital accelerator, 45 nm, 1,024 MACs at 1 GHz",
        mac_energy_j=_MUL8 + _ADD32, macs_per_s=1024 * 1e9, elementwise_energy_j=_ADD32,
        byte_energy_j=100e-12 / 8,
        sources={"mac_energy_j": "[D] Horowitz 2014: 8-bit multiply 0.2 pJ + 32-bit add 0.1 pJ (facts §4.1, [S])",
                 "macs_per_s": "[A] 1,024 MAC units at 1 GHz",
                 "elementwise_energy_j": "[S] Horowitz 2014: 32-bit add 0.1 pJ",
                 "byte_energy_j": "[D] Horowitz 2014: 64-bit read of a 1 MB SRAM 100 pJ → 12.5 pJ/byte"})


BASELINES = {"a100_int8": a100_int8, "horowitz45_int8": horowitz45_int8}
"""Digital baseline name → function returning its :class:`DigitalBaseline`."""


def get_hardware(name: str | HardwareParams) -> HardwareParams:
    """The hardware preset called ``name`` (see :data:`HARDWARE`); a :class:`HardwareParams` passes through."""
    if isinstance(name, HardwareParams):
        return name
    try:
        return HARDWARE[name]()
    except (KeyError, TypeError):
        raise ConfigError(f"unknown hardware preset {name!r}; known presets: {', '.join(HARDWARE)}. Pick one, or "
                          "build your own with aimc.cost.get_hardware('hermes_4phase').replace(...).") from None


def get_baseline(name: str | DigitalBaseline) -> DigitalBaseline:
    """The digital baseline called ``name`` (see :data:`BASELINES`); a :class:`DigitalBaseline` passes through."""
    if isinstance(name, DigitalBaseline):
        return name
    try:
        return BASELINES[name]()
    except (KeyError, TypeError):
        raise ConfigError(f"unknown digital baseline {name!r}; known baselines: {', '.join(BASELINES)}.") from None
