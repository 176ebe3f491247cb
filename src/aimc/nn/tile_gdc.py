"""The GDC read-outs of an analog matrix (a mixin of :class:`aimc.nn.tile.AnalogMatrix`).

The baseline is read at programming and the factor at ``at_time``, through the periphery, with aimc's correlation
read-out or aihwkit's identity read-out; the estimates, bounds and fallbacks are :mod:`aimc.nn.gdc`'s. The methods
use the matrix's ``config``, ``layout``, GDC buffers (``gdc_base``, ``gdc_noise``, ``gdc_ref``, ``gdc_amp``),
``_forward_gen`` and ``device_state``.
"""

from __future__ import annotations

import torch

from aimc.nn import gdc as _gdc
from aimc.nn.seeds import derive_seed

__all__ = ["GdcReadout"]

_READOUT_SEED = 0x5EED
_MODEL_SEED = 0x6DC0


class GdcReadout:
    """Global drift compensation read-outs (mixed into ``AnalogMatrix``)."""

    def _reads(self, w_a: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        """One read-out read of every tile: per row tile, ``(n, out)`` outputs through the periphery."""
        comp = self.config.compensation
        if comp.readout == "correlation":
            def x_of(k: int, rows: int) -> torch.Tensor:  # ±a, a small enough for the ADC range
                x = _gdc.correlation_inputs(comp.n_readout, rows, derive_seed(_READOUT_SEED, k),
                                            dtype=w_a.dtype, device=w_a.device)
                a = float(self.gdc_amp[k]) if self.gdc_amp.numel() else 1.0
                return x if a == 1.0 else x.mul_(a)
        else:
            def x_of(k: int, rows: int) -> torch.Tensor:
                return torch.eye(rows, dtype=w_a.dtype, device=w_a.device)
        return _gdc.tile_reads(w_a, self.layout, self.config.periphery, gen, x_of)

    def _identity_value(self, ys: list[torch.Tensor]) -> torch.Tensor:
        """aihwkit's read-out: mean |y| per tile (or over the layer), floored as aihwkit does."""
        val, cnt = _gdc.group_mean([y.abs() for y in ys], self.layout, self.config.compensation.granularity)
        if self.config.compensation.granularity == "layer":
            val = ((val * cnt).sum() / cnt.sum()).expand_as(val).clone()
        return torch.clamp(val, min=1e-4 if self.config.periphery.output_units == "weight" else 1e-8)

    def _baseline(self, w_a: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """GDC baseline of the programmed weights: (value, read-noise variance, reference outputs)."""
        y1 = self._reads(w_a, gen)
        if self.config.compensation.readout != "correlation":
            val = self._identity_value(y1)
            return val, torch.empty(0, device=w_a.device), torch.empty(0, device=w_a.device)
        y2 = self._reads(w_a, gen)  # a second, independent read: its noise is uncorrelated with the first
        gran = self.config.compensation.granularity
        base, _ = _gdc.group_mean([a * b for a, b in zip(y1, y2)], self.layout, gran)
        noise, _ = _gdc.group_mean([(a - b).square_().mul_(0.5) for a, b in zip(y1, y2)], self.layout, gran)
        return base, noise, torch.stack(y1)

    def _gdc_factor(self, w_a: torch.Tensor, t: float, weight: torch.Tensor | None,
                    bounds: tuple[float, float]) -> torch.Tensor:
        """``(n_col_tiles, n_row_tiles)`` (granularity ``"column"``: ``(out, n_row_tiles)``) GDC factors at ``t`` seconds (read with the forward generator); ``bounds``
        the physical bounds of the devices' drift (``aimc.nn.gdc.physical_bounds``)."""
        comp = self.config.compensation
        ys = self._reads(w_a, self._forward_gen)
        if comp.readout != "correlation":  # aihwkit's read-out, kept as aihwkit computes it
            current = self._identity_value(ys)
            return self.gdc_base / torch.maximum(current, 1e-3 * self.gdc_base.abs() + 1e-30)
        current, n = _gdc.group_mean([r * y for r, y in zip(self.gdc_ref, ys)], self.layout, comp.granularity)
        noise = self.gdc_noise if self.gdc_noise.numel() else torch.full_like(self.gdc_base, float("nan"))
        raw, rel, pool = _gdc.estimate(self.gdc_base, noise, current, n, pooled=comp.granularity == "layer")
        ok = rel <= _gdc.MAX_REL_ERROR
        source = torch.zeros_like(raw, dtype=torch.int8)  # 0 measured, 1 pooled over the matrix, 2 device model
        alpha = raw
        if not bool(ok.all()):
            if comp.granularity != "layer" and float(pool[1]) <= _gdc.MAX_REL_ERROR:
                alpha = torch.where(ok, raw, pool[0])
                source = torch.where(ok, source, torch.ones_like(source))
            else:
                g_target = self.device_state(weight).g_target
                model = _gdc.model_factor(self, t, derive_seed(_MODEL_SEED, t), pooled=comp.granularity == "layer",
                                          g_target=g_target, columns=self._gdc_columns)
                alpha = torch.where(ok, raw, model)
                source = torch.where(ok, source, torch.full_like(source, 2))
        lo, hi = bounds
        bounded = ~((alpha >= lo) & (alpha <= hi))  # NaN counts as out of bounds
        alpha = torch.where(torch.isnan(alpha), torch.full_like(alpha, lo), alpha).clamp(lo, hi)
        self.gdc_info = {"raw": raw, "rel_err": rel, "source": source, "bounded": bounded, "bounds": (lo, hi)}
        return alpha
