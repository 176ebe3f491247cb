"""Shared helpers of :mod:`aimc.data`: data-root lookup, npz reading, label checks, subsets."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aimc.errors import ConfigError, DataError, FileFormatError

ENV_VAR = "AIMC_DATA"
SPLITS = ("train", "test")
# src/aimc/data/_common.py -> parents[3] is the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[3]


def _default_candidates() -> list[Path]:
    return [Path.cwd() / ".." / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data"]


def default_data_root() -> Path:
    """Return the directory the data loaders read from when ``root`` is not given.

    The lookup order is: the environment variable ``AIMC_DATA`` (used as is, even if the
    directory does not exist, so that a wrong setting is reported rather than silently
    ignored); else ``../shared/data`` relative to the current working directory; else
    ``<repo root>/../shared/data`` where the repo root is three levels above this package.
    If neither default exists, the first one is returned and the loaders report which
    paths were searched.

    Returns:
        The data directory as a :class:`pathlib.Path`.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    candidates = _default_candidates()
    for cand in candidates:
        if cand.is_dir():
            return cand.resolve()
    return candidates[0]


def resolve_root(root: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """Resolve ``root`` and describe where it came from (for error messages).

    Args:
        root: An explicit directory, or ``None`` to use :func:`default_data_root`.

    Returns:
        ``(directory, origin)`` where ``origin`` is a human-readable explanation.
    """
    if root is not None:
        return Path(root).expanduser(), "given by the root argument"
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser(), f"given by the environment variable {ENV_VAR}"
    searched = ", ".join(str(c.resolve()) for c in _default_candidates())
    return default_data_root(), f"default search ({searched})"


def missing_file_error(what: str, looked_for: Sequence[Path], origin: str) -> FileFormatError:
    """Build the error raised when no usable data file was found."""
    listed = "\n  ".join(str(p) for p in looked_for)
    return FileFormatError(
        f"cannot find the {what}: none of these exist:\n  {listed}\n"
        f"(data directory {origin}). Fix: put the file there, pass root=<directory> to the "
        f"loader, or set the environment variable {ENV_VAR} to the directory holding it."
    )


def check_split(split: str) -> str:
    """Return ``split`` if it is "train" or "test", else raise :class:`ConfigError`."""
    if split not in SPLITS:
        raise ConfigError(
            f"unknown split {split!r}: the data sets only have the splits {SPLITS}; "
            f"pass split='train' or split='test'."
        )
    return split


def read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the arrays ``keys`` from an ``.npz`` file eagerly, without allowing pickles.

    Args:
        path: The ``.npz`` file.
        keys: The array names that must be present.

    Returns:
        A dict from key to the loaded array.

    Raises:
        FileFormatError: if the file is missing, truncated, corrupt, not an npz archive
            or lacks one of ``keys``.
    """
    if not path.is_file():
        raise FileFormatError(f"data file {path} does not exist; check the path or the root argument.")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise FileFormatError(
                f"{path} is a single .npy array, expected an .npz archive with keys {list(keys)}; "
                f"re-create it with np.savez(path, {', '.join(f'{k}=...' for k in keys)})."
            )
        with loaded as npz:
            found = sorted(npz.files)
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise FileFormatError(
                    f"{path} lacks the array(s) {missing}: expected keys {list(keys)}, found {found}; "
                    f"re-create the file with the expected keys."
                )
            return {k: npz[k] for k in keys}
    except FileFormatError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise FileFormatError(
            f"cannot read {path}: it is truncated, corrupt or not an npz archive "
            f"({type(exc).__name__}: {exc}); re-download or re-create the file."
        ) from exc


def check_images(arr: np.ndarray, shape: tuple[int, ...], name: str, source: Path | str) -> np.ndarray:
    """Check that ``arr`` is uint8 of shape ``(N, *shape)`` with ``N >= 1``."""
    if arr.dtype != np.uint8 or arr.ndim != 1 + len(shape) or tuple(arr.shape[1:]) != shape:
        raise FileFormatError(
            f"{source}: array {name!r} has shape {tuple(arr.shape)} and dtype {arr.dtype}, "
            f"expected shape (N, {', '.join(map(str, shape))}) and dtype uint8; "
            f"the file is not in the expected format, re-create it."
        )
    if arr.shape[0] == 0:
        raise FileFormatError(f"{source}: array {name!r} holds no images; the file is empty, re-create it.")
    return arr


def check_labels(arr: np.ndarray, n: int, num_classes: int, name: str, source: Path | str) -> np.ndarray:
    """Check integer labels of shape ``(n,)`` in ``[0, num_classes)``; return them as int64."""
    arr = np.asarray(arr)
    if arr.ndim != 1 or arr.shape[0] != n or not np.issubdtype(arr.dtype, np.integer):
        raise FileFormatError(
            f"{source}: labels {name!r} have shape {tuple(arr.shape)} and dtype {arr.dtype}, "
            f"expected an integer array of shape ({n},) (one label per image); re-create the file."
        )
    if n and (arr.min() < 0 or arr.max() >= num_classes):
        raise FileFormatError(
            f"{source}: labels {name!r} range over [{arr.min()}, {arr.max()}], expected class "
            f"indices in [0, {num_classes - 1}]; the file is corrupt or of another data set."
        )
    return arr.astype(np.int64)


def _labels_numpy(labels: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise DataError(
            f"labels must be a 1-D integer array, got shape {arr.shape} and dtype {arr.dtype}; "
            f"pass the class index of each sample."
        )
    return arr.astype(np.int64)


def _quotas(counts: np.ndarray, n: int, order: np.ndarray) -> np.ndarray:
    """Split ``n`` as evenly as possible over classes, capped by ``counts``.

    Leftover units (when ``n`` is not divisible) go to classes in ``order``.
    """
    quota = np.zeros_like(counts)
    remaining = n
    while remaining > 0:
        active = [c for c in order if quota[c] < counts[c]]
        share = remaining // len(active)
        if share == 0:
            for c in active[:remaining]:
                quota[c] += 1
            break
        for c in active:
            take = min(share, counts[c] - quota[c])
            quota[c] += take
            remaining -= take
    return quota


def _check_n(n: int, total: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"{what} must be a positive integer, got {n!r}; pass e.g. {what}=1000.")
    if total == 0:
        raise DataError(f"cannot take a subset of an empty label array ({what}={n}); check the data set.")


def class_balanced_subset(
    labels: torch.Tensor | np.ndarray | Sequence[int], n: int, *, seed: int
) -> np.ndarray:
    """Pick ``n`` sample indices spread as evenly as possible over the classes, at random.

    Every class present in ``labels`` gets ``n // k`` samples (``k`` classes), the remainder
    goes one each to randomly chosen classes; a class with too few samples gives all it has
    and the others make up the difference. The choice depends only on ``labels`` and ``seed``.

    Args:
        labels: Integer class labels, shape ``(N,)``.
        n: Number of indices to return; if ``n >= N`` all indices are returned.
        seed: Seed of the numpy random generator used for the choice.

    Returns:
        Sorted int64 indices into ``labels``, shape ``(min(n, N),)``.

    Raises:
        ConfigError: if ``n`` is not a positive integer.
        DataError: if ``labels`` is empty or not a 1-D integer array.
    """
    arr = _labels_numpy(labels)
    _check_n(n, arr.size, "n")
    if n >= arr.size:
        return np.arange(arr.size, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(arr, return_counts=True)
    quota = _quotas(counts, int(n), rng.permutation(len(classes)))
    picked = [
        rng.choice(np.flatnonzero(arr == c), size=q, replace=False) for c, q in zip(classes, quota) if q
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def first_per_class(labels: torch.Tensor | np.ndarray | Sequence[int], n: int) -> np.ndarray:
    """Pick the first samples of each class in file order, ``n`` in total, balanced over classes.

    Deterministic variant of :func:`class_balanced_subset`: each class gives its first
    ``n // k`` samples, the remainder goes one each to the lowest class indices.

    Args:
        labels: Integer class labels, shape ``(N,)``.
        n: Number of indices to return; if ``n >= N`` all indices are returned.

    Returns:
        Sorted int64 indices, shape ``(min(n, N),)``.
    """
    arr = _labels_numpy(labels)
    _check_n(n, arr.size, "limit")
    if n >= arr.size:
        return np.arange(arr.size, dtype=np.int64)
    classes, counts = np.unique(arr, return_counts=True)
    quota = _quotas(counts, int(n), np.arange(len(classes)))
    picked = [np.flatnonzero(arr == c)[:q] for c, q in zip(classes, quota) if q]
    return np.sort(np.concatenate(picked)).astype(np.int64)
