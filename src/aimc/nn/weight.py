"""``AnalogWeight``: a master weight that knows how to multiply (a ``torch.nn.Parameter`` subclass).

Why a tensor subclass. Swapping module types (``aimc.convert``'s table) only helps when the swapped module's own
forward performs the product. Real models do not always let it: torch's fused ``nn.TransformerEncoderLayer`` /
``nn.MultiheadAttention`` fast paths read ``linear1.weight`` straight into one C++ kernel, torchvision's Swin calls
``F.linear(x, self.qkv.weight, bias)`` from the parent, Hugging Face GPT-2's ``Conv1D`` calls
``torch.addmm(bias, x, self.weight)``. As in torchao (``AffineQuantizedTensor``), the weight itself intercepts the
products through ``__torch_function__``:

* ``F.linear(x, w, b)``, ``torch.addmm(b, x, w)``, ``x @ w`` / ``torch.matmul`` / ``torch.mm`` and the
  convolutions with ``w`` as the weight operand are sent to the owning analog layer's ``aimc_product`` /
  ``aimc_conv``, i.e. through its crossbar tiles in the layer's current mode (training noise, digital before
  ``aimc.program``, drifted analog after ``aimc.at_time``);
* any other product with an analog weight as an operand (``torch.bmm``, ``einsum``, ``w @ x``...) of a programmed
  layer in eval mode raises an :class:`~aimc.errors.UnsupportedLayerError` naming the layer: never a silent
  digital result (in training, e.g. a backward pass, and before ``aimc.program`` it runs on the master weight);
* every other operation (optimizer updates, ``state_dict``, ``.to()``, an embedding lookup of a tied weight) runs
  on the plain master weight and returns plain tensors;
* torch's fused fast paths step aside by themselves: they check ``has_torch_function`` on their weights.

The owning layer uses :func:`plain` (a differentiable alias of type ``torch.Tensor``) in its own forward, so its
own products are not intercepted twice. A view made outside the layer (``w.t()``, ``w.T``, ``w[:k]``) is a
:class:`DerivedWeight`: ``x @ w.t()`` still runs on the tiles, other products on views of a programmed layer raise.
A *computed* tensor (``2 * w``, ``w.clone()``) is plain and a product on it is digital: :func:`aimc.nn.audit.audit`
finds such uses by execution.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _ntuple

from aimc.errors import StateError, UnsupportedLayerError

__all__ = ["AnalogWeight", "DerivedWeight", "plain", "wrap_weight", "unwrap_weight", "same_geometry"]


class AnalogWeight(nn.Parameter):
    """The master weight of an analog layer; products on it run through the layer's crossbar tiles.

    Attributes:
        aimc_owner: the analog layer holding the crossbar state (``analog_matrices()``).
        aimc_key: which of the owner's matrices (``""`` for single-matrix layers, else the weight's attribute
            name, e.g. ``"in_proj_weight"``).
        aimc_layout: ``"out_in"`` (``nn.Linear``: ``(out, in)``, used by ``F.linear``), ``"in_out"`` (Hugging Face
            ``Conv1D``: ``(in, out)``, used by ``addmm`` / ``matmul``), or ``"conv"`` (a convolution kernel).
    """

    aimc_owner: nn.Module
    aimc_key: str
    aimc_layout: str

    def __new__(cls, data: torch.Tensor | None = None, requires_grad: bool = True):  # noqa: D102
        return torch.Tensor._make_subclass(cls, data if data is not None else torch.empty(0), requires_grad)

    def __repr__(self) -> str:
        name = getattr(getattr(self, "aimc_owner", None), "aimc_name", "?")
        return f"AnalogWeight(layer={name!r}, key={getattr(self, 'aimc_key', '')!r}, shape={tuple(self.shape)})"

    def __deepcopy__(self, memo: dict) -> AnalogWeight:
        new = type(self)(self.data.clone(memory_format=torch.preserve_format), self.requires_grad)
        memo[id(self)] = new
        for k in ("aimc_owner", "aimc_key", "aimc_layout"):
            if k in self.__dict__:
                setattr(new, k, copy.deepcopy(self.__dict__[k], memo))
        return new

    def __reduce_ex__(self, proto: int):  # noqa: ANN204
        # the owner goes into the state (not the constructor arguments): pickle resolves the cycle layer <-> weight
        return (_rebuild, (self.data, self.requires_grad), dict(self.__dict__))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @classmethod
    def __torch_function__(cls, func: Callable, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None:
            out = handler(*args, **kwargs)
            if out is not NotImplemented:
                return out
        if func in _PRODUCTS and _analog_now(args, kwargs):
            _refuse(func, args, kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if func in _VIEWS and args and isinstance(args[0], AnalogWeight):  # w.t(), w.T, w[:k], w.view(...)
            return _derive(args[0], out)
        return out


class DerivedWeight(torch.Tensor):
    """A view of an :class:`AnalogWeight` made outside its layer (``w.t()``, ``w.T``, ``w[:k]``, ``w.view(...)``).

    The full matrix transposed is still the crossbar read in its own direction: ``x @ w.t()`` and
    ``torch.addmm(b, x, w.t())`` of a Linear weight (``F.linear(x, w.t(), b)`` of a Conv1D weight) run on the
    layer's tiles like ``F.linear(x, w, b)``. Any other product with a view (a slice of the rows, a reshaped
    kernel) of a programmed layer in eval mode raises instead of computing digitally; in training and before
    ``aimc.program`` it computes with the master weight. Every other operation gives plain tensors.
    """

    aimc_source: AnalogWeight
    aimc_transposed: bool

    @classmethod
    def __torch_function__(cls, func: Callable, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        handler = _DERIVED_HANDLERS.get(func)
        if handler is not None:
            out = handler(*args, **kwargs)
            if out is not NotImplemented:
                return out
        if func in _PRODUCTS:
            src = [a.aimc_source for a in (*args, *kwargs.values()) if isinstance(a, DerivedWeight)]
            if _analog_now(src, {}):
                _refuse(func, src, {}, view=True)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if func in _VIEWS and args and isinstance(args[0], DerivedWeight):  # a view of a view: w[:, :k].T
            return _derive(args[0].aimc_source, out)
        return out


def _derive(src: AnalogWeight, out: object) -> object:
    """Views of ``src`` as :class:`DerivedWeight` (one tensor, or each of a split's tensors)."""
    if isinstance(out, (tuple, list)):
        return type(out)(_derive(src, o) for o in out)
    if not isinstance(out, torch.Tensor) or isinstance(out, AnalogWeight):
        return out
    d = out.as_subclass(DerivedWeight)
    d.aimc_source = src
    d.aimc_transposed = (src.dim() == 2 and out.dim() == 2 and tuple(out.shape) == tuple(src.shape)[::-1]
                         and tuple(out.stride()) == tuple(src.stride())[::-1] and out.data_ptr() == src.data_ptr())
    return d


def _transposed(w: object, layout: str) -> bool:
    return isinstance(w, DerivedWeight) and w.aimc_transposed and w.aimc_source.aimc_layout == layout


def _d_matmul(x: torch.Tensor, w: torch.Tensor):  # noqa: ANN202
    if _transposed(w, "out_in") and not isinstance(x, (AnalogWeight, DerivedWeight)):
        return w.aimc_source.aimc_owner.aimc_product(w.aimc_source.aimc_key, x, None)
    return NotImplemented


def _d_addmm(b: torch.Tensor, x: torch.Tensor, w: torch.Tensor, *, beta: float = 1, alpha: float = 1):  # noqa: ANN202
    if _transposed(w, "out_in") and beta == 1 and alpha == 1 and not isinstance(x, (AnalogWeight, DerivedWeight)):
        owner, key = w.aimc_source.aimc_owner, w.aimc_source.aimc_key
        return owner.aimc_product(key, x, b) if b.dim() <= 1 else owner.aimc_product(key, x, None) + b
    return NotImplemented


def _d_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None):  # noqa: ANN202
    if _transposed(w, "in_out") and not isinstance(x, (AnalogWeight, DerivedWeight)):
        return w.aimc_source.aimc_owner.aimc_product(w.aimc_source.aimc_key, x, bias)
    return NotImplemented


def _rebuild(data: torch.Tensor, requires_grad: bool) -> AnalogWeight:
    return AnalogWeight(data, requires_grad)


def plain(w: torch.Tensor) -> torch.Tensor:
    """``w`` as a plain ``torch.Tensor`` alias (same storage, gradients flow to ``w``); other tensors unchanged."""
    return w.as_subclass(torch.Tensor) if isinstance(w, AnalogWeight) else w


def wrap_weight(owner: nn.Module, attr: str, key: str, layout: str,
                data: torch.Tensor | None = None) -> AnalogWeight:
    """Replace the parameter ``owner.<attr>`` by an :class:`AnalogWeight` on the same storage (or on ``data``, an
    equal tensor, e.g. the weight of the torch layer it replaces: no second copy); returns it."""
    p = getattr(owner, attr)
    w = AnalogWeight(data if data is not None else p.data, p.requires_grad)
    w.aimc_owner, w.aimc_key, w.aimc_layout = owner, key, layout
    setattr(owner, attr, w)
    return w


def unwrap_weight(owner: nn.Module, attr: str) -> nn.Parameter:
    """Replace ``owner.<attr>`` (an :class:`AnalogWeight`) by a plain ``nn.Parameter`` on the same storage."""
    p = getattr(owner, attr)
    new = nn.Parameter(p.data, p.requires_grad)
    setattr(owner, attr, new)
    return new


def _name(w: AnalogWeight) -> str:
    return (getattr(w.aimc_owner, "aimc_name", "") or "<root>") + (f".{w.aimc_key}" if w.aimc_key else "")


def _analog_now(args: tuple | list, kwargs: dict) -> bool:
    """Whether an analog weight among the arguments belongs to a programmed layer in eval mode: only then would a
    product that bypasses the tiles give a digital result where an analog one is expected (in training and before
    ``aimc.program`` the layer itself computes with the master weight, e.g. the backward of a training step)."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, AnalogWeight):
            owner = a.aimc_owner
            mat = owner.analog if not isinstance(owner.analog, nn.ModuleDict) else next(iter(owner.analog.values()))
            if not owner.training and mat.programmed:
                return True
    return False


def _refuse(func: Callable, args: tuple | list, kwargs: dict, view: bool = False) -> None:
    ws = [a for a in (*args, *kwargs.values()) if isinstance(a, AnalogWeight)]
    name = getattr(func, "__name__", str(func)) + (" on a view of it (a slice, reshape...)" if view else "")
    # torch turns a TypeError raised under the `@` operator into NotImplemented (and then a message-less TypeError),
    # so the operator gets a StateError with the same text
    kind = StateError if name.startswith("__") else UnsupportedLayerError
    raise kind(
        f"analog weight of layer {_name(ws[0])!r} (shape {tuple(ws[0].shape)}) is used by {name} in a way aimc cannot "
        "compute on its crossbar (supported: F.linear(x, w, b) and x @ w.t() for an (out, in) weight, "
        "torch.addmm(b, x, w) and x @ w for an (in, out) weight, convolutions with the layer's own geometry). "
        "Keep that layer digital: "
        f"aimc.convert(model, config, exclude=[{getattr(ws[0].aimc_owner, 'aimc_name', '')!r}]).")


def _linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None):  # noqa: ANN202
    if isinstance(w, AnalogWeight) and w.aimc_layout == "out_in" and not isinstance(x, AnalogWeight):
        return w.aimc_owner.aimc_product(w.aimc_key, x, bias)
    return NotImplemented


def _addmm(b: torch.Tensor, x: torch.Tensor, w: torch.Tensor, *, beta: float = 1, alpha: float = 1):  # noqa: ANN202
    if isinstance(w, AnalogWeight) and w.aimc_layout == "in_out" and not isinstance(x, AnalogWeight) \
            and beta == 1 and alpha == 1:
        if b.dim() <= 1:
            return w.aimc_owner.aimc_product(w.aimc_key, x, b)
        return w.aimc_owner.aimc_product(w.aimc_key, x, None) + b
    return NotImplemented


def _matmul(x: torch.Tensor, w: torch.Tensor):  # noqa: ANN202
    if isinstance(w, AnalogWeight) and w.aimc_layout == "in_out" and not isinstance(x, AnalogWeight) \
            and x.dim() >= 1 and w.dim() == 2:
        return w.aimc_owner.aimc_product(w.aimc_key, x, None)
    return NotImplemented


def _conv(nd: int, transposed: bool) -> Callable:
    def handler(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, *rest, **kw):  # noqa: ANN002
        if isinstance(w, AnalogWeight) and w.aimc_layout == "conv" and not isinstance(x, AnalogWeight):
            names = (("stride", "padding", "output_padding", "groups", "dilation") if transposed
                     else ("stride", "padding", "dilation", "groups"))
            geo = dict(zip(names, rest))
            geo.update(kw)
            return w.aimc_owner.aimc_conv(w.aimc_key, x, bias, nd, transposed, geo)
        return NotImplemented
    return handler


_HANDLERS: dict[Callable, Callable] = {
    F.linear: _linear,
    torch.addmm: _addmm, torch.Tensor.addmm: _addmm,
    torch.matmul: _matmul, torch.Tensor.matmul: _matmul, torch.Tensor.__matmul__: _matmul,
    torch.mm: _matmul, torch.Tensor.mm: _matmul,
    F.conv1d: _conv(1, False), F.conv2d: _conv(2, False), F.conv3d: _conv(3, False),
    F.conv_transpose1d: _conv(1, True), F.conv_transpose2d: _conv(2, True), F.conv_transpose3d: _conv(3, True),
}

_DERIVED_HANDLERS: dict[Callable, Callable] = {
    torch.matmul: _d_matmul, torch.Tensor.matmul: _d_matmul, torch.Tensor.__matmul__: _d_matmul,
    torch.mm: _d_matmul, torch.Tensor.mm: _d_matmul, torch.addmm: _d_addmm, torch.Tensor.addmm: _d_addmm,
    F.linear: _d_linear,
}

# operations whose result is a view of the weight: they give a DerivedWeight that still knows its layer
_VIEWS = frozenset({
    torch.Tensor.t, torch.t, torch.Tensor.T.__get__, torch.Tensor.mT.__get__, torch.Tensor.transpose,
    torch.transpose, torch.Tensor.permute, torch.permute, torch.Tensor.swapaxes, torch.Tensor.swapdims,
    torch.swapaxes, torch.swapdims, torch.Tensor.__getitem__, torch.Tensor.narrow, torch.narrow,
    torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.split, torch.split, torch.Tensor.chunk,
    torch.chunk, torch.Tensor.unbind, torch.unbind, torch.Tensor.flatten, torch.flatten, torch.Tensor.unsqueeze,
    torch.Tensor.squeeze, torch.Tensor.expand, torch.Tensor.view_as, torch.Tensor.reshape_as,
    torch.Tensor.unflatten, torch.Tensor.tensor_split})

# products with a weight operand: if no handler takes the call, it is refused rather than computed digitally
_PRODUCTS = frozenset({*_HANDLERS, torch.bmm, torch.Tensor.bmm, torch.baddbmm, torch.Tensor.baddbmm, torch.einsum,
                       torch.addmv, torch.mv, torch.Tensor.mv, torch.tensordot, torch.inner, torch.addbmm,
                       torch.Tensor.__rmatmul__, F.bilinear, torch.chain_matmul, torch.linalg.multi_dot,
                       torch.nn.functional.multi_head_attention_forward})


def same_geometry(layer: nn.Module, bias: torch.Tensor | None, nd: int, transposed: bool, geometry: dict) -> None:
    """Raise unless ``F.conv*(x, layer.weight, bias, **geometry)`` is the layer's own convolution."""
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "output_padding": 0}
    problems = []
    if transposed != isinstance(layer, nn.modules.conv._ConvTransposeNd) or len(layer.kernel_size) != nd:
        problems.append("another kind of convolution")
    for k, v in {**defaults, **geometry}.items():
        if not hasattr(layer, k) or (k == "output_padding" and not transposed):
            continue
        own = getattr(layer, k)
        v = v if isinstance(v, str) or k == "groups" else tuple(_ntuple(nd)(v))
        if v != own:
            problems.append(f"{k}={v!r} (the layer has {own!r})")
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        problems.append(f"padding_mode={layer.padding_mode!r}")
    if bias is not layer.bias:
        problems.append("another bias")
    if problems:
        raise UnsupportedLayerError(
            f"layer {layer.aimc_name!r}: its analog weight is used by a convolution that is not the layer's own ("
            f"{', '.join(problems)}); aimc cannot compute it on the layer's crossbar. Keep the layer digital: "
            f"aimc.convert(model, config, exclude=[{layer.aimc_name!r}]).")
