"""Keeping a model's state across a temporary change: each module's own train/eval flag, and
its buffers.

``model.train(was_training)`` restores only one flag for the whole tree, so a model with a
frozen (eval-mode) BatchNorm inside a training-mode network would come back changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["kept_buffers", "kept_modes"]


@contextmanager
def kept_modes(*models: nn.Module) -> Iterator[None]:
    """Restore the ``training`` flag of every module of ``models`` on exit, even on error."""
    modes = {m: m.training for model in models for m in model.modules()}
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


@contextmanager
def kept_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``model`` (batch-norm statistics and counters) on exit, even on
    error: a training-mode pass updates them, and so does tracing a forward that updates them
    itself (``self.num_batches_tracked.add_(1)`` in a BatchNorm subclass).

    Buffers are copied back in place, not through ``load_state_dict``, whose per-module hooks
    may expect a checkpoint's metadata (torchvision's MNASNet does).
    """
    saved = [
        (module, name, buffer, buffer.clone())
        for module in model.modules()
        for name, buffer in module._buffers.items()
        if buffer is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, buffer, value in saved:
                if module._buffers.get(name) is buffer and buffer.shape == value.shape:
                    buffer.copy_(value)
                else:  # replaced or resized meanwhile
                    module._buffers[name] = value
