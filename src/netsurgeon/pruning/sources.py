"""What a model's ``forward`` code does with the sizes its modules keep.

The engine rewrites a size a module keeps (``self.splits`` of timm's MixedConv2d) when forward
only splits or slices channels at it. Some uses of such a size leave no trace in a torch.fx
graph: ``range(self.a)``, ``[0] * self.a`` or ``torch.zeros(1, self.a, 1, 1)`` run while the
model is traced and only their results are recorded. :class:`SourceUses` reads the source of
the methods forward runs to find them, so that those sizes are kept.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

from torch import nn

__all__ = ["SourceUses"]

# Calls that split channels at sizes given as their second argument or by these keywords.
_SPLIT_KEYWORDS = frozenset({"split_size_or_sections", "split_size"})


@functools.cache
def _tree(function: Callable[..., Any]) -> ast.AST | None:
    """The parsed source of ``function``, or None where it cannot be read."""
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None


def _forward_functions(module: nn.Module) -> Iterator[Callable[..., Any] | None]:
    """``module``'s forward (as set on the instance, as FasterNet does) and the methods of
    its own that those call as ``self.name(...)`` or ``super().name(...)``, transitively;
    None for one whose source cannot be read."""
    forward = getattr(module.forward, "__func__", module.forward)
    todo, seen = [forward], set()
    while todo:
        function = todo.pop()
        if function in seen:
            continue
        seen.add(function)
        tree = _tree(function)
        yield function if tree is not None else None
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "self":
                method = inspect.getattr_static(type(module), node.func.attr, None)
                todo.extend([method] if inspect.isfunction(method) else [])
            elif (
                isinstance(owner, ast.Call)
                and isinstance(owner.func, ast.Name)
                and owner.func.id == "super"
            ):  # super().forward(x): the bases' methods of that name (all of them, simply)
                for base in type(module).__mro__:
                    if base.__module__.startswith("torch."):
                        continue  # nn.Module's own: torch's code, called whole
                    method = base.__dict__.get(node.func.attr)
                    todo.extend([method] if inspect.isfunction(method) else [])


def _splits_at(call: ast.Call, node: ast.AST) -> bool:
    """Whether ``node`` (an argument or keyword of ``call``) gives a ``split`` call its
    sizes (``torch.split(x, sizes, 1)``, ``x.split(sizes, 1)``, ``split_size=sizes``)."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "split"):
        return False
    if isinstance(node, ast.keyword):
        return node.arg in _SPLIT_KEYWORDS
    method = not (isinstance(call.func.value, ast.Name) and call.func.value.id == "torch")
    position = 0 if method else 1
    return len(call.args) > position and call.args[position] is node


def _aliases(node: ast.AST | None) -> TypeGuard[ast.Assign]:
    """Whether ``node`` gives one local name an attribute (``n = self.num_1x1_c``)."""
    return (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Attribute)
    )


class SourceUses:
    """For one model: which attribute names its traced code uses other than to split or
    slice channels (by name: a name used so anywhere counts for every module), and which
    modules pass themselves on or have a forward whose source cannot be read (all their
    sizes count as used)."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._names: set[str] | None = None
        self._opaque: set[str] = set()

    def other_than_split(self, owner: str, attr: str) -> bool:
        """Whether the size ``attr`` of module ``owner`` may be used other than to split."""
        if self._names is None:
            self._names = set()
            for name, module in self._model.named_modules():
                if type(module).__module__.startswith("torch."):
                    continue  # torch's own modules are called whole, never traced
                for function in _forward_functions(module):
                    tree = _tree(function) if function is not None else None
                    if tree is None or self._scan(tree):
                        self._opaque.add(name)
        return owner in self._opaque or attr in self._names

    def _scan(self, tree: ast.AST) -> bool:
        """Add the names ``tree`` uses other than to split; whether it passes ``self`` on."""
        assert self._names is not None
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        # Local names given an attribute (n = self.num_1x1_c): their uses are its uses.
        aliases: dict[str, list[str]] = {}
        for node in ast.walk(tree):
            if _aliases(node):
                aliases.setdefault(node.targets[0].id, []).append(node.value.attr)
        escapes = False
        for node in ast.walk(tree):
            parent = parents.get(node)
            if isinstance(node, ast.Name) and node.id == "self":
                # self other than self.a (f(self), getattr(self, n)): anything may happen
                escapes = escapes or not isinstance(parent, ast.Attribute)
            aliased = _aliases(parent) and parent.value is node
            if isinstance(node, ast.Attribute) and not aliased and not self._splits(node, parents):
                self._names.add(node.attr)
            if (
                isinstance(node, ast.Name)
                and isinstance(node.ctx, ast.Load)
                and node.id in aliases
                and not self._splits(node, parents)
            ):
                self._names.update(aliases[node.id])
        return escapes

    @staticmethod
    def _splits(node: ast.Attribute | ast.Name, parents: dict[ast.AST, ast.AST]) -> bool:
        """Whether ``node`` (``self.a`` or a local name given it, or ``self.a[i]`` through its
        parent) is a width the channels are split or sliced at: a split's sizes, or the bound
        of a slice."""
        parent = parents.get(node)
        if isinstance(parent, ast.Call) and parent.func is node:
            return True  # a method called, not a size used
        if isinstance(parent, ast.Attribute | ast.Subscript) and parent.value is node:
            if isinstance(parent, ast.Attribute):
                return True  # self.conv.weight: an object reached through, not a size
            node, parent = parent, parents.get(parent)  # self.sizes[0]
        if isinstance(parent, ast.Slice):
            return node is not parent.step
        if isinstance(parent, ast.List | ast.Tuple):
            node, parent = parent, parents.get(parent)
        if isinstance(parent, ast.keyword):  # split(x, split_size_or_sections=self.a)
            call = parents.get(parent)
            return isinstance(call, ast.Call) and _splits_at(call, parent)
        return isinstance(parent, ast.Call) and _splits_at(parent, node)
