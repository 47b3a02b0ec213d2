"""The two questions every collective step asks of ``torch.distributed``, in one place.

Kept free of netsurgeon imports, so that the pruning criteria, the data loaders and the
training loop can all use it without import cycles.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "broadcast_from_rank0",
    "gather_objects",
    "is_distributed",
    "own_entry",
    "rank_and_size",
]

_T = TypeVar("_T")


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` job of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes; ``(0, 1)`` alone."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


@torch.no_grad()
def broadcast_from_rank0(tensors: Iterable[torch.Tensor]) -> None:
    """Copy rank 0's values into every process's ``tensors`` (in place); alone, nothing."""
    if not is_distributed():
        return
    for tensor in tensors:
        dist.broadcast(tensor, src=0)


def gather_objects(value: _T) -> list[_T]:
    """Every process's ``value`` (picklable), in rank order, on every process; alone,
    ``[value]``. A collective call: every process must make it."""
    if not is_distributed():
        return [value]
    gathered: list[_T] = [value] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def own_entry(per_rank: Sequence[_T] | None, fallback: _T) -> _T:
    """This process's entry of a list :func:`gather_objects` gave (and a file kept);
    ``fallback`` when there is none, or it came from another number of processes."""
    rank, size = rank_and_size()
    return per_rank[rank] if per_rank and len(per_rank) == size else fallback
