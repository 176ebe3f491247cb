"""Mapping report: how a network lands on crossbar tiles and what one inference asks of them.

Per analog weight matrix (a Linear or convolution layer; one per gate matrix of an LSTM):

* the matrix is ``rows × cols``: ``rows`` = input lines = ``in_features`` (Linear) or ``in_channels/groups ·
  prod(kernel)`` (convolution); ``cols`` = output lines = ``out_features`` / ``out_channels``. So
  ``nn.Linear(700, 300)`` (weight 300 × 700) is 700 rows × 300 columns and needs ⌈700/256⌉ × ⌈300/256⌉ = 3 × 2
  tiles of 256 × 256. Rows are split on kernel boundaries and columns on group boundaries exactly as the simulator
  does (:func:`aimc.mapping.make_layout`);
* MVMs per inference: one per output position of a convolution (H_out · W_out), one per vector of a Linear, one per
  time step of an LSTM matrix; each MVM drives every tile of the matrix in parallel;
* DAC conversions = MVMs · rows · column tiles (each tile converts its own inputs), ADC conversions = MVMs · cols ·
  row tiles, digital partial sums = MVMs · cols · (row tiles − 1);
* devices = weights · ``devices_per_weight`` (2: a differential pair; 4 for HERMES' unit cell).

Counts are per PWM-style MVM (one conversion per line); bit-serial inputs and multi-phase reads multiply them in the
energy model (:mod:`aimc.cost.model`). The digital work around the tiles (batch norm, activations, residual adds,
pooling) is counted element by element while a batch-1 example runs through the network, and attributed to the
analog layer that ran last before it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from aimc.cost.params import LARGEST_PUBLISHED_TILE
from aimc.cost.trace import OPS, trace, weight_kind
from aimc.errors import ConfigError, UnsupportedLayerError
from aimc.mapping import make_layout

__all__ = ["mapping", "MappingReport", "LayerMapping", "DigitalLayer", "CostWarning", "ZOO_INPUT_SHAPES",
           "DATA_INPUT_SHAPES", "parse_tile"]

ZOO_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet20_cifar": (3, 32, 32), "resnet32_cifar": (3, 32, 32), "resnet44_cifar": (3, 32, 32),
    "resnet56_cifar": (3, 32, 32), "resnet34_imagenet": (3, 224, 224), "digits_cnn": (1, 8, 8),
    "mnist_mlp": (1, 28, 28), "mnist_cnn": (1, 28, 28), "mnist_lstm": (1, 28, 28)}
"""Input shape (without the batch) of each zoo model."""
DATA_INPUT_SHAPES: dict[str, tuple[int, ...]] = {"cifar10": (3, 32, 32), "digits": (1, 8, 8), "mnist": (1, 28, 28)}
"""Input shape (without the batch) of each built-in data set."""

class CostWarning(UserWarning):
    """A cost estimate rests on a configuration outside what published chips show (e.g. a very large tile)."""


@dataclass(frozen=True)
class LayerMapping:
    """One analog weight matrix on its tiles, and its per-inference work (batch 1).

    Attributes:
        name: module name (+ ``.weight_ih_l0`` etc. for an LSTM matrix).
        kind: torch type of the layer (``Conv2d``, ``Linear``, ``LSTM``).
        weight_shape: shape of the torch weight.
        rows, cols, groups: the ``rows × cols`` matrix (rows per group; cols over all groups).
        tile_rows, tile_cols: tile size.
        row_tiles, col_tiles: tiles along rows and columns; ``max_rows``/``max_cols``: largest tile fill.
        groups_per_tile: groups packed block-diagonally into one tile (``aimc.mapping``; 1 = not packed). A packed
            tile has ``groups_per_tile · rows`` input lines and as many times the columns of one group.
        mvms: input vectors per inference.
        devices_per_weight: PCM devices per weight.
        ops: digital elements attributed to this layer: bn, activation, residual, pool.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    rows: int
    cols: int
    groups: int
    tile_rows: int
    tile_cols: int
    row_tiles: int
    col_tiles: int
    max_rows: int
    max_cols: int
    mvms: int
    devices_per_weight: int = 2
    ops: dict[str, int] = field(default_factory=dict, compare=False)
    groups_per_tile: int = 1

    @property
    def weights(self) -> int:
        return self.rows * self.cols

    @property
    def tiles(self) -> int:
        return self.row_tiles * self.col_tiles

    @property
    def devices(self) -> int:
        return self.weights * self.devices_per_weight

    @property
    def utilisation(self) -> float:
        """Weights / cells of the tiles the matrix occupies."""
        return self.weights / (self.tiles * self.tile_rows * self.tile_cols)

    @property
    def dac_conversions(self) -> int:
        if self.groups_per_tile > 1:  # packed: each group's input lines drive exactly one tile
            return self.mvms * self.rows * self.groups
        return self.mvms * self.rows * self.col_tiles

    @property
    def adc_conversions(self) -> int:
        return self.mvms * self.cols * self.row_tiles

    @property
    def partial_sums(self) -> int:
        return self.mvms * self.cols * (self.row_tiles - 1)

    @property
    def macs(self) -> int:
        return self.mvms * self.weights

    @property
    def input_elements(self) -> int:
        """Distinct input values delivered to the tiles (each row value once per MVM; tiles share by multicast)."""
        return self.mvms * self.rows * self.groups

    @property
    def output_elements(self) -> int:
        return self.mvms * self.cols

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.kind, "weight_shape": list(self.weight_shape),
                "rows": self.rows, "cols": self.cols, "groups": self.groups, "weights": self.weights,
                "tiles": self.tiles, "tiles_rows": self.row_tiles, "tiles_cols": self.col_tiles,
                "utilisation": self.utilisation, "devices": self.devices, "mvms": self.mvms,
                "dac_conversions": self.dac_conversions, "adc_conversions": self.adc_conversions,
                "partial_sums": self.partial_sums, "macs": self.macs, **{f"{k}_elements": self.ops.get(k, 0)
                                                                         for k in OPS}}


@dataclass(frozen=True)
class DigitalLayer:
    """A module that stays digital, why, and its multiply-accumulates per inference (0 if it has no weights)."""

    name: str
    kind: str
    reason: str
    macs: int = 0


@dataclass(frozen=True)
class MappingReport:
    """The mapping of a whole network: analog matrices, digital modules, totals (batch 1)."""

    model: str
    input_shape: tuple[int, ...]
    tile_rows: int
    tile_cols: int
    devices_per_weight: int
    layers: tuple[LayerMapping, ...]
    digital: tuple[DigitalLayer, ...]
    unattributed_ops: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def totals(self) -> dict[str, int | float]:
        ls = self.layers
        tiles = sum(lm.tiles for lm in ls)
        t = {"layers": len(ls), "weights": sum(lm.weights for lm in ls), "devices": sum(lm.devices for lm in ls),
             "tiles": tiles, "mvms": sum(lm.mvms for lm in ls), "tile_mvms": sum(lm.mvms * lm.tiles for lm in ls),
             "dac_conversions": sum(lm.dac_conversions for lm in ls),
             "adc_conversions": sum(lm.adc_conversions for lm in ls),
             "partial_sums": sum(lm.partial_sums for lm in ls), "macs": sum(lm.macs for lm in ls),
             "digital_macs": sum(d.macs for d in self.digital)}
        t["utilisation"] = t["weights"] / (tiles * self.tile_rows * self.tile_cols) if tiles else 0.0
        for k in OPS:
            t[f"{k}_elements"] = sum(lm.ops.get(k, 0) for lm in ls) + self.unattributed_ops.get(k, 0)
        return t

    def to_dict(self) -> dict:
        return {"model": self.model, "input_shape": list(self.input_shape), "tile": [self.tile_rows, self.tile_cols],
                "devices_per_weight": self.devices_per_weight, "layers": [lm.to_dict() for lm in self.layers],
                "digital_layers": [dataclasses.asdict(d) for d in self.digital], "totals": self.totals}

    def to_frame(self):  # noqa: ANN201
        """Per-layer table (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([lm.to_dict() for lm in self.layers])


# ---- arguments ------------------------------------------------------------------------------------------------------
def parse_tile(tile: int | str | Sequence[int] | None) -> tuple[int, int] | None:
    """``256`` / ``"256"`` / ``"256x512"`` / ``(256, 512)`` → ``(rows, cols)``."""
    if tile is None:
        return None
    try:
        if isinstance(tile, str):
            parts = tile.lower().replace("×", "x").split("x")
            r, c = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            if len(parts) > 2:
                raise ValueError
        elif isinstance(tile, int) and not isinstance(tile, bool):
            r = c = tile
        else:
            r, c = (int(v) for v in tile)
    except (TypeError, ValueError):
        raise ConfigError(f"tile={tile!r} is not a tile size; give rows and columns like 256, '256x256' or "
                          "(256, 512).") from None
    if r < 1 or c < 1:
        raise ConfigError(f"tile={tile!r}: rows and columns must be ≥ 1 (e.g. 256 × 256).")
    return r, c


def check_tile(rows: int, cols: int, devices_per_weight: int) -> None:
    """Warn (:class:`CostWarning`) when a tile is larger than any published PCM crossbar."""
    pr, pc = LARGEST_PUBLISHED_TILE
    if rows * cols * devices_per_weight > pr * pc or max(rows, cols) > pc:
        warnings.warn(
            f"a {rows} × {cols} tile with {devices_per_weight} PCM per weight ({rows * cols * devices_per_weight:,} "
            f"devices) is larger than any published PCM crossbar (largest: {pr} × {pc} = {pr * pc:,} PCM devices, "
            "Ambrogio et al. 2023); its energy and latency are extrapolated from smaller tiles (IR drop and line "
            "capacitance are not modelled).", CostWarning, stacklevel=3)


def default_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The input shape (no batch) a model is known to take, or None."""
    from aimc.models import MnistLSTM, ResNetCifar, ResNetImageNet

    arch = getattr(model, "aimc_arch", None)
    if arch in ZOO_INPUT_SHAPES:
        return ZOO_INPUT_SHAPES[arch]
    if isinstance(model, ResNetCifar):
        return (3, 32, 32)
    if isinstance(model, ResNetImageNet):
        return (3, 224, 224)
    if isinstance(model, MnistLSTM):
        return (1, 28, 28)
    first = model
    if isinstance(model, nn.Sequential) and len(model):
        mods = [m for m in model if not isinstance(m, nn.Flatten)]
        first = mods[0] if mods else model
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    return None


# ---- public entry point ---------------------------------------------------------------------------------------------
def mapping(model: nn.Module, *, input_shape: Sequence[int] | None = None, example_input: torch.Tensor | None = None,
            tile: int | str | Sequence[int] | None = None, config=None, exclude: Iterable[str] = (),  # noqa: ANN001
            devices_per_weight: int = 2, name: str | None = None) -> MappingReport:
    """Map ``model`` onto crossbar tiles and count the work of one inference (batch 1).

    Args:
        model: a torch model (converted here with ``config``, nothing is programmed) or one returned by
            :func:`aimc.convert`.
        input_shape: one input without the batch, e.g. ``(3, 32, 32)``; zoo models know theirs.
        example_input: a batch the model accepts, instead of ``input_shape`` (counts are divided by its batch).
        tile: tile size, ``256`` or ``(rows, cols)``; default: the converted model's / ``config``'s tile (512).
        config: the :class:`aimc.AnalogConfig` to convert with (its tile size unless ``tile`` is given).
        exclude: module names to keep digital (as in :func:`aimc.convert`).
        devices_per_weight: PCM devices per weight (2: a differential pair; HERMES' unit cell has 4).
        name: label of the model in the report.

    Returns:
        A :class:`MappingReport`.
    """
    from aimc import presets
    from aimc.config import AnalogConfig
    from aimc.nn.convert import analog_layers, convert

    if not isinstance(model, nn.Module):
        raise ConfigError(f"mapping() needs a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(devices_per_weight, bool) or not isinstance(devices_per_weight, int) or devices_per_weight < 1:
        raise ConfigError(f"devices_per_weight={devices_per_weight!r} must be an integer ≥ 1 (2 for a "
                          "differential pair, 4 for HERMES' unit cell).")
    if config is not None and not isinstance(config, AnalogConfig):
        raise ConfigError(f"config must be an aimc.AnalogConfig, got {type(config).__name__}.")
    converted = any(True for _ in analog_layers(model))
    tl = parse_tile(tile)
    if converted:
        if tuple(exclude):
            raise ConfigError("exclude= applies to a torch model; this model is already converted (its analog "
                              "layers are fixed). Pass the original torch model.")
        own = next(iter(analog_layers(model)))[1].analog_config.mapping
        tl = tl or (own.tile_rows, own.tile_cols)
        net = model
    else:
        cfg = config if config is not None else presets.ideal()
        tl = tl or (cfg.mapping.tile_rows, cfg.mapping.tile_cols)
        cfg = dataclasses.replace(cfg, mapping=dataclasses.replace(cfg.mapping, tile_rows=tl[0], tile_cols=tl[1]))
        net = convert(model, cfg, exclude=exclude)
    check_tile(*tl, devices_per_weight)
    if example_input is None:
        shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
        if shape is None:
            raise ConfigError(
                f"cannot tell the input shape of a {type(model).__name__}; pass input_shape=(C, H, W) without the "
                f"batch (e.g. (3, 32, 32)) or example_input=<a batch>. Zoo models know theirs: {ZOO_INPUT_SHAPES}.")
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ConfigError(f"input_shape={input_shape!r} must be positive integers without the batch, "
                              "e.g. (3, 32, 32).")
        x = torch.zeros((1, *shape))
    else:
        if not isinstance(example_input, torch.Tensor):
            raise ConfigError("example_input must be a torch.Tensor (a batch the model accepts).")
        x = example_input.detach()
        shape = tuple(x.shape[1:])
    analog = dict(analog_layers(net))
    report = getattr(net, "aimc_report", None)
    digital_rows = list(report.digital) if report is not None else []
    modules = dict(net.named_modules())
    digital_w = {n: m for n, m in modules.items() if n not in analog and weight_kind(m) and
                 not any(n.startswith(a + ".") for a in analog)}
    if not analog:
        raise UnsupportedLayerError("the model has no analog layer (Linear, Conv1d, Conv2d, LSTM); nothing would "
                                    "run on crossbars, so there is no analog cost to estimate.")

    def run(inp: torch.Tensor) -> None:
        if converted:
            from aimc.inference import _digital_forward

            _digital_forward(net, list(analog.items()), inp)
        else:
            net(inp)

    positions, dmacs, ops = trace(net, analog, digital_w, x, run)
    layers = []
    for lname, layer in analog.items():
        n_calls = positions.get(lname, 0)
        for i, (sfx, (_mat, w)) in enumerate(layer.analog_matrices().items()):
            if isinstance(layer, nn.LSTM):
                rows, cols, groups, unit = w.shape[1], w.shape[0], 1, 1
                kind = "LSTM"
            elif isinstance(layer, nn.Linear):
                rows, cols, groups, unit = layer.in_features, layer.out_features, 1, 1
                kind = "Linear"
            elif not hasattr(layer, "kernel_size") or isinstance(layer, nn.modules.conv._ConvTransposeNd):
                # GRU/RNN, attention projections, (in, out) projections, transposed convolutions: the (out, rows)
                # matrix as given by analog_matrices()
                rows, cols, groups, unit = w.shape[1], w.shape[0], 1, 1
                kind = getattr(layer, "aimc_torch_type", type(layer)).__name__
            else:
                unit = math.prod(layer.kernel_size)
                rows, cols, groups = layer.in_channels // layer.groups * unit, layer.out_channels, layer.groups
                kind = weight_kind(layer) or type(layer).__name__
            lay = make_layout(cols, rows, groups=groups, row_unit=unit, tile_rows=tl[0], tile_cols=tl[1])
            layers.append(LayerMapping(
                name=(lname or "<root>") + sfx, kind=kind, weight_shape=tuple(layer.weight.shape) if not sfx else tuple(w.shape),
                rows=rows, cols=cols, groups=groups, tile_rows=tl[0], tile_cols=tl[1], row_tiles=lay.n_row_tiles,
                col_tiles=lay.n_col_tiles, max_rows=max(lay.row_splits) * lay.groups_per_tile,
                max_cols=max(lay.col_splits), mvms=n_calls, devices_per_weight=devices_per_weight,
                groups_per_tile=lay.groups_per_tile,
                ops=dict(ops.get(lname, {})) if i == 0 else {}))  # an LSTM's digital work goes to its 1st matrix
    names_digital = {r[0] for r in digital_rows}
    digital = [DigitalLayer(n, t, why, int(dmacs.get(n, 0))) for n, t, why in digital_rows]
    digital += [DigitalLayer(n, type(m).__name__, "weight layer kept digital", int(dmacs.get(n, 0)))
                for n, m in digital_w.items() if n not in names_digital]
    return MappingReport(model=name or getattr(model, "aimc_arch", None) or type(model).__name__,
                         input_shape=shape, tile_rows=tl[0], tile_cols=tl[1], devices_per_weight=devices_per_weight,
                         layers=tuple(layers), digital=tuple(digital), unattributed_ops=dict(ops.get("", {})))
