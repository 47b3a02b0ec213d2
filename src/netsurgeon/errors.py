"""The one exception family that netsurgeon raises for user errors."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "NetsurgeonError", "TraceError", "WriteError"]


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
