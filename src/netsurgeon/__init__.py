"""netsurgeon: operate on pretrained networks so they fit a downstream task.

The names below load on first use (PEP 562), so that ``import netsurgeon`` and the command
line's start do not wait for PyTorch: a Ctrl-C in those first seconds then reaches the
command line's handler (one line, no traceback) instead of an import.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from netsurgeon.errors import (
    CheckpointError,
    ConfigError,
    NetsurgeonError,
    TraceError,
    WriteError,
)
from netsurgeon.lazy import lazy_attributes

if TYPE_CHECKING:
    from netsurgeon.distill import DistillationLoss
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

# Where each lazily loaded name lives.
_LAZY = {
    "distill": ("DistillationLoss",),
    "pruning": ("PruneResult", "Pruner", "prune"),
    "pruning.io": ("load", "save"),
    "recalibrate": ("recalibrate_bn",),
    "reconstruction": ("LayerFit", "reconstruct"),
}
# Subpackages reachable as attributes after ``import netsurgeon``, as they were when this
# module imported them eagerly.
__getattr__, __dir__ = lazy_attributes(
    __name__,
    globals(),
    _LAZY,
    submodules=(
        "distill", "fileio", "oov", "pruning", "recalibrate", "reconstruction", "training",
        "vision",
    ),
)  # fmt: skip
