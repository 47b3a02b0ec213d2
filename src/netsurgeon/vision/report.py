"""Results files, plots and reports of pruning sweeps and model comparisons.

Results are rewritten atomically (a temporary file beside the target, flushed, fsynced and
renamed over it), so a killed run leaves the previous complete file, never half of one.
Plots are PNG files drawn with matplotlib's Agg canvas without touching pyplot's global state;
``report.html`` embeds them as base64 and has no scripts and no external resources.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from netsurgeon.errors import NetsurgeonError
from netsurgeon.fileio import atomic_write_bytes, atomic_write_text
from netsurgeon.markdown import markdown_table

__all__ = [
    "COMPARE_PLOT",
    "MATPLOTLIB_EXTRA",
    "RESULTS_FORMAT",
    "SWEEP_PLOTS",
    "atomic_write_bytes",
    "atomic_write_text",
    "compare_table",
    "dumps_json",
    "format_table",
    "plot_comparison",
    "plot_sweep",
    "read_results",
    "sweep_table",
    "write_compare_report",
    "write_results",
    "write_results_csv",
    "write_sweep_report",
]

RESULTS_FORMAT = "netsurgeon.sweep.results/1"
# The extra that installs matplotlib; named in the error raised when it is missing.
MATPLOTLIB_EXTRA = "vision"
SWEEP_PLOTS = {
    "accuracy_vs_level": "accuracy_vs_level.png",
    "accuracy_vs_macs": "accuracy_vs_macs.png",
    "time_vs_level": "time_vs_level.png",
}
COMPARE_PLOT = "comparison.png"
REFERENCE = "none"  # criterion name of the unpruned reference row

# Columns of the human-readable tables: (row key, header, formatter).
_SWEEP_TABLE = (
    ("criterion", "criterion", str),
    ("level", "level", lambda v: f"{v:.2f}"),
    ("params", "params", lambda v: _si(v)),
    ("macs", "MACs", lambda v: _si(v)),
    ("macs_ratio", "MACs ratio", lambda v: f"{v:.3f}"),
    ("size_bytes", "size", lambda v: _mib(v)),
    ("latency_ms", "CPU latency ms", lambda v: f"{v:.2f}"),
    ("epoch_time_s", "s/epoch", lambda v: f"{v:.2f}"),
    ("acc_before", "acc pruned", lambda v: f"{v:.4f}"),
    ("acc_after", "acc fine-tuned", lambda v: f"{v:.4f}"),
)
_COMPARE_TABLE = (
    ("model", "model", str),
    ("variant", "variant", str),
    ("params", "params", lambda v: _si(v)),
    ("macs", "MACs", lambda v: _si(v)),
    ("latency_ms", "CPU latency ms", lambda v: f"{v:.2f}"),
    ("epoch_time_s", "s/epoch", lambda v: f"{v:.2f}"),
    ("acc_before", "acc before fine-tuning", lambda v: f"{v:.4f}"),
    ("acc_after", "acc fine-tuned", lambda v: f"{v:.4f}"),
)


# --------------------------------------------------------------------------- files


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_value(value: Any) -> Any:
    # JSON has no NaN/inf; write them as null so every reader can parse the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def dumps_json(obj: Any) -> str:
    """Indented JSON with NaN/inf as ``null`` and paths as strings."""
    return json.dumps(_json_value(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(_csv_cell(v) for v in value)
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return str(value)


def write_results(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Atomically rewrite ``results.json`` and then ``results.csv`` in ``out_dir``.

    Both hold all of ``rows``. A process stopped between the two writes leaves the CSV one
    write behind; :func:`write_results_csv` from the JSON's rows mends it (a resumed sweep
    does so first).

    Args:
        out_dir: The results folder.
        rows: One flat mapping per finished run.
        columns: CSV columns, in order; list values are joined with ``;``.
        extra: More top-level keys for ``results.json``.

    Returns:
        The paths of ``results.json`` and ``results.csv``.
    """
    out = Path(out_dir)
    payload = {"format": RESULTS_FORMAT, **(extra or {}), "rows": [dict(r) for r in rows]}
    json_path = out / "results.json"
    # JSON first: it is the file a resumed run reads.
    atomic_write_text(json_path, dumps_json(payload))
    return json_path, write_results_csv(out, rows, columns=columns)


def write_results_csv(
    out_dir: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], *, columns: Sequence[str]
) -> Path:
    """Atomically rewrite ``results.csv`` in ``out_dir`` from ``rows``; returns its path.

    Args:
        out_dir: The results folder.
        rows: One flat mapping per finished run: all of them, as in ``results.json``.
        columns: CSV columns, in order; list values are joined with ``;``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    csv_path = Path(out_dir) / "results.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    return csv_path


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a ``results.json`` written by :func:`write_results`.

    Raises:
        NetsurgeonError: The file is not valid JSON or not a netsurgeon results file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NetsurgeonError(f"results file {path} is unreadable ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise NetsurgeonError(
            f"{path} is not a netsurgeon results file (format {RESULTS_FORMAT!r}); "
            "use another out folder (--out)"
        )
    rows = data.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise NetsurgeonError(f"results file {path} has no list of rows")
    return rows


# --------------------------------------------------------------------------- tables


def _si(value: float | None) -> str:
    if value is None:
        return "n/a"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}"
    return str(value)


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.2f} MiB"


def _cells(
    rows: Iterable[Mapping[str, Any]], spec: Sequence[tuple[str, str, Any]]
) -> list[list[str]]:
    out = []
    for row in rows:
        cells = []
        for key, _header, fmt in spec:
            value = row.get(key)
            missing = value is None or (isinstance(value, float) and not math.isfinite(value))
            cells.append("n/a" if missing else fmt(value))
        out.append(cells)
    return out


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned plain-text table: first column left-aligned, the others right-aligned."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the sweep results table."""
    return [h for _k, h, _f in _SWEEP_TABLE], _cells(rows, _SWEEP_TABLE)


def compare_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the model comparison table."""
    return [h for _k, h, _f in _COMPARE_TABLE], _cells(rows, _COMPARE_TABLE)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _config_rows(config: Mapping[str, Any], prefix: str = "") -> list[list[str]]:
    rows = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            rows += _config_rows(value, f"{prefix}{key}.")
        else:
            shown = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            rows.append([f"{prefix}{key}", shown])
    return rows


# --------------------------------------------------------------------------- plots


def _figure(*, ncols: int, width: float = 6.0, height: float = 4.2) -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as exc:
        raise NetsurgeonError(
            "plots and reports need matplotlib; install it with: "
            f"pip install 'netsurgeon[{MATPLOTLIB_EXTRA}]'"
        ) from exc
    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _by_criterion(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("criterion") != REFERENCE:
            series.setdefault(str(row["criterion"]), []).append(row)
    return {name: sorted(points, key=lambda r: r["level"]) for name, points in series.items()}


def _reference(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((r for r in rows if r.get("criterion") == REFERENCE), None)


def _line(axes: Any, points: Sequence[Mapping[str, Any]], x: str, y: str, **style: Any) -> Any:
    pairs = [(p[x], p[y]) for p in points if _finite(p.get(x)) and _finite(p.get(y))]
    if not pairs:
        return None
    xs, ys = zip(*pairs, strict=True)
    return axes.plot(xs, ys, marker="o", **style)[0]


def _hline(axes: Any, ref: Mapping[str, Any] | None, key: str, label: str) -> None:
    if ref is not None and _finite(ref.get(key)):
        axes.axhline(ref[key], color="black", linestyle=":", linewidth=1, label=label)


def plot_sweep(
    rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str], *, title: str = ""
) -> dict[str, Path]:
    """Draw the sweep's plots as PNG files in ``out_dir``.

    * ``accuracy_vs_level.png``: validation accuracy after fine-tuning (solid) and right
      after pruning (dashed, same colour), one line per criterion; the unpruned reference
      as a dotted horizontal line.
    * ``accuracy_vs_macs.png``: the same accuracies against MACs per image.
    * ``time_vs_level.png``: CPU latency (left) and fine-tuning time per epoch (right).

    Returns:
        Plot name (see :data:`SWEEP_PLOTS`) to path.

    Raises:
        NetsurgeonError: matplotlib is not installed (the message names the extra).
    """
    out = Path(out_dir)
    series = _by_criterion(rows)
    ref = _reference(rows)
    suffix = f" - {title}" if title else ""
    kind = next((r["level_kind"] for r in rows if r.get("level_kind")), "filters")
    level_axis = f"pruning level (share of {'MACs' if kind == 'macs' else 'filters'} removed)"
    paths: dict[str, Path] = {}

    fig = _figure(ncols=1, width=7.0)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in series.items():
        line = _line(ax, points, "level", "acc_after", label=f"{name} (fine-tuned)")
        color = line.get_color() if line is not None else None
        _line(ax, points, "level", "acc_before", color=color, linestyle="--", alpha=0.7,
              label=f"{name} (right after pruning)")  # fmt: skip
    if ref is not None and _finite(ref.get("acc_after")):
        _hline(ax, ref, "acc_after", "unpruned, fine-tuned")
    else:  # a sweep without fine-tuning
        _hline(ax, ref, "acc_before", "unpruned")
    ax.set_xlabel(level_axis)
    ax.set_ylabel("top-1 validation accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Accuracy vs pruning level{suffix}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    paths["accuracy_vs_level"] = _save(fig, out / SWEEP_PLOTS["accuracy_vs_level"])

    fig = _figure(ncols=1, width=7.0)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in series.items():
        by_macs = sorted(points, key=lambda r: r["macs"])
        line = _line(ax, by_macs, "macs", "acc_after", label=f"{name} (fine-tuned)")
        color = line.get_color() if line is not None else None
        _line(ax, by_macs, "macs", "acc_before", color=color, linestyle="--", alpha=0.7,
              label=f"{name} (right after pruning)")  # fmt: skip
    if ref is not None:
        y = ref.get("acc_after") if _finite(ref.get("acc_after")) else ref.get("acc_before")
        if _finite(y) and _finite(ref.get("macs")):
            ax.plot([ref["macs"]], [y], marker="*", markersize=14, color="black", linestyle="",
                    label="unpruned")  # fmt: skip
    ax.set_xlabel("MACs per image")
    from matplotlib.ticker import EngFormatter  # matplotlib is there: _figure checked it

    ax.xaxis.set_major_formatter(EngFormatter())  # 25M, not 2.5 with a 1e7 offset
    ax.set_ylabel("top-1 validation accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Accuracy vs MACs{suffix}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    paths["accuracy_vs_macs"] = _save(fig, out / SWEEP_PLOTS["accuracy_vs_macs"])

    fig = _figure(ncols=2)
    panels = (
        ("latency_ms", "CPU latency (ms)", "latency not measured in this sweep"),
        ("epoch_time_s", "fine-tuning time per epoch (s)", "no fine-tuning in this sweep"),
    )
    for i, (key, label, absent) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 2, i)
        for name, points in series.items():
            _line(ax, points, "level", key, label=name)
        _hline(ax, ref, key, "unpruned")
        if not any(_finite(row.get(key)) for row in rows):  # say so, not an empty frame
            ax.text(0.5, 0.5, absent, ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(level_axis)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{label.split(' (')[0]} vs pruning level")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    paths["time_vs_level"] = _save(fig, out / SWEEP_PLOTS["time_vs_level"])
    return paths


def plot_comparison(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]) -> Path:
    """Grouped bars per model, unpruned vs pruned: time per epoch, CPU latency, accuracy.

    Returns:
        The path of ``comparison.png``.
    """
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    value = {(str(r["model"]), r["variant"]): r for r in rows}
    fig = _figure(ncols=3, width=max(4.0, 1.1 * len(models) + 2.0))
    # Without fine-tuning (--finetune-epochs 0) the accuracies are those right after pruning.
    tuned = any(_finite(r.get("acc_after")) for r in rows)
    panels = (
        ("epoch_time_s", "fine-tuning time per epoch (s)", "no fine-tuning in this comparison"),
        ("latency_ms", "CPU latency (ms)", "latency not measured in this comparison"),
        ("acc_after", "top-1 accuracy (fine-tuned)", "no accuracy measured")
        if tuned
        else ("acc_before", "top-1 accuracy (right after pruning)", "no accuracy measured"),
    )
    width = 0.38
    for i, (key, label, absent) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 3, i)
        for j, variant in enumerate(("unpruned", "pruned")):
            xs, ys = [], []
            for k, model in enumerate(models):
                v = value.get((model, variant), {}).get(key)
                if _finite(v):
                    xs.append(k + (j - 0.5) * width)
                    ys.append(v)
            if ys:
                ax.bar(xs, ys, width=width, label=variant)
        if key.startswith("acc_"):  # headroom above 1.0 keeps the legend off the bars
            ax.set_ylim(0, 1.2)
            ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0])
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:  # say so, not an empty frame
            ax.text(0.5, 0.5, absent, ha="center", va="center", transform=ax.transAxes)
    return _save(fig, Path(out_dir) / COMPARE_PLOT)


# --------------------------------------------------------------------------- reports


def _embed(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></figure>'


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}"
    "img{max-width:100%}figure{margin:1em 0}"
)


def _html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{content}" for h, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def _write_reports(
    out: Path,
    title: str,
    tables: Sequence[tuple[str, list[str], list[list[str]]]],
    plots: Mapping[str, Path],
    config: Mapping[str, Any],
) -> dict[str, Path]:
    md = [f"# {title}", ""]
    sections: list[tuple[str, str]] = []
    for heading, header, cells in tables:
        md += [f"## {heading}", "", markdown_table(header, cells), ""]
        sections.append((heading, _html_table(header, cells)))
    md += ["## Plots", ""]
    figures = []
    for name, path in plots.items():
        alt = name.replace("_", " ")
        md += [f"![{alt}]({path.name})", ""]
        figures.append(_embed(path, alt))
    sections.append(("Plots", "\n".join(figures)))
    config_cells = _config_rows(config)
    md += ["## Configuration", "", markdown_table(["setting", "value"], config_cells), ""]
    sections.append(("Configuration", _html_table(["setting", "value"], config_cells)))
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(html_path, _html_page(title, sections))
    return {"report_md": md_path, "report_html": html_path}


def write_sweep_report(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    config: Mapping[str, Any],
    title: str = "Pruning sweep",
) -> dict[str, Path]:
    """Draw the sweep plots and write ``report.md`` and a self-contained ``report.html``.

    Returns:
        Every written file by name: the plots of :data:`SWEEP_PLOTS`, ``report_md`` and
        ``report_html``.
    """
    out = Path(out_dir)
    plots = plot_sweep(rows, out, title=title)
    header, cells = sweep_table(rows)
    files = _write_reports(out, title, [("Results", header, cells)], plots, config)
    return {**plots, **files}


def write_compare_report(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    config: Mapping[str, Any],
    title: str = "Model comparison",
) -> dict[str, Path]:
    """Draw ``comparison.png`` and write ``report.md`` and a self-contained ``report.html``.

    Returns:
        ``{"comparison": ..., "report_md": ..., "report_html": ...}``.
    """
    out = Path(out_dir)
    plot = plot_comparison(rows, out)
    header, cells = compare_table(rows)
    files = _write_reports(out, title, [("Models", header, cells)], {"comparison": plot}, config)
    return {"comparison": plot, **files}
