"""Export of pruned models to ONNX and TorchScript; the exported outputs match PyTorch's."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import netsurgeon
from netsurgeon.cli import main
from netsurgeon.errors import CheckpointError, ConfigError, NetsurgeonError, WriteError
from netsurgeon.vision import build_model
from netsurgeon.vision import export as export_module
from netsurgeon.vision.export import (
    default_export_path,
    export_checkpoint,
    export_model,
    verify_export,
)
from tests.limits import file_size_limit

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_ONNX = importlib.util.find_spec("onnx") is not None
HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
needs_ort = pytest.mark.skipif(
    not (HAS_ORT and HAS_ONNX),
    reason="onnx and onnxruntime are not installed (pip install 'netsurgeon[export]')",
)


@pytest.fixture(scope="module")
def pruned() -> torch.nn.Module:
    """cifar_resnet20 with 40 % of its filters removed and non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = build_model("cifar_resnet20", num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    result = netsurgeon.prune(model, x, amount=0.4, criterion="l1")
    assert result.channels  # really pruned
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _onnx_run(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@needs_ort
@pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="onnxscript is not installed (the dynamo exporter)")
def test_onnx_dynamo_export_matches_pytorch(pruned: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    result = export_model(pruned, path, format="onnx", input_size=32, verify=True)
    assert result.path == path and result.input_shape == (2, 3, 32, 32)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    # The batch dimension is dynamic: another batch size runs and matches too.
    x = torch.randn(5, 3, 32, 32)
    assert torch.allclose(_onnx_run(path, x), _reference(pruned, x), atol=1e-4)


@needs_ort
def test_onnx_legacy_export_matches_pytorch(pruned: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "legacy.onnx"
    export_model(pruned, path, format="onnx", input_size=32, exporter="legacy")
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(_onnx_run(path, x), _reference(pruned, x), atol=1e-4)
    assert verify_export(path, pruned, x, format="onnx") < 1e-4


@needs_ort
def test_verify_inputs_do_not_depend_on_the_process(
    pruned: torch.nn.Module, tmp_path: Path
) -> None:
    """Without example inputs, the verification uses seeded ones: the same difference each run."""
    diffs = []
    for state in (1, 2):
        torch.manual_seed(state)
        path = tmp_path / f"m{state}.onnx"
        result = export_model(
            pruned, path, format="onnx", input_size=32, exporter="legacy", verify=True
        )
        diffs.append(result.max_abs_diff)
    assert diffs[0] is not None and diffs[0] == diffs[1]


def test_torchscript_export_matches_pytorch(pruned: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "m.torchscript.pt"
    result = export_model(pruned, path, format="torchscript", input_size=32, verify=True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5
    loaded = torch.jit.load(str(path))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), _reference(pruned, x), atol=1e-5)
    # Only the exported file is left in the folder (the temporary file was renamed).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.torchscript.pt"]


class FixedBatch(torch.nn.Module):
    """Reshapes with the batch size as a constant, which tracing bakes into the export."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).reshape(int(x.shape[0]), self.groups, -1)


class ShiftedWhenTraced(torch.nn.Module):
    """Adds 0.5 to its outputs while traced or exported, so the export differs from PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            y = y + 0.5
        return y


def test_verify_export_measures_the_difference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ShiftedWhenTraced().eval()
    path = tmp_path / "m.pt"
    export_model(model, path, format="torchscript", input_size=8)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = (torch.jit.load(str(path))(x) - model(x)).abs().max().item()
    assert expected == pytest.approx(0.5, abs=1e-6)  # the fixture really differs
    assert verify_export(path, model, x, format="torchscript") == expected


def test_a_failed_verification_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    path.write_bytes(b"an older export")
    message = (
        r"differs from PyTorch by up to 0\.5, more than atol \+ rtol x \S+ \(its largest output\) "
        r"= 0\.0001\d*; nothing was written\. If that difference is acceptable, raise --atol or "
        r"--rtol, or skip the check \(--verify no\)"
    )
    with pytest.raises(ConfigError, match=message):
        export_model(ShiftedWhenTraced(), path, format="torchscript", input_size=8, verify=True)
    assert path.read_bytes() == b"an older export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left
    # A tolerance above the difference accepts the same export and reports it.
    result = export_model(
        ShiftedWhenTraced(), path, format="torchscript", input_size=8, verify=True, atol=0.6
    )
    assert result.max_abs_diff == pytest.approx(0.5, abs=1e-6)


class LargeOutputs(ShiftedWhenTraced):
    """Outputs of about 1e5, shifted by 0.5 when traced: within float32 rounding's reach."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1e6 * self.conv(x).mean((2, 3))


def test_the_tolerance_grows_with_the_outputs(tmp_path: Path) -> None:
    """Before: atol alone refused correct exports of models with large outputs."""
    torch.manual_seed(0)
    model = LargeOutputs().eval()
    result = export_model(model, tmp_path / "m.pt", format="torchscript", input_size=8,
                          verify=True)  # fmt: skip
    assert result.max_abs_diff == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ConfigError, match=r"more than atol \+ rtol x \S+ \(its largest output"):
        export_model(model, tmp_path / "m.pt", format="torchscript", input_size=8, verify=True,
                     rtol=0.0)  # fmt: skip


def test_a_model_that_does_not_run_on_the_example_is_the_inputs_fault(tmp_path: Path) -> None:
    """Before: a traceback from the tracer (TorchScript) or "try a higher opset" (ONNX)."""
    with pytest.raises(ConfigError, match=r"does not run on example inputs of shape \(2, 3, 2, 2\) "
                       r"\(.*\); give an input size it accepts \(--input-size\)"):  # fmt: skip
        export_model(ShiftedWhenTraced(), tmp_path / "m.pt", format="torchscript", input_size=2)
    assert list(tmp_path.iterdir()) == []


def test_exporter_errors_lose_their_terminal_colours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def coloured(*args: object, **kwargs: object) -> None:
        raise torch.onnx.errors.OnnxExporterError("\x1b[96mThis is step 1/3\x1b[0m of export")

    monkeypatch.setattr("netsurgeon.vision.export._export_onnx", coloured)
    with pytest.raises(ConfigError) as info:
        export_model(ShiftedWhenTraced(), tmp_path / "m.onnx", format="onnx", input_size=8)
    assert "cannot write this model at its default opset: This is step 1/3 of export" in str(
        info.value
    )


def test_export_out_under_a_file_is_refused_in_one_line(
    pruned: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: 'cannot write .../x.pt: File exists'."""
    saved = netsurgeon.save(pruned, tmp_path / "pruned.pt")
    out = saved / "x.pt"
    assert main(["export", str(saved), "--format", "torchscript", "--out", str(out)]) == 2
    assert f"--out {str(out)!r}: {str(saved)!r} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("groups", "message"),
    [(2, r"returns shape \(2, 2, 54\), PyTorch \(3, 2, 36\)"),  # another batch: wrong shape
     (8, r"fails on inputs of shape \(3, 3, 8, 8\)")],  # 216 values do not split into 2 x 8
)  # fmt: skip
def test_verify_catches_a_batch_size_fixed_at_export(
    tmp_path: Path, groups: int, message: str
) -> None:
    with pytest.warns(torch.jit.TracerWarning), pytest.raises(ConfigError, match=message):
        export_model(FixedBatch(groups), tmp_path / "m.pt", format="torchscript", input_size=8,
                     verify=True)  # fmt: skip


def test_export_command_reads_a_checkpoint(
    pruned: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = netsurgeon.save(pruned, tmp_path / "pruned.pt", extra={"prune": {"input_size": 32}})
    assert main(["export", str(saved), "--format", "torchscript", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    target = tmp_path / "pruned.torchscript.pt"
    assert report["path"] == str(target) == str(default_export_path(saved, "torchscript"))
    # The size recorded in the checkpoint; null batch: it is free in the file (before: 2, the
    # traced batch, as if the file took only that).
    assert report["input_shape"] == [None, 3, 32, 32]
    assert report["max_abs_diff"] is not None and report["max_abs_diff"] < 1e-5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(target))(x), pruned(x), atol=1e-5)
    out = tmp_path / "other.pt"
    assert main(["export", str(saved), "--format", "torchscript", "--out", str(out)]) == 0
    assert "verified: largest difference" in capsys.readouterr().out and out.is_file()


@needs_ort
def test_export_command_onnx(
    pruned: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = netsurgeon.save(pruned, tmp_path / "pruned.pt")
    argv = ["export", str(saved), "--format", "onnx", "--exporter", "legacy", "--input-size", "32"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "verified: largest difference from PyTorch" in printed
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(_onnx_run(tmp_path / "pruned.onnx", x), _reference(pruned, x), atol=1e-4)


def test_export_errors(
    pruned: torch.nn.Module,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="format='tflite' is not allowed"):
        export_model(pruned, tmp_path / "m", format="tflite")
    with pytest.raises(ConfigError, match="exporter='jit'"):
        export_model(pruned, tmp_path / "m", format="onnx", exporter="jit")
    with pytest.raises(CheckpointError, match="no such file"):
        export_checkpoint(tmp_path / "missing.pt", format="onnx")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    assert main(["export", str(foreign), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert "not a netsurgeon checkpoint" in err and err.count("\n") == 1
    # A missing optional package names the extra to install, and leaves no file behind.
    real = importlib.util.find_spec
    monkeypatch.setattr(
        export_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnx" else real(name, *a),
    )
    with pytest.raises(NetsurgeonError, match=r"netsurgeon\[export\]"):
        export_model(pruned, tmp_path / "x.onnx", format="onnx", input_size=32)
    assert not any(p.name.startswith(".x.onnx") or p.name == "x.onnx" for p in tmp_path.iterdir())


def _declared_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))


@pytest.mark.parametrize(
    ("exporter", "opset", "message"),
    [
        (
            "dynamo",
            13,
            r"opset=13 \(--opset\) is not allowed with the dynamo exporter; use 18 to \d+; "
            r"for opset 13 use exporter='legacy' \(--exporter legacy; 7-20\)",
        ),
        (
            "dynamo",
            99,
            r"opset=99 \(--opset\) is not allowed with the dynamo exporter; use 18 to \d+$",
        ),
        ("dynamo", -1, r"opset=-1 \(--opset\) is not allowed"),
        ("legacy", 3, r"opset=3 \(--opset\) is not allowed with the legacy exporter; use 7 to 20$"),
        ("legacy", 99, r"opset=99 \(--opset\) is not allowed with the legacy exporter"),
    ],
)
def test_opsets_the_exporter_cannot_write_are_refused(
    pruned: torch.nn.Module, tmp_path: Path, exporter: str, opset: int, message: str
) -> None:
    """Before: dynamo silently wrote opset 18 (rc 0), legacy raised a raw RuntimeError."""
    target = tmp_path / "m.onnx"
    with pytest.raises(ConfigError, match=message):
        export_model(pruned, target, format="onnx", input_size=32, exporter=exporter,
                     opset=opset)  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_export_command_refuses_a_bad_opset_in_one_line(
    pruned: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = netsurgeon.save(pruned, tmp_path / "pruned.pt")
    for extra in (["--opset", "13"], ["--exporter", "legacy", "--opset", "3"]):
        assert main(["export", str(saved), "--format", "onnx", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("netsurgeon: error: opset=") and err.count("\n") == 1
    assert main(["export", str(saved), "--format", "torchscript", "--opset", "13"]) == 2
    assert "--opset applies to --format onnx only" in capsys.readouterr().err
    assert main(["export", str(saved), "--format", "torchscript", "--exporter", "legacy"]) == 2
    assert "--exporter applies to --format onnx only" in capsys.readouterr().err
    assert not (tmp_path / "pruned.onnx").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_ONNX and HAS_ONNXSCRIPT), reason="onnx and onnxscript are needed")
def test_onnx_file_declares_the_requested_opset(
    pruned: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_model(pruned, tmp_path / "legacy13.onnx", format="onnx", input_size=32,
                 exporter="legacy", opset=13)  # fmt: skip
    assert _declared_opset(tmp_path / "legacy13.onnx") == 13
    export_model(pruned, tmp_path / "dynamo20.onnx", format="onnx", input_size=32, opset=20)
    assert _declared_opset(tmp_path / "dynamo20.onnx") == 20
    # Were the range check to let through an opset the dynamo exporter cannot convert to, it
    # would write its own (18) with only a logged traceback: the file check refuses that.
    monkeypatch.setattr(export_module, "_opset_range", lambda exporter: (7, 23))
    target = tmp_path / "dynamo13.onnx"
    with pytest.raises(
        ConfigError, match="the dynamo exporter wrote opset 18, not the requested 13"
    ):
        export_model(pruned, target, format="onnx", input_size=32, opset=13)
    assert not target.exists()


def test_export_refuses_to_overwrite_its_input(
    pruned: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `export q.pt --out q.pt` replaced the model with its export and exited 0."""
    saved = netsurgeon.save(pruned, tmp_path / "q.pt")
    before = saved.read_bytes()
    for fmt in ("onnx", "torchscript"):
        assert main(["export", str(saved), "--format", fmt, "--out", str(saved)]) == 2
        err = capsys.readouterr().err
        assert "is the model being exported" in err and err.count("\n") == 1
    assert saved.read_bytes() == before


@needs_ort
def test_an_opset_too_old_for_the_model_is_one_clear_error(
    pruned: torch.nn.Module, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Before: a stack trace, after thousands of lines of TorchScript graph on stdout."""
    saved = netsurgeon.save(pruned, tmp_path / "pruned.pt")
    argv = ["export", str(saved), "--format", "onnx", "--exporter", "legacy", "--opset", "9"]
    assert main([*argv, "--input-size", "32"]) == 2
    out, err = capfd.readouterr()
    assert out == ""  # the exporter's native graph dump is discarded
    expected = (
        "netsurgeon: error: the legacy exporter cannot write this model at opset 9: "
        "step!=1 is currently not supported; try a higher opset (--opset)"
    )
    assert err.startswith(expected)
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned.pt"]


def test_exported_files_and_folders_are_named_for_what_they_are(
    pruned: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export given back to stats or export: not "a damaged PyTorch file"."""
    saved = netsurgeon.save(pruned, tmp_path / "pruned.pt")
    assert (
        main(["export", str(saved), "--format", "torchscript", "--out", str(tmp_path / "t.pt")])
        == 0
    )
    (tmp_path / "m.onnx").write_bytes(b"\x08\x08\x12\x07pytorch")
    capsys.readouterr()
    cases = {
        "t.pt": "is a TorchScript archive (as `netsurgeon export` writes), not a PyTorch model",
        "m.onnx": "is an ONNX model (as `netsurgeon export` writes), not a PyTorch model",
    }
    for name, message in cases.items():
        for command in (["stats"], ["export", "--format", "onnx"]):
            assert main([*command, str(tmp_path / name)]) == 2
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, err
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is a folder; give a model file"):
        export_checkpoint(folder, format="onnx")


@pytest.mark.parametrize(
    "format",
    [
        "torchscript",
        pytest.param("onnx", marks=[needs_ort, pytest.mark.skipif(
            not HAS_ONNXSCRIPT, reason="onnxscript is not installed (the dynamo exporter)")]),
    ],
)  # fmt: skip
def test_a_failed_export_write_is_one_write_error_and_keeps_the_old_file(
    pruned: torch.nn.Module, tmp_path: Path, format: str
) -> None:
    # TorchScript used to abort the whole process here (jit.save given a path cannot
    # report a failed write); ONNX raised the bare OSError.
    path = tmp_path / "m.out"
    path.write_bytes(b"an older export")
    with file_size_limit(64 * 1024), pytest.raises(WriteError) as info:
        export_model(pruned, path, format=format, input_size=32, verify=False)
    assert str(info.value) == f"cannot write {path}: File too large"
    assert path.read_bytes() == b"an older export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.out"]  # no temporary file left


def test_the_export_command_reports_a_full_disk_in_one_line(
    pruned: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = netsurgeon.save(pruned, tmp_path / "pruned.pt")
    target = tmp_path / "pruned.torchscript.pt"
    with file_size_limit(64 * 1024):
        code = main(["export", str(saved), "--format", "torchscript"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"netsurgeon: error: cannot write {target}: File too large\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned.pt"]


def test_an_export_not_verified_says_why(
    pruned: torch.nn.Module,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved = netsurgeon.save(pruned, tmp_path / "pruned.pt")
    argv = ["export", str(saved), "--format", "torchscript", "--input-size", "32"]
    assert main([*argv, "--verify", "no"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "not verified (--verify no)"
    # --verify auto for ONNX where onnxruntime is missing (the export itself is not run).
    no_modules = SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: None))
    monkeypatch.setattr("netsurgeon.vision.cli.importlib", no_modules)
    called = {}

    def fake_export(*args: object, **kwargs: object) -> export_module.ExportResult:
        called.update(kwargs)
        return export_module.ExportResult(tmp_path / "pruned.onnx", "onnx", (2, 3, 32, 32), None)

    monkeypatch.setattr("netsurgeon.vision.export.export_checkpoint", fake_export)
    assert main(["export", str(saved), "--format", "onnx", "--exporter", "legacy"]) == 0
    assert called["verify"] is False
    assert capsys.readouterr().out.splitlines()[-1] == (
        "not verified: onnxruntime is not installed (pip install 'netsurgeon[export]')"
    )


def test_a_float64_model_is_exported_and_verified_in_its_dtype(
    pruned: torch.nn.Module, tmp_path: Path
) -> None:
    """Before: the verification fed float32 inputs and failed with a raw dtype mismatch."""
    model = copy.deepcopy(pruned).double()
    result = export_model(model, tmp_path / "m.pt", format="torchscript", verify=True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-10
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.jit.load(str(result.path))(x).dtype == torch.float64


@pytest.mark.parametrize("name", ["atol", "rtol"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "0.1", True])
def test_a_bad_tolerance_is_refused(
    pruned: torch.nn.Module, tmp_path: Path, name: str, value: object
) -> None:
    """inf included: before, it passed every difference, a check that could not fail."""
    path = tmp_path / "m.pt"
    with pytest.raises(
        ConfigError,
        match=rf"{name}=.* is not allowed; use a finite number >= 0 \(--{name}\), or skip the "
        r"check \(--verify no\)",
    ):
        export_model(pruned, path, format="torchscript", verify=True, **{name: value})  # type: ignore[arg-type]
    assert not path.exists()
