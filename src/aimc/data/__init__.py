"""Data sets for the aimc experiments: 8x8 digits, MNIST and CIFAR-10.

Data files are read from a data directory: the ``root`` argument if given, else the
environment variable ``AIMC_DATA``, else ``../shared/data`` relative to the working
directory, else ``<repo root>/../shared/data``. Nothing is ever downloaded.
"""

from __future__ import annotations

from typing import Any, Callable

from torch.utils.data import Dataset

from aimc.data._common import class_balanced_subset, default_data_root, first_per_class
from aimc.data._safe_pickle import RestrictedUnpickler, safe_load_pickle
from aimc.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10Dataset,
    cifar10,
    random_crop_flip,
)
from aimc.data.small import MNIST_MEAN, MNIST_STD, digits, mnist
from aimc.errors import ConfigError

DATASETS: dict[str, Callable[..., Dataset]] = {"digits": digits, "mnist": mnist, "cifar10": cifar10}
"""Data set name -> loader function, as used by :func:`load_dataset`."""


def load_dataset(name: str, split: str, **kw: Any) -> Dataset:
    """Load a data set split by name.

    Args:
        name: One of "digits", "mnist", "cifar10".
        split: "train" or "test".
        **kw: Passed to the loader (:func:`digits`, :func:`mnist` or :func:`cifar10`).

    Returns:
        The loader's dataset (items: float32 image tensor, int64 label).

    Raises:
        ConfigError: if ``name`` or ``split`` is unknown.
    """
    try:
        loader = DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown data set {name!r}; known data sets: {sorted(DATASETS)}. Pick one of those."
        ) from None
    return loader(split, **kw)


__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10Dataset",
    "DATASETS",
    "MNIST_MEAN",
    "MNIST_STD",
    "RestrictedUnpickler",
    "cifar10",
    "class_balanced_subset",
    "default_data_root",
    "digits",
    "first_per_class",
    "load_dataset",
    "mnist",
    "random_crop_flip",
    "safe_load_pickle",
]
