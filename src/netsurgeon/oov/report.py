"""Experiment reports: ``results.json``, ``results.md`` and a self-contained ``report.html``.

The HTML page has no scripts and no external resources; each example's left context, word and
right context are shaded by their attention weights.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from netsurgeon.markdown import markdown_table
from netsurgeon.oov.embedders import ATTENTION_PARTS
from netsurgeon.oov.io import atomic_write_json, atomic_write_text

__all__ = ["SECTIONS", "format_mean_std", "results_rows", "section_label", "write_report"]

SECTIONS = {
    "all": "all tokens",
    "oov_tokens": "OOV tokens",
    "oov_sentences": "sentences with an OOV word",
}
# NER's OOV section scores the entities that cover an OOV token (metrics.entity_scores).
_NER_SECTIONS = {**SECTIONS, "oov_tokens": "entities with an OOV token"}


def section_label(task: str, section: str) -> str:
    """What a metrics section covers, as tables name it."""
    return (_NER_SECTIONS if task == "ner" else SECTIONS).get(section, section)


# Colours of the three attention parts (word, left, right) in the HTML report.
_COLOURS = {"word": (214, 39, 40), "left": (31, 119, 180), "right": (44, 160, 44)}


def format_mean_std(stats: dict[str, Any]) -> str:
    """``mean ± std`` with two decimals (just the mean for a single value)."""
    if len(stats["values"]) > 1:
        return f"{stats['mean']:.2f} ± {stats['std']:.2f}"
    return f"{stats['mean']:.2f}"


def results_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the poster-style results table."""
    methods: list[str] = results["methods"]
    baseline: str = results["baseline"]
    others = [m for m in methods if m != baseline]
    header = ["split", "tokens", "metric", *methods, *[f"gain {m} vs {baseline}" for m in others]]
    rows: list[list[str]] = []
    for split, sections in results["summary"].items():
        for section, per_method in sections.items():
            row = [split, section_label(results["task"], section), results["metric"]]
            row += [format_mean_std(per_method[m]) for m in methods]
            gains = results["gains"][split][section]
            row += [f"{gains[m]:+.2f} %" if gains[m] is not None else "n/a" for m in others]
            rows.append(row)
    return header, rows


def _count(value: float) -> str:
    """An occurrence count, which over several seeds is a mean (whole when the data agree)."""
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def _attention_rows(table: dict[str, dict[str, float]]) -> list[list[str]]:
    return [
        [tag, _count(v["count"]), *[f"{v[p]:.3f}" for p in ATTENTION_PARTS]]
        for tag, v in table.items()
    ]


def _example_rows(examples: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for ex in examples:
        att = ex.get("attention") or {}
        rows.append(
            [
                ex["word"],
                " ".join(ex["left"]),
                " ".join(ex["right"]),
                *[f"{att[p]:.2f}" if p in att else "" for p in ATTENTION_PARTS],
                ex["gold"],
                ex["pred"],
            ]
        )
    return rows


_EXAMPLE_HEADER = ["word", "left context", "right context", *ATTENTION_PARTS, "gold", "predicted"]
_ATTENTION_HEADER = ["gold tag", "OOV occurrences", *ATTENTION_PARTS]


def _markdown(results: dict[str, Any]) -> str:
    header, rows = results_rows(results)
    parts = [
        f"# OOV experiment: {results['task'].upper()} ({results['metric']})",
        "",
        f"Methods {', '.join(results['methods'])}; seeds {results['seeds']}; values are "
        f"mean ± std over seeds; gains are relative to `{results['baseline']}`.",
        "",
        markdown_table(header, rows),
        "",
        "## OOV rates",
        "",
        markdown_table(
            ["split", "tokens", "OOV tokens", "token rate", "types", "OOV types", "type rate"],
            [
                [
                    split,
                    str(s["tokens"]),
                    str(s["oov_tokens"]),
                    f"{100 * s['token_rate']:.2f} %",
                    str(s["types"]),
                    str(s["oov_types"]),
                    f"{100 * s['type_rate']:.2f} %",
                ]
                for split, s in results["oov"].items()
            ],
        ),
    ]
    for method, table in results.get("attention_by_tag", {}).items():
        parts += [
            "",
            f"## Attention per gold tag ({method}, dev, mean over seeds' OOV occurrences)",
            "",
            markdown_table(_ATTENTION_HEADER, _attention_rows(table)),
        ]
    for method, examples in results.get("examples", {}).items():
        parts += [
            "",
            f"## Examples ({method}, dev, seed {results['seeds'][0]})",
            "",
            markdown_table(_EXAMPLE_HEADER, _example_rows(examples)),
        ]
    return "\n".join(parts) + "\n"


def _html_table(header: list[str], rows: list[list[str]], css_class: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _shade(text: str, part: str, weight: float) -> str:
    red, green, blue = _COLOURS[part]
    alpha = max(0.0, min(1.0, weight))
    return (
        f'<span class="{part}" title="{part} weight {weight:.3f}" '
        f'style="background-color: rgba({red}, {green}, {blue}, {alpha:.3f})">'
        f"{html.escape(text)}</span>"
    )


def _html_examples(examples: list[dict[str, Any]]) -> str:
    rows = []
    for ex in examples:
        att = ex.get("attention")
        if att:
            sentence = " ".join(
                s
                for s in (
                    _shade(" ".join(ex["left"]), "left", att["left"]) if ex["left"] else "",
                    _shade(ex["word"], "word", att["word"]),
                    _shade(" ".join(ex["right"]), "right", att["right"]) if ex["right"] else "",
                )
                if s
            )
            weights = "".join(f"<td>{att[p]:.2f}</td>" for p in ATTENTION_PARTS)
        else:
            sentence = html.escape(" ".join([*ex["left"], ex["word"], *ex["right"]]))
            weights = "<td></td>" * len(ATTENTION_PARTS)
        rows.append(
            f'<tr><td class="example">{sentence}</td>{weights}'
            f"<td>{html.escape(ex['gold'])}</td><td>{html.escape(ex['pred'])}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ["word in context", *ATTENTION_PARTS, "gold", "predicted"]
    )
    return (
        f'<table class="examples"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
td.example span { padding: 0.1em 0.2em; border-radius: 0.2em; }
.legend span { padding: 0.1em 0.4em; margin-right: 0.5em; }
"""


def _html(results: dict[str, Any]) -> str:
    header, rows = results_rows(results)
    title = f"OOV experiment: {results['task'].upper()} ({results['metric']})"
    legend = " ".join(_shade(part, part, 0.6) for part in ATTENTION_PARTS)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Methods {html.escape(', '.join(results['methods']))}; seeds "
        f"{html.escape(str(results['seeds']))}; mean ± std over seeds; gains relative to "
        f"<code>{html.escape(results['baseline'])}</code>.</p>",
        "<h2>Results</h2>",
        _html_table(header, rows, "results"),
    ]
    for method, table in results.get("attention_by_tag", {}).items():
        body += [
            f"<h2>Attention per gold tag ({html.escape(method)}, dev)</h2>",
            _html_table(_ATTENTION_HEADER, _attention_rows(table), "attention"),
        ]
    for method, examples in results.get("examples", {}).items():
        body += [
            f"<h2>Examples ({html.escape(method)}, dev)</h2>",
            f'<p class="legend">Shading is the attention weight: {legend}</p>',
            _html_examples(examples),
        ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(results: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``report.html`` into ``out``.

    Returns:
        The written paths by kind (``json``, ``md``, ``html``).
    """
    out = Path(out)
    paths = {"json": out / "results.json", "md": out / "results.md", "html": out / "report.html"}
    atomic_write_json(paths["json"], results)
    atomic_write_text(paths["md"], _markdown(results))
    atomic_write_text(paths["html"], _html(results))
    return paths
