"""Tests for the pruning subcommands: ``netsurgeon prune``, ``stats`` and ``models``.

They call :func:`netsurgeon.cli.main` in-process on small inputs (resnet18 at 32-64 pixels,
random weights) and run the installed console script once to check the exit status and the
one-line message of a user error.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from netsurgeon import load
from netsurgeon.cli import main
from netsurgeon.pruning.stats import count_macs, count_params

torchvision = pytest.importorskip("torchvision")

FAST = ["--repeats", "1", "--warmup", "0", "--device", "cpu", "--threads", "1"]
RESNET18_PARAMS = 11_689_512  # torchvision's resnet18 with 1000 classes


def _resnet18_macs(size: int, num_classes: int = 1000) -> int:
    """MACs of torchvision's resnet18 on one image, counted directly."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    return count_macs(model, torch.randn(1, 3, size, size))


def _run(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One JSON prune of resnet18 at 64 pixels, shared by the tests that inspect it."""
    out = tmp_path_factory.mktemp("prune") / "resnet18-pruned.pt"
    argv = ["prune", "resnet18", "--weights", "none", "--amount", "0.5", "--input-size", "64"]
    status, stdout, _ = _run([*argv, "--batch-size", "2", "--out", str(out), "--json", *FAST])
    assert status == 0
    return json.loads(stdout), out


def test_prune_json_reports_before_and_after(pruned: tuple[dict[str, Any], Path]) -> None:
    report, out = pruned
    before, after = report["before"], report["after"]
    assert before["params"] == RESNET18_PARAMS
    assert before["macs"] == _resnet18_macs(64)
    # Half the filters of every prunable layer go, so at least 40 % of the MACs go too.
    assert after["macs"] <= 0.6 * before["macs"]
    assert after["params"] < before["params"] and after["size_bytes"] < before["size_bytes"]
    for stats in (before, after):
        assert stats["batch_size"] == 2 and stats["input_size"] == 64
        assert stats["latency_ms"] > 0 and stats["device"] == "cpu"
    assert report["ratios"]["macs"] == pytest.approx(after["macs"] / before["macs"])
    assert report["criterion"] == "l1" and report["scope"] == "layer"
    assert report["amount"] == 0.5 and report["target_macs"] is None
    assert report["out"] == str(out) and report["prune_seconds"] > 0
    assert isinstance(report["skipped"], list)
    assert all(isinstance(reason, str) for reason in report["skipped"])
    assert report["channels"], "no layer was pruned"
    for old, new in report["channels"].values():
        assert 1 <= new < old


def test_pruned_file_loads_with_the_reported_shape(pruned: tuple[dict[str, Any], Path]) -> None:
    from netsurgeon.pruning import io as checkpoint_io

    report, out = pruned
    model = checkpoint_io.load(out).eval()
    images = torch.randn(2, 3, 64, 64)
    assert count_params(model) == report["after"]["params"]
    assert count_macs(model, images[:1]) == report["after"]["macs"]
    with torch.no_grad():
        assert model(images).shape == (2, 1000)  # the classifier keeps its outputs
    # The file carries the command's configuration next to the weights.
    settings = checkpoint_io.read_checkpoint(out)["extra"]["prune"]
    assert settings == {key: report[key] for key in settings}
    assert settings["model"] == "resnet18" and settings["criterion"] == "l1"


def test_stats_of_the_saved_file_matches_prune(pruned: tuple[dict[str, Any], Path]) -> None:
    report, out = pruned
    status, stdout, _ = _run(["stats", str(out), "--input-size", "64", "--json", *FAST])
    assert status == 0
    stats = json.loads(stdout)
    assert stats["source"] == "file"
    assert stats["threads"] == 1 and report["after"]["threads"] == 1  # FAST's --threads 1
    for key in ("params", "macs", "size_bytes"):
        assert stats[key] == report["after"][key], key


def test_prune_prints_a_table_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    argv = ["prune", "resnet18", "--weights", "none", "--target-macs", "0.5"]
    status, stdout, _ = _run([*argv, "--input-size", "32", "--out", str(out), *FAST])
    assert status == 0 and out.is_file()
    lines = stdout.splitlines()
    assert lines[0].startswith("pruned resnet18 with l1 (layer scope, target MACs 0.5)")
    assert lines[1].split() == ["metric", "before", "after", "after/before"]
    rows = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line) for line in lines[2:6]}
    latency = "latency (batch 1, cpu, 1 thread)"  # FAST's --threads 1, which CPU latency needs
    assert set(rows) == {"params", "MACs (per image)", "size on disk", latency}
    assert rows["params"][1] == "11.690 M"
    assert float(rows["MACs (per image)"][3]) <= 0.6  # kept fraction of MACs, near the target
    assert lines[6].startswith("kept unpruned")
    assert lines[-1] == f"saved to {out}"


def test_prune_lists_each_reason_for_keeping_channels_once(tmp_path: Path) -> None:
    """Before: the two zero pads of each CIFAR ResNet stream gave two identical lines."""
    argv = ["prune", "cifar_resnet20", "--weights", "none", "--input-size", "16"]
    status, stdout, _ = _run([*argv, "--amount", "0.5", "--out", str(tmp_path / "m.pt"), *FAST])
    assert status == 0
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("kept unpruned (5):"))
    reasons = lines[start + 1 : -1]
    assert len(reasons) == len(set(reasons)) == 3
    assert (
        sum(line.endswith("kept: zero channels added by a pad (2 groups)") for line in reasons) == 2
    )


def test_prune_ignore_keeps_the_named_modules_channels(tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    argv = ["prune", "resnet18", "--weights", "none", "--amount", "0.5", "--json"]
    status, stdout, _ = _run([*argv, "--ignore", "layer1,conv1", "--out", str(out), *FAST])
    assert status == 0
    report = json.loads(stdout)
    assert report["ignore"] == ["layer1", "conv1"]
    assert any("'layer1.0.conv1' is ignored" in line for line in report["skipped"])
    model = torchvision.models.resnet18()
    state = torch.load(out, weights_only=True)["state_dict"]
    for name, tensor in model.state_dict().items():
        if name.startswith(("layer1.", "conv1.", "bn1.")):
            assert state[name].shape == tensor.shape, name
    assert state["layer2.0.conv1.weight"].shape[0] < 128  # the rest is still pruned


def test_prune_layer_norms_prunes_a_convnext_stream(tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    argv = ["prune", "convnext_tiny", "--weights", "none", "--amount", "0.5", "--json",
            "--input-size", "32", "--num-classes", "10"]  # fmt: skip
    status, stdout, err = _run([*argv, "--prune-layer-norms", "--out", str(out), *FAST])
    assert status == 0, err
    report = json.loads(stdout)
    assert report["prune_layer_norms"] is True
    assert report["channels"]["features.0.0"] == [96, 48]  # the stem: the first stream
    assert report["skipped"] == ["classifier.2 (10 channels) kept: it reaches the model's output"]
    assert report["after"]["params"] < 0.3 * report["before"]["params"]


def test_prune_min_channels_and_round_to(tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    argv = ["prune", "cifar_resnet20", "--weights", "none", "--amount", "0.7", "--json",
            "--min-channels", "8", "--round-to", "8"]  # fmt: skip
    status, stdout, err = _run([*argv, "--out", str(out), *FAST])
    assert status == 0, err
    report = json.loads(stdout)
    assert (report["min_channels"], report["round_to"]) == (8, 8)
    assert report["channels"], "no layer was pruned"
    for old, new in report["channels"].values():
        assert new % 8 == 0 and 8 <= new < old


def test_random_criterion_follows_the_seed(tmp_path: Path) -> None:
    """``--criterion random`` draws from ``--seed``: the same seed repeats, another differs."""

    def shapes(seed: int, name: str) -> dict[str, tuple[int, ...]]:
        out = tmp_path / name
        argv = ["prune", "cifar_resnet20", "--weights", "none", "--amount", "0.5",
                "--scope", "global", "--criterion", "random", "--seed", str(seed)]  # fmt: skip
        status, _, err = _run([*argv, "--out", str(out), "--json", *FAST])
        assert status == 0, err
        state = torch.load(out, weights_only=True)["state_dict"]
        return {k: tuple(v.shape) for k, v in state.items() if k.endswith("conv1.weight")}

    first = shapes(0, "a.pt")
    assert shapes(0, "b.pt") == first
    assert shapes(1, "c.pt") != first


def test_stats_of_a_builder_name() -> None:
    status, stdout, _ = _run(["stats", "resnet18", "--input-size", "32", "--json", *FAST])
    assert status == 0
    stats = json.loads(stdout)
    assert stats["source"] == "builder" and stats["params"] == RESNET18_PARAMS
    assert stats["macs"] == _resnet18_macs(32)
    status, stdout, _ = _run(
        ["stats", "resnet18", "--num-classes", "10", "--json", "--input-size", "32", *FAST]
    )
    assert status == 0
    assert json.loads(stdout)["params"] == RESNET18_PARAMS - 990 * 512 - 990


def test_input_size_defaults_to_the_size_the_model_is_built_for(tmp_path: Path) -> None:
    from netsurgeon.vision import cifar_resnet20

    status, stdout, _ = _run(["stats", "cifar_resnet20", "--json", *FAST])
    assert status == 0
    stats = json.loads(stdout)
    assert stats["input_size"] == 32
    assert stats["macs"] == count_macs(cifar_resnet20(), torch.randn(1, 3, 32, 32))
    # prune records the size it used, and stats of the saved file measures at that size
    out = tmp_path / "r20.pt"
    argv = ["prune", "cifar_resnet20", "--weights", "none", "--amount", "0.5", "--json"]
    status, stdout, _ = _run([*argv, "--out", str(out), *FAST])
    assert status == 0
    report = json.loads(stdout)
    assert report["before"]["input_size"] == 32 and report["input_size"] == 32
    status, stdout, _ = _run(["stats", str(out), "--json", *FAST])
    assert status == 0 and json.loads(stdout)["macs"] == report["after"]["macs"]
    # an explicit size wins
    status, stdout, _ = _run(["stats", "cifar_resnet20", "--input-size", "40", "--json", *FAST])
    assert status == 0 and json.loads(stdout)["input_size"] == 40


def test_stats_prints_a_table_and_restores_threads() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        status, stdout, _ = _run(["stats", "resnet18", "--input-size", "32", *FAST])
        assert torch.get_num_threads() == 2  # --threads 1 held for the command only
    finally:
        torch.set_num_threads(previous)
    assert status == 0
    lines = stdout.splitlines()
    assert lines[0].split() == ["metric", "resnet18"]
    cells = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert [row[0] for row in cells] == [
        "params",
        "MACs (per image)",
        "size on disk",
        "latency (batch 1, cpu, 1 thread)",
    ]
    assert cells[0][1] == "11.690 M"
    assert cells[1][1] == f"{_resnet18_macs(32) / 1e6:.3f} M"
    assert re.fullmatch(r"4\d\.\d\d MiB", cells[2][1])  # 11.7 M float32 parameters
    assert re.fullmatch(r"\d+\.\d\d ms", cells[3][1])


def test_models_lists_builder_names_one_per_line() -> None:
    status, stdout, _ = _run(["models"])
    assert status == 0
    names = stdout.splitlines()
    assert {"alexnet", "resnet18", "vgg16", "mobilenet_v2"} <= set(names)
    assert all(name and name == name.strip() and " " not in name for name in names)


def test_the_core_commands_without_torchvision_name_the_extra(tmp_path: Path) -> None:
    """prune, stats and models are core commands: without torchvision installed they say
    which extra to install. Before: `netsurgeon models` ended in a traceback."""
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        sys.modules["torchvision"] = None  # as if it were not installed
        from netsurgeon.cli import main
        out = {str(tmp_path / "p.pt")!r}
        for words in (["models"], ["stats", "resnet18"],
                      ["prune", "resnet18", "--amount", "0.5", "--out", out]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                status = main(words)
            print(status, err.getvalue(), end="")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    said = "netsurgeon: error: building models needs torchvision: pip install 'netsurgeon[vision]'"
    assert done.stdout == f"2 {said}\n" * 3, done.stderr


PRUNE = ["prune", "resnet18", "--weights", "none", "--input-size", "32", *FAST]


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ([], "exactly one of --amount .* and --target-macs .* got neither"),
        (["--amount", "0.5", "--target-macs", "0.5"], "got both"),
        (["--amount", "1.5"], r"--amount 1.5 is not allowed; it must be in \(0, 1\)"),
        (["--amount", "0"], r"--amount 0.0 is not allowed"),
        (["--amount", "nan"], r"--amount nan is not allowed"),
        (["--target-macs", "1"], r"--target-macs 1.0 is not allowed"),
        (["--amount", "0.5", "--criterion", "taylor"], "'taylor' .* needs training data"),
        (["--amount", "0.5", "--criterion", "apoz"], "needs training data .* pass --data DIR"),
        (["--amount", "0.5", "--criterion", "magic"], "'magic' is unknown; use one of random, l1"),
        (["--amount", "0.5", "--scope", "model"], "--scope 'model' is not allowed; use one of"),
        (["--amount", "0.5", "--batch-size", "0"], "--batch-size 0 is not allowed"),
        (["--amount", "0.5", "--input-size", "-1"], "--input-size -1 is not allowed"),
        (["--amount", "0.5", "--repeats", "0"], "--repeats 0 is not allowed"),
        (["--amount", "0.5", "--num-classes", "0"], "--num-classes 0 is not allowed"),
        (["--amount", "0.5", "--threads", "0"], "--threads 0 is not allowed"),
        (["--amount", "0.5", "--min-channels", "0"], "--min-channels 0 is not allowed"),
        (["--amount", "0.5", "--round-to", "-8"], "--round-to -8 is not allowed"),
        (["--amount", "0.5", "--device", "tpu"], "device='tpu'"),
        (["--amount", "0.5", "--ignore", "layer9"], "no module named 'layer9'"),
        (["--amount", "0.5", "--reconstruct", "2"], "--reconstruct needs --data DIR"),
        (["--amount", "0.5", "--distill"], "--distill needs --data DIR .* or drop --distill"),
        (["--amount", "0.5", "--finetune-epochs", "3"], "--finetune-epochs needs --data DIR"),
    ],
)
def test_prune_rejects_bad_arguments(tmp_path: Path, extra: list[str], pattern: str) -> None:
    out = tmp_path / "never.pt"
    status, stdout, stderr = _run([*PRUNE, "--out", str(out), *extra])
    assert status == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("netsurgeon: error: ")
    assert re.search(pattern, stderr), stderr
    assert not out.exists()


def test_prune_ignore_refuses_an_empty_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``layer1,,conv1`` ran as ``layer1,conv1``, hiding a name left out."""
    out = tmp_path / "never.pt"
    with pytest.raises(SystemExit) as exit_info:
        main([*PRUNE, "--amount", "0.5", "--ignore", "layer1,,conv1", "--out", str(out)])
    assert exit_info.value.code == 2 and not out.exists()
    assert (
        "argument --ignore: expected comma-separated module names, got 'layer1,,conv1'; "
        "separate them with single commas" in capsys.readouterr().err
    )


@pytest.mark.parametrize("command", ["prune", "stats"])
def test_an_input_size_the_model_cannot_take_is_one_line(tmp_path: Path, command: str) -> None:
    """Before: a traceback from inside alexnet ("Output size is too small"), exit status 1."""
    argv = {
        "prune": ["prune", "alexnet", "--weights", "none", "--amount", "0.5",
                  "--out", str(tmp_path / "m.pt")],
        "stats": ["stats", "alexnet"],
    }[command]  # fmt: skip
    status, _, stderr = _run([*argv, "--input-size", "32", *FAST])
    assert status == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("netsurgeon: error: alexnet does not run on 32x32 images (")
    assert stderr.endswith("; give an input size it accepts (--input-size)\n")
    assert not (tmp_path / "m.pt").exists()


def test_prune_creates_a_missing_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "deeper" / "model.pt"
    status, _, stderr = _run([*PRUNE, "--amount", "0.5", "--out", str(out)])
    assert status == 0, stderr
    assert load(out).fc.in_features < 512  # saved, and pruned


def test_prune_rejects_an_output_under_a_file_or_at_a_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    status, _, stderr = _run([*PRUNE, "--amount", "0.5", "--out", str(blocker / "model.pt")])
    assert status == 2 and f"{str(blocker)!r} is a file, not a folder" in stderr, stderr
    status, _, stderr = _run([*PRUNE, "--amount", "0.5", "--out", str(tmp_path)])
    assert status == 2 and "is a folder; give a file name" in stderr, stderr


def test_prune_rejects_an_unknown_model(tmp_path: Path) -> None:
    out = tmp_path / "never.pt"
    argv = ["prune", "resnet_nope", "--weights", "none", "--amount", "0.5", "--out", str(out)]
    status, _, stderr = _run(argv)
    assert status == 2 and "resnet_nope" in stderr and not out.exists()


def test_prune_rejects_a_missing_weights_file(tmp_path: Path) -> None:
    out = tmp_path / "never.pt"
    weights = tmp_path / "absent.pth"
    argv = ["prune", "resnet18", "--weights", str(weights), "--amount", "0.5", "--out", str(out)]
    status, _, stderr = _run(argv)
    assert status == 2 and stderr.count("\n") == 1 and not out.exists()
    assert stderr.startswith(
        f"netsurgeon: error: weights={str(weights)!r} (--weights) for 'resnet18' is neither an "
        "existing file nor one of 'none', 'DEFAULT', "
    ), stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_prune_on_cuda_without_cuda_is_an_error(tmp_path: Path) -> None:
    argv = ["prune", "resnet18", "--weights", "none", "--amount", "0.5", "--device", "cuda"]
    status, _, stderr = _run([*argv, "--out", str(tmp_path / "x.pt")])
    assert status == 2 and "CUDA is not available" in stderr


def test_stats_rejects_a_missing_file(tmp_path: Path) -> None:
    status, _, stderr = _run(["stats", str(tmp_path / "absent.pt")])
    assert status == 2 and "no such file" in stderr


def test_stats_rejects_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint")
    status, stdout, stderr = _run(["stats", str(path), *FAST])
    assert status == 2 and stdout == "" and stderr.count("\n") == 1
    assert str(path) in stderr


def test_stats_rejects_num_classes_for_a_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(b"x")
    status, _, stderr = _run(["stats", str(path), "--num-classes", "3"])
    assert status == 2 and "--num-classes applies to builder names only" in stderr


def _console_script() -> str:
    script = Path(sys.executable).with_name("netsurgeon")
    found = str(script) if script.exists() else shutil.which("netsurgeon")
    assert found, "the netsurgeon console script is not installed (pip install -e .)"
    return found


def test_console_script_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "never.pt"
    argv = [_console_script(), *PRUNE, "--amount", "2", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "netsurgeon: error: --amount 2.0 is not allowed; it must be in (0, 1)\n"
    assert not out.exists()


def test_prune_help_describes_the_data_mode() -> None:
    """Before: "prune its convolution filters without data", --criterion listed only the
    data-free criteria, although --data enables taylor, activation, apoz and iterative mode."""
    text = " ".join(_help("prune").split())  # argparse wraps to the terminal's width
    description = text.split("positional arguments")[0]
    assert "without data" not in description and "with --data DIR" in description
    assert "random, l1, l2, bn_scale, fpgm; with --data also activation, apoz, taylor" in text


def _help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([command, "--help"])
    return out.getvalue()


@pytest.mark.parametrize("extra", [["--batch-size", "8"], ["--warmup", "0"], ["--repeats", "1"]])
def test_prune_with_data_refuses_latency_options(tmp_path: Path, extra: list[str]) -> None:
    """Before: accepted with --data and silently ignored (the iterative report has no latency)."""
    out = tmp_path / "never.pt"
    argv = ["prune", "resnet18", "--weights", "none", "--amount", "0.5", "--data",
            str(tmp_path / "data"), "--out", str(out)]  # fmt: skip
    status, stdout, stderr = _run([*argv, *extra])
    assert status == 2 and stdout == "" and stderr.count("\n") == 1
    assert f"{extra[0]} has no effect with --data" in stderr
    # The fine-tuning batch size is named only where it was likely meant.
    assert ("--train-batch-size" in stderr) == (extra[0] == "--batch-size")
    assert not out.exists()


def test_prune_amounts_per_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.pt"
    argv = ["prune", "cifar_resnet20", "--weights", "none", "--amount", "0.5", "--json",
            "--amounts", "layer3=0.75,layer1.?.conv1=0"]  # fmt: skip
    status, stdout, err = _run([*argv, "--out", str(out), *FAST])
    assert status == 0, err
    report = json.loads(stdout)
    assert report["amounts"] == {"layer3": 0.75, "layer1.?.conv1": 0.0}
    channels = report["channels"]
    assert channels["layer3.0.conv1"] == [64, 16] and channels["layer2.0.conv1"] == [32, 16]
    assert not any(name.startswith("layer1.") and name.endswith("conv1") for name in channels)
    for bad, message in [
        ("layer3", "argument --amounts: expected comma-separated NAME=FRACTION entries, got "
                   "'layer3' in 'layer3'"),
        ("layer3=x", "got 'layer3=x'"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main([*PRUNE, "--amount", "0.5", "--amounts", bad, "--out", str(out)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_prune_and_stats_take_timm_models(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    out = tmp_path / "r18.pt"
    argv = ["prune", "timm:resnet18", "--weights", "none", "--amount", "0.5", "--input-size"]
    status, stdout, _ = _run([*argv, "32", "--num-classes", "10", "--out", str(out), "--json",
                              *FAST])  # fmt: skip
    assert status == 0
    report = json.loads(stdout)
    assert report["before"]["params"] == count_params(timm.create_model("resnet18", num_classes=10))
    model = load(out)
    assert isinstance(model, timm.models.ResNet) and model.fc.out_features == 10
    assert count_params(model) == report["after"]["params"] < report["before"]["params"] / 3
    status, stdout, _ = _run(["stats", str(out), "--json", *FAST])
    assert status == 0 and json.loads(stdout)["macs"] == report["after"]["macs"]
