"""The two questions every collective step asks of ``torch.distributed``, in one place.

Kept free of netsurgeon imports, so that the pruning criteria, the data loaders and the
training loop can all use it without import cycles.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = ["broadcast_from_rank0", "is_distributed"]


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` job of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def broadcast_from_rank0(tensors: Iterable[torch.Tensor]) -> None:
    """Copy rank 0's values into every process's ``tensors`` (in place); alone, nothing."""
    if not is_distributed():
        return
    for tensor in tensors:
        dist.broadcast(tensor, src=0)
