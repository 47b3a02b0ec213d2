"""SourceUses: which sizes kept by modules forward's source uses other than to split."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from netsurgeon.pruning.sources import SourceUses


class _Uses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d, self.sizes = 4, 8, 2, 3, [4, 8]
        self.in_channels = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(x, self.sizes, 1)
        r, s = x.split([self.a, self.b], dim=1)
        t = torch.split(x, split_size_or_sections=self.sizes[0], dim=1)[0]
        n = self.a
        u = x[:, :n] + x[:, : self.a] + q[:, self.b :] + x[:, : self.in_channels]
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

    @property
    def norm(self) -> int:
        return int(self.i)


class _Derived(_Calls):
    def __init__(self) -> None:
        super().__init__()
        self.i, self.j, self.l, self.s = 3, 3, 3, 3
        self.post = lambda t: t / int(self.m)  # a function kept on the instance
        self.m = self.j * 2  # __init__ builds the module: its uses are none in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.h
        y = self.post(super().forward(x) + torch.zeros(n)) / self.norm
        return self.split(self.s, y)

    def split(self, n: int, t: torch.Tensor) -> torch.Tensor:
        return t / int(n)  # a method named split is no torch.split

    def extra_repr(self) -> str:
        return f"l={self.l}"


class _KeptChild(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ka = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.ka]


class _LookedUpChild(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.la = 2


class _PlainChild(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ca = 2


class _Parent(nn.Module):
    """Code that reads a child's sizes: a module-level function given it, torch's code
    given it, getattr."""

    def __init__(self) -> None:
        super().__init__()
        self.kept, self.looked_up, self.child = _KeptChild(), _LookedUpChild(), _PlainChild()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.utils.checkpoint.checkpoint(self.kept, x, use_reentrant=False)
        name = "la"
        z = getattr(self.looked_up, name) * int(isinstance(self.child, nn.Module))
        z = z * len(list(zip(enumerate(self.child), self.child, strict=True)))  # never run
        return y * z * _width_of(self.child)


def _width_of(module: nn.Module) -> int:
    return int(module.q)


class _Wraps(nn.Module):
    """timm's ConvNormAct: a property reads its convolution's count."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    @property
    def in_channels(self) -> int:
        return int(self.conv.in_channels)


class _Escapes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _helper(self, x)


class _EscapesByKeyword(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _helper(module=self, x=x)


class _ReadsItsDict(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.__dict__["n"]]


def _helper(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x[:, : module.k]


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.uses, self.derived, self.escapes = _Uses(), _Derived(), _Escapes()
        self.keyword, self.parent = _EscapesByKeyword(), _Parent()
        self.dict, self.wraps = _ReadsItsDict(), _Wraps()
        self.conv = nn.Conv2d(3, 3, 1)


@pytest.mark.parametrize(
    ("owner", "attr", "used"),
    [
        ("uses", "sizes", False),  # split sizes, whole or one of them
        ("uses", "a", False),  # split sizes, slice bounds, and a name given it
        ("uses", "b", False),
        ("uses", "in_channels", False),  # another module's in_channels is used, not this one
        ("wraps.conv", "in_channels", True),
        ("uses", "c", True),  # a slice's step
        ("uses", "d", True),  # a number in arithmetic
        ("derived", "e", False),
        ("derived", "f", True),  # range() in a method forward calls
        ("derived", "h", True),  # a name given it, then given to a tensor factory
        ("derived", "g", True),  # a method forward does not call: it may reach it otherwise
        ("derived", "i", True),  # int() in a property
        ("derived", "j", False),  # used in __init__ only
        ("derived", "l", False),  # in extra_repr only
        ("derived", "m", True),  # int() in a lambda kept on the instance
        ("derived", "s", True),  # given to a method named split, not torch's
        ("parent", "q", True),  # int() in a module-level function given a child
        ("parent.kept", "ka", True),  # a child given to torch's code: any use possible
        ("parent.looked_up", "la", True),  # a child given to getattr
        ("parent.child", "ca", False),  # isinstance(), zip(), enumerate() read no sizes
        ("escapes", "k", True),  # forward passes self on: any of its sizes may be used
        ("escapes", "anything", True),
        ("keyword", "k", True),
        ("dict", "n", True),
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


def _scaled(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    return y / len(range(module.pa))


class _Scaler:
    """A callable object of one's own that holds the module."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return y / len(range(self.module.ob))


def _unwrapped(method: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def wrapper(*args: torch.Tensor) -> torch.Tensor:  # no functools.wraps
        return method(*args)

    return wrapper


class _Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sh, self.al, self.br = 2, 2, 2


class _User(nn.Module):
    def __init__(self, holder: _Holder) -> None:
        super().__init__()
        self.holder = holder  # the same module, registered a second time

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y / len(range(self.holder.sh))


class _Back(nn.Module):
    def __init__(self, owner: nn.Module) -> None:
        super().__init__()
        self.__dict__["owner"] = owner  # a back-reference, not a child

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y / len(range(self.owner.holder.br))


class _This(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.th = 2

    def forward(this, x: torch.Tensor) -> torch.Tensor:
        name = "th"
        return x * getattr(this, name)  # a first parameter not named self, passed on


class _Reached(nn.Module):
    """Code forward reaches through objects, a first parameter not named self, and slices of
    Python sequences (no traced tensors) at kept sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.pa, self.la, self.ob, self.dw, self.this = 2, 2, 2, 2, _This()
        self.ls, self.ml, self.tl, self.tensor_bound = 2, 2, 2, 2
        self.weights, self.blocks = [1.0, 2.0, 3.0], nn.ModuleList(nn.Identity() for _ in range(3))
        self.post = functools.partial(_scaled, self)
        self.posts = [lambda y: y / len(range(self.la))]
        self.scaler = _Scaler(self)
        self.holder = _Holder()
        self.user, self.alias, self.back = _User(self.holder), self.holder, _Back(self)

    @_unwrapped
    def decorated(self, y: torch.Tensor) -> torch.Tensor:
        return y / len(range(self.dw))

    def forward(this, x: torch.Tensor) -> torch.Tensor:
        y = this.posts[0](this.post(this.scaler(this.decorated(x))))
        y = this.this(y) * sum(this.weights[: this.ls]) + len(range(this.alias.al))
        for block in this.blocks[: this.ml]:
            y = block(y)
        w = this.weights
        return this.back(this.user(y[:, : this.tensor_bound])) * len(x.tolist()[: w[this.tl]])


@pytest.mark.parametrize(
    ("owner", "attr", "used"),
    [
        ("", "pa", True),  # in a module-level function a functools.partial holds
        ("", "la", True),  # in a lambda kept in a list
        ("", "ob", True),  # in a callable object's method
        ("", "dw", True),  # in a method a decorator wraps without functools.wraps
        ("this", "th", True),  # getattr() on a first parameter not named self
        ("", "ls", True),  # the bound of a slice of a list attribute
        ("", "ml", True),  # the bound of a slice of a ModuleList
        ("", "tl", True),  # an index into a list (given to a local name)
        ("", "tensor_bound", False),  # the bound of a slice of a traced value
        ("holder", "sh", True),  # read through another name of the same module
        ("holder", "al", True),  # read through an alias attribute
        ("holder", "br", True),  # read through a back-reference kept in __dict__
    ],
)
def test_uses_reached_through_objects_and_other_names(owner: str, attr: str, used: bool) -> None:
    """Found by fuzzing: each of these uses was missed, and pruning rewrote the size."""
    assert SourceUses(_Reached()).other_than_split(owner, attr) is used
