"""``ConversionReport``: which layers ``aimc.convert`` made analog, which stayed digital and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

__all__ = ["ConversionReport"]


@dataclass
class ConversionReport:
    """Which layers became analog and which stayed digital, and why.

    Attributes:
        analog: ``[(name, torch type, analog type, weights, tiles)]``; devices = 2 × weights (differential pairs).
        digital: ``[(name, type, reason)]`` for every module with parameters or a known digital role.
        digital_weights: ``{name: weights}`` of the digital modules whose weights a matrix product uses (layers of a
            convertible type kept digital); lookup tables (embeddings) are not counted.
        configs: ``{name: config name}`` of the analog layers.
        notes: what else the user must know (tied weights).
    """

    analog: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    digital: list[tuple[str, str, str]] = field(default_factory=list)
    digital_weights: dict[str, int] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    attention_digital: set[str] = field(default_factory=set, repr=False)

    def add_analog(self, name: str, torch_type: type, layer: nn.Module, config: object) -> None:
        mats = layer.analog_matrices()
        self.analog.append((name, torch_type.__name__, type(layer).__name__,
                            sum(w.numel() for _, w in mats.values()),
                            sum(mat.layout.n_tiles for mat, _ in mats.values())))
        self.configs[name] = getattr(config, "name", str(config))

    def add_digital(self, name: str, module: nn.Module, reason: str, weights: int = 0) -> None:
        self.digital.append((name, type(module).__name__, reason))
        if weights:
            self.digital_weights[name] = weights

    @property
    def n_devices(self) -> int:
        """PCM devices over all analog layers (2 per weight)."""
        return 2 * sum(r[3] for r in self.analog)

    @property
    def n_tiles(self) -> int:
        """Crossbar tiles over all analog layers."""
        return sum(r[4] for r in self.analog)

    @property
    def analog_weights(self) -> int:
        return sum(r[3] for r in self.analog)

    @property
    def analog_share(self) -> float:
        """Analog weights / all weights used by matrix products (lookup tables aside), in [0, 1]."""
        a = self.analog_weights
        return a / max(a + sum(self.digital_weights.values()), 1)

    def __str__(self) -> str:
        w_tot, k_tot = self.analog_weights, self.n_tiles
        lines = [f"{len(self.analog)} analog layer(s): {w_tot:,} weights on {2 * w_tot:,} PCM devices, "
                 f"{k_tot} tile(s); "
                 f"{100 * self.analog_share:.2f} % of the matrix-product weights analog"]
        lines += [f"  {n or '<root>':<28} {t:<10} -> {a:<14} {w:>10,} weights {2 * w:>10,} devices {k:>3} tile(s)"
                  for n, t, a, w, k in self.analog]
        lines.append(f"{len(self.digital)} digital module(s):")
        lines += [f"  {n:<28} {t:<18} {r}" for n, t, r in self.digital]
        lines += [f"note: {s}" for s in self.notes]
        return "\n".join(lines)
