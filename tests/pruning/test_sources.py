"""SourceUses: which sizes kept by modules forward's source uses other than to split."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netsurgeon.pruning.sources import SourceUses


class _Uses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d, self.sizes = 4, 8, 2, 3, [4, 8]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(x, self.sizes, 1)
        r, s = x.split([self.a, self.b], dim=1)
        t = torch.split(x, split_size_or_sections=self.sizes[0], dim=1)[0]
        n = self.a
        u = x[:, :n] + x[:, : self.a] + q[:, self.b :]
        return torch.cat([p, r, s, t, u, x[:, :: self.c], x * self.d], 1)


class _Calls(nn.Module):
    """Uses in methods forward calls: its own, and its base's through super()."""

    def __init__(self) -> None:
        super().__init__()
        self.e, self.f = 4, 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._halves(x)

    def _halves(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.e] * len(range(self.f))

    def unused(self) -> int:
        return self.g * 2


class _Derived(_Calls):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.h
        return super().forward(x) + torch.zeros(n)


class _Escapes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _helper(self, x)


class _EscapesByKeyword(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _helper(module=self, x=x)


def _helper(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x[:, : module.k]


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.uses, self.derived, self.escapes = _Uses(), _Derived(), _Escapes()
        self.keyword = _EscapesByKeyword()
        self.conv = nn.Conv2d(3, 3, 1)


@pytest.mark.parametrize(
    ("owner", "attr", "used"),
    [
        ("uses", "sizes", False),  # split sizes, whole or one of them
        ("uses", "a", False),  # split sizes, slice bounds, and a name given it
        ("uses", "b", False),
        ("uses", "c", True),  # a slice's step
        ("uses", "d", True),  # a number in arithmetic
        ("derived", "e", False),
        ("derived", "f", True),  # range() in a method forward calls
        ("derived", "h", True),  # a name given it, then given to a tensor factory
        ("derived", "g", False),  # a method forward never calls
        ("escapes", "k", True),  # forward passes self on: any of its sizes may be used
        ("escapes", "anything", True),
        ("keyword", "k", True),
    ],
)
def test_sizes_used_other_than_to_split(owner: str, attr: str, used: bool) -> None:
    assert SourceUses(_Model()).other_than_split(owner, attr) is used


def test_a_forward_without_source_counts_as_using_every_size() -> None:
    namespace: dict[str, object] = {}
    exec("def forward(self, x):\n    return x[:, : self.a]\n", namespace)  # no source file
    opaque = type("_NoSource", (nn.Module,), {"forward": namespace["forward"]})
    model = nn.Sequential(_Uses(), opaque())
    uses = SourceUses(model)
    assert uses.other_than_split("1", "a") and not uses.other_than_split("0", "a")
