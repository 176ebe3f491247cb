"""Device files: a fitted (or hand-written) device as YAML, loaded as the device of any ``AnalogConfig``.

A device file::

    aimc_device: 1          # format version
    kind: pcm               # pcm or tabulated
    parameters:             # the constructor arguments of aimc.devices.PCM / aimc.devices.Tabulated
      g_max: 25.0
      prog_coeffs: [0.26, 1.97, -1.17]
      ...
    fit: {...}              # optional: how the parameters were estimated (written by `aimc fit-device`);
                            # informational, never used to build the device

``load(path)`` returns the device with its ``file`` and ``sha256`` set, so a config that uses it records which file
(and which exact bytes) it came from. In a config dict or experiment file write ``device: {file: DEVICE.yaml}``
(relative paths are resolved from the current directory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimc.devices.pcm import PCM
from aimc.devices.tabulated import Tabulated
from aimc.errors import ConfigError, FileFormatError

__all__ = ["FilePCM", "load", "save", "device_to_dict", "device_from_dict", "file_sha256", "read_fit_section",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
_KINDS = {"pcm": PCM, "tabulated": Tabulated}
_PROVENANCE = ("file", "sha256")


@dataclass(frozen=True)
class FilePCM(PCM):
    """A :class:`PCM` loaded from a device file: the same model, plus where it came from.

    Attributes:
        file: the path it was loaded from (as given).
        sha256: SHA-256 of the file's bytes.
    """

    file: str | None = None
    sha256: str | None = None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float) and math.isfinite(v):
        return float(v)
    return v


def device_to_dict(device: PCM | Tabulated) -> dict[str, Any]:
    """``{"kind": ..., **constructor arguments}`` of a PCM or Tabulated device (without file provenance)."""
    if not isinstance(device, (PCM, Tabulated)):
        raise ConfigError(f"only PCM and Tabulated devices can be written to a device file, got {device!r}")
    vals = {f.name: _plain(getattr(device, f.name)) for f in dataclasses.fields(device)
            if f.init and f.name not in _PROVENANCE}
    return {"kind": device.kind, **vals}


def device_from_dict(data: dict[str, Any], *, file: str | None = None, sha256: str | None = None,
                     where: str = "device") -> PCM | Tabulated:
    """Inverse of :func:`device_to_dict`; a PCM comes back as :class:`FilePCM` when ``file`` is given."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    data = dict(data)
    kind = data.pop("kind", "pcm")
    if kind not in _KINDS:
        raise ConfigError(f"{where}: kind={kind!r} is not one of {sorted(_KINDS)}")
    cls = FilePCM if (kind == "pcm" and file is not None) else _KINDS[kind]
    names = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in _PROVENANCE}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {unknown} for a {kind} device (allowed: {sorted(names)})")
    vals = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    if file is not None:
        vals.update(file=file, sha256=sha256)
    try:
        return cls(**vals)
    except TypeError as e:  # a missing required table of a Tabulated device
        raise ConfigError(f"{where}: {e}") from None


def save(device: PCM | Tabulated, path: str | os.PathLike, *, fit: dict[str, Any] | None = None) -> str:
    """Write ``device`` as a device file (YAML); ``fit`` is stored as the informational ``fit`` section.

    Returns:
        The SHA-256 of the written file.
    """
    import yaml

    doc: dict[str, Any] = {"aimc_device": FORMAT_VERSION}
    d = device_to_dict(device)
    doc["kind"] = d.pop("kind")
    doc["parameters"] = d
    if fit is not None:
        doc["fit"] = fit
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("# aimc device file: load with aimc.devices.load(path) or `device: {file: " + path.name + "}` in a "
            "config\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return file_sha256(path)


def load(path: str | os.PathLike) -> FilePCM | Tabulated:
    """Load a device file written by :func:`save` (or ``aimc fit-device``).

    Returns:
        A :class:`FilePCM` (a :class:`PCM` with ``file`` and ``sha256`` set) or a :class:`Tabulated` device, with
        the same ``program(g_target, generator=)`` / ``read(state, t, generator=)`` interface.

    Raises:
        FileFormatError: missing file, YAML syntax error, not a device file, unsupported version.
        ConfigError: invalid parameters (every problem listed).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"device file {str(p)!r} does not exist; write one with `aimc fit-device "
                              "MEASUREMENTS --out DEVICE.yaml` or aimc.devices.save(device, path).")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise FileFormatError(f"cannot read device file {str(p)!r}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FileFormatError(f"device file {str(p)!r}: YAML syntax error{where}: {getattr(e, 'problem', e)}") \
            from None
    if not isinstance(doc, dict) or "aimc_device" not in doc:
        raise FileFormatError(f"{str(p)!r} is not an aimc device file (no `aimc_device:` version key at the top); "
                              "device files are written by `aimc fit-device` or aimc.devices.save.")
    if doc["aimc_device"] != FORMAT_VERSION:
        raise FileFormatError(f"{str(p)!r}: device file version {doc['aimc_device']!r} is not supported (this aimc "
                              f"reads version {FORMAT_VERSION}).")
    unknown = sorted(set(doc) - {"aimc_device", "kind", "parameters", "fit"})
    if unknown:
        raise FileFormatError(f"{str(p)!r}: unknown top-level key(s) {unknown} (allowed: aimc_device, kind, "
                              "parameters, fit).")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise FileFormatError(f"{str(p)!r}: `parameters` must be a mapping of device constants.")
    return device_from_dict({"kind": doc.get("kind", "pcm"), **params}, file=str(path), sha256=file_sha256(p),
                            where=f"device file {str(p)!r}")


def read_fit_section(path: str | os.PathLike) -> dict[str, Any] | None:
    """The informational ``fit`` section of a device file (``None`` when it has none)."""
    import yaml

    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return doc.get("fit") if isinstance(doc, dict) else None
