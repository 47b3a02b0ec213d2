"""Pruning filters whose channels are exactly zero must not change the outputs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from netsurgeon.pruning import Filters, prune, trace_graph
from tests.pruning.nets import ConcatNet, ResNet, SeqNet


def _randomise_norms(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)


def _zero_half_of_every_group(model: nn.Module, x: torch.Tensor) -> int:
    """Make half the channels of every prunable group output exactly zero; return the count."""
    graph = trace_graph(model, x)
    keep = {}
    removed_total = 0
    for group in graph.prunable_groups():
        removed = torch.randperm(group.size)[: group.size // 2]
        mask = torch.ones(group.size, dtype=torch.bool)
        mask[removed] = False
        keep[group.id] = mask.nonzero().flatten()
        removed_total += removed.numel()
        with torch.no_grad():
            for name, offset, _length in group.slices:
                module = graph.source_module(name)
                module.weight[removed + offset] = 0
                if module.bias is not None:
                    module.bias[removed + offset] = 0
    for record in graph.consumers.values():
        if record.role != "member":
            continue
        kept = graph.positions(record.channels, keep)
        if kept is None:
            continue
        mask = torch.ones(record.channels.size, dtype=torch.bool)
        mask[kept] = False
        with torch.no_grad():
            for name in ("weight", "bias"):
                param = getattr(record.module, name, None)
                if param is not None:
                    param[mask] = 0
    return removed_total


def _weight_l1(filters: Filters) -> torch.Tensor:
    return filters.module.weight.detach().flatten(1).abs().sum(1)


def _cifar_resnet20() -> nn.Module:
    from netsurgeon.vision import cifar_resnet20

    return cifar_resnet20()


@pytest.mark.parametrize("net", [SeqNet, ResNet, ConcatNet, _cifar_resnet20])
def test_pruning_zero_channels_keeps_outputs(net: Callable[[], nn.Module]) -> None:
    model = net().eval()
    _randomise_norms(model)
    x = torch.randn(2, 3, 8, 8)
    removed = _zero_half_of_every_group(model, x)
    assert removed > 0
    with torch.no_grad():
        expected = model(x)
    params_before = sum(p.numel() for p in model.parameters())

    result = prune(model, x, amount=0.5, criterion=_weight_l1)

    with torch.no_grad():
        actual = model(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in model.parameters()) == result.after.params < params_before
    assert sum(old - new for old, new in result.channels.values()) > 0


def test_residual_members_share_indices() -> None:
    model = ResNet().eval()
    x = torch.randn(1, 3, 8, 8)
    graph = trace_graph(model, x)
    stage1 = graph.source_group("conv1")
    assert graph.source_group("layer1.0.conv2") == stage1
    assert graph.source_group("layer1.1.conv2") == stage1
    assert graph.source_group("layer1.0.se2") == stage1  # squeeze-excitation multiplies
    stage2 = graph.source_group("layer2.0.down.0")
    assert graph.source_group("layer2.1.conv2") == stage2 != stage1
    assert graph.source_group("layer1.0.conv1") not in (stage1, stage2)
    # The classifier's outputs reach the model's output and are never pruned.
    assert not graph.groups[graph.source_group("fc")].prunable


def test_concat_offsets_per_input() -> None:
    model = ConcatNet().eval()
    x = torch.randn(1, 3, 8, 8)
    prune(model, x, amount=0.5, criterion="l1")
    assert model.stem.out_channels == 4
    assert model.grow1.out_channels == 2
    assert model.norm1.num_features == 6
    assert model.grow2.in_channels == 6
    assert model.branch_a.in_channels == 4 + 2 + 3
    assert model.norm2.num_features == model.head.in_channels == 2 + 3
    assert model(x).shape == (1, 5)
