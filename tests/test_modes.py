"""Keeping a model's modes and buffers across a temporary change."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from netsurgeon.modes import kept_buffers, kept_modes


class _StrictLoad(nn.BatchNorm2d):
    """Refuses a state dict without a checkpoint's metadata, as torchvision's MNASNet does."""

    def _load_from_state_dict(self, *args: Any) -> None:
        raise ValueError("version should be set to 1 or 2 instead of None")


def test_kept_modes_restores_each_modules_own_flag() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    model[1].eval()  # a frozen norm inside a training model
    with kept_modes(model):
        model.eval()
    assert model.training and not model[1].training


def test_kept_buffers_restores_statistics_in_place_even_on_error() -> None:
    """Before: ``load_state_dict`` put them back, which MNASNet's own loading refused."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), _StrictLoad(2)).train()
    norm = model[1]
    mean, count = norm.running_mean, norm.num_batches_tracked
    with pytest.raises(RuntimeError, match="stop"), kept_buffers(model):
        model(torch.randn(4, 1, 3, 3))  # updates the statistics and the count
        assert int(norm.num_batches_tracked) == 1
        norm.running_var = torch.full((2,), 7.0)  # a forward that replaces a buffer
        raise RuntimeError("stop")
    assert norm.running_mean is mean and torch.equal(mean, torch.zeros(2))
    assert norm.num_batches_tracked is count and int(count) == 0
    assert torch.equal(norm.running_var, torch.ones(2))
