"""Markdown tables show text from data literally."""

from __future__ import annotations

import pytest

from netsurgeon.markdown import escape_markdown, markdown_table


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("<img src=x onerror=alert(1)>", r"\<img src=x onerror=alert(1)\>"),
        ("[e](f)", r"\[e\](f)"),
        ("c*d `x` ~y~ a|b", r"c\*d \`x\` \~y\~ a\|b"),
        ("&copy; back\\slash", r"\&copy; back\\slash"),
        ("_italic_ and snake_case", r"\_italic\_ and snake_case"),
        ("two\nlines", "two lines"),
        ("cifar_resnet20 0.25 -1.5e-3 top-1 (%)", "cifar_resnet20 0.25 -1.5e-3 top-1 (%)"),
    ],
)
def test_escape_markdown(text: str, escaped: str) -> None:
    assert escape_markdown(text) == escaped


def test_markdown_table_escapes_header_and_cells() -> None:
    assert markdown_table(["a|b", "c"], [["<b>", "1"], ["x", "y"]]).splitlines() == [
        r"| a\|b | c |",
        "|---|---|",
        r"| \<b\> | 1 |",
        "| x | y |",
    ]
