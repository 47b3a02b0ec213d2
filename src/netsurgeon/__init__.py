"""netsurgeon: operate on pretrained networks so they fit a downstream task."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from netsurgeon.distill import DistillationLoss
from netsurgeon.errors import (
    CheckpointError,
    ConfigError,
    NetsurgeonError,
    TraceError,
    WriteError,
)
from netsurgeon.pruning import Pruner, PruneResult, prune
from netsurgeon.pruning.io import load, save
from netsurgeon.recalibrate import recalibrate_bn
from netsurgeon.reconstruction import LayerFit, reconstruct

try:
    __version__ = version("netsurgeon")
except PackageNotFoundError:  # pragma: no cover - only when run from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DistillationLoss",
    "LayerFit",
    "NetsurgeonError",
    "PruneResult",
    "Pruner",
    "TraceError",
    "WriteError",
    "__version__",
    "load",
    "prune",
    "recalibrate_bn",
    "reconstruct",
    "save",
]
