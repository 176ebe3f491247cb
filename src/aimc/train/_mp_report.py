"""Counters and the per-epoch report of ``aimc.train.MixedPrecision`` (pulses, updated weights, refreshes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["MixedPrecisionReport", "NonFiniteGradientWarning", "Counters"]


class NonFiniteGradientWarning(UserWarning):
    """A step was skipped because a gradient held NaN/Inf (χ, the devices and the digital parameters untouched)."""


@dataclass
class MixedPrecisionReport:
    """Counters of one period (an epoch: between two :meth:`MixedPrecision.epoch_report` calls).

    Attributes:
        steps: optimizer steps taken (skipped ones not included).
        skipped_steps: steps skipped for a non-finite gradient.
        weights: analog weights (= device pairs = half the devices).
        pulses: SET pulses of weight updates (refresh pulses not included).
        refreshes: pairs refreshed (2 RESETs each); refresh_pulses: SET pulses spent re-writing them.
        frac_updated_per_step: mean over steps of the fraction of weights that received ≥ 1 pulse.
        frac_updated: fraction of weights that received ≥ 1 pulse in the period.
        layers: per analog matrix: {name: {"weights", "pulses", "refreshes", "frac_updated"}}.
    """

    steps: int = 0
    skipped_steps: int = 0
    weights: int = 0
    pulses: int = 0
    refreshes: int = 0
    refresh_pulses: int = 0
    frac_updated_per_step: float = 0.0
    frac_updated: float = 0.0
    layers: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def pulses_per_weight(self) -> float:
        """SET pulses of weight updates per weight (per device pair) in the period."""
        return self.pulses / self.weights if self.weights else 0.0

    def __str__(self) -> str:
        return (f"{self.steps} steps ({self.skipped_steps} skipped): {self.pulses:,} pulses "
                f"({self.pulses_per_weight:.3f}/weight), {100 * self.frac_updated_per_step:.3f} % of weights "
                f"pulsed per step, {100 * self.frac_updated:.2f} % in the period, {self.refreshes:,} refreshes")


class Counters:
    """Running counters over the flat weight index of all analog matrices (``offsets``: start of each matrix)."""

    def __init__(self, names: list[str], offsets: torch.Tensor, total: int, device: torch.device | str = "cpu"):
        self.names, self.offsets, self.total = names, offsets, total
        self.steps = self.skipped = self.refresh_pulses = self.pulsed = 0
        self.pulses = torch.zeros(total, device=device)  # per weight, in the period (float32 on the weights' device)
        self.refreshes = torch.zeros(total, device=device)

    def add_pulses(self, idx: torch.Tensor, cnt: torch.Tensor) -> None:
        """``cnt`` pulses on the weights ``idx``."""
        self.pulsed += idx.numel()
        self.pulses.index_add_(0, idx, cnt.to(self.pulses.dtype))

    def add_refreshes(self, ridx: torch.Tensor, pulses: int) -> None:
        self.refreshes.index_add_(0, ridx, torch.ones_like(ridx, dtype=self.refreshes.dtype))
        self.refresh_pulses += pulses

    def report(self) -> MixedPrecisionReport:
        pulses, refreshes = self.pulses.cpu(), self.refreshes.cpu()
        ends = torch.cat([self.offsets[1:], torch.tensor([self.total])])
        layers = {}
        for i, n in enumerate(self.names):
            s, e = int(self.offsets[i]), int(ends[i])
            layers[n] = {"weights": e - s, "pulses": int(pulses[s:e].sum()),
                         "refreshes": int(refreshes[s:e].sum()),
                         "frac_updated": float((pulses[s:e] > 0).float().mean())}
        return MixedPrecisionReport(
            steps=self.steps, skipped_steps=self.skipped, weights=self.total, pulses=int(pulses.sum()),
            refreshes=int(refreshes.sum()), refresh_pulses=self.refresh_pulses,
            frac_updated_per_step=self.pulsed / max(self.steps * self.total, 1),
            frac_updated=float((pulses > 0).float().mean()), layers=layers)
