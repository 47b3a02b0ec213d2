"""argparse value types: what each accepts, and the message for what it refuses."""

from __future__ import annotations

import argparse

import pytest

from netsurgeon import argtypes


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        (argtypes.integer, "-3", -3),
        (argtypes.positive_int, "1", 1),
        (argtypes.non_negative_int, "0", 0),
        (argtypes.positive_float, "1e-3", 1e-3),
        (argtypes.unit_interval, "0", 0.0),
        (argtypes.unit_interval, "0.99", 0.99),
    ],
)
def test_accepted_values(kind: object, text: str, value: float) -> None:
    assert kind(text) == value  # type: ignore[operator]


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (argtypes.integer, "1.5", "'1.5' is not an integer"),
        (argtypes.positive_int, "0", "'0' is not a positive integer"),
        (argtypes.non_negative_int, "-1", "'-1' is not an integer >= 0"),
        (argtypes.positive_float, "inf", "'inf' is not a positive number"),
        (argtypes.positive_float, "nan", "'nan' is not a positive number"),
        (argtypes.positive_float, "x", "'x' is not a number"),
        (argtypes.unit_interval, "1", "'1' is not in [0, 1)"),
    ],
)
def test_refused_values_are_named(kind: object, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        kind(text)  # type: ignore[operator]
    assert str(info.value) == message
