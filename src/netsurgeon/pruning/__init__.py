"""Structural filter pruning for CNNs.

The pieces follow Torch-Pruning's split of concerns: :mod:`~netsurgeon.pruning.graph` traces
what must be pruned together, :mod:`~netsurgeon.pruning.criteria` scores filters,
:mod:`~netsurgeon.pruning.surgery` cuts layers, :mod:`~netsurgeon.pruning.pruner` plans, and
:mod:`~netsurgeon.pruning.stats` measures. The names below load on first use, so that the
command line's option definitions (:mod:`~netsurgeon.pruning.cli`) import without PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsurgeon.lazy import lazy_attributes

if TYPE_CHECKING:
    from netsurgeon.pruning.criteria import CRITERIA, Filters, get_criterion
    from netsurgeon.pruning.graph import (
        ChannelGroup,
        PruningGraph,
        register_passthrough,
        trace_graph,
    )
    from netsurgeon.pruning.pruner import Footprint, Pruner, PruneResult, prune
    from netsurgeon.pruning.stats import (
        ModelStats,
        count_macs,
        count_params,
        format_comparison,
        measure_latency,
        state_size_bytes,
    )

__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "Filters",
    "Footprint",
    "ModelStats",
    "PruneResult",
    "Pruner",
    "PruningGraph",
    "count_macs",
    "count_params",
    "format_comparison",
    "get_criterion",
    "measure_latency",
    "prune",
    "register_passthrough",
    "state_size_bytes",
    "trace_graph",
]

_MODULES = {
    "criteria": ("CRITERIA", "Filters", "get_criterion"),
    "graph": ("ChannelGroup", "PruningGraph", "register_passthrough", "trace_graph"),
    "pruner": ("Footprint", "Pruner", "PruneResult", "prune"),
    "stats": (
        "ModelStats", "count_macs", "count_params", "format_comparison", "measure_latency",
        "state_size_bytes",
    ),
}  # fmt: skip
__getattr__, __dir__ = lazy_attributes(
    __name__,
    globals(),
    _MODULES,
    submodules=("cli", "criteria", "graph", "io", "pruner", "stats", "surgery"),
)
