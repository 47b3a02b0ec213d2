"""Packages whose public names load on first use (PEP 562).

Importing PyTorch and torchvision takes seconds: the command line imports the light parts of
a package (its option definitions) without them, and users pay only for what they use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str,
    namespace: dict[str, Any],
    defined_in: Mapping[str, Iterable[str]],
    submodules: Iterable[str] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names load on first use.

    Args:
        package: The package's ``__name__``.
        namespace: Its ``globals()``, where each loaded name is then kept.
        defined_in: Module (relative to ``package``) -> the public names it defines.
        submodules: Submodules reachable as attributes without an import of their own.
    """
    names = {name: f"{package}.{module}" for module, items in defined_in.items() for name in items}
    modules = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
        elif name in modules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ()), *modules})

    return __getattr__, __dir__
