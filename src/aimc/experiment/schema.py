"""A small declarative schema for experiment files: dataclasses whose fields carry help, unit and a check.

``parse(cls, data)`` walks a YAML/TOML mapping and reports *every* problem at once, each with its path in the file,
the value found, what is allowed and the unit. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from aimc._checks import is_number
from aimc.errors import ConfigError

__all__ = ["spec", "parse", "to_plain", "ExperimentConfigError", "positive", "nonneg", "fraction"]


class ExperimentConfigError(ConfigError):
    """An experiment file has problems; ``problems`` lists each as ``(path, message)``."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "experiment"):
        self.problems = problems
        lines = "\n".join(f"  - {p}: {m}" for p, m in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


def spec(default: Any = MISSING, *, help: str, unit: str = "", check: Callable[[Any], bool] | None = None,  # noqa: A002
         allowed: str = "", default_factory: Any = MISSING) -> Any:
    """A dataclass field with documentation and a range check used by :func:`parse`."""
    md = {"help": help, "unit": unit, "check": check, "allowed": allowed}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


def positive(v: Any) -> bool:
    return is_number(v) and v > 0


def nonneg(v: Any) -> bool:
    return is_number(v) and v >= 0


def fraction(v: Any) -> bool:
    return nonneg(v) and v <= 1


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {_describe(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, v: Any, path: str, errors: list[tuple[str, str]]) -> Any:
    origin = get_origin(tp)
    bad = (path, f"{v!r} is not allowed: expected {_describe(tp)}")
    if origin is Literal:
        if v in get_args(tp):
            return v
        errors.append(bad)
        return None
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if v is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            trial: list[tuple[str, str]] = []
            out = _convert(a, v, path, trial)
            if not trial:
                return out
        if len([a for a in args if a is not type(None)]) == 1:  # report the inner error of Optional[X]
            return _convert(next(a for a in args if a is not type(None)), v, path, errors)
        errors.append(bad)
        return None
    if origin is list:
        if not isinstance(v, (list, tuple)):
            errors.append(bad)
            return None
        return [_convert(get_args(tp)[0], x, f"{path}[{i}]", errors) for i, x in enumerate(v)]
    if origin is dict or tp is dict:
        if not isinstance(v, dict):
            errors.append(bad)
            return None
        return dict(v)
    if dataclasses.is_dataclass(tp):
        return parse(tp, v, path, errors)
    if tp is bool:
        if isinstance(v, bool):
            return v
    elif tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    elif tp is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str) and _looks_numeric(v):  # PyYAML (YAML 1.1) reads 1e5 and 1e400 as text
            errors.append((path, f"{v!r} is text, not a number: YAML reads an exponent without a dot as a string; "
                                 f"write it as {_yaml_float(v)}"))
            return None
    elif tp is str:
        if isinstance(v, str):
            return v
    elif tp is Any:
        return v
    errors.append(bad)
    return None


def _looks_numeric(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _yaml_float(v: str) -> str:
    x = float(v)
    if not math.isfinite(x):
        return "a finite number (this one overflows a 64-bit float)"
    mant, _, exp = v.lower().partition("e")
    if exp and "." not in mant:
        return f"{mant}.0e{'' if exp[0] in '+-' else '+'}{exp}"
    return repr(x)


@functools.cache
def _fields(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """Type hints and init fields of a spec dataclass (resolving the hints is slow: once per class)."""
    return get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def parse(cls: type, data: Any, path: str = "", errors: list[tuple[str, str]] | None = None) -> Any:
    """Build ``cls`` from ``data``; collect problems into ``errors`` (raise at the top level if any)."""
    top = errors is None
    errors = [] if errors is None else errors
    where = path or "(top level)"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append((where, f"{data!r} is not allowed: expected a mapping ({cls.__name__})"))
        if top:
            raise ExperimentConfigError(errors)
        return None
    hints, fields = _fields(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            errors.append((f"{path}.{key}" if path else str(key),
                           f"unknown key ({hint}allowed here: {', '.join(fields)})"))
    kwargs = {}
    for name, f in fields.items():
        p = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                errors.append((p, f"required ({f.metadata.get('help', '')})"))
            continue
        n_before = len(errors)
        val = _convert(hints[name], data[name], p, errors)
        check = f.metadata.get("check")
        whole = isinstance(check, _WholeList)
        # every problem at once: the elements of a list that converted are checked even if a neighbour did not
        if check is not None and val is not None and (len(errors) == n_before or (isinstance(val, list) and not whole)):
            vals = val if isinstance(val, list) and not whole else [val]
            for i, x in enumerate(vals):
                if x is not None and not check(x):
                    unit = f" ({f.metadata['unit']})" if f.metadata.get("unit") else ""
                    pp = f"{p}[{i}]" if vals is val else p
                    errors.append((pp, f"{x!r} is not allowed: must be {f.metadata.get('allowed') or 'valid'}{unit}"))
        kwargs[name] = val
    if top and errors:
        raise ExperimentConfigError(errors)
    if len(errors):
        try:
            return cls(**kwargs)
        except Exception:  # noqa: BLE001 - a partially invalid object is only used for further checks
            return None
    try:
        return cls(**kwargs)
    except ConfigError as e:
        errors.append((where, str(e)))
        if top:
            raise ExperimentConfigError(errors) from None
        return None


class _WholeList:
    """Marker: a check that receives the whole list."""

    def __init__(self, fn: Callable[[Any], bool]):
        self.fn = fn

    def __call__(self, v: Any) -> bool:
        return self.fn(v)


def whole_list(fn: Callable[[Any], bool]) -> _WholeList:
    """Wrap a check so it receives a list field as a whole instead of each element."""
    return _WholeList(fn)


def to_plain(obj: Any) -> Any:
    """Dataclasses → plain dicts/lists (YAML-ready), the inverse of :func:`parse`."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


_ = typing
