"""Measure what a model costs: parameters, MACs, size on disk and latency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["as_input_tuple", "count_macs", "count_params"]


def as_input_tuple(example_inputs: Any) -> tuple[Any, ...]:
    """Normalise ``example_inputs`` (a tensor or a sequence of inputs) to a tuple."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, Sequence) and not isinstance(example_inputs, str):
        return tuple(example_inputs)
    return (example_inputs,)


def count_params(model: nn.Module) -> int:
    """Number of parameters, each shared parameter counted once."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs``.

    Counted with :mod:`torch.utils.flop_counter`, which reports 2 FLOPs per MAC for
    convolutions and matrix products; the model runs in eval mode without gradients and its
    training flags are restored afterwards.
    """
    inputs = as_input_tuple(example_inputs)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        for module, mode in modes.items():
            module.training = mode
    return int(counter.get_total_flops()) // 2
