"""``save`` / ``load``: safetensors files (no pickle) with the analog config as JSON metadata.

The file holds the model's ``state_dict`` (master weights, BN statistics, GDC baselines, scales, seeds, the last
``at_time`` call) and metadata: the config, the list of analog layers and, if known, how to
rebuild the architecture (a zoo name or ``package.module:function``). Writing is atomic (temp file + rename).

Device state (g_target, g_prog, nu) is not in the file: a programmed matrix keeps only its scales, GDC baselines,
the counter-based ``prog_seed`` and a checksum of the master weight, and regenerates its devices from them
(``AnalogMatrix.regenerate``), so a file is about the size of the plain weights. Measured devices and states from
older versions keep stored device tensors, and those are written.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aimc.config import AnalogConfig
from aimc.errors import ConfigError, FileFormatError, StateError
from aimc.nn.convert import analog_layers, convert
from aimc.nn.master import same_weight
from aimc.nn.tile import _EMPTY

__all__ = ["save", "load", "read_metadata", "FORMAT"]

_PACKED = "aimc"  # the single metadata entry holding every field as JSON

FORMAT = "aimc-model/1"
log = logging.getLogger("aimc")
_DEVICE_KEYS = ("g_target", "g_prog", "nu", "w_max", "gdc_base", "gdc_noise", "gdc_ref", "gdc_alpha", "gdc_amp",
                "t_seconds", "read_seed", "gdc_on", "learned_input_range", "prog_seed", "prog_check", "half_cache")


def save(model: nn.Module, path: str | os.PathLike, *, arch: str | None = None,
         arch_kwargs: dict[str, Any] | None = None) -> None:
    """Save a converted model to ``path`` (safetensors).

    Args:
        model: a model returned by :func:`aimc.convert` (programmed or not).
        path: destination file; written atomically.
        arch: how :func:`load` can rebuild the architecture: a zoo name (``"resnet32_cifar"``) or
            ``"package.module:function"`` (a function or a class); defaults to ``model.aimc_arch`` if set.
        arch_kwargs: JSON-serialisable keyword arguments :func:`load` passes to ``arch`` (e.g. ``{"hidden": 250}``);
            defaults to ``model.aimc_arch_kwargs`` if set. A class that takes a configuration object (Hugging Face
            style: ``cls(config)`` with ``cls.config_class``) needs nothing: ``model.config`` is stored as a dict.

    Raises:
        ConfigError: ``arch`` cannot be imported, needs arguments that were not given, or ``arch_kwargs`` is not
            JSON-serialisable (checked now, not when loading).
    """
    from safetensors.torch import save_file

    cfg = getattr(model, "aimc_config", None)
    if cfg is None or not list(analog_layers(model)):
        raise StateError("aimc.save expects a converted model (aimc.convert(model, config)); "
                         "for a plain torch model use safetensors.torch.save_file(model.state_dict(), path).")
    if arch is None:
        arch = getattr(model, "aimc_arch", None)
        arch_kwargs = arch_kwargs if arch_kwargs is not None else getattr(model, "aimc_arch_kwargs", None)
    recipe = _arch_recipe(model, arch, dict(arch_kwargs or {})) if arch else {}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    seen: set[int] = set()
    for k, v in tensors.items():  # tied weights (an lm_head sharing the embedding): safetensors wants one copy each
        if v.numel() and v.data_ptr() in seen:
            tensors[k] = v.clone()
        seen.add(v.data_ptr()) if v.numel() else None
    for prefix, mat, weight in _matrices(model):
        if mat.programmed and not mat.stores_devices and not same_weight(weight, mat.prog_check):
            raise StateError(f"{prefix[:-1]!r}: the master weight changed since aimc.program, so the file could "
                             "not regenerate the programmed chip; call aimc.program(model, seed=...) before saving.")
    meta = {"format": FORMAT, "config": json.dumps(cfg.to_dict()),
            "analog_layers": json.dumps([n for n, _ in analog_layers(model)]),
            "arch": arch or "", "torch": torch.__version__, **recipe}
    own = {n: layer.analog_config.to_dict() for n, layer in analog_layers(model)
           if getattr(layer, "analog_config", cfg) != cfg}
    if own:  # layers given their own config by convert(..., rules=...)
        meta["layer_configs"] = json.dumps(own)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from aimc._files import atomic_write

    # one metadata entry (JSON, sorted keys): safetensors writes several entries in hash order, so the same model
    # would get a different file (and sha256) at every save
    packed = {_PACKED: json.dumps(meta, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=packed))


def _matrices(model: nn.Module):  # noqa: ANN202
    """``(state-dict prefix, AnalogMatrix, its 2-D master weight)`` of every analog matrix."""
    mod_names = {id(m): n for n, m in model.named_modules()}
    for _, layer in analog_layers(model):
        for mat, w in layer.analog_matrices().values():
            yield mod_names[id(mat)] + ".", mat, w.reshape(w.shape[0], -1)


def _arch_callable(arch: str) -> Callable[..., Any]:
    if ":" in arch:
        mod, _, fn = arch.partition(":")
        try:
            return getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot import architecture {arch!r} ({e}); give package.module:function (or :Class) "
                              "importable on the Python path.") from None
    from aimc import models

    if arch not in models.MODEL_NAMES:
        raise ConfigError(f"unknown zoo architecture {arch!r}; known: {', '.join(models.MODEL_NAMES)} (or "
                          "package.module:function).")
    return functools.partial(models.get_model, arch)


def _arch_recipe(model: nn.Module, arch: str, kwargs: dict[str, Any]) -> dict[str, str]:
    """Metadata entries telling :func:`load` how to call ``arch``: JSON kwargs and, for a class built from a config
    object, that config as a dict. Raises ``ConfigError`` now for what :func:`load` could not do later."""
    fn = _arch_callable(arch)
    out: dict[str, str] = {}
    try:
        if kwargs:
            out["arch_kwargs"] = json.dumps(kwargs, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"arch_kwargs of {arch!r} must be JSON-serialisable (numbers, strings, lists, dicts): "
                          f"{e}.") from None
    if isinstance(fn, functools.partial):  # zoo: get_model checks its keyword arguments itself
        return out
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: trust the caller
        return out
    needed = [p.name for p in params if p.default is p.empty and p.name not in kwargs
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    conf = getattr(model, "config", None)
    if needed and needed[0] == "config" and hasattr(getattr(fn, "config_class", None), "from_dict") \
            and hasattr(conf, "to_dict"):  # Hugging Face style: cls(config), cls.config_class.from_dict(dict)
        try:
            out["arch_config"] = json.dumps(conf.to_dict(), sort_keys=True, default=str)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"the config of {arch!r} is not JSON-serialisable ({e}).") from None
        needed = needed[1:]
    if needed:
        given = f" (arch_kwargs gave {sorted(kwargs)})" if kwargs else ""
        raise ConfigError(
            f"aimc.load could not rebuild {arch!r}: it needs argument(s) {needed}{given}. Pass them as "
            f"aimc.save(..., arch={arch!r}, arch_kwargs={{{', '.join(repr(n) + ': ...' for n in needed)}}}) "
            "(JSON-serialisable values); for a class taking a config object, give it a `config_class` with "
            "`from_dict` and the model a `config` with `to_dict` (as Hugging Face models have); or save without "
            "arch and pass model=<an instance> to aimc.load.")
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an aimc model file; clear errors for missing, truncated or foreign files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"model file {str(path)!r} does not exist; check the path.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise FileFormatError(f"{str(path)!r} is not a readable safetensors file ({e}); it may be truncated or "
                              "corrupt: re-create it with aimc.save.") from None
    if _PACKED in meta:  # files since aimc 0.1 (one JSON entry); older files keep the fields as separate entries
        try:
            meta = json.loads(meta[_PACKED])
        except json.JSONDecodeError as e:
            raise FileFormatError(f"{str(path)!r}: damaged aimc metadata ({e}).") from None
    if meta.get("format") != FORMAT:
        raise FileFormatError(f"{str(path)!r} is a safetensors file but not an aimc model (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r}); for a plain torch state_dict use "
                              "safetensors.torch.load_file and aimc.convert.")
    return meta


def _build_arch(meta: dict[str, str]) -> nn.Module:
    arch = meta["arch"]
    try:
        kwargs = json.loads(meta.get("arch_kwargs") or "{}")
        conf = json.loads(meta["arch_config"]) if meta.get("arch_config") else None
    except json.JSONDecodeError as e:
        raise FileFormatError(f"damaged arch metadata ({e}).") from None
    fn = _arch_callable(arch)
    args = () if conf is None else (fn.config_class.from_dict(conf),)
    try:
        model = fn(*args, **kwargs)
    except TypeError as e:  # e.g. a file saved by an aimc that did not check arch's arguments
        raise ConfigError(f"cannot build architecture {arch!r} with {kwargs or 'no arguments'} ({e}); pass "
                          "model=<an instance of it> to aimc.load.") from None
    model.aimc_arch = arch
    if kwargs:
        model.aimc_arch_kwargs = kwargs
    return model


def _listed(keys: list[str], n: int = 12) -> str:
    """``keys`` for an error message: the device buffers of an analog layer as one ``<layer>.analog.*`` entry."""
    shown: list[str] = []
    for k in keys:
        head, sep, _ = k.partition("analog.") if k.startswith("analog.") or ".analog." in k else (k, "", "")
        entry = f"{head}analog.*" if sep else k
        if entry not in shown:
            shown.append(entry)
    more = f" … and {len(shown) - n} more" if len(shown) > n else ""
    return ", ".join(shown[:n]) + more


def _natural(key: str) -> tuple:
    """Sort key of state-dict names in module order: ``layer.10`` after ``layer.9``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in key.split("."))


def _check_keys(state: dict[str, torch.Tensor], model: nn.Module, path: str | os.PathLike, arch: str, *,
                device_state: bool) -> None:
    """Strict comparison of the file's tensors with ``model`` before anything is loaded (as safetensors'
    ``load_model(strict=True)``): missing, unexpected and mismatched keys, with shapes, in one error."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")
               and (device_state or k.rsplit(".", 1)[-1] not in _DEVICE_KEYS)]
    unexpected = sorted((k for k in state if k not in own), key=_natural)
    mismatched = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                  for k in sorted(state, key=_natural)
                  if k in own and k.rsplit(".", 1)[-1] not in _EMPTY and state[k].shape != own[k].shape]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{len(v)} {what}: {_listed(v)}" for what, v in (("missing key(s)", missing),
                                                              ("unexpected key(s)", unexpected),
                                                              ("key(s) with another shape", mismatched)) if v]
    fix = (f"the file was saved from architecture {arch!r}: load without model= to rebuild it, or pass an instance "
           "of that architecture" if arch else "pass model=<an instance of the architecture that was saved>")
    raise FileFormatError(f"{str(path)!r} does not match the architecture of the model: {'; '.join(parts)}. "
                          f"Nothing was loaded; {fix}.")


def load(path: str | os.PathLike, *, model: nn.Module | None = None, config: AnalogConfig | None = None) -> nn.Module:
    """Load a model saved with :func:`save`.

    Args:
        path: the ``.safetensors`` file.
        model: the architecture to load into (a plain torch model, converted here); default: rebuilt from the
            file's ``arch``.
        config: load into a different config. Explicit choice: master weights and BN statistics are loaded,
            programmed device state is not (it belongs to the stored config) and the model must be programmed
            again. ``None`` = the stored config, device state restored exactly.

    Returns:
        The converted model, with cached weights recomputed for the stored ``at_time`` call, if any.
    """
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        stored = AnalogConfig.from_dict(json.loads(meta["config"]))
        analog_names = set(json.loads(meta["analog_layers"]))
    except (KeyError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{str(path)!r}: damaged aimc metadata ({e}).") from None
    cfg = stored if config is None else config
    if model is None:
        if not meta.get("arch"):
            raise FileFormatError(f"{str(path)!r} does not say how to rebuild its architecture; pass "
                                  "model=<an instance of the original torch model> to aimc.load.")
        model = _build_arch(meta)
    if not list(analog_layers(model)):
        try:
            own = {n: AnalogConfig.from_dict(d) for n, d in json.loads(meta.get("layer_configs", "{}")).items()}
        except (json.JSONDecodeError, AttributeError) as e:
            raise FileFormatError(f"{str(path)!r}: damaged aimc metadata ({e}).") from None

        def rule(name: str, _m: nn.Module) -> AnalogConfig | str:  # exactly the stored analog layers
            if name not in analog_names:
                return "digital"
            return own.get(name, cfg) if config is None else cfg

        model = convert(model, cfg, rules=rule, tied="analog")
    try:
        state = load_file(str(path))
    except Exception as e:
        raise FileFormatError(f"{str(path)!r}: tensors cannot be read ({e}); the file may be truncated.") from None
    if config is not None and config != stored:
        state = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in _DEVICE_KEYS}
        log.warning("aimc.load: %s was saved with config %r; loading into the config you passed, without the "
                    "programmed device state. Call aimc.program(model, seed=...) again.", path, stored.name)
    for k, v in model.state_dict().items():  # files from before the counter-based seed: devices stored
        if k.endswith(".prog_seed") and k not in state:
            state[k] = torch.full_like(v, -1)
        if k.endswith(".prog_check") and k not in state:
            state[k] = torch.empty(0, dtype=torch.float64)
        if k.endswith(".gdc_amp") and k not in state:  # saved before the read-out amplitude: full-scale inputs
            state[k] = torch.empty(0, dtype=torch.float64)
    _check_keys(state, model, path, meta.get("arch") or "", device_state=config is None or config == stored)
    model.load_state_dict(state, strict=False)
    for name, layer in analog_layers(model):
        for sfx, (mat, w) in layer.analog_matrices().items():
            mat.restore_time(name + sfx, w.reshape(w.shape[0], -1))
    return model
