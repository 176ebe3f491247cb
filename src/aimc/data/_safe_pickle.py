"""A restricted unpickler for the pickled CIFAR-10 python batches.

The standard ``cifar-10-batches-py`` files are pickles; unpickling untrusted pickles can run
arbitrary code, because a pickle may name any importable callable (``os.system``,
``builtins.eval`` ...) and call it. :class:`RestrictedUnpickler` refuses every global except
the three numpy callables needed to rebuild a plain ``ndarray``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from aimc.errors import FileFormatError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# (module, name) -> object. Resolved here, never imported from the pickle's text.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global that :class:`RestrictedUnpickler` does not allow."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refused global {module}.{name}")
        self.module = module
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global except numpy's ndarray reconstruction helpers.

    Allowed: ``numpy.core.multiarray._reconstruct``, ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``. Builtin containers and scalars (dict, list, bytes,
    str, int, float, tuple) need no global and load as usual. Any other global raises
    :class:`RefusedGlobalError` before anything is imported or called.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - documented above
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobalError(module, name) from None


def safe_load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` and ``encoding="bytes"``.

    Args:
        path: A pickle file written by Python 2 or 3 (e.g. a CIFAR-10 python batch).

    Returns:
        The unpickled object (for a CIFAR-10 batch a dict with ``bytes`` keys). Callers must
        still check types, shapes and dtypes: e.g. an ``object``-dtype array can only hold
        objects this unpickler built itself, which is harmless but never a valid batch.

    Raises:
        FileFormatError: if the file cannot be opened, is truncated or corrupt, or names a
            global other than the allowed numpy ones (the message names the refused global).
    """
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, encoding="bytes").load()
    except RefusedGlobalError as exc:
        raise FileFormatError(
            f"refusing to unpickle {path}: it references the global '{exc.module}.{exc.name}', "
            f"which a CIFAR-10 python batch never contains (only dict/list/bytes/int and numpy "
            f"arrays). The file is not a genuine CIFAR-10 batch and may be malicious; replace it "
            f"with the original cifar-10-python.tar.gz contents or use the cifar10_<split>.npz files."
        ) from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, UnicodeDecodeError) as exc:
        raise FileFormatError(
            f"cannot unpickle {path}: the file is truncated, corrupt or not a pickle "
            f"({type(exc).__name__}: {exc}); re-extract it from cifar-10-python.tar.gz."
        ) from exc
