"""Analog layers with several weight matrices or a foreign forward: the shared matrix product and Hugging Face
``Conv1D``.

:class:`MatrixOwner` is the mixin of layers whose matrices are named (``analog`` is a ``ModuleDict`` of
``AnalogMatrix``, one per weight attribute): ``AnalogMultiheadAttention``, the analog recurrent layers and the
``(in, out)``-weight projections. :func:`mvm` is their one matrix product in the four modes (mixed-precision
hook, training noise, digital before ``aimc.program``, drifted analog through the tiles).

:func:`projection_class` makes the analog version of a module whose forward multiplies an ``(in, out)`` weight
with ``torch.addmm(bias, x, self.weight)`` or ``x @ self.weight``, as Hugging Face's ``Conv1D`` (GPT-2) does:
a subclass of the module's own type (``isinstance`` and the forward are kept) whose weight is an
``AnalogWeight`` with the ``"in_out"`` layout, so the forward's ``addmm`` runs on the crossbar tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from aimc.config import AnalogConfig
from aimc.errors import StateError, UnsupportedLayerError
from aimc.nn.layers import _check_input, linear_tiles
from aimc.nn import cache
from aimc.nn.cache import in_dtype
from aimc.nn.tile import AnalogMatrix
from aimc.nn.weight import plain

__all__ = ["MatrixOwner", "mvm", "projection_class", "is_hf_conv1d", "AnalogProjection"]


def mvm(layer: nn.Module, key: str, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None,
        mode: str) -> torch.Tensor:
    """``x @ w.T + bias`` with the matrix ``layer.analog[key]`` in ``mode``. ``x`` ``(*, in)``, ``w`` ``(out, in)``
    (the plain master weight), result ``(*, out)``."""
    mat: AnalogMatrix = layer.analog[key]
    name = f"{layer.aimc_name}.{key}"
    if mode == "train":
        # hook point of mixed-precision training (aimc.train.MixedPrecision attaches it), as in AnalogLSTM
        hook = layer.aimc_train_mvm
        if hook is not None:
            if isinstance(layer, AnalogProjection):
                raise UnsupportedLayerError(f"layer {layer.aimc_name!r}: mixed-precision training does not support "
                                            f"{type(layer).__name__} ((in, out) weights); exclude the layer.")
            with torch._C.DisableTorchFunctionSubclass():
                lead = x.shape[:-1]
                y = hook(layer, key, x.reshape(-1, x.shape[-1])).reshape(*lead, -1)
            return y if bias is None else y + bias
        if mat.trains_through_periphery:  # training.periphery: DAC/ADC/noise as at inference
            y = mat.train_periphery_mvm(layer, key, x, w)
            return y if bias is None else y + bias
        return F.linear(x, mat.train_weight(w), bias)
    if mode == "digital":
        return F.linear(x, w, bias)
    _check_input(x, name)
    # in the matrix's compute dtype (float32 for a bfloat16 model: aimc.nn.cache)
    if not mat.config.periphery.needs_matrix_path:
        return cache.linear(mat, x, bias, name)
    return in_dtype(mat.compute_dtype, linear_tiles, x, mat, name, bias)


class MatrixOwner:
    """Mixin of analog layers holding named matrices ``self.analog[attr]`` for their weight attributes."""

    analog: nn.ModuleDict
    aimc_name: str = ""
    aimc_train_mvm: Callable[[nn.Module, str, torch.Tensor], torch.Tensor] | None = None
    """Replacement of the training-mode MVM, called as ``aimc_train_mvm(layer, weight attribute, x)``.
    ``aimc.train.MixedPrecision`` sets it (its MVMs then run on simulated PCM devices) and
    ``MixedPrecision.detach()`` resets it; ``None``: the hardware-aware training forward."""

    @property
    def analog_config(self) -> AnalogConfig:
        return next(iter(self.analog.values())).config

    def _oriented(self, attr: str) -> torch.Tensor:
        """The master weight of ``attr`` as ``(out, in)`` (plain tensor)."""
        return plain(getattr(self, attr))

    def analog_matrices(self) -> dict[str, tuple[AnalogMatrix, torch.Tensor]]:
        """{"." + weight attribute: (matrix state, master weight as (out, rows))}."""
        return {"." + attr: (mat, self._oriented(attr)) for attr, mat in self.analog.items()}

    def _mode(self) -> str:
        mats = list(self.analog.values())
        if self.training:
            return "train"
        if torch.compiler.is_compiling():
            return "analog" if mats[0].programmed else "digital"
        if not mats[0].programmed:
            return "digital"
        if not all(m.drifted for m in mats):
            raise StateError(f"layer {self.aimc_name!r} is programmed but has no time yet; call "
                             "aimc.at_time(model, t_seconds, seed=...) before the forward pass.")
        return "analog"

    def _mvm(self, attr: str, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return mvm(self, attr, x, self._oriented(attr), bias, self._mode())

    def aimc_product(self, key: str, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """A product on the weight ``key`` performed by any caller (``aimc.nn.weight.AnalogWeight``)."""
        return self._mvm(key, x, bias)


class AnalogProjection(MatrixOwner):
    """Mixin of the analog version of a module with an ``(in, out)`` weight multiplied by its own forward
    (``addmm(bias, x, weight)``, ``x @ weight``): the forward is the original one; the product is intercepted."""

    def _oriented(self, attr: str) -> torch.Tensor:
        return plain(getattr(self, attr)).t()

    @classmethod
    def from_torch(cls, m: nn.Module, config: AnalogConfig) -> nn.Module:
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            raise UnsupportedLayerError(f"{type(m).__name__} has no 2-d weight (in, out)")
        m.__class__ = cls  # in place: the module (on the converted copy, or inplace=True) keeps its forward
        m.analog = nn.ModuleDict({"weight": AnalogMatrix(w.shape[1], w.shape[0], config, learn_range=False)})
        return m


_PROJECTION_CLASSES: dict[type, type] = {}


def projection_class(base: type[nn.Module]) -> type[nn.Module]:
    """The analog class of ``base`` (a module multiplying an ``(in, out)`` weight): ``Analog<base>`` subclassing
    :class:`AnalogProjection` and ``base``; one class per base type."""
    if base not in _PROJECTION_CLASSES:
        _PROJECTION_CLASSES[base] = type(f"Analog{base.__name__}", (AnalogProjection, base),
                                         {"__module__": __name__, "__doc__": f"``{base.__qualname__}`` on analog "
                                          "crossbars: its own forward, whose weight product runs on the tiles."})
    return _PROJECTION_CLASSES[base]


def is_hf_conv1d(m: nn.Module) -> bool:
    """Duck type of Hugging Face ``transformers.pytorch_utils.Conv1D`` (no import of transformers): a module
    named ``Conv1D`` with ``nf`` outputs and an ``(in, nf)`` weight."""
    w = getattr(m, "weight", None)
    return (type(m).__name__ == "Conv1D" and isinstance(getattr(m, "nf", None), int)
            and isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[1] == m.nf)
