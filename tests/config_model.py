"""Stand-ins for architectures that cannot be built without arguments (for aimc.save / aimc.load's ``arch``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn


@dataclass
class TinyConfig:
    """A Hugging Face-style configuration: ``to_dict`` / ``from_dict``."""

    width: int = 4
    classes: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TinyConfig:
        return cls(**d)


class TinyConfigNet(nn.Sequential):
    """Built from a config object, as ``transformers`` models are: ``TinyConfigNet(config)``."""

    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__(nn.Linear(6, config.width), nn.ReLU(), nn.Linear(config.width, config.classes))
        self.config = config


def mlp(width: int, classes: int = 3) -> nn.Module:
    """A builder with a required argument and no config object."""
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, classes))
