"""The parts of an analog configuration: mapping, periphery, compensation, training (frozen dataclasses, validated
on construction), and the validation helpers they share. :class:`aimc.config.AnalogConfig` holds one of each.

Units: conductances in µS, times in seconds. Every field is documented with its unit and source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aimc._checks import is_number
from aimc.errors import ConfigError

__all__ = ["MappingConfig", "PeripheryConfig", "CompensationConfig", "TrainingConfig"]


def _choice(problems: list[str], owner: str, name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        problems.append(f"{owner}.{name}={value!r} is not one of {list(allowed)}")


def _number(problems: list[str], owner: str, name: str, value: Any, *, lo: float, strict: bool, unit: str = "",
            optional: bool = False) -> None:
    if value is None and optional:
        return
    ok = is_number(value)
    ok = ok and (value > lo if strict else value >= lo)
    if not ok:
        rel = ">" if strict else "≥"
        problems.append(f"{owner}.{name}={value!r} must be a finite number {rel} {lo}{unit}"
                        + (" (or null to switch it off)" if optional else ""))


def _integer(problems: list[str], owner: str, name: str, value: Any, *, lo: int, hi: int | None = None,
             optional: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    if not ok:
        rng = f"≥ {lo}" if hi is None else f"in [{lo}, {hi}]"
        problems.append(f"{owner}.{name}={value!r} must be an integer {rng}" + (" (or null = off)" if optional else ""))


def _raise(owner: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"invalid {owner}: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class MappingConfig:
    """How a weight matrix is laid out on crossbar tiles and mapped to conductances.

    Attributes:
        tile_rows: crossbar input lines per tile (rows of W^T). Default 512 (aihwkit ``max_input_size``).
        tile_cols: crossbar output lines per tile. Default 512 (aihwkit ``max_output_size``).
        scale: which max|W| is mapped to g_max: ``"tile"`` (each tile on its own, aihwkit), ``"column"``
            (each output column of each tile), ``"layer"`` (one scale per layer, Joshi et al. 2020).
        clip_std: clip weight outliers when mapping: the scale of each group becomes min(max|W|, clip_std·std(W))
            (std over the same group as ``scale``), so weights beyond it saturate at g_max. ``None`` (default):
            no clipping, max|W| ↦ g_max.
    """

    tile_rows: int = 512
    tile_cols: int = 512
    scale: Literal["tile", "column", "layer"] = "tile"
    clip_std: float | None = None

    def __post_init__(self) -> None:
        p: list[str] = []
        _integer(p, "mapping", "tile_rows", self.tile_rows, lo=1)
        _integer(p, "mapping", "tile_cols", self.tile_cols, lo=1)
        _choice(p, "mapping", "scale", self.scale, ("tile", "column", "layer"))
        _number(p, "mapping", "clip_std", self.clip_std, lo=0, strict=True, unit=" (std of the weights)", optional=True)
        _raise("mapping config", p)


@dataclass(frozen=True)
class PeripheryConfig:
    """DAC, ADC and output noise around each tile's MVM. All ``None``/0 = ideal periphery.

    Order in one tile (as aihwkit ``IOParameters``): scale the input into [−1, 1] (static range or per-vector
    abs-max) → DAC quantisation → MVM → + output noise → ADC quantisation and clipping at ``out_bound`` → undo the
    input scale → digital per-column scale and GDC factor → sum the partial outputs of the tiles.

    Attributes:
        dac_bits: DAC resolution; step = 2 / (2^bits − 2) of the input range (7 bits ↦ 1/63). ``None`` = no DAC.
        input_range: ``"static"`` — one range per layer (``input_bound``), the DAC is then elementwise and a
            convolution stays a convolution; ``"dynamic"`` — per input vector abs-max (aihwkit noise management
            ABS_MAX), exact but convolutions are unfolded.
        input_bound: static input range in the layer's input units; ``None`` = calibrate from data
            (``aimc.calibrate_input_ranges`` or during hardware-aware training).
        adc_bits: ADC resolution; step = 2·out_bound / (2^bits − 2) (9 bits, bound 12 ↦ 0.047). ``None`` = none.
        out_bound: output range of the ADC (outputs clip at ±out_bound), in MVM output units. ``None`` = no clip.
        out_noise: std of additive Gaussian output noise per MVM output, in MVM output units (aihwkit 0.06).
        bound_management: ``"iterative"``: when an output clips, halve the input scale and repeat (aihwkit
            ITERATIVE); ``"none"``.
        max_bm_factor: largest input down-scaling of iterative bound management (aihwkit 1000).
        max_bm_res: stop bound management when factor·DAC step exceeds this (aihwkit 0.25).
        output_units: ``"weight"`` — the MVM output is in weight units × normalised input (aihwkit with
            ``weight_scaling_omega = 0``); ``"normalized"`` — in units of g/g_max × normalised input, so noise and
            ADC range are relative to full-scale conductance.
    """

    dac_bits: int | None = None
    input_range: Literal["static", "dynamic"] = "static"
    input_bound: float | None = None
    adc_bits: int | None = None
    out_bound: float | None = None
    out_noise: float = 0.0
    bound_management: Literal["none", "iterative"] = "none"
    max_bm_factor: int = 1000
    max_bm_res: float = 0.25
    output_units: Literal["weight", "normalized"] = "weight"

    def __post_init__(self) -> None:
        p: list[str] = []
        _integer(p, "periphery", "dac_bits", self.dac_bits, lo=2, hi=24, optional=True)
        _integer(p, "periphery", "adc_bits", self.adc_bits, lo=2, hi=24, optional=True)
        _choice(p, "periphery", "input_range", self.input_range, ("static", "dynamic"))
        _number(p, "periphery", "input_bound", self.input_bound, lo=0, strict=True, optional=True)
        _number(p, "periphery", "out_bound", self.out_bound, lo=0, strict=True, optional=True)
        _number(p, "periphery", "out_noise", self.out_noise, lo=0, strict=False)
        _choice(p, "periphery", "bound_management", self.bound_management, ("none", "iterative"))
        _integer(p, "periphery", "max_bm_factor", self.max_bm_factor, lo=1)
        _number(p, "periphery", "max_bm_res", self.max_bm_res, lo=0, strict=True)
        _choice(p, "periphery", "output_units", self.output_units, ("weight", "normalized"))
        if self.adc_bits is not None and self.out_bound is None:
            p.append("periphery.adc_bits is set but out_bound is null: an ADC needs an output range (e.g. 12)")
        if self.bound_management == "iterative" and self.out_bound is None:
            p.append("periphery.bound_management='iterative' needs out_bound (it reacts to clipped outputs)")
        _raise("periphery config", p)

    @property
    def is_ideal(self) -> bool:
        """True when every part is off, so the layer computes one exact MVM."""
        return (self.dac_bits is None and self.adc_bits is None and self.out_bound is None
                and self.out_noise == 0 and self.input_range == "static")

    @property
    def independent_outputs(self) -> bool:
        """True when no output noise and no iterative bound management: after the product each output is converted
        (ADC, scales) on its own and nothing is drawn, so the column tiles of a row band can be read as one
        product (``aimc.nn.bands``, the GDC read-outs of ``aimc.nn.gdc``)."""
        return not self.out_noise > 0 and not (self.bound_management == "iterative" and self.out_bound is not None)

    @property
    def needs_matrix_path(self) -> bool:
        """True when the output side (noise, ADC, bounds) or dynamic ranges need per-tile partial outputs."""
        return not (self.adc_bits is None and self.out_bound is None and self.out_noise == 0
                    and self.input_range == "static")


@dataclass(frozen=True)
class CompensationConfig:
    """Global drift compensation (GDC, reference B.7).

    Attributes:
        gdc: apply GDC after ``at_time`` (``evaluate`` sets it per grid cell).
        readout: ``"identity_abs_mean"`` — one-hot inputs through the non-ideal forward, mean |output|
            (aihwkit ≥ 0.7; biased upwards by output noise, so it under-compensates under noise);
            ``"correlation"`` — fixed random ±1 inputs, gain = ⟨y₀,y₀′⟩ / ⟨y₀,y_t⟩ from independent reads, which
            stays unbiased under zero-mean output noise (aimc's own presets).
        granularity: ``"tile"`` (one factor per tile, aihwkit), ``"column"`` (one factor per output column of each
            row tile: drift differs between columns whose weights sit at different conductances, e.g. the HERMES
            device's ν falls towards g_max; each column's read-out averages ``n_readout`` products, so it is
            noisier than a tile's — a column too noisy for its factor falls back to the matrix's pooled one) or
            ``"layer"`` (Joshi et al. 2020).
        n_readout: number of random input vectors of the ``"correlation"`` read-out.
    """

    gdc: bool = True
    readout: Literal["identity_abs_mean", "correlation"] = "correlation"
    granularity: Literal["tile", "column", "layer"] = "tile"
    n_readout: int = 64

    def __post_init__(self) -> None:
        p: list[str] = []
        if not isinstance(self.gdc, bool):
            p.append(f"compensation.gdc={self.gdc!r} must be true or false")
        _choice(p, "compensation", "readout", self.readout, ("identity_abs_mean", "correlation"))
        _choice(p, "compensation", "granularity", self.granularity, ("tile", "column", "layer"))
        _integer(p, "compensation", "n_readout", self.n_readout, lo=2)
        _raise("compensation config", p)


@dataclass(frozen=True)
class TrainingConfig:
    """Hardware-aware training: weight noise, drop-connect, clipping, learned DAC input ranges.

    Defaults follow Joshi et al., Nat. Commun. 11, 2473 (2020) (reference A.2): additive noise with η = 3.8 % of
    max|W| and per-layer clipping at ±2.0·σ_W. The noise types mirror aihwkit's ``WeightModifierType`` and the
    clip types its ``WeightClipType`` (reference B.8). The formulas are implemented in ``aimc.nn.noise`` and
    ``aimc.train.hwa``. Below, W is one weight matrix, w one weight, N a fresh standard normal per weight and
    per training forward pass (i.e. per mini-batch), and max|W| the current largest |w| of the layer.

    Attributes:
        noise: weight noise of every training forward pass (the master weights stay clean; gradients go
            straight through, see ``aimc.nn.noise``):
            ``"none"``;
            ``"additive"`` — w + η·max|W|·N (aihwkit ADD_NORMAL, ``rel_to_actual_wmax``; Joshi et al. 2020);
            ``"additive_channel"`` — w_ij + η·max_j|w_ij|·N, one max per output channel i (row of the weight,
            whole kernel of a convolution channel; aihwkit-lightning ADD_NORMAL_PER_CHANNEL, the Analog
            Foundation Models recipe uses η = 0.03);
            ``"multiplicative"`` — w·(1 + η·N) (aihwkit MULT_NORMAL as in its torch tile);
            ``"pcm_programming"`` — w + σ(w)·N with σ(w) = max|W| · σ_prog(g_T)/g_max · (η / 0.038) and
            g_T = |w|/max|W|·g_max, σ_prog the programming-noise polynomial (reference B.2, µS) of the
            configured PCM or HERMES device (of the default PCM for other devices). With the
            default η = 0.038 this is the calibrated device's programming noise of the conductance the weight
            maps to (1.05 % of max|W| at w = 0, 4.3 % at |w| = 0.84·max|W|); η scales it linearly.
        eta: noise strength (dimensionless, ≥ 0); its meaning depends on ``noise`` (see above). Default 0.038
            = 0.94 µS / 25 µS, the PCM programming error of Joshi et al. 2020.
        drop_connect: probability in [0, 1) that a weight is set to 0 in a training forward pass (re-drawn every
            pass, after the noise; kept weights are not rescaled, as in aihwkit ``pdrop``). Default 0.0 = off.
        clip: what ``aimc.clip`` does to the master weights after each optimizer step, per weight matrix
            (an LSTM's matrices each on their own):
            ``"none"``;
            ``"gaussian"`` — clip to ±clip_alpha·std(W) (aihwkit LAYER_GAUSSIAN; Joshi et al. 2020);
            ``"fixed"`` — clip to ±clip_value (aihwkit FIXED_VALUE);
            ``"channel_gaussian"`` — clip each output channel (row of the ``(out, rows)`` matrix) to
            ±clip_alpha·std of that row's weights.
            std is the sample standard deviation (n − 1 in the denominator).
        clip_alpha: clipping in units of the weight std (``"gaussian"``, ``"channel_gaussian"``). Default 2.0
            (Joshi et al. 2020; aihwkit's default is 2.5).
        clip_value: the bound of ``clip = "fixed"``, in weight units (> 0); must be null for the other clip types.
        learn_input_range: with a static DAC (``periphery.dac_bits`` set, ``input_range = "static"``) the layer's
            input range r becomes a trainable parameter: training forward passes quantise the input as the DAC
            does, with a straight-through estimator for x and an LSQ-style gradient for r (see
            ``aimc.nn.noise.quantize_ste``); it starts from ``input_bound``, a calibrated range, or the running
            max |x| of the first training batches. ``aimc.clip`` (and every training forward) copies it into the
            inference range. No effect without a static DAC. Default False: the range follows the running max
            of |x| during training (when ``input_bound`` is null).
        periphery: run every training forward MVM through the layer's periphery, tile by tile, as at inference
            (``aimc.periphery.tiled_mvm``: input range → DAC → MVM on the noisy weights → + output noise → bound
            management → ADC), like aihwkit's ``InferenceRPUConfig`` training; the backward pass is the ideal MVM
            of the noisy weights (the quantisers, clipping and noise passed straight through, aihwkit's
            "backward and update are ideal"). No effect with an ideal periphery (``periphery.is_ideal``); costs
            a per-tile MVM per forward (see ``aimc.nn.hwa_periphery``). Default False: the training forward is
            ``F.linear``/the convolution on the noisy weights.
        distill_temperature: temperature T of distillation from the digital model (``aimc.train.distill``; used
            only when training with a teacher). Default 1.0 (Analog Foundation Models recipe).
        distill_beta: weight β of the distillation loss: (1 − β)·LM loss + β·T²·KL(teacher ‖ student), in [0, 1].
            Default 1.0 = pure distillation (Analog Foundation Models recipe).
    """

    noise: Literal["none", "additive", "additive_channel", "multiplicative", "pcm_programming"] = "additive"
    eta: float = 0.038
    clip: Literal["none", "gaussian", "fixed", "channel_gaussian"] = "gaussian"
    clip_alpha: float = 2.0
    drop_connect: float = 0.0
    clip_value: float | None = None
    learn_input_range: bool = False
    periphery: bool = False
    distill_temperature: float = 1.0
    distill_beta: float = 1.0

    def __post_init__(self) -> None:
        p: list[str] = []
        _choice(p, "training", "noise", self.noise,
                ("none", "additive", "additive_channel", "multiplicative", "pcm_programming"))
        _number(p, "training", "eta", self.eta, lo=0, strict=False)
        _choice(p, "training", "clip", self.clip, ("none", "gaussian", "fixed", "channel_gaussian"))
        _number(p, "training", "clip_alpha", self.clip_alpha, lo=0, strict=True)
        _number(p, "training", "drop_connect", self.drop_connect, lo=0, strict=False)
        if isinstance(self.drop_connect, (int, float)) and not isinstance(self.drop_connect, bool) \
                and self.drop_connect >= 1:
            p.append(f"training.drop_connect={self.drop_connect!r} must be < 1 (it is the probability that a weight "
                     "is dropped; 1 would drop every weight)")
        if self.clip == "fixed":
            if self.clip_value is None:
                p.append("training.clip='fixed' needs clip_value, the bound in weight units (e.g. 1.0)")
            else:
                _number(p, "training", "clip_value", self.clip_value, lo=0, strict=True)
        elif self.clip_value is not None:
            p.append(f"training.clip_value={self.clip_value!r} is only used by clip='fixed' (clip is "
                     f"{self.clip!r}); set clip_value to null or clip to 'fixed'")
        if not isinstance(self.learn_input_range, bool):
            p.append(f"training.learn_input_range={self.learn_input_range!r} must be true or false")
        if not isinstance(self.periphery, bool):
            p.append(f"training.periphery={self.periphery!r} must be true or false")
        _number(p, "training", "distill_temperature", self.distill_temperature, lo=0, strict=True)
        _number(p, "training", "distill_beta", self.distill_beta, lo=0, strict=False)
        if is_number(self.distill_beta) and self.distill_beta > 1:
            p.append(f"training.distill_beta={self.distill_beta!r} must be in [0, 1] (weight of the distillation loss)")
        _raise("training config", p)
