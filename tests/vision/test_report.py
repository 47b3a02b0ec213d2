"""Tests of results files, plots and the markdown/HTML reports."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from netsurgeon.errors import NetsurgeonError
from netsurgeon.vision import report
from netsurgeon.vision.experiments import COMPARE_COLUMNS, SWEEP_COLUMNS
from netsurgeon.vision.report import (
    atomic_write_text,
    format_table,
    read_results,
    write_compare_report,
    write_results,
    write_sweep_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sweep_rows() -> list[dict]:
    rows = [_row("none", 0.0, macs=1000, acc=0.9)]
    for criterion, drop in (("l1", 0.1), ("taylor", 0.05)):
        for level in (0.25, 0.5, 0.75):
            rows.append(_row(criterion, level, macs=int(1000 * (1 - level) ** 2),
                             acc=0.9 - drop * level * 4))  # fmt: skip
    return rows


def _row(criterion: str, level: float, *, macs: int, acc: float) -> dict:
    return {
        "model": "net",
        "criterion": criterion,
        "level": level,
        "level_kind": "filters",
        "scope": "layer",
        "params": 10 * macs,
        "macs": macs,
        "size_bytes": 40 * macs,
        "latency_ms": macs / 100,
        "params_ratio": macs / 1000,
        "macs_ratio": macs / 1000,
        "acc_before": acc / 2,
        "loss_before": 2.0,
        "acc_after": acc,
        "loss_after": float("nan"),
        "finetune_epochs": 2,
        "epoch_time_s": macs / 500,
        "epoch_times_s": [macs / 400, macs / 600],
        "prune_time_s": 0.1,
        "trial_time_s": 1.0,
        "skipped": 0,
    }


def test_results_round_trip_and_csv_layout(tmp_path: Path) -> None:
    rows = sweep_rows()
    json_path, csv_path = write_results(tmp_path, rows, columns=SWEEP_COLUMNS)
    back = read_results(json_path)
    assert len(back) == len(rows)
    assert back[1]["epoch_times_s"] == [pytest.approx(1000 * 0.5625 / 400, rel=1e-3),
                                         pytest.approx(1000 * 0.5625 / 600, rel=1e-3)]  # fmt: skip
    assert back[0]["loss_after"] is None  # NaN is not JSON: written as null
    json.loads(json_path.read_text())  # strict JSON parses
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ",".join(SWEEP_COLUMNS)
    assert len(lines) == 1 + len(rows)
    first = dict(zip(SWEEP_COLUMNS, lines[1].split(","), strict=True))
    assert first["criterion"] == "none" and first["loss_after"] == ""
    assert first["epoch_times_s"] == "2.5;1.6666666666666667"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    umask = os.umask(0)
    os.umask(umask)
    # Results get the usual permissions, not the owner-only ones of a temporary file.
    assert csv_path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_read_results_refuses_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"rows": []}')
    with pytest.raises(NetsurgeonError, match="not a netsurgeon results file"):
        read_results(path)
    path.write_text('{"format": "netsurgeon.sweep.results/1", "rows": [')
    with pytest.raises(NetsurgeonError, match="unreadable"):
        read_results(path)


def test_atomic_write_keeps_old_file_when_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    atomic_write_text(path, "old,complete\n")

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new," * 1000)
    assert path.read_text() == "old,complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_sweep_report_is_self_contained(tmp_path: Path) -> None:
    rows = sweep_rows()
    config = {"criteria": ["l1", "taylor"], "train": {"lr": 0.01}, "data": "a<b>&c"}
    files = write_sweep_report(tmp_path, rows, config=config)
    for name in ("accuracy_vs_level", "accuracy_vs_macs", "time_vs_level"):
        assert files[name].read_bytes().startswith(PNG_MAGIC)
    page = files["report_html"].read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    # Nothing is fetched from elsewhere: every src is a data URI, no scripts, no links.
    assert re.findall(r'src="(?!data:)', page) == []
    assert "<script" not in page and "<link" not in page and "http" not in page
    assert "<td>a&lt;b&gt;&amp;c</td>" in page and "a<b>" not in page
    assert page.count("<tr>") == 1 + len(rows) + 4  # results header + rows, config header + 3
    assert "<td>train.lr</td><td>0.01</td>" in page
    markdown = files["report_md"].read_text()
    for name in ("accuracy_vs_level.png", "accuracy_vs_macs.png", "time_vs_level.png"):
        assert f"]({name})" in markdown
    assert markdown.count("\n| taylor |") == 3
    assert "| data | a\\<b\\>\\&c |" in markdown  # shown as written, not as HTML


@pytest.mark.parametrize(("kind", "removed"), [("filters", "filters"), ("macs", "MACs")])
def test_level_axes_say_what_a_level_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, removed: str
) -> None:
    """Before: "pruning level" alone, although with --level-kind macs a level is MACs removed."""
    labels: dict[str, list[str]] = {}

    def keep_labels(figure: Any, path: Path) -> Path:
        labels[path.stem] = [axes.get_xlabel() for axes in figure.axes]
        return path

    monkeypatch.setattr(report, "_save", keep_labels)
    report.plot_sweep([{**row, "level_kind": kind} for row in sweep_rows()], tmp_path)
    axis = f"pruning level (share of {removed} removed)"
    assert labels["accuracy_vs_level"] == [axis] and labels["time_vs_level"] == [axis, axis]


def test_time_panel_says_when_the_sweep_did_not_fine_tune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: with --finetune-epochs 0 the time-per-epoch panel was an empty frame."""
    texts: dict[str, list[list[str]]] = {}

    def keep_texts(figure: Any, path: Path) -> Path:
        texts[path.stem] = [[t.get_text() for t in axes.texts] for axes in figure.axes]
        return path

    monkeypatch.setattr(report, "_save", keep_texts)
    report.plot_sweep(sweep_rows(), tmp_path)
    assert texts["time_vs_level"] == [[], []]
    no_finetuning = [{**row, "epoch_time_s": None, "acc_after": None} for row in sweep_rows()]
    report.plot_sweep(no_finetuning, tmp_path)
    assert texts["time_vs_level"] == [[], ["no fine-tuning in this sweep"]]


def test_compare_report_and_plot(tmp_path: Path) -> None:
    rows = []
    for model, macs in (("alexnet", 700), ("resnet18", 1800)):
        for variant, share in (("unpruned", 1.0), ("pruned", 0.5)):
            row = _row("none" if variant == "unpruned" else "l1", 0.0 if share == 1 else 0.5,
                       macs=int(macs * share), acc=0.8)  # fmt: skip
            rows.append({"model": model, "variant": variant, **{k: v for k, v in row.items()
                                                                if k != "model"}})  # fmt: skip
    write_results(tmp_path, rows, columns=COMPARE_COLUMNS)
    files = write_compare_report(tmp_path, rows, config={"models": ["alexnet", "resnet18"]})
    assert files["comparison"].read_bytes().startswith(PNG_MAGIC)
    page = files["report_html"].read_text()
    assert page.count('<img src="data:image/png;base64,') == 1
    assert "<td>resnet18</td><td>pruned</td>" in page


def test_comparison_without_fine_tuning_plots_the_accuracy_right_after_pruning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: with --finetune-epochs 0 the time and accuracy panels were empty frames."""
    panels: list[tuple[str, list[str], int]] = []

    def keep_panels(figure: Any, path: Path) -> Path:
        panels.extend(
            (axes.get_ylabel(), [t.get_text() for t in axes.texts], len(axes.patches))
            for axes in figure.axes
        )
        return path

    monkeypatch.setattr(report, "_save", keep_panels)
    rows = []
    for model in ("alexnet", "resnet18"):
        for variant, share in (("unpruned", 1.0), ("pruned", 0.5)):
            row = _row("l1", 0.5, macs=int(1000 * share), acc=0.8)
            rows.append({**row, "model": model, "variant": variant, "acc_after": None,
                         "epoch_time_s": None})  # fmt: skip
    report.plot_comparison(rows, tmp_path)
    assert panels == [
        ("fine-tuning time per epoch (s)", ["no fine-tuning in this comparison"], 0),
        ("CPU latency (ms)", [], 4),
        ("top-1 accuracy (right after pruning)", [], 4),
    ]


def test_format_table_aligns_columns() -> None:
    text = format_table(["name", "value"], [["a", "1.00"], ["longer", "10.00"]])
    lines = text.splitlines()
    assert lines == ["name    value", "a        1.00", "longer  10.00"]


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    extra = rf"pip install 'netsurgeon\[{report.MATPLOTLIB_EXTRA}\]'"
    with pytest.raises(NetsurgeonError, match=extra):
        write_sweep_report(tmp_path, sweep_rows(), config={})
