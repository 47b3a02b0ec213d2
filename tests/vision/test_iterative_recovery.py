"""Distillation, BatchNorm recalibration and reconstruction in prune_and_finetune, finetune
and the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import torch

import netsurgeon
from netsurgeon.cli import main
from netsurgeon.distill import DEFAULT_FEATURE_WEIGHT, DistillationLoss
from netsurgeon.errors import ConfigError
from netsurgeon.pruning.io import read_checkpoint
from netsurgeon.pruning.stats import count_macs
from netsurgeon.vision import build_model
from netsurgeon.vision import iterative as it
from netsurgeon.vision.iterative import finetune, prune_and_finetune, run_iterative_from_args
from tests.vision.test_iterative import CONFIG, EXAMPLE, SIZE, _prune_parser, loaders, small_model
from tests.vision.test_vision_cli import finetune_args, make_image_folder

torch.set_num_threads(1)


def test_distillation_and_recalibration_in_prune_and_finetune(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    losses: list[Any] = []
    recalibrated: list[int] = []
    real_steps, real_fit, real_recal = it.train_steps, it.fit, it._recalibrate

    def spy_steps(model: torch.nn.Module, loader: Any, **kwargs: Any) -> Any:
        losses.append(kwargs["loss_fn"])
        return real_steps(model, loader, **kwargs)

    def spy_fit(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        losses.append(kwargs["loss_fn"])
        return real_fit(model, *args, **kwargs)

    def spy_recal(model: torch.nn.Module, loader: Any, *, batches: int) -> int:
        recalibrated.append(batches)
        return real_recal(model, loader, batches=batches)

    monkeypatch.setattr(it, "train_steps", spy_steps)
    monkeypatch.setattr(it, "fit", spy_fit)
    monkeypatch.setattr(it, "_recalibrate", spy_recal)
    model = small_model()
    unpruned = {k: v.clone() for k, v in model.state_dict().items()}
    macs0 = count_macs(model, EXAMPLE)
    train, val = loaders()
    result = prune_and_finetune(
        model, train, val, example_inputs=EXAMPLE, config=CONFIG, criterion="taylor",
        target_macs=0.5, prune_steps=2, finetune_steps=1, finetune_epochs=1,
        criterion_batches=2, distill=True, distill_temperature=2.0, distill_alpha=0.5,
        recalibrate_bn=2,
    )  # fmt: skip
    # Every fine-tuning (2 slices' steps and the final epochs) used one DistillationLoss whose
    # teacher is the unpruned model as it was passed in, frozen.
    assert len(losses) == 3 and all(loss is losses[0] for loss in losses)
    loss = losses[0]
    assert isinstance(loss, DistillationLoss)
    assert (loss.temperature, loss.alpha) == (2.0, 0.5)
    assert count_macs(loss.teacher, EXAMPLE) == macs0 and result.macs_ratio <= 0.5 + 1e-9
    teacher_state = loss.teacher.state_dict()
    assert all(torch.equal(teacher_state[k], v) for k, v in unpruned.items())
    assert not loss.teacher.training
    assert not any(p.requires_grad for p in loss.teacher.parameters())
    # Recalibration: on the one-shot copy and after each of the 2 slices.
    assert recalibrated == [2, 2, 2]
    assert result.accuracy_pruned is not None and result.accuracy_recalibrated is not None
    assert 0.0 <= result.accuracy_recalibrated <= 1.0
    settings = result.to_dict()["settings"]
    assert settings["distill"] is True and settings["recalibrate_bn"] == 2
    assert result.to_dict()["accuracy_recalibrated"] == result.accuracy_recalibrated
    assert "after BatchNorm recalibration" in it.format_iterative(result)


def _stream_norms(model: torch.nn.Module) -> list[str]:
    """The batch norms of a CIFAR ResNet's residual streams: ignoring them keeps their width."""
    return [n for n, _ in model.named_modules() if n == "bn1" or n.endswith(".bn2")]


def test_feature_distillation_in_prune_and_finetune(monkeypatch: pytest.MonkeyPatch) -> None:
    terms: list[float] = []
    real = DistillationLoss.feature_loss

    def spy(self: DistillationLoss) -> torch.Tensor:
        value = real(self)
        terms.append(float(value.detach()))
        return value

    monkeypatch.setattr(DistillationLoss, "feature_loss", spy)
    model = small_model()
    train, val = loaders()
    result = prune_and_finetune(
        model, train, val, example_inputs=EXAMPLE, config=CONFIG, criterion="l1",
        target_macs=0.6, prune_steps=2, finetune_steps=1, finetune_epochs=1,
        ignore=_stream_norms(model), distill=True, distill_features=["layer?.?"],
        distill_feature_weight=3.0,
    )  # fmt: skip
    # 2 slices x 1 step, then 1 epoch: its training and validation batches (fit's validation
    # loss is the training loss); the pruned student never matches the teacher's blocks exactly.
    assert len(terms) == 2 + len(train) + len(val) and all(t > 0 for t in terms)
    assert result.macs_ratio <= 0.6 + 1e-9
    settings = result.to_dict()["settings"]
    assert settings["distill_features"] == ["layer?.?"]
    assert settings["distill_feature_weight"] == 3.0
    assert not any(m._forward_hooks for m in result.model.modules())
    # A hooked feature layer keeps its channels, so that its outputs still match the
    # teacher's (before: a ConfigError naming the shapes, after the pruning).
    model = small_model()
    result = prune_and_finetune(
        model, train, val, example_inputs=EXAMPLE, config=CONFIG, criterion="l1",
        amount=0.5, prune_steps=1, finetune_steps=1, finetune_epochs=0,
        ignore=_stream_norms(model), distill=True, distill_features=["layer1.0.bn1"],
    )  # fmt: skip
    assert "layer1.0.conv1" not in result.to_dict()["channels"]
    assert result.model.layer1[0].bn1.num_features == small_model().layer1[0].bn1.num_features
    assert any(
        "'layer1.0.bn1' is a distillation feature (its outputs are matched to the teacher's)"
        in reason
        for reason in result.to_dict()["skipped"]
    )
    with pytest.raises(ConfigError, match=r"distill_features=\['layer1'\] need distill=True"):
        prune_and_finetune(
            small_model(), train, val, example_inputs=EXAMPLE, config=CONFIG,
            target_macs=0.5, distill_features=["layer1"],
        )  # fmt: skip


def test_reconstruction_in_prune_and_finetune(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []
    real = it._reconstruct

    def spy(model: torch.nn.Module, reference: torch.nn.Module, loader: Any, **kw: Any) -> Any:
        fits = real(model, reference, loader, **kw)
        # The reference is the model before this prune: larger than the pruned one.
        calls.append((count_macs(reference, EXAMPLE), count_macs(model, EXAMPLE), kw["batches"]))
        assert fits and all(f.error_after <= f.error_before for f in fits)
        return fits

    monkeypatch.setattr(it, "_reconstruct", spy)
    model = small_model()
    macs0 = count_macs(model, EXAMPLE)
    train, val = loaders()
    result = prune_and_finetune(
        model, train, val, example_inputs=EXAMPLE, config=CONFIG, criterion="l1",
        target_macs=0.5, prune_steps=2, finetune_steps=0, finetune_epochs=0, reconstruct=2,
    )  # fmt: skip
    # The one-shot copy, then each of the 2 slices against the model before that slice.
    assert len(calls) == 3 and all(b == 2 for _, _, b in calls)
    assert calls[0][0] == macs0 and calls[1][0] == macs0 and calls[2][0] == calls[1][1]
    assert all(before > after for before, after, _ in calls)
    assert result.accuracy_reconstructed is not None and result.accuracy_recalibrated is None
    assert result.to_dict()["settings"]["reconstruct"] == 2
    assert "after least-squares reconstruction" in it.format_iterative(result)


def test_bad_recovery_arguments_leave_the_model_unchanged() -> None:
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, val = loaders()
    common: dict[str, Any] = {
        "example_inputs": EXAMPLE, "config": CONFIG, "target_macs": 0.5, "prune_steps": 1,
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"temperature=-2\.0"):
        prune_and_finetune(model, train, val, distill=True, distill_temperature=-2.0, **common)
    with pytest.raises(ConfigError, match=r"alpha=1\.5"):
        prune_and_finetune(model, train, val, distill=True, distill_alpha=1.5, **common)
    with pytest.raises(ConfigError, match="recalibrate_bn=-1"):
        prune_and_finetune(model, train, val, recalibrate_bn=-1, **common)
    with pytest.raises(ConfigError, match="reconstruct=-3"):
        prune_and_finetune(model, train, val, reconstruct=-3, **common)
    with pytest.raises(ConfigError, match="distill='yes'"):
        prune_and_finetune(model, train, val, distill="yes", **common)  # type: ignore[arg-type]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--distill", "--distill-temperature", "-1"], "--distill-temperature -1.0"),
        (["--distill", "--distill-temperature", "nan"], "--distill-temperature nan"),
        (["--distill", "--distill-alpha", "2"], "--distill-alpha 2.0"),
        (["--distill-temperature", "3"], "--distill-temperature has no effect without --distill"),
        (["--distill-features", "layer?.?"], "--distill-features has no effect without --distill"),
        (["--distill", "--distill-features", " , "], "--distill-features ' , ' names no module"),
        (["--distill", "--distill-features", "layer1,,layer2"], "'layer1,,layer2' .* empty entry"),
        (["--distill", "--distill-feature-weight", "3"], "no effect without --distill-features"),
        (
            ["--distill", "--distill-features", "a", "--distill-feature-weight", "0"],
            "--distill-feature-weight 0.0",
        ),
        (["--recalibrate-bn", "-1"], "--recalibrate-bn -1"),
        (["--reconstruct", "-1"], "--reconstruct -1"),
    ],
)
def test_prune_cli_validates_the_recovery_flags(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    argv = ["prune", "cifar_resnet20", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"),
            "--target-macs", "0.5", *flags]  # fmt: skip
    args = _prune_parser().parse_args(argv)
    with pytest.raises(ConfigError, match=message):
        run_iterative_from_args(args)


def test_prune_cli_with_distillation_and_recalibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_image_folder(tmp_path / "data", classes=("red", "blue"), per_class=6, split=True)
    out = tmp_path / "pruned.pt"
    args = _prune_parser().parse_args(
        ["prune", "cifar_resnet20", "--data", str(data), "--out", str(out), "--weights", "none",
         "--criterion", "l1", "--target-macs", "0.5", "--prune-steps", "1",
         "--finetune-steps", "0", "--finetune-epochs", "1", "--input-size", str(SIZE),
         "--train-batch-size", "4", "--device", "cpu", "--workers", "0",
         "--distill", "--distill-temperature", "3", "--recalibrate-bn", "2",
         "--reconstruct", "1", "--ignore", "bn1,layer?.?.bn2", "--distill-features", "layer?.?"]
    )  # fmt: skip
    assert run_iterative_from_args(args) == 0
    printed = capsys.readouterr().out
    assert "after BatchNorm recalibration" in printed
    assert "after least-squares reconstruction" in printed
    extra = read_checkpoint(out)["extra"]["iterative"]
    settings = extra["settings"]
    assert settings["distill"] is True and settings["distill_temperature"] == 3.0
    assert settings["distill_alpha"] == 0.9 and settings["recalibrate_bn"] == 2
    assert settings["distill_features"] == ["layer?.?"]
    # The pattern kept every residual stream: only the blocks' inner convolutions shrank.
    assert extra["channels"] and all(name.endswith(".conv1") for name in extra["channels"])
    assert 0.0 <= extra["accuracy_recalibrated"] <= 1.0
    assert settings["reconstruct"] == 1 and 0.0 <= extra["accuracy_reconstructed"] <= 1.0


def test_finetune_with_a_teacher_file_and_recalibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fitted: list[tuple[torch.nn.Module, Any]] = []
    recalibrated: list[tuple[torch.nn.Module, int]] = []
    real_fit, real_recal = it.fit, it._recalibrate

    def spy_fit(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        fitted.append((model, kwargs["loss_fn"]))
        return real_fit(model, *args, **kwargs)

    def spy_recal(model: torch.nn.Module, loader: Any, *, batches: int) -> int:
        recalibrated.append((model, batches))
        return real_recal(model, loader, batches=batches)

    monkeypatch.setattr(it, "fit", spy_fit)
    monkeypatch.setattr(it, "_recalibrate", spy_recal)
    data = make_image_folder(tmp_path / "data")
    teacher_file = tmp_path / "teacher.pt"
    teacher = build_model("cifar_resnet20", num_classes=2)
    netsurgeon.save(teacher, teacher_file)
    out = tmp_path / "student.pt"
    argv = finetune_args(data, out, "--teacher", str(teacher_file), "--distill-alpha", "0.5",
                         "--recalibrate-bn", "1", "--max-steps", "2")  # fmt: skip
    assert main(argv) == 0
    # fit trained by distillation from the teacher file's model, and the BatchNorm statistics
    # of the model it trained were recalibrated on 1 batch first.
    assert len(fitted) == 1
    student, loss = fitted[0]
    assert isinstance(loss, DistillationLoss)
    assert (loss.temperature, loss.alpha) == (4.0, 0.5)
    teacher_state = loss.teacher.state_dict()
    assert teacher_state.keys() == teacher.state_dict().keys()
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    assert len(recalibrated) == 1 and recalibrated[0][0] is student and recalibrated[0][1] == 1
    extra = read_checkpoint(out)["extra"]["finetune"]
    # Feature distillation: same architecture, so every block output has the teacher's shape.
    featured = tmp_path / "featured.pt"
    argv = finetune_args(data, featured, "--teacher", str(teacher_file), "--distill-features",
                         "layer1.0,layer3.?", "--max-steps", "2")  # fmt: skip
    assert main(argv) == 0
    distilled = read_checkpoint(featured)["extra"]["finetune"]["distill"]
    assert distilled["features"] == ["layer1.0", "layer3.?"]
    assert distilled["feature_weight"] == DEFAULT_FEATURE_WEIGHT == 300.0
    assert extra["distill"] == {
        "teacher": str(teacher_file), "temperature": 4.0, "alpha": 0.5, "features": [],
        "feature_weight": None,
    }  # fmt: skip
    assert extra["recalibrate_bn"] == 1
    capsys.readouterr()
    # A teacher of other classes, and distillation flags without a teacher, are refused.
    wrong = tmp_path / "wrong.pt"
    netsurgeon.save(build_model("cifar_resnet20", num_classes=5), wrong)
    with pytest.raises(ConfigError, match="teacher scores"):
        finetune("cifar_resnet20", data, config=CONFIG, input_size=SIZE, teacher=wrong)
    assert main(finetune_args(data, out, "--distill-temperature", "2")) == 2
    assert "without --teacher FILE" in capsys.readouterr().err
    missing = tmp_path / "missing.pt"  # before: "missing.pt: no such file", no option named
    assert main(finetune_args(data, out, "--teacher", str(missing))) == 2
    assert capsys.readouterr().err == (
        f"netsurgeon: error: teacher (--teacher) '{missing}' does not exist; give a model file "
        "saved by netsurgeon (finetune's or prune's --out)\n"
    )


def test_finetune_resume_refuses_a_changed_teacher_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_image_folder(tmp_path / "data")
    teacher_file = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    netsurgeon.save(build_model("cifar_resnet20", num_classes=2), teacher_file)
    out = tmp_path / "student.pt"
    argv = finetune_args(data, out, "--teacher", str(teacher_file), "--epochs", "1")
    assert main(argv) == 0
    resume = finetune_args(data, out, "--teacher", str(teacher_file), "--epochs", "2", "--resume")
    torch.manual_seed(1)  # another teacher saved over the same file
    netsurgeon.save(build_model("cifar_resnet20", num_classes=2), teacher_file)
    capsys.readouterr()
    assert main(resume) == 2
    assert "teacher_sha256: " in capsys.readouterr().err


def test_iterative_arguments_include_the_recovery_flags() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    it.add_iterative_arguments(parser)
    args = parser.parse_args(["m"])
    assert args.distill is False and args.recalibrate_bn == 0
    assert args.distill_temperature is None and args.distill_alpha is None
    assert args.distill_features is None and args.distill_feature_weight is None
