"""Tile size × ADC bits: energy, latency and (from a real evaluation) accuracy, in one table and one figure.

    df = aimc.cost.sweep.sweep(model, tiles=(128, 256, 512, 1024), adc_bits=(4, 6, 8, 10),
                               accuracy=CifarAccuracy(aimc.models.load_pretrained_resnet32()))
    aimc.cost.plots.sweep_figure(df).savefig("sweep.png")

:class:`CifarAccuracy` is the cheap but real evaluation used for the ResNet-32 results page: a fixed class-balanced
CIFAR-10 test subset, ``aimc.evaluate`` at t = 1 h with GDC over a few seeds, PCM devices, a static-range 8-bit DAC
and an ADC of the swept resolution whose full-scale range (in g/g_max × normalised-input units, the same for every
tile size, as a fixed maximum bit-line current would be) is chosen on training images, never on the test set.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from aimc.cost.layout import CostWarning, mapping
from aimc.cost.model import estimate
from aimc.cost.presets import get_hardware
from aimc.errors import ConfigError

__all__ = ["sweep", "CifarAccuracy", "SWEEP_COLUMNS"]

SWEEP_COLUMNS = ("tile", "adc_bits", "tiles", "n_chips", "utilisation", "energy_j", "mvm_energy_j", "adc_energy_j",
                 "post_energy_j", "latency_s", "latency_pipelined_s", "pipeline_interval_s", "baseline_energy_j",
                 "accuracy_mean", "accuracy_std", "accuracy_n", "accuracy_digital", "warning")


def sweep(model: nn.Module, *, tiles: Sequence[int] = (128, 256, 512, 1024), adc_bits: Sequence[int] = (4, 6, 8, 10),
          hardware: Any = "hermes_4phase", baseline: Any = "a100_int8", input_bits: int = 8,
          input_shape: Sequence[int] | None = None, devices_per_weight: int = 2, fit_chip: bool = True,
          on_overflow: str = "chips", accuracy: Callable[[int, int], dict] | None = None) -> Any:
    """Cost (and optionally accuracy) of ``model`` for every square tile size × ADC resolution.

    Args:
        model: a torch model (zoo models know their input shape).
        tiles: square tile sizes (rows = columns).
        adc_bits: ADC resolutions.
        hardware, baseline, input_bits, input_shape, devices_per_weight, on_overflow: as in :func:`estimate`.
        fit_chip: give the chip as many tiles as the network needs (``n_tiles`` enlarged, an assumption), so that
            the sweep shows the tile size's own effect and not the chip-to-chip traffic of a too-small chip.
        accuracy: ``accuracy(tile, bits) -> {"mean", "std", "n", "digital"}`` (e.g. a :class:`CifarAccuracy`);
            ``None`` leaves the accuracy columns empty.

    Returns:
        A pandas DataFrame with :data:`SWEEP_COLUMNS`, one row per (tile, bits). Tiles larger than any published
        chip raise a :class:`~aimc.cost.CostWarning` once and are flagged in ``warning``.
    """
    import pandas as pd

    hw = get_hardware(hardware)
    if not tiles or not adc_bits:
        raise ConfigError("sweep() needs at least one tile size and one ADC resolution.")
    rows = []
    for t in tiles:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CostWarning)
            mp = mapping(model, input_shape=input_shape, tile=t, devices_per_weight=devices_per_weight)
        flag = "; ".join(str(w.message) for w in caught if issubclass(w.category, CostWarning))
        if flag:
            warnings.warn(flag, CostWarning, stacklevel=2)
        hw_t = hw
        need = sum(lm.tiles for lm in mp.layers) * t * t
        if fit_chip and need > hw.n_tiles * hw.tile_rows * hw.tile_cols:
            hw_t = hw.replace(n_tiles=math.ceil(need / (hw.tile_rows * hw.tile_cols)))
        for b in adc_bits:
            r = estimate(mp, hw_t, baseline=baseline, input_bits=input_bits, adc_bits=b, on_overflow=on_overflow)
            tot, br = r.totals, r.totals["energy_breakdown_j"]
            acc = accuracy(t, b) if accuracy is not None else {}
            rows.append({"tile": t, "adc_bits": b, "tiles": tot["tiles"], "n_chips": tot["n_chips"],
                         "utilisation": tot["utilisation"], "energy_j": tot["energy_j"],
                         "mvm_energy_j": tot["mvm_energy_j"], "adc_energy_j": br["adc"],
                         "post_energy_j": br["post"] + br["psum"], "latency_s": tot["latency_s"],
                         "latency_pipelined_s": tot["latency_pipelined_s"],
                         "pipeline_interval_s": tot["pipeline_interval_s"],
                         "baseline_energy_j": tot["baseline_energy_j"],
                         "accuracy_mean": acc.get("mean", math.nan), "accuracy_std": acc.get("std", math.nan),
                         "accuracy_n": acc.get("n", 0), "accuracy_digital": acc.get("digital", math.nan),
                         "warning": "larger than any published PCM tile" if flag else ""})
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


class CifarAccuracy:
    """Accuracy of a CIFAR-10 model for a (tile, ADC bits) cell: PCM devices (``aimc.presets.joshi2020`` device
    model, one weight scale per tile), static-range 8-bit DAC, ADC of ``bits`` bits with full-scale ``out_bound`` in
    normalised units, no output noise; ``aimc.evaluate`` at ``t_seconds`` with GDC over ``seeds``.

    Args:
        model: the trained torch model (e.g. ``aimc.models.load_pretrained_resnet32()``).
        n_test: size of the fixed class-balanced test subset (``aimc.data.cifar10('test', limit=n_test)``).
        n_calib: training images for the DAC input ranges and for choosing ``out_bound``.
        out_bounds: candidate ADC ranges; the best on ``n_calib`` training images (256-tile, 8-bit ADC, seed 0) is
            used for every cell. Give one value to fix it.
    """

    def __init__(self, model: nn.Module, *, n_test: int = 500, n_calib: int = 500, seeds: Sequence[int] = (0, 1),
                 t_seconds: float = 3600.0, out_bounds: Sequence[float] = (4.0, 8.0, 16.0), dac_bits: int = 8,
                 batch_size: int = 250) -> None:
        from aimc import presets
        from aimc.data import cifar10
        from aimc.evaluation import accuracy
        from aimc.inference import calibrate_input_ranges
        from aimc.nn.convert import analog_layers, convert
        from torch.utils.data import DataLoader

        self.model, self.seeds, self.t, self.dac_bits = model.eval(), list(seeds), float(t_seconds), dac_bits
        self.test = DataLoader(cifar10("test", limit=n_test), batch_size=batch_size)
        self.calib = DataLoader(cifar10("train", limit=n_calib, augment=False), batch_size=100)
        self.digital = accuracy(self.model, self.test)
        ranged = convert(self.model, presets.joshi2020())
        calibrate_input_ranges(ranged, self.calib, n_batches=math.ceil(n_calib / 100))
        self.ranges = {n: float(layer.analog.input_range) for n, layer in analog_layers(ranged)}
        self.seconds = 0.0
        if len(out_bounds) == 1:
            self.out_bound, self.bound_scores = float(out_bounds[0]), {}
        else:
            self.bound_scores = {float(ob): self._score(256, 8, float(ob), self.calib, [0]) for ob in out_bounds}
            self.out_bound = max(self.bound_scores, key=self.bound_scores.get)

    def config(self, tile: int, bits: int, out_bound: float | None = None):  # noqa: ANN201
        """The analog config of one cell."""
        from aimc import presets
        from aimc.config import PeripheryConfig

        base = presets.joshi2020()
        return dataclasses.replace(
            base, mapping=dataclasses.replace(base.mapping, tile_rows=tile, tile_cols=tile, scale="tile"),
            periphery=PeripheryConfig(dac_bits=self.dac_bits, input_range="static", adc_bits=bits,
                                      out_bound=out_bound or self.out_bound, out_noise=0.0,
                                      output_units="normalized"),
            name=f"pcm_tile{tile}_adc{bits}")

    def _score(self, tile: int, bits: int, out_bound: float, data: Any, seeds: list[int]) -> float:
        import time

        from aimc.evaluation import evaluate
        from aimc.nn.convert import analog_layers, convert

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CostWarning)
            net = convert(self.model, self.config(tile, bits, out_bound))
        for n, layer in analog_layers(net):
            layer.analog.input_range.fill_(self.ranges[n])
        res = evaluate(net, data, times=[self.t], seeds=seeds, compensation="gdc", progress=False)
        self.seconds += time.perf_counter() - t0
        self._last = res.table["accuracy"].to_numpy(float)
        return float(self._last.mean())

    def __call__(self, tile: int, bits: int) -> dict:
        mean = self._score(tile, bits, self.out_bound, self.test, self.seeds)
        acc = self._last
        return {"mean": mean, "std": float(acc.std(ddof=1)) if len(acc) > 1 else math.nan, "n": len(acc),
                "digital": self.digital}
