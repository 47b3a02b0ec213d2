"""Keeping each module's own train/eval flag across a temporary change of mode.

``model.train(was_training)`` restores only one flag for the whole tree, so a model with a
frozen (eval-mode) BatchNorm inside a training-mode network would come back changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["kept_modes"]


@contextmanager
def kept_modes(*models: nn.Module) -> Iterator[None]:
    """Restore the ``training`` flag of every module of ``models`` on exit, even on error."""
    modes = {m: m.training for model in models for m in model.modules()}
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode
