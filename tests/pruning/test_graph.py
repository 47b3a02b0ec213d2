"""The tracer behind the channel analysis."""

from __future__ import annotations

import torch
from torch import fx, nn

from netsurgeon.pruning.graph import _Tracer
from tests.pruning.nets import NormActNet


class _ReadsTensorsNet(nn.Module):
    """Reads parameters (one tied to another layer's), a buffer and a plain tensor attribute
    directly in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight  # tied: one parameter, two names
        self.register_buffer("shift", torch.arange(4.0))
        self.constant = torch.full((4,), 2.0)  # not a buffer: fx keeps it as a constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x)) + self.shift * self.constant
        return y @ self.b.weight + self.a.bias


def test_the_tracer_names_read_tensors_as_fx_does() -> None:
    """The tracer names the tensors forward reads from a table (fx searched the whole model on
    every read, quadratic in its size). The graphs must stay exactly fx's, in both modes."""
    for net in (_ReadsTensorsNet, NormActNet):
        for training in (False, True):
            # One model each: fx stores the constants it meets on the model it traces.
            ours = _Tracer().trace(net().train(training))
            theirs = fx.Tracer().trace(net().train(training))
            assert str(ours) == str(theirs)
            assert any(n.op == "get_attr" for n in ours.nodes)
