from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from netsurgeon.oov.evaluate import Evaluation
from netsurgeon.oov.experiment import _mean_attention, summarise
from netsurgeon.oov.report import format_mean_std, section_label, write_report

CHROMIUM = Path("/usr/bin/chromium")


def _evaluation(f1: float, attention: dict[str, dict[str, float]] | None) -> Evaluation:
    sections = {s: {"f1": f1, "precision": f1, "recall": f1} for s in ("all", "oov_tokens")}
    sections["oov_sentences"] = {"f1": f1 - 10, "precision": f1, "recall": f1, "sentences": 3}
    examples = [
        {
            "word": "Zorple<b>",
            "left": ["said", "mr"],
            "right": ["on", "Monday"],
            "gold": "B-PER",
            "pred": "B-PER",
            "attention": {"word": 0.2, "left": 0.7, "right": 0.1},
        },
        {
            "word": "1996-08-22",
            "left": [],
            "right": ["&", "more"],
            "gold": "O",
            "pred": "B-LOC",
            "attention": {"word": 0.9, "left": 0.05, "right": 0.05},
        },
    ]
    return Evaluation("dev.txt", "ner", sections, {}, {}, attention, examples if attention else [])


def _results() -> dict[str, Any]:
    att0 = {
        "PER": {"word": 0.2, "left": 0.6, "right": 0.2, "count": 10},
        "O": {"word": 0.8, "left": 0.1, "right": 0.1, "count": 30},
    }
    att1 = {
        "PER": {"word": 0.4, "left": 0.4, "right": 0.2, "count": 10},
        "O": {"word": 0.6, "left": 0.2, "right": 0.2, "count": 30},
    }
    evaluations = {
        "random": [_evaluation(70.0, None), _evaluation(72.0, None)],
        "comick": [_evaluation(77.0, att0), _evaluation(79.0, att1)],
    }
    summary, gains = summarise("ner", evaluations, ["random", "comick"], "random")
    stats = {"tokens": 100, "oov_tokens": 7, "token_rate": 0.07, "types": 50}
    stats |= {"oov_types": 6, "type_rate": 0.12}
    return {
        "task": "ner",
        "metric": "F1",
        "methods": ["random", "comick"],
        "baseline": "random",
        "seeds": [0, 1],
        "summary": {"dev": summary},
        "gains": {"dev": gains},
        "oov": {"train": stats, "dev": stats},
        "attention_by_tag": {"comick": _mean_attention(evaluations["comick"])},
        "examples": {"comick": evaluations["comick"][0].examples},
    }


def test_summary_and_gains() -> None:
    results = _results()
    comick = results["summary"]["dev"]["all"]["comick"]
    assert comick["mean"] == 78.0 and comick["std"] == pytest.approx(2**0.5)
    assert results["gains"]["dev"]["all"]["comick"] == pytest.approx(100 * (78 - 71) / 71)
    assert format_mean_std(comick) == "78.00 ± 1.41"
    pooled = results["attention_by_tag"]["comick"]
    assert pooled["PER"]["left"] == pytest.approx(0.5)
    assert pooled["O"]["count"] == 30


def test_section_labels_say_what_each_task_scores() -> None:
    assert section_label("ner", "oov_tokens") == "entities with an OOV token"
    assert section_label("pos", "oov_tokens") == "OOV tokens"
    assert section_label("ner", "all") == section_label("pos", "all") == "all tokens"


def test_writes_json_markdown_and_html(tmp_path: Path) -> None:
    paths = write_report(_results(), tmp_path)
    assert json.loads(paths["json"].read_text())["baseline"] == "random"
    md = paths["md"].read_text()
    assert "| dev | all tokens | F1 | 71.00 ± 1.41 | 78.00 ± 1.41 | +9.86 % |" in md
    assert "| dev | entities with an OOV token | F1 |" in md  # NER scores their entities
    assert "| PER | 10 | 0.300 | 0.500 | 0.200 |" in md
    assert "| train | 100 | 7 | 7.00 % | 50 | 6 | 12.00 % |" in md
    page = paths["html"].read_text()
    assert "Zorple&lt;b&gt;" in page and "<b>" not in page  # escaped
    assert "<script" not in page and "http" not in page  # self-contained
    # The left context of the first example is shaded by its weight 0.7.
    assert re.search(r'class="left"[^>]*rgba\(31, 119, 180, 0\.700\)[^>]*>said mr<', page)


def test_mean_counts_are_not_truncated(tmp_path: Path) -> None:
    """Before: a mean count over seeds of 10.5 showed as 10."""
    results = _results()
    results["attention_by_tag"]["comick"]["PER"]["count"] = 10.5
    md = write_report(results, tmp_path)["md"].read_text()
    assert "| PER | 10.5 | 0.300 |" in md and "| O | 30 | " in md


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed (/usr/bin/chromium; apt-get install chromium)",
)
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    paths = write_report(_results(), tmp_path / "report")
    profile = tmp_path / "profile"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    url = paths["html"].resolve().as_uri()
    dom = subprocess.run(
        [str(CHROMIUM), *flags, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # The browser parsed every table: results, attention per tag, examples.
    assert dom.count("<table") == 3
    assert dom.count('<td class="example">') == 2
    assert "OOV experiment: NER (F1)" in dom
    assert "78.00 ± 1.41" in dom
    screenshot = tmp_path / "page.png"
    subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={screenshot}", "--window-size=1000,800", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    shutil.rmtree(profile, ignore_errors=True)
