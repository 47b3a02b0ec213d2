"""The one exception family that netsurgeon raises for user errors."""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "CheckpointError",
    "ConfigError",
    "NetsurgeonError",
    "TraceError",
    "WriteError",
    "find_in_chain",
    "first_line",
]

_E = TypeVar("_E", bound=BaseException)


class NetsurgeonError(Exception):
    """Base class for errors caused by user input; the CLI prints them as one line."""


class ConfigError(NetsurgeonError, ValueError):
    """An argument has a bad value; the message names the value and what is allowed."""


class TraceError(NetsurgeonError):
    """A model could not be traced into a graph, so it cannot be pruned safely."""


class CheckpointError(NetsurgeonError):
    """A file is not a netsurgeon checkpoint, is corrupt, or does not fit the model."""


class WriteError(NetsurgeonError, OSError):
    """A file could not be written (a full disk, a size limit, a read-only folder).

    An :class:`OSError` too, with the ``errno``, ``strerror`` and ``filename`` of the failure,
    so code that catches ``OSError`` still does. netsurgeon's writes are atomic: the file it
    was writing is left as it was, with no partial copy beside it.
    """

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def find_in_chain(exc: BaseException | None, kind: type[_E], *, depth: int = 10) -> _E | None:
    """``exc``, or the first exception it was raised from or while handling, that is a ``kind``.

    For errors that another one replaced on the way up: torch.save's RuntimeError over the
    OSError of a full disk, a data loader's "worker killed" over the Ctrl-C that killed it.
    At most ``depth`` links are followed.
    """
    for _ in range(depth):
        if exc is None:
            return None
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), for one-line
    messages that quote a lower-level error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
