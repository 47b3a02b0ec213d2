"""Which netsurgeon wrote a resumable run, so that a resume by another version says so.

Checkpoints, progress files and results folders record :data:`VERSION_KEY`. A resume keeps
what the run finished and computes the rest with the running version; where the two versions
train differently, the result then differs from an uninterrupted run's, which a user comparing
runs must know.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from netsurgeon import __version__

__all__ = ["VERSION_KEY", "OtherVersionWarning", "other_version_note", "warn_if_other_version"]

VERSION_KEY = "netsurgeon_version"


class OtherVersionWarning(UserWarning):
    """A run that another netsurgeon version wrote is resumed (see :func:`other_version_note`);
    callers that say it once for several files filter this category."""


def other_version_note(record: Mapping[str, Any], what: object) -> str | None:
    """What to tell a user resuming ``what`` (a file or folder) from ``record``.

    Returns:
        None when this version of netsurgeon wrote ``record``; otherwise a one-line note.
    """
    written = record.get(VERSION_KEY)
    if written == __version__:
        return None
    by = (
        f"netsurgeon {written}"
        if isinstance(written, str)
        else "a netsurgeon that did not record its version"
    )
    return (
        f"resuming {what}, written by {by}, with netsurgeon {__version__}: what it finished "
        "is kept and the rest is computed by this version, so the result may differ from an "
        "uninterrupted run's where the two versions train differently"
    )


def warn_if_other_version(record: Mapping[str, Any], what: object, *, stacklevel: int = 3) -> None:
    """Warn (:class:`OtherVersionWarning`) when another version wrote ``record``; for a
    resume that has work left (the caller decides)."""
    note = other_version_note(record, what)
    if note is not None:
        warnings.warn(note, OtherVersionWarning, stacklevel=stacklevel)
