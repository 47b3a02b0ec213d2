"""Markdown tables whose cells read as written: class names, paths and tokens come from data,
and a Markdown viewer would otherwise render ``<img ...>``, ``[text](link)`` or ``*emphasis*``
in them."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["escape_markdown", "markdown_table"]

# Characters that start Markdown syntax or inline HTML; "_" only where it can start emphasis
# (between letters or digits, as in cifar_resnet20, it cannot), so names stay readable.
_SPECIAL = re.compile(r"([\\`*\[\]<>|~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def escape_markdown(text: str) -> str:
    """``text`` with Markdown's special characters backslash-escaped, on one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table; every cell, header included, is shown literally."""
    lines = ["| " + " | ".join(escape_markdown(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(escape_markdown(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
