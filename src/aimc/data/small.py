"""Small image data sets: scikit-learn's 8x8 digits and MNIST."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import TensorDataset

from aimc.data._common import (
    check_images,
    check_labels,
    check_split,
    first_per_class,
    missing_file_error,
    read_npz,
    resolve_root,
)
from aimc.errors import ConfigError

MNIST_MEAN = 0.1307
"""Mean of the MNIST training pixels on [0, 1]."""
MNIST_STD = 0.3081
"""Standard deviation of the MNIST training pixels on [0, 1]."""
MNIST_FILE = "mnist.npz"


def digits(split: str = "train", *, seed: int = 0, test_fraction: float = 0.25) -> TensorDataset:
    """Load scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

    The images are split into train and test with a stratified split fixed by ``seed``,
    scaled to [0, 1] (divided by 16) and standardised with the mean and standard deviation
    of all pixels of the *train* split (so both splits use the same statistics).

    Args:
        split: "train" or "test".
        seed: Seed of the stratified split (same seed -> same split).
        test_fraction: Fraction of images in the test split, in (0, 1).

    Returns:
        A :class:`~torch.utils.data.TensorDataset` of float32 images ``(N, 1, 8, 8)`` and
        int64 labels ``(N,)`` in ``[0, 9]``; ``N`` is 1347 (train) / 450 (test) by default.

    Raises:
        ConfigError: for an unknown split or a ``test_fraction`` outside (0, 1).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_split(split)
    if not isinstance(test_fraction, (float, int)) or not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(
            f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}; "
            f"use e.g. test_fraction=0.25."
        )
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=float(test_fraction), random_state=seed, stratify=labels
    )
    mean = float(images[idx_train].mean())
    std = float(images[idx_train].std())
    idx = np.sort(idx_train if split == "train" else idx_test)
    x = (images[idx] - mean) / std
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1),
        torch.from_numpy(labels[idx]),
    )


def mnist(
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> TensorDataset:
    """Load MNIST from ``<root>/mnist.npz``.

    The file must hold ``x_train`` uint8 ``(60000, 28, 28)``, ``y_train`` ``(60000,)``,
    ``x_test`` uint8 ``(10000, 28, 28)`` and ``y_test`` ``(10000,)`` (any number of images is
    accepted). Pixels are divided by 255 and normalised with :data:`MNIST_MEAN` and
    :data:`MNIST_STD`.

    Args:
        split: "train" or "test".
        root: Data directory; ``None`` uses :func:`aimc.data.default_data_root`.
        limit: Keep only the first ``limit // 10`` images of each class (file order);
            ``None`` keeps all.

    Returns:
        A :class:`~torch.utils.data.TensorDataset` of float32 images ``(N, 1, 28, 28)`` and
        int64 labels ``(N,)``.

    Raises:
        ConfigError: for an unknown split or a non-positive ``limit``.
        FileFormatError: if the file is missing, corrupt or has wrong keys/shapes/labels.
    """
    check_split(split)
    root_path, origin = resolve_root(root)
    path = root_path / MNIST_FILE
    if not path.is_file():
        raise missing_file_error("MNIST file", [path], origin)
    xk, yk = f"x_{split}", f"y_{split}"
    arrays = read_npz(path, (xk, yk))
    x = check_images(arrays[xk], (28, 28), xk, path)
    y = check_labels(arrays[yk], x.shape[0], 10, yk, path)
    if limit is not None:
        keep = first_per_class(y, limit)
        x, y = x[keep], y[keep]
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)
    xt = xt.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)
    return TensorDataset(xt, torch.from_numpy(y))
