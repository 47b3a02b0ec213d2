"""netsurgeon: operate on pretrained networks so they fit a downstream task."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from netsurgeon.errors import CheckpointError, ConfigError, NetsurgeonError, TraceError

try:
    __version__ = version("netsurgeon")
except PackageNotFoundError:  # pragma: no cover - only when run from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "NetsurgeonError",
    "TraceError",
    "__version__",
]
