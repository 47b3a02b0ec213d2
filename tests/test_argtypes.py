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


def test_comma_lists_refuse_an_empty_entry_and_allow_a_trailing_comma() -> None:
    """Before: '0.5,,0.3' and 'l1,,l2' ran without the value that was left out."""
    from netsurgeon.errors import ConfigError
    from netsurgeon.vision.experiments import parse_criteria, parse_levels

    comma_list = argtypes.comma_list
    assert comma_list(" l1, l2 ,", name="criteria", flag="--criteria") == ["l1", "l2"]
    assert comma_list("", name="criteria", flag="--criteria") == []
    for parse, text, name in [(parse_levels, "0.5,,0.3", "levels"),
                              (parse_criteria, "l1,,l2", "criteria")]:  # fmt: skip
        with pytest.raises(ConfigError, match=(
            rf"^{name}='{text}' \(--{name}\) has an empty entry; separate the values with "
            "single commas$"
        )):  # fmt: skip
            parse(text)
