"""Structural filter pruning for CNNs.

The pieces follow Torch-Pruning's split of concerns: :mod:`~netsurgeon.pruning.graph` traces
what must be pruned together, :mod:`~netsurgeon.pruning.criteria` scores filters,
:mod:`~netsurgeon.pruning.surgery` cuts layers, :mod:`~netsurgeon.pruning.pruner` plans, and
:mod:`~netsurgeon.pruning.stats` measures.
"""

from netsurgeon.pruning.criteria import CRITERIA, Filters, get_criterion
from netsurgeon.pruning.graph import ChannelGroup, PruningGraph, register_passthrough, trace_graph
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
