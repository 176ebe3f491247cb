"""``convert(model, config)``: a copy of a torch model whose Linear / Conv1d / Conv2d / LSTM layers are analog.

The replacement table :data:`LAYER_MAP` is the one place to extend. Layers are matched by exact type: a user
subclass of ``nn.Linear`` may have its own forward, so it stays digital (and the report says so).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from torch import nn

from aimc.config import AnalogConfig
from aimc.errors import ConfigError, UnsupportedLayerError
from aimc.nn.layers import AnalogConv1d, AnalogConv2d, AnalogLinear
from aimc.nn.lstm import AnalogLSTM

__all__ = ["convert", "LAYER_MAP", "ConversionReport", "analog_layers"]

log = logging.getLogger("aimc")

LAYER_MAP: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: AnalogLinear,
    nn.Conv1d: AnalogConv1d,
    nn.Conv2d: AnalogConv2d,
    nn.LSTM: AnalogLSTM,
}
ANALOG_TYPES = tuple(LAYER_MAP.values())

_DIGITAL_REASONS: dict[type[nn.Module], str] = {
    nn.BatchNorm1d: "normalisation runs in digital (Joshi et al. 2020)",
    nn.BatchNorm2d: "normalisation runs in digital (Joshi et al. 2020)",
    nn.LayerNorm: "normalisation runs in digital",
    nn.GroupNorm: "normalisation runs in digital",
    nn.ReLU: "activation function: digital",
    nn.Dropout: "no weights",
    nn.MaxPool2d: "pooling: digital",
    nn.AvgPool2d: "pooling: digital",
    nn.AdaptiveAvgPool2d: "pooling: digital",
    nn.Embedding: "a lookup table, not a matrix-vector product: digital",
}


@dataclass
class ConversionReport:
    """Which layers became analog and which stayed digital, and why.

    Attributes:
        analog: ``[(name, torch type, analog type, weights, tiles)]``; devices = 2 × weights (differential pairs).
        digital: ``[(name, type, reason)]`` for every module with parameters or a known digital role.
    """

    analog: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    digital: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def n_devices(self) -> int:
        """PCM devices over all analog layers (2 per weight)."""
        return 2 * sum(r[3] for r in self.analog)

    @property
    def n_tiles(self) -> int:
        """Crossbar tiles over all analog layers."""
        return sum(r[4] for r in self.analog)

    def __str__(self) -> str:
        w_tot, k_tot = sum(r[3] for r in self.analog), sum(r[4] for r in self.analog)
        lines = [f"{len(self.analog)} analog layer(s): {w_tot:,} weights on {2 * w_tot:,} PCM devices, {k_tot} tile(s)"]
        lines += [f"  {n or '<root>':<28} {t:<10} -> {a:<14} {w:>10,} weights {2 * w:>10,} devices {k:>3} tile(s)"
                  for n, t, a, w, k in self.analog]
        lines.append(f"{len(self.digital)} digital module(s):")
        lines += [f"  {n:<28} {t:<18} {r}" for n, t, r in self.digital]
        return "\n".join(lines)


def analog_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) of every analog layer of ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, ANALOG_TYPES):
            yield name, m


def _reason(m: nn.Module, parent: nn.Module | None) -> str | None:
    if isinstance(parent, nn.MultiheadAttention):
        return "inside nn.MultiheadAttention, which reads its weights directly: digital"
    for base, analog in LAYER_MAP.items():
        if isinstance(m, base) and type(m) is not base:
            return f"subclass of {base.__name__} with its own forward: kept digital (exclude it or convert the base)"
    for t, why in _DIGITAL_REASONS.items():
        if type(m) is t:
            return why
    if any(True for _ in m.parameters(recurse=False)):
        return f"no analog version of {type(m).__name__}: digital"
    return None


def convert(model: nn.Module, config: AnalogConfig, *, exclude: Iterable[str] = ()) -> nn.Module:
    """Return a converted copy of ``model``; the original is untouched.

    Args:
        model: any torch model.
        config: the analog configuration (e.g. ``aimc.presets.joshi2020()``).
        exclude: qualified module names (as in ``model.named_modules()``) to keep digital.

    Returns:
        The copy; ``returned.aimc_report`` is a :class:`ConversionReport` (also logged at INFO level).
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedLayerError(f"convert() needs a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(config, AnalogConfig):
        raise ConfigError(f"convert() needs an aimc.AnalogConfig (e.g. aimc.presets.joshi2020()), got "
                          f"{type(config).__name__}.")
    if any(isinstance(m, ANALOG_TYPES) for m in model.modules()):
        raise UnsupportedLayerError("this model already holds analog layers; convert the original torch model.")
    excluded = set(exclude)
    names = {n for n, _ in model.named_modules()}
    unknown = excluded - names
    if unknown:
        raise ConfigError(f"exclude names {sorted(unknown)} are not modules of the model; "
                          f"valid names look like {sorted(n for n in names if n)[:5]}.")
    new = copy.deepcopy(model)
    report = ConversionReport()
    if type(new) in LAYER_MAP:  # a bare layer: convert it itself
        layer = LAYER_MAP[type(new)].from_torch(new, config)
        mats = layer.analog_matrices()
        report.analog.append(("", type(new).__name__, type(layer).__name__,
                              sum(w.numel() for _, w in mats.values()),
                              sum(mat.layout.n_tiles for mat, _ in mats.values())))
        layer.aimc_report, layer.aimc_config = report, config
        return layer
    parents = {id(c): m for m in new.modules() for c in m.children()}
    for name, m in list(new.named_modules()):
        if not name:
            continue
        parent = parents.get(id(m))
        target = LAYER_MAP.get(type(m))
        if name in excluded:
            report.digital.append((name, type(m).__name__, "excluded by the caller"))
            continue
        if target is None or isinstance(parent, nn.MultiheadAttention) or _inside_excluded(name, excluded):
            why = "inside an excluded module" if _inside_excluded(name, excluded) else _reason(m, parent)
            if why:
                report.digital.append((name, type(m).__name__, why))
            continue
        layer = target.from_torch(m, config)
        layer.aimc_name = name
        _set_child(new, name, layer)
        mats = layer.analog_matrices()
        report.analog.append((name, type(m).__name__, target.__name__,
                              sum(w.numel() for _, w in mats.values()),
                              sum(mat.layout.n_tiles for mat, _ in mats.values())))
    if not report.analog:
        raise UnsupportedLayerError(
            "the model has no layer aimc can make analog (supported: "
            f"{', '.join(t.__name__ for t in LAYER_MAP)}); nothing to simulate.")
    new.aimc_report = report
    new.aimc_config = config
    log.debug("aimc.convert:\n%s", report)
    return new


def _inside_excluded(name: str, excluded: set[str]) -> bool:
    return any(name.startswith(e + ".") for e in excluded)


def _set_child(root: nn.Module, name: str, child: nn.Module) -> None:
    *path, last = name.split(".")
    parent = root
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, child)
