"""The OOV package's file writers, on top of :mod:`netsurgeon.fileio`'s atomic writes."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from netsurgeon import fileio

__all__ = [
    "atomic_open",
    "atomic_save_torch",
    "atomic_write_json",
    "atomic_write_text",
    "on_cpu",
]


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open ``path`` for writing, ``"w"`` (text) or ``"wb"``; it appears whole or not at all."""
    with fileio.atomic_open(path) as raw:
        if "b" in mode:
            yield raw
            return
        text = io.TextIOWrapper(raw, encoding=encoding or "utf-8", newline="")
        try:
            yield text
            text.flush()
        finally:
            text.detach()  # leave the binary handle to fileio, which fsyncs and renames it


def atomic_write_text(path: Path, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    fileio.atomic_write_text(path, text, encoding=encoding)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor in its dicts, lists and tuples on CPU.

    Containers are copied (a state dict's ``_metadata`` kept), never changed in place; CPU
    tensors are returned as they are.
    """
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        moved = type(value)((key, on_cpu(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):
            moved._metadata = value._metadata  # type: ignore[attr-defined]
        return moved
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


def atomic_save_torch(path: Path, obj: Any, *, save: Callable[..., None] = torch.save) -> None:
    """``torch.save`` a plain container of tensors and numbers atomically.

    Tensors are saved from CPU, so a file written during GPU training loads on any machine.
    """
    with fileio.atomic_open(path) as handle:
        save(on_cpu(obj), handle)
