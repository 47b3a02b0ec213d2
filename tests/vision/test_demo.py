"""Tests of the offline digits demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from netsurgeon.cli import main
from netsurgeon.errors import ConfigError, NetsurgeonError
from netsurgeon.vision import demo
from netsurgeon.vision.demo import DEMO_CRITERIA, DEMO_LEVELS, DigitsCNN, load_digits_data

torch.set_num_threads(1)


def test_digits_data_is_split_and_normalised() -> None:
    data = load_digits_data(val_fraction=0.25, seed=0)
    images, labels = data.train.tensors
    assert images.shape[1:] == (1, 8, 8) and images.dtype == torch.float32
    assert len(data.train) + len(data.val) == 1797
    assert len(data.val) == round(1797 * 0.25)
    assert data.num_classes == 10
    assert set(labels.tolist()) == set(range(10))
    assert images.mean().abs() < 1e-4 and (images.std() - 1).abs() < 1e-3
    again = load_digits_data(val_fraction=0.25, seed=0)
    assert torch.equal(again.val.tensors[0], data.val.tensors[0])
    with pytest.raises(ConfigError, match=r"val_fraction=1\.5"):
        load_digits_data(val_fraction=1.5)


def test_digits_cnn_shapes_and_arguments() -> None:
    model = DigitsCNN(num_classes=10, width=8)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    with pytest.raises(ConfigError, match="num_classes=1"):
        DigitsCNN(num_classes=1)
    with pytest.raises(ConfigError, match="width=0"):
        DigitsCNN(width=0)


def test_missing_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(NetsurgeonError, match=rf"netsurgeon\[{demo.SKLEARN_EXTRA}\]"):
        load_digits_data()


def test_a_resumed_demo_repeats_an_uninterrupted_one(tmp_path: Path) -> None:
    settings = {
        "base_epochs": 2, "finetune_epochs": 1, "criteria": ("taylor",), "levels": (0.5,),
        "progress": False,
    }  # fmt: skip
    whole = demo.run_demo(tmp_path / "whole", **settings)
    assert [r["criterion"] for r in whole.rows] == ["none", "taylor"]
    cut = tmp_path / "cut"
    demo.run_demo(cut, **settings)
    # As if the run had stopped after the base model: only the reference row is recorded.
    results = cut / "results.json"
    data = json.loads(results.read_text())
    data["rows"] = data["rows"][:1]
    results.write_text(json.dumps(data))
    resumed = demo.run_demo(cut, **settings)
    assert resumed.resumed == [("none", 0.0)] and resumed.ran == [("taylor", 0.5)]
    # Taylor scores filters on training batches and the trial fine-tunes on more: both must be
    # the batches the uninterrupted run drew, so every figure repeats exactly.
    for key in ("acc_before", "loss_before", "acc_after", "loss_after", "params", "macs"):
        assert resumed.rows[1][key] == whole.rows[1][key], key


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    # Its 3-minute target is measured in benchmarks/README.md, not asserted here.
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 1 + len(DEMO_CRITERIA) * len(DEMO_LEVELS)
    reference = rows[0]
    # The base CNN really learned the digits, and pruning really shrank it.
    assert reference["criterion"] == "none" and reference["acc_after"] > 0.9
    for criterion in DEMO_CRITERIA:
        macs = [r["macs"] for r in rows if r["criterion"] == criterion]
        assert len(macs) == len(DEMO_LEVELS)
        assert macs == sorted(macs, reverse=True) and macs[0] < reference["macs"]
        mild = next(r for r in rows if r["criterion"] == criterion)
        assert mild["acc_after"] > 0.8  # a quarter of the filters costs little after fine-tuning
    plot = out / "accuracy_vs_level.png"
    assert plot.is_file() and f"plot: {plot}" in printed
    table = printed.splitlines()
    assert table[0].split()[:2] == ["criterion", "level"]
    assert sum(1 for line in table if line.startswith(DEMO_CRITERIA)) == 12
    for name in ("results.csv", "config.json", "report.md", "report.html", "base_model.pt"):
        assert (out / name).is_file()

    # A second run finds every trial done and only redraws the report.
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    assert "0 trial(s) run, 13 resumed" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_checks_the_device_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: config.json recorded device 'cuda', so `--device cpu` was then refused."""
    out = tmp_path / "dm"
    with pytest.raises(ConfigError, match="cuda"):
        demo.run_demo(out, base_epochs=1, device="cuda", progress=False)
    assert not (out / "config.json").exists()
    assert main(["demo", "--out", str(out), "--device", "cuda", "--no-progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (out / "config.json").exists()
