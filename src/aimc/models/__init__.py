"""Model zoo: CIFAR ResNets (option A), ImageNet ResNet-34, and small digits/MNIST models.

Every weight lives in an ``nn.Conv2d`` or ``nn.Linear`` module, so these layers can be
swapped for analog ones by attribute name; residual additions, shortcuts and pooling are
plain tensor operations.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from aimc.errors import ConfigError
from aimc.models.resnet_cifar import (
    BasicBlockA,
    OptionAShortcut,
    ResNetCifar,
    load_pretrained_resnet32,
    resnet20_cifar,
    resnet32_cifar,
    resnet44_cifar,
    resnet56_cifar,
    resnet_cifar,
)
from aimc.models.resnet_imagenet import BasicBlock, ResNetImageNet, resnet34_imagenet
from aimc.models.small import MnistLSTM, digits_cnn, mnist_cnn, mnist_lstm, mnist_mlp

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet20_cifar": resnet20_cifar,
    "resnet32_cifar": resnet32_cifar,
    "resnet44_cifar": resnet44_cifar,
    "resnet56_cifar": resnet56_cifar,
    "resnet34_imagenet": resnet34_imagenet,
    "digits_cnn": digits_cnn,
    "mnist_mlp": mnist_mlp,
    "mnist_cnn": mnist_cnn,
    "mnist_lstm": mnist_lstm,
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`get_model`."""


def get_model(name: str, **kw: Any) -> nn.Module:
    """Build a freshly initialised model by name.

    Args:
        name: One of :data:`MODEL_NAMES`.
        **kw: Passed to the builder (e.g. ``num_classes``, ``hidden``).

    Returns:
        The model (float32, CPU, train mode).

    Raises:
        ConfigError: if ``name`` is unknown or ``kw`` does not fit the builder.
    """
    try:
        builder = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {name!r}; known models: {list(MODEL_NAMES)}.") from None
    try:
        return builder(**kw)
    except TypeError as exc:
        raise ConfigError(f"bad arguments {sorted(kw)} for model {name!r}: {exc}.") from exc


__all__ = [
    "MODEL_NAMES",
    "BasicBlock",
    "BasicBlockA",
    "MnistLSTM",
    "OptionAShortcut",
    "ResNetCifar",
    "ResNetImageNet",
    "digits_cnn",
    "get_model",
    "load_pretrained_resnet32",
    "mnist_cnn",
    "mnist_lstm",
    "mnist_mlp",
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet34_imagenet",
    "resnet44_cifar",
    "resnet56_cifar",
    "resnet_cifar",
]
