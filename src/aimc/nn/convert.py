"""``convert(model, config)``: a model whose matrix products run on analog crossbars; ``to_digital`` undoes it.

Two mechanisms, both needed (README "How conversion works"):

* the replacement table :data:`LAYER_MAP` (one place to extend; ``layer_map=`` adds types per call) swaps each
  layer for its analog version, which holds the crossbar state (``AnalogMatrix``) and subclasses the torch layer;
* every converted weight becomes an :class:`~aimc.nn.weight.AnalogWeight`, a parameter that sends any
  ``F.linear`` / ``addmm`` / ``matmul`` / convolution on it to its layer's tiles, whoever calls it (a parent's
  ``F.linear(x, child.weight)``, torch's fused Transformer fast path, which steps aside for such weights).

Layers are matched by exact type: a user subclass of ``nn.Linear`` may have its own forward, so it stays digital
(and the report says so). Hugging Face ``Conv1D`` (GPT-2) is recognised by duck type (no import of transformers).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from fnmatch import fnmatchcase

from torch import nn

from aimc.config import AnalogConfig
from aimc.errors import ConfigError, UnsupportedLayerError
from aimc.nn.attention import AnalogMultiheadAttention
from aimc.nn.conv import AnalogConv3d, AnalogConvTranspose1d, AnalogConvTranspose2d, _AnalogConvTransposeNd
from aimc.nn.layers import AnalogConv1d, AnalogConv2d, AnalogLinear, _AnalogConvNd
from aimc.nn.lstm import AnalogGRU, AnalogLSTM, AnalogRNN
from aimc.nn.matrix import AnalogProjection, MatrixOwner, is_hf_conv1d, projection_class
from aimc.nn.tile import AnalogMatrix
from aimc.nn.conversion import ConversionReport
from aimc.nn.weight import AnalogWeight, unwrap_weight, wrap_weight

__all__ = ["convert", "to_digital", "LAYER_MAP", "ConversionReport", "analog_layers", "is_analog_layer"]

log = logging.getLogger("aimc")

LAYER_MAP: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: AnalogLinear,
    nn.modules.linear.NonDynamicallyQuantizableLinear: AnalogLinear,  # nn.MultiheadAttention.out_proj
    nn.Conv1d: AnalogConv1d,
    nn.Conv2d: AnalogConv2d,
    nn.Conv3d: AnalogConv3d,
    nn.ConvTranspose1d: AnalogConvTranspose1d,
    nn.ConvTranspose2d: AnalogConvTranspose2d,
    nn.LSTM: AnalogLSTM,
    nn.GRU: AnalogGRU,
    nn.RNN: AnalogRNN,
    nn.MultiheadAttention: AnalogMultiheadAttention,
}
ANALOG_TYPES = tuple(set(LAYER_MAP.values()))

Rule = Callable[[str, nn.Module], "AnalogConfig | str | None"]

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
    nn.EmbeddingBag: "a lookup table, not a matrix-vector product: digital",
}


def is_analog_layer(m: nn.Module) -> bool:
    """``m`` holds crossbar state (an aimc analog layer, or a user layer with ``analog_matrices()``)."""
    return isinstance(m, ANALOG_TYPES + (MatrixOwner,)) or callable(getattr(m, "analog_matrices", None))


def analog_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) of every analog layer of ``model``."""
    for name, m in model.named_modules():
        if is_analog_layer(m):
            yield name, m


def _reason(m: nn.Module, table: Mapping[type, type]) -> str | None:
    for base in table:
        if isinstance(m, base) and type(m) is not base:
            return f"subclass of {base.__name__} with its own forward: kept digital (exclude it or convert the base)"
    for t, why in _DIGITAL_REASONS.items():
        if type(m) is t:
            return why
    if any(True for _ in m.parameters(recurse=False)):
        return f"no analog version of {type(m).__name__}: digital"
    return None


def _product_weights(m: nn.Module, table: Mapping[type, type], lookups: set[int]) -> int:
    """Weights of a digital module that a matrix product uses (known product types; lookup tables aside)."""
    if not (isinstance(m, tuple(table)) or is_hf_conv1d(m)):
        return 0
    return sum(p.numel() for p in m.parameters(recurse=False) if p.dim() >= 2 and id(p) not in lookups)


def _weight_slots(layer: nn.Module) -> list[tuple[str, str, str]]:
    """``(attribute, AnalogWeight key, layout)`` of each converted weight of an analog layer."""
    if isinstance(layer, AnalogProjection):
        return [(a, a, "in_out") for a in layer.analog]
    if isinstance(layer, MatrixOwner):
        return [(a, a, "out_in") for a in layer.analog]
    if isinstance(layer, AnalogLinear):
        return [("weight", "", "out_in")]
    if isinstance(layer, (_AnalogConvNd, _AnalogConvTransposeNd)):
        return [("weight", "", "conv")]
    return []


def _rule(rules: Mapping[str, AnalogConfig | str] | Rule | None, names: list[str]) -> Rule:
    """The per-layer rule as a function (name, module) -> AnalogConfig | "digital" | None."""
    if rules is None:
        return lambda name, m: None
    if callable(rules):
        return rules
    if not isinstance(rules, Mapping):
        raise ConfigError(f"rules={rules!r} must be a mapping {{glob pattern: AnalogConfig or 'digital'}} or a "
                          "function (name, module) -> AnalogConfig | 'digital' | None.")
    bad = [p for p, v in rules.items() if not (isinstance(v, AnalogConfig) or v == "digital")]
    unused = [p for p in rules if not any(fnmatchcase(n, p) for n in names)]
    if bad or unused:
        raise ConfigError("invalid rules: " + "; ".join(
            [f"{p!r} maps to {rules[p]!r}, expected an AnalogConfig or 'digital'" for p in bad]
            + [f"{p!r} matches no module (names look like {[n for n in names if n][:4]})" for p in unused]) + ".")
    items = list(rules.items())
    return lambda name, m: next((v for p, v in items if fnmatchcase(name, p)), None)


def _place_matrices(layer: nn.Module, params: dict) -> None:
    """Move the crossbar state (small buffers: scales, seeds, ranges) of ``layer`` to the device its weights are
    on: a model on CUDA (or meta) gets its analog matrices there, not on the CPU they are built on."""
    device = next((p.device for p in params.values()), None)
    if device is None:
        return
    for mat in layer.modules():
        if isinstance(mat, AnalogMatrix) and mat.w_max.device != device:
            mat.to(device)


def convert(model: nn.Module, config: AnalogConfig, *, exclude: Iterable[str] = (),
            rules: Mapping[str, AnalogConfig | str] | Rule | None = None,
            layer_map: Mapping[type[nn.Module], type[nn.Module]] | None = None, tied: str = "digital",
            inplace: bool = False) -> nn.Module:
    """Return ``model`` with its matrix products on analog crossbars (a converted copy unless ``inplace``).

    Args:
        model: any torch model.
        config: the analog configuration (e.g. ``aimc.presets.joshi2020()``) of every converted layer unless a
            rule says otherwise.
        exclude: module names or glob patterns (``"classifier"``, ``"*.attn.*"``) kept digital with everything
            inside them; each must match a module.
        rules: per-layer choice, first match wins: ``{glob: AnalogConfig | "digital"}`` or a function
            ``(name, module) -> AnalogConfig | "digital" | None`` (None: as its parent, else ``config``). A
            container's choice applies to the layers inside it.
        layer_map: extra or replacement entries of :data:`LAYER_MAP` ``{torch type: analog class}``; the analog
            class needs ``from_torch(module, config)`` and ``analog_matrices()``.
        tied: a weight shared with a lookup table (an ``lm_head`` tied to the token embedding): ``"digital"``
            (default) keeps that layer digital; ``"analog"`` makes the product analog while the embedding keeps
            reading the same (master) weight. Never untied.
        inplace: convert ``model`` itself, no copy (for large models); the returned model is ``model`` unless
            ``model`` itself is a single layer.

    Returns:
        The converted model; ``returned.aimc_report`` is a :class:`ConversionReport` (also logged at DEBUG level).
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedLayerError(f"convert() needs a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(config, AnalogConfig):
        raise ConfigError(f"convert() needs an aimc.AnalogConfig (e.g. aimc.presets.joshi2020()), got "
                          f"{type(config).__name__}.")
    if tied not in ("digital", "analog"):
        raise ConfigError(f"tied={tied!r} must be 'digital' or 'analog'.")
    if any(is_analog_layer(m) for m in model.modules()):
        raise UnsupportedLayerError("this model already holds analog layers; convert the original torch model "
                                    "(or aimc.to_digital(model) first).")
    table = {**LAYER_MAP, **(layer_map or {})}
    bad_map = [t for t, a in table.items() if not callable(getattr(a, "from_torch", None))]
    if bad_map:
        raise ConfigError(f"layer_map: the analog classes of {[t.__name__ for t in bad_map]} have no "
                          "from_torch(module, config) classmethod.")
    names = [n for n, _ in model.named_modules()]
    patterns = list(exclude)
    unknown = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unknown:
        raise ConfigError(f"exclude names {sorted(unknown)} are not modules of the model; "
                          f"valid names look like {sorted(n for n in names if n)[:5]}.")
    rule = _rule(rules, names)
    new = model if inplace else copy.deepcopy(model)
    refs: dict[int, list[tuple[nn.Module, str]]] = {}  # parameter -> every (module, attribute) holding it
    paths: dict[int, list[tuple[nn.Module | None, str]]] = {}  # module -> every (parent, attribute) holding it
    for mname, mod in new.named_modules(remove_duplicate=False):
        for pname, p in mod.named_parameters(recurse=False):
            refs.setdefault(id(p), []).append((mod, pname))
        for cname, child in mod.named_children():
            paths.setdefault(id(child), []).append((mod, cname))
    lookups = {id(mod.weight) for mod in new.modules() if isinstance(mod, (nn.Embedding, nn.EmbeddingBag))}
    report = ConversionReport()
    decided: dict[str, AnalogConfig | str] = {}
    closed: list[str] = []  # excluded or digital-attention subtrees: nothing inside is converted
    root = new
    for name, m in list(new.named_modules()):
        inside = next((c for c in closed if name.startswith(c + ".") or c == ""), None) if name else None
        parent = decided.get(name.rpartition(".")[0], config) if name else config
        choice = rule(name, m)
        if choice is not None and not (isinstance(choice, AnalogConfig) or choice == "digital"):
            raise ConfigError(f"rules({name!r}) returned {choice!r}; expected an AnalogConfig, 'digital' or None.")
        decided[name] = choice if choice is not None else parent
        target = table.get(type(m)) or (projection_class(type(m)) if is_hf_conv1d(m) else None)
        digital_w = _product_weights(m, table, lookups)
        if inside is not None:
            why = ("inside a digital nn.MultiheadAttention, which reads its weights directly" if inside in
                   report.attention_digital else "inside an excluded module")
            report.add_digital(name, m, why, digital_w)
            continue
        if any(fnmatchcase(name, p) for p in patterns):
            report.add_digital(name, m, "excluded by the caller", digital_w)
            closed.append(name)
            continue
        if target is None:
            why = _reason(m, table)
            if why:
                report.add_digital(name, m, why, digital_w)
            continue
        if decided[name] == "digital":
            report.add_digital(name, m, "kept digital by the rules", digital_w)
            _close_attention(m, name, closed, report)
            continue
        shared = [(o, a) for p in m.parameters(recurse=False) if p.dim() >= 2 for o, a in refs.get(id(p), [])
                  if o is not m]
        tied_to = [o for o, _ in shared if isinstance(o, (nn.Embedding, nn.EmbeddingBag))]
        if shared and (len(tied_to) < len(shared) or tied == "digital"):
            other = next(n for n, mod in new.named_modules() if mod is shared[0][0])
            why = (f"weight tied to the lookup table {other!r}: kept digital; convert(..., tied='analog') makes the "
                   "product analog (the lookup keeps reading the master weight)" if len(tied_to) == len(shared)
                   else f"weight shared with {other!r}: kept digital")
            report.add_digital(name, m, why, digital_w)
            _close_attention(m, name, closed, report)
            continue
        torch_type = type(m)  # before from_torch: some analog versions convert the module in place
        try:
            layer = target.from_torch(m, decided[name])
        except UnsupportedLayerError as e:
            report.add_digital(name, m, f"{e}: digital", digital_w)
            _close_attention(m, name, closed, report)
            continue
        old = {id(p): p for p in m.parameters(recurse=False)}
        _place_matrices(layer, old)
        layer.aimc_name = name
        if "aimc_torch_type" not in layer.__dict__:
            layer.aimc_torch_type = torch_type
        for attr, key, layout in _weight_slots(layer):
            before = old.get(id(getattr(m, attr, None)))
            reuse = before is not None and before.shape == getattr(layer, attr).shape and before.dtype == \
                getattr(layer, attr).dtype and before.device == getattr(layer, attr).device
            w = wrap_weight(layer, attr, key, layout, before.data if reuse else None)  # reuse: no second copy
            for o, a in refs.get(id(before), []) if before is not None else []:
                if o is not m:  # a tied lookup table keeps sharing the weight (tied="analog")
                    setattr(o, a, w)
                    report.notes.append(f"{name}: weight shared with the lookup table of a {type(o).__name__}; "
                                        "the product is analog, the lookup reads the master weight")
        if layer is not m:
            if not name:
                root = layer
            for par, attr in paths.get(id(m), []):
                setattr(par, attr, layer)
        report.add_analog(name, torch_type, layer, decided[name])
    if not report.analog:
        raise UnsupportedLayerError(
            "the model has no layer aimc can make analog (supported: "
            f"{', '.join(sorted({t.__name__ for t in table}))}, Hugging Face Conv1D); nothing to simulate."
            + "".join(f"\n  {n or '<root>'} ({t}): {why}" for n, t, why in report.digital
                      if n in report.digital_weights))
    root.aimc_report = report
    root.aimc_config = config
    log.debug("aimc.convert:\n%s", report)
    return root


def _close_attention(m: nn.Module, name: str, closed: list[str], report: ConversionReport) -> None:
    """A digital ``nn.MultiheadAttention`` multiplies its ``out_proj`` weight itself: keep it digital too."""
    if isinstance(m, nn.MultiheadAttention):
        closed.append(name)
        report.attention_digital.add(name)


def to_digital(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """The plain torch model of a converted one: each analog layer back to its torch type with its master weights
    (training results kept; device state dropped). A copy unless ``inplace``."""
    new = model if inplace else copy.deepcopy(model)
    refs: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod in new.modules():
        for pname, p in mod.named_parameters(recurse=False):
            refs.setdefault(id(p), []).append((mod, pname))
    for _, m in list(analog_layers(new)):
        torch_type = m.__dict__.get("aimc_torch_type")
        if torch_type is None:
            raise UnsupportedLayerError(f"{type(m).__name__} does not record its torch type; rebuild the "
                                        "digital model and load its state_dict instead.")
        for attr, p in list(m.named_parameters(recurse=False)):
            if isinstance(p, AnalogWeight):
                plain_p = unwrap_weight(m, attr)
                for o, a in refs.get(id(p), []):
                    if o is not m:
                        setattr(o, a, plain_p)
        del m.analog
        for k in ("aimc_name", "aimc_torch_type", "aimc_train_mvm", "_range_warmup", "aimc_report", "aimc_config"):
            m.__dict__.pop(k, None)
        m.__class__ = torch_type
        if hasattr(m, "_init_flat_weights"):  # recurrent layers cache their weight list
            m._init_flat_weights()
    for k in ("aimc_report", "aimc_config"):
        new.__dict__.pop(k, None)
    return new
