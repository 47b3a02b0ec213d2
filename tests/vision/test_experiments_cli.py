"""Tests of ``netsurgeon sweep``, ``compare-models`` and their errors, on tiny image folders."""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netsurgeon.cli import main
from netsurgeon.pruning import CRITERIA
from netsurgeon.vision import build_model
from netsurgeon.vision.data import load_image_data
from netsurgeon.vision.experiments import COMPARE_COLUMNS, SWEEP_COLUMNS
from netsurgeon.vision.experiments_cli import stratified_subset

torch.set_num_threads(1)

CLASSES = ("bright", "dark", "mid")
OUTPUTS = (
    "config.json",
    "results.json",
    "results.csv",
    "accuracy_vs_level.png",
    "accuracy_vs_macs.png",
    "time_vs_level.png",
    "report.md",
    "report.html",
)
QUICK = ["--workers", "0", "--batch-size", "8", "--latency-repeats", "2", "--no-progress"]


def make_image_folder(root: Path, *, train: int = 8, val: int = 4) -> Path:
    """``root/{train,val}/<class>/*.png``: 32x32 noise images, one brightness per class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for offset, name in zip((170, 10, 90), CLASSES, strict=True):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(offset, offset + 75, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_stratified_subset_covers_every_class() -> None:
    targets = [0] * 10 + [1] * 3 + [2] * 7
    chosen = stratified_subset(targets, 6, seed=0)
    assert len(chosen) == 6 == len(set(chosen))
    assert {targets[i] for i in chosen} == {0, 1, 2}
    assert chosen == stratified_subset(targets, 6, seed=0)
    assert stratified_subset(targets, 50, seed=0) == list(range(20))


@pytest.mark.parametrize("flag", ["--train-subset", "--val-subset"])
def test_a_subset_smaller_than_the_classes_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    data = make_image_folder(tmp_path / "data", train=2, val=2)
    argv = ["sweep", "cifar_resnet20", "--data", str(data), "--weights", "none", "--criteria",
            "l1", "--levels", "0.5", flag, "2", "--out", str(tmp_path / "out"), *QUICK]  # fmt: skip
    assert main(argv) == 2
    assert f"{flag} 2 is smaller than the 3 classes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_subset_larger_than_the_data_says_all_is_used(tmp_path: Path) -> None:
    """Before: --train-subset 100 on 6 images used 6 without a word (config.json says 100)."""
    data = make_image_folder(tmp_path / "data", train=2, val=2)
    argv = ["sweep", "cifar_resnet20", "--data", str(data), "--weights", "none", "--criteria",
            "l1", "--levels", "0.5", "--train-subset", "100", "--out", str(tmp_path / "out"),
            *QUICK]  # fmt: skip
    with pytest.warns(UserWarning, match="--train-subset 100 is more than the 6 training images"):
        assert main(argv) == 0


@pytest.mark.parametrize("command", ["sweep", "compare-models", "demo"])
def test_an_out_folder_under_a_file_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Before: status 1 after scanning the data and building the model."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    out = str(blocker / "run")
    argv = {
        "sweep": ["sweep", "cifar_resnet20", "--data", str(tmp_path / "missing"), "--criteria",
                  "l1", "--levels", "0.5"],
        "compare-models": ["compare-models", "cifar_resnet20", "--data",
                           str(tmp_path / "missing"), "--level", "0.5"],
        "demo": ["demo"],
    }[command]  # fmt: skip
    assert main([*argv, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{blocker}' is a file, not a folder" in err, err


def test_sweep_on_image_folder_writes_everything(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "sweep"
    argv = ["sweep", "cifar_resnet20", "--data", str(data), "--weights", "none",
            "--criteria", "l1,apoz", "--levels", "0.25,0.5",
            "--finetune-epochs", "1", "--out", str(out), *QUICK]  # fmt: skip
    assert main(argv) == 0
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == list(SWEEP_COLUMNS)
    assert [(r["criterion"], r["level"]) for r in rows] == [
        ("none", "0.0"), ("l1", "0.25"), ("l1", "0.5"), ("apoz", "0.25"), ("apoz", "0.5"),
    ]  # fmt: skip
    for row in rows:
        assert row["model"] == "cifar_resnet20"
        assert 0.0 <= float(row["acc_before"]) <= 1.0
        assert 0.0 <= float(row["acc_after"]) <= 1.0
        assert float(row["epoch_time_s"]) > 0
    reference_macs = int(rows[0]["macs"])
    for criterion in ("l1", "apoz"):
        macs = [int(r["macs"]) for r in rows if r["criterion"] == criterion]
        assert reference_macs > macs[0] > macs[1]
    config = json.loads((out / "config.json").read_text())
    assert config["info"]["model"] == "cifar_resnet20"
    assert config["info"]["num_classes"] == 3 and config["info"]["classes"] == list(CLASSES)
    assert config["info"]["train_images"] == 24
    assert config["info"]["input_size"] == 32  # the CIFAR ResNet's size, without --input-size
    assert config["slice_lr"] == "constant"
    html = (out / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 3

    # The same command again resumes: nothing is rerun and no row is duplicated.
    before = (out / "results.json").read_text()
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text()) == json.loads(before)


def test_sweep_base_model_depends_on_seed_only(tmp_path: Path) -> None:
    """A random model (or a new head) comes from --seed, not the process's RNG state, so a
    sweep resumed in another process continues from the same base model."""
    data = make_image_folder(tmp_path / "data")
    rows = []
    for state in (1, 2):
        torch.manual_seed(state)  # what the process drew before differs
        out = tmp_path / f"sweep{state}"
        argv = ["sweep", "cifar_resnet20", "--data", str(data), "--weights", "none",
                "--criteria", "l1", "--device", "cpu", "--levels", "0.5", "--finetune-epochs", "1",
                "--out", str(out), *QUICK]  # fmt: skip
        assert main(argv) == 0
        rows.append(read_csv(out / "results.csv"))
    same = ("criterion", "params", "macs", "acc_before", "loss_before", "acc_after", "loss_after")
    assert [[r[k] for k in same] for r in rows[0]] == [[r[k] for k in same] for r in rows[1]]


def test_sweep_with_other_settings_in_same_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_image_folder(tmp_path / "data", train=2, val=2)
    out = tmp_path / "sweep"
    argv = ["sweep", "cifar_resnet20", "--data", str(data), "--weights", "none",
            "--input-size", "32", "--criteria", "l1", "--levels", "0.5",
            "--finetune-epochs", "0", "--threads", "1", "--out", str(out), *QUICK]  # fmt: skip
    assert main(argv) == 0
    # train.epochs is unused (finetune_epochs says how long), so it is not written; folders
    # written before, which hold it, still resume.
    saved = json.loads((out / "config.json").read_text())
    assert "epochs" not in saved["train"] and saved["finetune_epochs"] == 0
    saved["train"]["epochs"] = 1
    (out / "config.json").write_text(json.dumps(saved))
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netsurgeon: error:") and len(err.strip().splitlines()) == 1
    assert "train.lr: 0.01 then, 0.5 now" in err
    assert main([*argv, "--slice-lr", "schedule"]) == 2
    assert "slice_lr: 'constant' then, 'schedule' now" in capsys.readouterr().err
    # How the run executes is recorded but may change on a resume.
    info = json.loads((out / "config.json").read_text())["info"]
    assert (info["workers"], info["cache_data"], info["threads"]) == (0, False, 1)
    previous = torch.get_num_threads()
    changed = [*argv, "--workers", "1", "--cache-data", "--threads", "2"]
    with warnings.catch_warnings(record=True) as seen:  # every trial done: no new rows differ
        warnings.simplefilter("always")
        assert main(changed) == 0
    assert not [w for w in seen if "execution settings" in str(w.message)]
    results = json.loads((out / "results.json").read_text())
    results["rows"] = results["rows"][:-1]  # as if stopped before the last trial
    (out / "results.json").write_text(json.dumps(results))
    expected = (
        f"resuming {out} with other execution settings (info.cache_data: False then, True now; "
        "info.threads: 1 then, 2 now; info.workers: 0 then, 1 now); its earlier rows used the "
        "values in config.json, the new rows use these"
    )
    with pytest.warns(UserWarning, match=re.escape(expected)):
        assert main(changed) == 0
    assert torch.get_num_threads() == previous  # --threads held for the command only
    # A folder stopped before its first trial finished holds no results to speak of.
    (out / "results.json").unlink()
    capsys.readouterr()
    assert main([*argv, "--lr", "0.5"]) == 2
    assert f"{out} holds a stopped run (no results yet) of a different configuration (train.lr: " \
        "0.01 then, 0.5 now)" in capsys.readouterr().err  # fmt: skip


@pytest.mark.parametrize(
    "levels, shown", [("0.5,1.2", "level 1.2"), ("0", "level 0.0"), ("0.2,x", "'x'")]
)
def test_bad_levels_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], levels: str, shown: str
) -> None:
    # The data folder does not exist: levels are checked before any data is read.
    argv = ["sweep", "cifar_resnet20", "--data", str(tmp_path / "none"), "--out",
            str(tmp_path / "o"), "--levels", levels]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert shown in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_unknown_criterion_lists_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sweep", "cifar_resnet20", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
            "--criteria", "l1,weird"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown criterion 'weird'" in err
    assert all(name in err for name in CRITERIA)


def test_missing_and_empty_data_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert main(["sweep", "cifar_resnet20", "--data", str(missing), "--out",
                 str(tmp_path / "o"), "--levels", "0.5"]) == 2  # fmt: skip
    assert f"data folder {missing} does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare-models", "cifar_resnet20", "--data", str(empty), "--out",
                 str(tmp_path / "o"), "--level", "0.5"]) == 2  # fmt: skip
    assert f"data folder {empty} is empty" in capsys.readouterr().err


def test_compare_models_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(["compare-models", "cifar_resnet20", *base, "--level", "1.5"]) == 2
    assert "level 1.5 is not allowed" in capsys.readouterr().err
    assert main(["compare-models", "cifar_resnet20", *base, "--level", "0.5",
                 "--criterion", "magic"]) == 2  # fmt: skip
    assert "unknown criterion 'magic'" in capsys.readouterr().err
    assert main(["compare-models", " , ", *base, "--level", "0.5"]) == 2
    assert "no models given" in capsys.readouterr().err
    assert main(["compare-models", "cifar_resnet20,resnet18", *base, "--level", "0.5"]) == 2
    assert capsys.readouterr().err == (
        "netsurgeon: error: the models are built for different input sizes (cifar_resnet20 32, "
        "resnet18 224); pass --input-size S to train them all at one size\n"
    )


def test_compare_models_checks_every_models_input_size_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: cifar_resnet20 trained, then alexnet failed with a traceback, leaving a
    half-written folder."""
    data = make_image_folder(tmp_path / "data", train=4, val=2)
    out = tmp_path / "cmp"
    argv = ["compare-models", "cifar_resnet20,alexnet", "--data", str(data), "--weights", "none",
            "--input-size", "32", "--level", "0.5", "--out", str(out), *QUICK]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("netsurgeon: error: alexnet does not run on 32x32 images (")
    assert err.count("\n") == 1 and not out.exists()


def test_compare_models_checks_one_weights_file_against_every_model_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the mismatch surfaced after cifar_resnet20 had trained, and the folder then
    held a stopped run that refused the corrected command."""
    import netsurgeon
    from netsurgeon.vision import build_model

    data = make_image_folder(tmp_path / "data", train=4, val=2)
    weights = tmp_path / "r20.pt"
    netsurgeon.save(build_model("cifar_resnet20", num_classes=3), weights)
    out = tmp_path / "cmp"
    argv = ["compare-models", "cifar_resnet20,cifar_resnet32", "--data", str(data),
            "--input-size", "32", "--level", "0.5", "--out", str(out), "--finetune-epochs", "1",
            *QUICK]  # fmt: skip
    assert main([*argv, "--weights", str(weights)]) == 2
    assert capsys.readouterr().err == (
        f"netsurgeon: error: {weights}: holds a 'cifar_resnet20' model, not 'cifar_resnet32'\n"
    )
    assert not out.exists()
    assert main([*argv, "--weights", "none"]) == 0


def test_compare_models_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_image_folder(tmp_path / "data", train=4, val=2)
    out = tmp_path / "cmp"
    argv = ["compare-models", "cifar_resnet20,cifar_resnet32", "--data", str(data),
            "--weights", "none", "--input-size", "32", "--level", "0.5", "--out", str(out),
            "--finetune-epochs", "1", *QUICK]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == list(COMPARE_COLUMNS)
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("cifar_resnet20", "unpruned"), ("cifar_resnet20", "pruned"),
        ("cifar_resnet32", "unpruned"), ("cifar_resnet32", "pruned"),
    ]  # fmt: skip
    by = {(r["model"], r["variant"]): r for r in rows}
    for model in ("cifar_resnet20", "cifar_resnet32"):
        assert int(by[model, "pruned"]["macs"]) < int(by[model, "unpruned"]["macs"])
        assert float(by[model, "pruned"]["epoch_time_s"]) > 0
        assert float(by[model, "unpruned"]["latency_ms"]) > 0
    assert int(by["cifar_resnet32", "unpruned"]["params"]) > int(
        by["cifar_resnet20", "unpruned"]["params"]
    )
    for name in ("comparison.png", "report.md", "report.html", "results.json", "config.json"):
        assert (out / name).is_file()
    assert "cifar_resnet32" in printed and "comparison" in printed


@pytest.mark.slow
@pytest.mark.shared
def test_sweep_on_real_cifar10_small(shared_dir: Path, tmp_path: Path) -> None:
    data = shared_dir / "data" / "cifar10-small"
    weights = shared_dir / "data" / "resnet_cifar10" / "resnet32-d509ac18.th"
    if not data.is_dir() or not weights.is_file():
        pytest.skip(f"cifar10-small or the ResNet-32 checkpoint is missing under {shared_dir}")
    out = tmp_path / "sweep"
    argv = ["sweep", "cifar_resnet32", "--data", str(data), "--weights", str(weights),
            "--input-size", "32", "--criteria", "l1,taylor", "--levels", "0.3,0.6",
            "--finetune-epochs", "1", "--train-subset", "64", "--val-subset", "100",
            "--max-train-batches", "2", "--batch-size", "32", "--lr", "0.01",
            "--out", str(out), "--workers", "0", "--latency-repeats", "3",
            "--no-verify", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    rows = read_csv(out / "results.csv")
    assert len(rows) == 5
    reference = rows[0]
    # The real pretrained weights classify the re-encoded CIFAR images well before pruning.
    assert float(reference["acc_before"]) > 0.6
    assert int(reference["params"]) == 464154  # ResNet-32 with a 10-class head
    for criterion in ("l1", "taylor"):
        mild, strong = (r for r in rows if r["criterion"] == criterion)
        assert int(reference["macs"]) > int(mild["macs"]) > int(strong["macs"])
        assert float(mild["epoch_time_s"]) > 0
        assert 0.0 <= float(strong["acc_after"]) <= 1.0


def test_compare_models_checks_every_name_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a typo failed after the earlier models trained, and config.json (holding the
    mistyped list) then refused the corrected command; without --input-size the typo was
    reported as an input-size clash."""
    data = make_image_folder(tmp_path / "data", train=2, val=2)
    out = tmp_path / "cmp"
    argv = ["compare-models", "cifar_resnet20,resnet18x", "--data", str(data), "--weights",
            "none", "--level", "0.5", "--out", str(out), "--finetune-epochs", "0",
            *QUICK]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet18x'" in err and "input sizes" not in err
    assert main([*argv, "--input-size", "32"]) == 2
    assert "unknown model 'resnet18x'" in capsys.readouterr().err
    assert not out.exists()


def _quick_sweep(tmp_path: Path) -> tuple[Path, list[str]]:
    """The results folder and the command line of a one-trial sweep on a tiny image folder."""
    data = make_image_folder(tmp_path / "data", train=2, val=2)
    out = tmp_path / "sweep"
    argv = ["sweep", "cifar_resnet20", "--data", str(data), "--weights", "none",
            "--criteria", "l1", "--levels", "0.5", "--finetune-epochs", "0",
            "--out", str(out), *QUICK]  # fmt: skip
    return out, argv


def test_sweep_resume_may_change_how_it_computes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: device, AMP, compile, channels-last, loader processes and --cache-data may
    change on resume. Before: 'train.device: 'auto' before, 'cpu' now' was refused."""
    out, argv = _quick_sweep(tmp_path)
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main([*argv, "--device", "cpu", "--channels-last"]) == 0
    assert json.loads((out / "results.json").read_text()) == rows  # resumed, nothing rerun
    # No new row, so none ran otherwise than the old ones: nothing to warn about.
    assert not [w for w in seen if "execution settings" in str(w.message)]
    (out / "results.json").write_text(json.dumps({**rows, "rows": rows["rows"][:1]}))
    with pytest.warns(UserWarning, match="train.channels_last: False then, True now; "
                      "train.device: 'auto' then, 'cpu' now"):  # fmt: skip
        assert main([*argv, "--device", "cpu", "--channels-last"]) == 0
    capsys.readouterr()
    assert main([*argv, "--device", "cpu", "--seed", "1"]) == 2  # what it computes may not
    assert "train.seed: 0 then, 1 now" in capsys.readouterr().err


def test_sweep_resumed_by_another_netsurgeon_version_warns_when_trials_are_left(
    tmp_path: Path,
) -> None:
    from netsurgeon import __version__
    from netsurgeon.provenance import VERSION_KEY

    out, argv = _quick_sweep(tmp_path)
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config[VERSION_KEY] == __version__
    (out / "config.json").write_text(json.dumps({**config, VERSION_KEY: "0.0.1"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to run: nothing to warn about
        assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(json.dumps({**rows, "rows": rows["rows"][:1]}))
    with pytest.warns(UserWarning, match=f"resuming {re.escape(str(out))}, written by "
                      "netsurgeon 0.0.1, with netsurgeon"):  # fmt: skip
        assert main(argv) == 0
    assert len(json.loads((out / "results.json").read_text())["rows"]) == 2


def test_sweep_resume_checks_the_weights_file_by_content_not_by_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_image_folder(tmp_path / "data", train=2, val=2)
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(build_model("cifar_resnet20", num_classes=10).state_dict(), weights)
    out = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "cifar_resnet20", "--data", str(data), "--criteria", "l1", "--levels",
            "0.5", "--finetune-epochs", "0", "--out", str(out), *QUICK]  # fmt: skip
    assert main([*argv, "--weights", "w.pt"]) == 0
    info = json.loads((out / "config.json").read_text())["info"]
    assert info["weights"] == str(weights.resolve()) and len(info["weights_sha256"]) == 64
    # The same file by another path resumes (nothing to rerun).
    capsys.readouterr()
    assert main([*argv, "--weights", str(weights)]) == 0
    assert "0 trial(s) run, 2 resumed" in capsys.readouterr().out
    # The file rewritten with other weights is refused, whatever its name.
    torch.manual_seed(1)
    torch.save(build_model("cifar_resnet20", num_classes=10).state_dict(), weights)
    assert main([*argv, "--weights", "w.pt"]) == 2
    assert "info.weights_sha256: " in capsys.readouterr().err
    # A folder written before the digest was recorded resumes (before: refused, and no
    # option could add the missing digest).
    config = json.loads((out / "config.json").read_text())
    del config["info"]["weights_sha256"]
    (out / "config.json").write_text(json.dumps(config))
    assert main([*argv, "--weights", "w.pt"]) == 0
    assert "0 trial(s) run, 2 resumed" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["sweep", "compare-models"])
def test_resume_refuses_a_data_folder_whose_files_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Before: config.json kept the folder's path, classes and (subset) image counts, so a
    rewritten image, or one moved between classes, mixed two data sets' rows in one table."""
    data = make_image_folder(tmp_path / "data", train=2, val=2)
    out = tmp_path / "out"
    pick = ["--criteria", "l1", "--levels", "0.5"] if command == "sweep" else ["--level", "0.5"]
    argv = [command, "cifar_resnet20", "--data", str(data), "--weights", "none", *pick,
            "--finetune-epochs", "0", "--out", str(out), *QUICK]  # fmt: skip
    assert main(argv) == 0
    info = json.loads((out / "config.json").read_text())["info"]
    assert (info["data_train_images"], info["data_val_images"]) == (6, 6)
    # The same number of images, one of them rewritten at another size.
    pixels = np.full((40, 40, 3), 100, dtype=np.uint8)
    Image.fromarray(pixels).save(data / "train" / "mid" / "0.png")
    now = load_image_data(data, input_size=32).fingerprint()["data_sha256"]
    results = (out / "results.json").read_text()
    capsys.readouterr()
    assert main(argv) == 2
    assert now != info["data_sha256"]
    assert capsys.readouterr().err == (
        f"netsurgeon: error: {out} holds results of a different configuration (the data "
        "folder's image files changed (as many images, other names or sizes)); rerun with the "
        "same settings to resume, or choose another out folder (--out)\n"
    )
    assert (out / "results.json").read_text() == results
    # Folders written before the fingerprint was recorded still resume.
    for path in out.rglob("config.json"):
        config = json.loads(path.read_text())
        for key in ("data_train_images", "data_val_images", "data_sha256"):
            del config["info"][key]
        path.write_text(json.dumps(config))
    assert main(argv) == 0
    assert "0 trial(s) run, 2 resumed" in capsys.readouterr().out


def test_sweep_and_compare_normalise_as_the_models_expect(
    tmp_path: Path, normalizations: list[tuple[object, object]]
) -> None:
    """A sweep normalises its images as its timm model was pretrained (mean and std 0.5 here)
    and records it; a comparison of models that expect different normalisations loads the
    images with ImageNet's and renormalises them for the others, which their folders record.
    Before: the comparison gave every model ImageNet's, with a warning."""
    pytest.importorskip("timm")
    data = make_image_folder(tmp_path / "data", train=4, val=2)
    timm_net = "timm:mobilenetv4_conv_small_050"
    common = ["--data", str(data), "--weights", "none", "--input-size", "32",
              "--finetune-epochs", "1", "--max-train-batches", "1", *QUICK]  # fmt: skip
    argv = ["sweep", timm_net, "--criteria", "l1", "--levels", "0.5", "--out", str(tmp_path / "s")]
    assert main([*argv, *common]) == 0
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["info"]["mean"] == config["info"]["std"] == [0.5, 0.5, 0.5]
    argv = ["compare-models", f"cifar_resnet20,{timm_net}", "--level", "0.5",
            "--out", str(tmp_path / "c")]  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*normalis")
        assert main([*argv, *common]) == 0
    assert "mean" not in json.loads((tmp_path / "c" / "config.json").read_text())["info"]
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalizations == [((0.5,) * 3, (0.5,) * 3), imagenet]
    folders = {p.parent.name: json.loads(p.read_text())["info"] for p in
               (tmp_path / "c").glob("*/config.json")}  # fmt: skip
    assert "mean" not in folders["cifar_resnet20"]
    assert folders["timm_mobilenetv4_conv_small_050"]["mean"] == [0.5, 0.5, 0.5]
    assert folders["timm_mobilenetv4_conv_small_050"]["std"] == [0.5, 0.5, 0.5]
