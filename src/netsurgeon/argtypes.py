"""``type=`` callables for argparse options, shared by the subcommands.

argparse names the option in front of their message (``argument --epochs: '0' is not a
positive integer``). This module imports nothing heavy, so ``netsurgeon --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math

from netsurgeon.errors import ConfigError

__all__ = [
    "comma_list",
    "integer",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "unit_interval",
]


def comma_list(text: str, *, name: str, flag: str) -> list[str]:
    """The comma-separated entries of ``text``, stripped; one trailing comma is allowed, and
    a text of commas and spaces alone gives no entries (the caller says what is missing).

    Raises:
        ConfigError: an empty entry among values (``l1,,l2``: a value was left out), named
            as ``name=...`` (``flag``).
    """
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        return []
    if not parts[-1]:
        parts.pop()
    if any(not part for part in parts):
        raise ConfigError(
            f"{name}={text!r} ({flag}) has an empty entry; separate the values with single commas"
        )
    return parts


def integer(value: str) -> int:
    """Any integer."""
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None


def positive_int(value: str) -> int:
    """An integer >= 1."""
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return number


def non_negative_int(value: str) -> int:
    """An integer >= 0."""
    number = integer(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer >= 0")
    return number


def positive_float(value: str) -> float:
    """A finite number > 0 (nan and inf are refused too)."""
    number = _number(value)
    if not 0 < number < math.inf:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
    return number


def unit_interval(value: str) -> float:
    """A number in [0, 1)."""
    number = _number(value)
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not in [0, 1)")
    return number
