"""Errors aimc raises on purpose.

Every message says what went wrong, why, and how to fix it. Catch :class:`AimcError` to catch them all.
"""

from __future__ import annotations


class AimcError(Exception):
    """Base class of every error aimc raises on purpose."""


class ConfigError(AimcError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class UnsupportedLayerError(AimcError, TypeError):
    """A layer cannot be made analog (or a layer option is not supported)."""


class StateError(AimcError, RuntimeError):
    """An operation was called in the wrong order (e.g. ``at_time`` before ``program``)."""


class ShapeError(AimcError, ValueError):
    """A tensor has the wrong shape."""


class NonFiniteError(AimcError, ValueError):
    """A tensor holds NaN or Inf where finite values are required."""


class FileFormatError(AimcError, ValueError):
    """A file is missing, truncated, corrupt or not of the expected format."""


class DataError(AimcError, ValueError):
    """An evaluation or calibration data set is empty or malformed."""


class ClusterError(AimcError, RuntimeError):
    """A Ray cluster cannot be reached, or a sweep task failed on every retry."""
