"""Zeroing channels for the exactness benchmarks: filters that output exactly zero should go
without changing the model's outputs."""

from __future__ import annotations

import torch
from torch import nn

from netsurgeon.pruning import PruningGraph
from netsurgeon.pruning.surgery import zero_filters


def zero_half(model: nn.Module, graph: PruningGraph) -> int:
    """Zero half of every prunable channel group (the same share of each of its equal parts,
    in whole blocks); returns the count of channels zeroed."""
    zeroed = 0
    keep: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for group in graph.prunable_groups():
            width = group.size // group.divisor
            blocks = width // group.block
            chosen = torch.randperm(blocks)[: blocks // 2]
            part = (chosen[:, None] * group.block + torch.arange(group.block)).flatten()
            removed = torch.cat([part + j * width for j in range(group.divisor)])
            mask = torch.ones(group.size, dtype=torch.bool)
            mask[removed] = False
            keep[group.id] = mask.nonzero().flatten()
            zeroed += removed.numel()
            for name, offset, _length in group.slices:
                zero_filters(graph.source_module(name), removed + offset)
        for record in graph.consumers.values():
            kept = graph.positions(record.channels, keep) if record.role == "member" else None
            if kept is None:
                continue
            mask = torch.ones(record.channels.size, dtype=torch.bool)
            mask[kept] = False
            for name in ("weight", "bias"):
                param = getattr(record.module, name, None)
                if param is not None:
                    param[mask] = 0
    return zeroed


def randomise_norms(model: nn.Module) -> None:
    """Draw the scales and shifts of batch and group norms, and the statistics of batch norms,
    at random: with their initial values (1 and 0) zeroed channels would tell little."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                if m.bias is not None:  # timm's MetaFormer norms have a scale only
                    m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
