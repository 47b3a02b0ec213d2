"""What a model's Python code does with the sizes its modules keep.

The engine rewrites a size a module keeps (``self.splits`` of timm's MixedConv2d) when forward
only splits or slices channels at it. Some uses of such a size leave no trace in a torch.fx
graph: ``range(self.a)``, ``int(self.a)`` or ``torch.zeros(1, self.a, 1, 1)`` run while the
model is traced and only their results are recorded. :class:`SourceUses` reads the source of
the model's code to find them, so that those sizes are kept: every method of its modules'
classes (torch's own and ``__init__`` aside; properties and functions kept on an instance
included) and the module-level functions those call, since forward may reach any of them.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import textwrap
from collections.abc import Callable, Container, Iterator
from typing import Any, TypeGuard

from torch import nn

__all__ = ["SourceUses"]

# Calls that split channels at sizes given as their second argument or by these keywords.
_SPLIT_KEYWORDS = frozenset({"split_size_or_sections", "split_size"})
# Methods that build or describe a module: what they do with a size is no use in forward.
_NOT_FORWARD = frozenset({"__init__", "extra_repr", "__repr__", "__str__"})
# Calls that make Python sequences (no traced tensors) of what they are given.
_PYTHON_SEQUENCES = frozenset({"tolist", "numpy", "list", "tuple", "range", "sorted"})
# What nn.Module keeps on every instance (parameters, children, hooks).
_MODULE_STATE = frozenset(vars(nn.Module()))
# Builtins that read attributes by name.
_READS_ATTRIBUTES = (getattr, setattr, delattr, hasattr, vars)


@functools.cache
def _tree(function: Callable[..., Any]) -> ast.AST | None:
    """The parsed source of ``function``, or None where it cannot be read. A method's first
    parameter is renamed ``self`` where it has another name (``def forward(this, x)``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    top = tree.body[0] if isinstance(tree, ast.Module) and tree.body else None
    if (
        isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef)
        and "." in function.__qualname__
        and top.args.args
        and top.args.args[0].arg not in ("self", "cls")
    ):
        first = top.args.args[0].arg
        for node in ast.walk(top):
            if isinstance(node, ast.Name) and node.id == first:
                node.id = "self"
    return tree


@functools.cache
def _outline(tree: ast.AST) -> tuple[dict[ast.AST, ast.AST], dict[str, list[ast.Attribute]]]:
    """Of a function's parsed source (the same for every instance of its class): each
    node's parent, and the local names given an attribute (``n = self.num_1x1_c``), whose
    uses are its uses."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    aliases: dict[str, list[ast.Attribute]] = {}
    for node in ast.walk(tree):
        if _aliases(node):
            aliases.setdefault(node.targets[0].id, []).append(node.value)
    return parents, aliases


def _inner_functions(function: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The functions a function wraps: ``__wrapped__`` and those in its closure (a decorator
    that does not use functools.wraps)."""
    found = [getattr(function, "__wrapped__", None)]
    for cell in function.__closure__ or ():
        try:
            found.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    return [f for f in found if inspect.isfunction(f) and not _torch_code(f)]


def _torch_code(obj: Any) -> bool:
    """Whether ``obj`` (a class or function) is torch's or Python's own: called whole."""
    return (getattr(obj, "__module__", None) or "").split(".")[0] in ("torch", "builtins")


def _methods(module: nn.Module) -> Iterator[Callable[..., Any]]:
    """The functions of ``module``'s classes (properties' included, torch's own classes and
    ``_NOT_FORWARD`` aside) and those kept on the instance (``self.post = lambda t: ...``)."""
    for cls in type(module).__mro__:
        if not _torch_code(cls):
            yield from _class_functions(cls)
    for key, value in vars(module).items():
        if key not in _MODULE_STATE:
            yield from _functions_in(value)


def _functions_in(value: Any, depth: int = 0) -> list[Callable[..., Any]]:
    """The functions behind a class or instance attribute: a method, a staticmethod or
    classmethod, a property's accessors, a lambda, a ``functools.partial``, those in a list,
    tuple or dict of them, and the methods of a callable object of a class of one's own."""
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if f is not None]
    if isinstance(value, functools.cached_property):
        return [value.func]
    if isinstance(value, functools.partial):
        return _functions_in(value.func, depth)
    if depth < 2 and isinstance(value, list | tuple | dict):
        items = value.values() if isinstance(value, dict) else value
        return [f for item in items for f in _functions_in(item, depth + 1)]
    inner = getattr(value, "__func__", value)
    if inspect.isfunction(inner):
        return [inner]
    cls = type(value)
    if callable(value) and not isinstance(value, nn.Module | type) and not _torch_code(cls):
        return [f for base in cls.__mro__ if not _torch_code(base) for f in _class_functions(base)]
    return []


def _class_functions(cls: type) -> list[Callable[..., Any]]:
    """The functions defined in ``cls`` (``_NOT_FORWARD`` aside)."""
    return [
        f
        for name, value in vars(cls).items()
        if name not in _NOT_FORWARD and not isinstance(value, list | tuple | dict)
        for f in _functions_in(value, depth=2)
    ]


def _forward_reach(module: nn.Module) -> Iterator[Callable[..., Any]]:
    """``module``'s forward (as set on the instance, as FasterNet does) and what it reaches
    through ``self``: methods, properties and functions kept on the instance it names
    (``self.name``), and its bases' methods it calls as ``super().name(...)``, transitively."""
    todo = _functions_in(vars(module).get("forward", type(module).forward))
    seen: set[Callable[..., Any]] = set()
    while todo:
        function = todo.pop()
        if function in seen or _torch_code(function):
            continue
        seen.add(function)
        yield function
        todo.extend(_inner_functions(function))
        for node in ast.walk(_tree(function) or ast.Module(body=[], type_ignores=[])):
            if not isinstance(node, ast.Attribute):
                continue
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                static = inspect.getattr_static(type(module), node.attr, None)
                todo.extend(_functions_in(vars(module).get(node.attr, static)))
            elif (
                isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "super"
            ):  # super().forward(x): the bases' methods of that name (all of them, simply)
                for base in type(module).__mro__:
                    if not _torch_code(base):
                        todo.extend(_functions_in(vars(base).get(node.attr)))


def _called(call: ast.Call, function: Callable[..., Any]) -> Any:
    """What ``call`` calls where its name resolves in ``function``'s globals (``helper(x)``,
    ``layers.helper(x)``); else None."""
    node, path = call.func, []
    while isinstance(node, ast.Attribute):
        path.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id == "self":
        return None
    target = getattr(function, "__globals__", {}).get(node.id, getattr(builtins, node.id, None))
    for attr in reversed(path):
        target = getattr(target, attr, None)
    return target


def _from_self(node: ast.AST) -> list[str] | None:
    """The attribute path of ``self.a.b`` (``["a", "b"]``); None for anything else."""
    path: list[str] = []
    while isinstance(node, ast.Attribute):
        path.append(node.attr)
        node = node.value
    return path[::-1] if isinstance(node, ast.Name) and node.id == "self" and path else None


def _splits_at(call: ast.Call, node: ast.AST) -> bool:
    """Whether ``node`` (an argument or keyword of ``call``) gives torch's ``split`` its
    sizes (``torch.split(x, sizes, 1)``, ``x.split(sizes, 1)``, ``split_size=sizes``); a
    module's own method named so (``self.split(...)``) is no such call."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "split"):
        return False
    if _from_self(func.value) is not None or (
        isinstance(func.value, ast.Name) and func.value.id == "self"
    ):
        return False
    if isinstance(node, ast.keyword):
        return node.arg in _SPLIT_KEYWORDS
    method = not (isinstance(func.value, ast.Name) and func.value.id == "torch")
    position = 0 if method else 1
    return len(call.args) > position and call.args[position] is node


def _sliced_may_be_traced(
    bound: ast.Slice, parents: dict[ast.AST, ast.AST], aliases: Container[str]
) -> bool:
    """Whether what ``bound`` slices may be a traced tensor: not an attribute (a list, a
    ModuleList, a buffer: ``self.blocks[:self.k]``), a local name given one, or a Python
    sequence made from a tensor (``t.tolist()[:self.k]``)."""
    subscript = parents.get(bound)
    if isinstance(subscript, ast.Tuple):
        subscript = parents.get(subscript)
    if not isinstance(subscript, ast.Subscript):
        return False
    value = subscript.value
    if isinstance(value, ast.Name):
        return value.id != "self" and value.id not in aliases
    if isinstance(value, ast.Call):
        func = value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return name not in _PYTHON_SEQUENCES
    return _from_self(value) is None


def _aliases(node: ast.AST | None) -> TypeGuard[ast.Assign]:
    """Whether ``node`` gives one local name an attribute (``n = self.num_1x1_c``)."""
    return (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Attribute)
    )


class SourceUses:
    """For one model: which attributes its code uses other than to split or slice channels
    (those of a module its code reads through ``self``; by name where read otherwise, as
    ``m.a``: a name used so counts for every module), and which modules
    may be read by code that cannot be followed (all their sizes count as used): one that
    passes ``self`` on, or whose code cannot be read, and a child given to a function whose
    code cannot be read."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._names: set[str] | None = None  # attribute names used, whoever's
        self._uses: set[tuple[int, str]] = set()  # (id of the module, attribute) used
        self._opaque: set[str] = set()

    def other_than_split(self, owner: str, attr: str) -> bool:
        """Whether the size ``attr`` of module ``owner`` may be used other than to split."""
        if self._names is None:
            self._read()
        assert self._names is not None
        opaque = any(owner == o or owner.startswith(f"{o}.") or not o for o in self._opaque)
        module = self._model.get_submodule(owner)
        return opaque or attr in self._names or (id(module), attr) in self._uses

    def _read(self) -> None:
        self._names = set()
        functions: list[Callable[..., Any]] = []
        for name, module in self._model.named_modules():
            if _torch_code(type(module)):
                continue  # torch's own modules are called whole, never traced
            # What forward reaches through self may pass it on; names count from every
            # method, since forward may reach the others in ways not followed here.
            reached = list(_forward_reach(module))
            methods = [*reached, *_methods(module)]
            methods += [f for method in methods for f in _inner_functions(method)]
            for function in dict.fromkeys(methods):
                tree = _tree(function)
                on_path = function in reached
                if tree is None:
                    if on_path:
                        self._opaque.add(name)
                    continue
                if self._scan(tree, function, (name, module), functions, on_path=on_path):
                    self._opaque.add(name)
        seen: set[Callable[..., Any]] = set()
        while functions:  # module-level functions the code calls, transitively
            function = functions.pop()
            if function not in seen:
                seen.add(function)
                functions.extend(_inner_functions(function))
                tree = _tree(function)
                if tree is not None:
                    self._scan(tree, function, None, functions)

    def _scan(
        self,
        tree: ast.AST,
        function: Callable[..., Any],
        scope: tuple[str, nn.Module] | None,
        functions: list[Callable[..., Any]],
        *,
        on_path: bool = False,
    ) -> bool:
        """Add what ``tree`` uses other than to split, and the functions it calls to
        ``functions``. ``scope``: the module (and its name) whose method it is;
        ``on_path``: whether its forward reaches the code, which may then pass the module
        or its children on; whether it passes the module on."""
        assert self._names is not None
        parents, aliases = _outline(tree)
        escapes = False
        for node in ast.walk(tree):
            parent = parents.get(node)
            if isinstance(node, ast.Name) and node.id == "self":
                # self other than self.a (f(self), getattr(self, n), self.__dict__[n]):
                # anything may happen
                escapes = escapes or not isinstance(parent, ast.Attribute)
                escapes = escapes or getattr(parent, "attr", None) == "__dict__"
            if isinstance(node, ast.Call):
                self._follow(node, function, scope if on_path else None, functions)
            aliased = _aliases(parent) and parent.value is node
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Load)
                and not aliased
                and not self._splits(node, parents, aliases)
            ):
                self._use(node, scope)
            if (
                isinstance(node, ast.Name)
                and isinstance(node.ctx, ast.Load)
                and node.id in aliases
                and not self._splits(node, parents, aliases)
            ):
                for attribute in aliases[node.id]:
                    self._use(attribute, scope)
        return escapes and on_path

    def _use(self, node: ast.Attribute, scope: tuple[str, nn.Module] | None) -> None:
        """Record a use of ``node``: of that module's attribute where it is ``self.a`` or
        ``self.child.a`` (timm's ConvNormAct reads ``self.conv.in_channels``, which is no
        use of ReXNet's ``self.in_channels``), else of every attribute of that name."""
        assert self._names is not None
        path = _from_self(node)
        if scope is not None and path is not None:
            owner = scope[1]
            for attr in path[:-1]:
                owner = getattr(owner, attr, None)
            if isinstance(owner, nn.Module):  # by identity: it may have other names
                self._uses.add((id(owner), node.attr))
                return
        self._names.add(node.attr)

    def _follow(
        self,
        call: ast.Call,
        function: Callable[..., Any],
        scope: tuple[str, nn.Module] | None,
        functions: list[Callable[..., Any]],
    ) -> None:
        """Queue the module-level function ``call`` calls. A child module that forward gives
        to code that cannot be followed (torch's ``checkpoint(self.block, x)``, ``getattr``)
        is opaque; other builtins (``len``, ``zip``, ``isinstance``) read no sizes."""
        target = _called(call, function)
        if inspect.isfunction(target) and not _torch_code(target):
            functions.append(target)
            return
        builtin = getattr(target, "__module__", None) == "builtins"  # len, zip, isinstance
        if scope is None or (builtin and target not in _READS_ATTRIBUTES):
            return
        name, module = scope
        for arg in [*call.args, *(kw.value for kw in call.keywords)]:
            path = _from_self(arg)
            child: Any = module
            for attr in path or ():
                child = getattr(child, attr, None)
            if path and isinstance(child, nn.Module):
                self._opaque.add(".".join([name, *path]) if name else ".".join(path))

    @staticmethod
    def _splits(
        node: ast.Attribute | ast.Name, parents: dict[ast.AST, ast.AST], aliases: Container[str]
    ) -> bool:
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
            return node is not parent.step and _sliced_may_be_traced(parent, parents, aliases)
        if isinstance(parent, ast.List | ast.Tuple):
            node, parent = parent, parents.get(parent)
        if isinstance(parent, ast.keyword):  # split(x, split_size_or_sections=self.a)
            call = parents.get(parent)
            return isinstance(call, ast.Call) and _splits_at(call, parent)
        return isinstance(parent, ast.Call) and _splits_at(parent, node)
