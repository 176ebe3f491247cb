"""CIFAR-10 loading (npz or the standard pickled python batches) and augmentation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from aimc.data._common import (
    check_images,
    check_labels,
    check_split,
    first_per_class,
    missing_file_error,
    read_npz,
    resolve_root,
)
from aimc.data._safe_pickle import safe_load_pickle
from aimc.errors import ConfigError, FileFormatError, ShapeError

CIFAR10_MEAN = (0.485, 0.456, 0.406)
"""Per-channel (RGB) mean on [0, 1] pixels used to train the bundled ResNet-32."""
CIFAR10_STD = (0.229, 0.224, 0.225)
"""Per-channel (RGB) standard deviation on [0, 1] pixels used to train the bundled ResNet-32."""
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)


def random_crop_flip(
    images: torch.Tensor, *, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly crop (after zero padding) and horizontally flip images, independently per image.

    Each image is padded with ``padding`` zeros on every side, a window of the original size
    is cut out at a uniformly random offset in ``[0, 2 * padding]`` (both axes), and the
    window is mirrored left-right with probability 1/2. This is torchvision's
    ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip()`` written with tensor indexing.

    Args:
        images: Shape ``(C, H, W)`` or ``(N, C, H, W)``, any dtype (zeros are in the input's
            units: pass uint8 pixels to pad with black, as the reference CIFAR training did).
        padding: Pixels of zero padding per side, ``>= 0``.
        generator: Source of randomness; ``None`` draws from torch's default generator.

    Returns:
        A new tensor with the same shape and dtype as ``images``.

    Raises:
        ShapeError: if ``images`` is not 3-D or 4-D.
        ConfigError: if ``padding`` is negative.
    """
    if images.dim() not in (3, 4):
        raise ShapeError(
            f"random_crop_flip expects images of shape (C, H, W) or (N, C, H, W), got "
            f"{tuple(images.shape)}; add or remove the batch dimension."
        )
    if padding < 0:
        raise ConfigError(f"padding must be >= 0, got {padding}; use e.g. padding=4.")
    single = images.dim() == 3
    x = images.unsqueeze(0) if single else images
    n, c, h, w = x.shape
    padded = x.new_zeros(n, c, h + 2 * padding, w + 2 * padding)
    padded[:, :, padding : padding + h, padding : padding + w] = x
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    ar_w = torch.arange(w)
    rows = oy[:, None] + torch.arange(h)  # (n, h)
    cols = ox[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (n, w)
    out = padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return out[0] if single else out


class CIFAR10Dataset(Dataset):
    """CIFAR-10 images kept as uint8 and converted (and optionally augmented) per item.

    Items are ``(image, label)``: ``image`` float32 of shape ``(3, 32, 32)`` on [0, 1],
    normalised per channel with :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD` when
    ``normalize`` is true; ``label`` an int64 scalar tensor.

    Augmentation randomness: with ``generator=None`` (the default) every ``__getitem__`` draws
    from torch's default random generator, which :class:`torch.utils.data.DataLoader` seeds
    differently in each worker, so seed with ``torch.manual_seed`` (and the loader's own
    ``generator``) for reproducible runs. With an explicit ``generator`` that generator is used
    instead; it is then reproducible in a single process (``num_workers=0``), but note that
    DataLoader workers would each get a copy of it with the same state.

    Attributes:
        images: uint8 tensor ``(N, 3, 32, 32)``, RGB, channels first.
        labels: int64 tensor ``(N,)`` with values in ``[0, 9]``.
        augment: Whether items are randomly cropped/flipped.
        normalize: Whether items are normalised per channel.
        generator: Augmentation generator, or ``None`` for torch's default one.
        source: Description of the file(s) the data came from.
    """

    classes = CIFAR10_CLASSES

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        augment: bool = False,
        normalize: bool = True,
        generator: torch.Generator | None = None,
        source: str = "",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, 32, 32):
            raise ShapeError(
                f"CIFAR10Dataset needs uint8 images of shape (N, 3, 32, 32), got {images.dtype} "
                f"{tuple(images.shape)}; convert HWC arrays with .permute(0, 3, 1, 2)."
            )
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ShapeError(
                f"CIFAR10Dataset needs one label per image: labels have shape {tuple(labels.shape)}, "
                f"expected ({images.shape[0]},)."
            )
        self.images = images
        self.labels = labels.to(torch.int64)
        self.augment = bool(augment)
        self.normalize = bool(normalize)
        self.generator = generator
        self.source = source
        self._mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(CIFAR10_STD, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).div_(255.0)
        if self.normalize:
            x = x.sub_(self._mean).div_(self._std)
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[index]
        if self.augment:
            img = random_crop_flip(img, padding=4, generator=self.generator)
        return self._to_float(img), self.labels[index]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the whole split at once, without augmentation.

        Returns:
            ``(x, y)``: ``x`` float32 ``(N, 3, 32, 32)`` (normalised if ``normalize``),
            ``y`` int64 ``(N,)``. ``x`` takes 12 KiB per image (600 MB for the train split).
        """
        return self._to_float(self.images), self.labels.clone()

    def __repr__(self) -> str:
        return (f"CIFAR10Dataset(n={len(self)}, augment={self.augment}, normalize={self.normalize}, "
                f"source={self.source!r})")


def _batch_dir(root: Path) -> Path | None:
    for cand in (root, root / BATCH_DIR):
        if any((cand / f).is_file() for f in TRAIN_BATCHES + TEST_BATCHES):
            return cand
    return None


def _field(batch: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load_pickle(path)
    if not isinstance(batch, dict):
        raise FileFormatError(
            f"{path} holds a {type(batch).__name__}, expected a dict with keys b'data' and "
            f"b'labels' (a CIFAR-10 python batch); re-extract cifar-10-python.tar.gz."
        )
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if data is None or labels is None:
        raise FileFormatError(
            f"{path} lacks b'data' or b'labels': found keys {sorted(map(repr, batch))}, expected "
            f"b'data' (uint8 (N, 3072)) and b'labels' (list of N ints); re-extract the archive."
        )
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise FileFormatError(
            f"{path}: b'data' is {found}, expected a uint8 array of shape (N, 3072) "
            f"(row-major 3x32x32 CHW images); the file is not a CIFAR-10 python batch."
        )
    try:
        lab = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: b'labels' is not a list of ints ({exc}).") from exc
    if lab.dtype == object:
        raise FileFormatError(f"{path}: b'labels' is not a list of ints; the file is corrupt.")
    lab = check_labels(lab, data.shape[0], 10, "labels", path)
    return data.reshape(-1, 3, 32, 32), lab


def _load_cifar_arrays(split: str, root: Path, origin: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Return uint8 CHW images (N, 3, 32, 32), int64 labels (N,) and a source description."""
    npz_path = root / f"cifar10_{split}.npz"
    if npz_path.is_file():
        arrays = read_npz(npz_path, ("x", "y"))
        x = check_images(arrays["x"], (32, 32, 3), "x", npz_path)
        y = check_labels(arrays["y"], x.shape[0], 10, "y", npz_path)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y, str(npz_path)
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    bdir = _batch_dir(root)
    if bdir is None:
        looked = [npz_path] + [d / n for d in (root, root / BATCH_DIR) for n in names]
        raise missing_file_error(f"CIFAR-10 {split} split", looked, origin)
    missing = [n for n in names if not (bdir / n).is_file()]
    if missing:
        raise FileFormatError(
            f"{bdir} holds CIFAR-10 python batches but lacks {missing} needed for the {split} "
            f"split (expected {list(names)}); re-extract cifar-10-python.tar.gz there."
        )
    parts = [_read_batch(bdir / n) for n in names]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, f"{bdir}/{{{','.join(names)}}}"


def cifar10(
    split: str,
    *,
    root: str | os.PathLike[str] | None = None,
    augment: bool | None = None,
    normalize: bool = True,
    limit: int | None = None,
    generator: torch.Generator | None = None,
) -> CIFAR10Dataset:
    """Load a CIFAR-10 split.

    Reads ``<root>/cifar10_<split>.npz`` (keys ``x`` uint8 ``(N, 32, 32, 3)`` HWC RGB and ``y``
    uint8 ``(N,)``) if it exists; otherwise the standard pickled python batches
    (``data_batch_1`` .. ``data_batch_5`` for train, ``test_batch`` for test) in ``root`` or
    ``root/cifar-10-batches-py``, read with a restricted unpickler that refuses every global
    except numpy's array reconstruction.

    Args:
        split: "train" or "test".
        root: Data directory; ``None`` uses :func:`aimc.data.default_data_root`.
        augment: Random crop (4-pixel black padding) + horizontal flip per item; defaults to
            True for "train" and False for "test".
        normalize: Normalise per channel with :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD`.
        limit: Keep only a fixed class-balanced subset of this many images: the first
            ``limit // 10`` images of each class in file order (the remainder, if any, one
            each to the lowest classes). ``None`` keeps all.
        generator: Augmentation random generator (see :class:`CIFAR10Dataset`).

    Returns:
        A :class:`CIFAR10Dataset` with float32 ``(3, 32, 32)`` images and int64 labels.

    Raises:
        ConfigError: for an unknown split or a non-positive ``limit``.
        FileFormatError: if no data is found, or the files are corrupt, unsafe or malformed.
    """
    check_split(split)
    root_path, origin = resolve_root(root)
    x, y, source = _load_cifar_arrays(split, root_path, origin)
    if limit is not None:
        keep = first_per_class(y, limit)
        x, y = x[keep], y[keep]
    if augment is None:
        augment = split == "train"
    return CIFAR10Dataset(
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(y),
        augment=augment,
        normalize=normalize,
        generator=generator,
        source=source,
    )
