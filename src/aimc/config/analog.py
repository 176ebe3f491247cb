"""``AnalogConfig``: the device model plus one of each part (``aimc.config.parts``), its dict / JSON / YAML round
trip, and how a ``device`` entry of a config dict becomes a device (a kind with constants, or a device file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from aimc.config.parts import (
    CompensationConfig,
    MappingConfig,
    PeripheryConfig,
    TrainingConfig,
    _raise,
)
from aimc.devices import PCM, Hermes, Ideal
from aimc.devices.measured import MeasuredDevice
from aimc.devices.tabulated import Tabulated
from aimc.errors import ConfigError

__all__ = ["AnalogConfig", "CONFIG_VERSION"]

CONFIG_VERSION = 1


_DEVICES = {"pcm": PCM, "hermes": Hermes, "ideal": Ideal, "tabulated": Tabulated}
_DEVICE_TYPES = (PCM, Hermes, Ideal, Tabulated, MeasuredDevice)
_PARTS = {"mapping": MappingConfig, "periphery": PeripheryConfig, "compensation": CompensationConfig,
          "training": TrainingConfig}


@dataclass(frozen=True)
class AnalogConfig:
    """Everything that decides how a model runs on simulated analog hardware.

    Attributes:
        device: the device model: ``aimc.devices.PCM``, ``aimc.devices.Hermes`` (HERMES chip PCM, ``{kind: hermes,
            num_devices: 1 or 2}``), ``aimc.devices.Ideal``, ``aimc.devices.Tabulated``, or a
            device file loaded with ``aimc.devices.load`` (in a dict: ``device: {file: DEVICE.yaml}``; ``to_dict``
            then records the file, its sha256 and the loaded constants, and ``from_dict`` of that record rebuilds
            the device from the recorded constants without reading the file again).
        mapping: tiles and weight → conductance scaling (:class:`MappingConfig`).
        periphery: DAC / ADC / output noise (:class:`PeripheryConfig`).
        compensation: global drift compensation (:class:`CompensationConfig`).
        training: hardware-aware training noise and clipping (:class:`TrainingConfig`).
        name: free-form label (presets set it to their function name).
    """

    device: PCM | Hermes | Ideal | Tabulated = field(default_factory=PCM)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    periphery: PeripheryConfig = field(default_factory=PeripheryConfig)
    compensation: CompensationConfig = field(default_factory=CompensationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    name: str = "custom"

    def __post_init__(self) -> None:
        p = []
        if not isinstance(self.device, _DEVICE_TYPES):
            p.append(f"device={self.device!r} must be aimc.devices.PCM, Hermes, Ideal or Tabulated (or a device file "
                     "loaded with aimc.devices.load)")
        for key, cls in _PARTS.items():
            if not isinstance(getattr(self, key), cls):
                p.append(f"{key}={getattr(self, key)!r} must be a {cls.__name__}")
        if not p and self.training.learn_input_range and (self.periphery.dac_bits is None
                                                          or self.periphery.input_range != "static"):
            p.append("training.learn_input_range needs a static DAC (periphery.dac_bits set and "
                     "periphery.input_range='static'); switch it off or configure the DAC")
        _raise("AnalogConfig", p)

    # ---- serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-ready) with a ``version`` key; ``from_dict(to_dict())`` gives an equal config."""
        out: dict[str, Any] = {"version": CONFIG_VERSION, "name": self.name, "device": _device_to_dict(self.device)}
        for key in _PARTS:
            part = getattr(self, key)
            out[key] = {f.name: _plain(getattr(part, f.name)) for f in dataclasses.fields(part)}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalogConfig:
        """Build from :meth:`to_dict` output. Unknown keys are errors (listed all at once), never ignored."""
        if not isinstance(data, dict):
            raise ConfigError(f"an AnalogConfig must be a mapping, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(f"config version {version!r} is not supported (this aimc reads version "
                              f"{CONFIG_VERSION}); re-save the config with this aimc version.")
        problems: list[str] = []
        unknown = set(data) - {"device", "name", *_PARTS}
        if unknown:
            problems.append(f"unknown key(s) {sorted(unknown)} (allowed: device, name, {', '.join(_PARTS)})")
        kwargs: dict[str, Any] = {}
        dev = data.get("device", {"kind": "pcm"})
        if not isinstance(dev, dict):
            problems.append(f"device must be a mapping (e.g. {{kind: pcm}} or {{file: DEVICE.yaml}}), got {dev!r}")
        elif "file" in dev:
            kwargs["device"] = _device_from_file_entry(dict(dev), problems)
        else:
            dev = dict(dev)
            kind = dev.pop("kind", "pcm")
            if kind == "measured":
                problems.append("device.kind='measured' cannot be rebuilt from a config: measured conductances are "
                                "attached to a model with aimc.measured.load_measured(model, table)")
            elif kind not in _DEVICES:
                problems.append(f"device.kind={kind!r} is not one of {sorted(_DEVICES)}")
            else:
                kwargs["device"] = _build(_DEVICES[kind], dev, f"device ({kind})", problems)
        for key, part_cls in _PARTS.items():
            if key in data:
                kwargs[key] = _build(part_cls, data[key], key, problems)
        if "name" in data:
            kwargs["name"] = str(data["name"])
        if problems:
            raise ConfigError("invalid AnalogConfig: " + "; ".join(problems) + ".")
        return cls(**kwargs)

    def to_yaml(self) -> str:
        """YAML text of :meth:`to_dict`."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> AnalogConfig:
        """Inverse of :meth:`to_yaml`."""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config YAML does not parse: {e}") from None
        return cls.from_dict(data)


def _device_to_dict(dev: Any) -> dict[str, Any]:
    """The ``device`` entry of :meth:`AnalogConfig.to_dict`.

    A device loaded from a file is recorded as ``{file, sha256, loaded: {kind, constants}}``; every other device
    as ``{kind, constants}``.
    """
    if isinstance(dev, MeasuredDevice):
        return dev.describe()
    if getattr(dev, "file", None) is not None:
        from aimc.devices.files import device_to_dict

        return {"file": dev.file, "sha256": dev.sha256, "loaded": device_to_dict(dev)}
    vals = {f.name: _plain(getattr(dev, f.name)) for f in dataclasses.fields(dev)
            if f.init and f.name not in ("file", "sha256")}
    return {"kind": dev.kind, **vals}


def _device_from_file_entry(dev: dict[str, Any], problems: list[str]) -> Any:
    """``device: {file: P[, sha256: H][, loaded: {...}]}`` → the device.

    * With ``loaded`` (what :meth:`AnalogConfig.to_dict` records): rebuilt from the recorded constants; the file is
      not read again, so a saved model or run loads anywhere.
    * Without: the file is read (relative paths from the current directory); a given ``sha256`` must match.
      Other keys are refused unless they are the defaults of their device kind, which is what merging
      ``{file: ...}`` into a preset's device section leaves behind.
    """
    from aimc.devices.files import device_from_dict, load
    from aimc.errors import AimcError

    path = dev.pop("file")
    sha = dev.pop("sha256", None)
    loaded = dev.pop("loaded", None)
    if not isinstance(path, str) or not path:
        problems.append(f"device.file={path!r} must be the path of a device file (e.g. DEVICE.yaml)")
        return None
    if loaded is not None:
        if dev:
            problems.append(f"device: unknown key(s) {sorted(dev)} next to a recorded device file (allowed: file, "
                            "sha256, loaded)")
            return None
        if not isinstance(sha, str):
            problems.append("device: a recorded device file (with `loaded`) needs its sha256")
            return None
        try:
            return device_from_dict(loaded, file=path, sha256=sha, where="device.loaded")
        except AimcError as e:
            problems.append(str(e).rstrip("."))
            return None
    kind = dev.pop("kind", "pcm")
    cls = _DEVICES.get(kind)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.init} if cls is not None else {}
    clash = sorted(k for k, v in dev.items()
                   if k not in defaults or (tuple(v) if isinstance(v, list) else v) != defaults[k])
    if cls is None or clash:
        problems.append(f"device.file={path!r} gives the whole device, so these key(s) next to it would be ignored: "
                        f"{clash or ['kind=' + repr(kind)]}; remove them (or change the device file)")
        return None
    try:
        device = load(path)
    except AimcError as e:
        problems.append(str(e).rstrip("."))
        return None
    if sha is not None and sha != device.sha256:
        problems.append(f"device file {path!r} has sha256 {device.sha256}, not the {sha} the config asks for: the "
                        "file changed since; re-fit or update the sha256")
        return None
    return device


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _build(cls: type, values: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(values, dict):
        problems.append(f"{where} must be a mapping, got {values!r}")
        return None
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(values) - names
    if unknown:
        problems.append(f"unknown key(s) {sorted(unknown)} in {where} (allowed: {sorted(names)})")
        return None
    vals = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**vals)
    except ConfigError as e:
        problems.append(str(e).rstrip("."))
        return None
