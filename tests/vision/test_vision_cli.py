"""``netsurgeon finetune`` end to end on tiny image folders, and on the real hymenoptera set."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

import netsurgeon
from netsurgeon.cli import main
from netsurgeon.errors import ConfigError
from netsurgeon.pruning.io import read_checkpoint
from netsurgeon.training import Callback, TrainConfig, TrainState, load_checkpoint
from netsurgeon.vision import iterative as it
from netsurgeon.vision.data import load_image_data

torch.set_num_threads(1)

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 40),
    "blue": (40, 40, 220),
}


def make_image_folder(
    root: Path,
    *,
    classes: Sequence[str] = ("red", "blue"),
    per_class: int = 6,
    split: bool = True,
    size: tuple[int, int] = (20, 18),
) -> Path:
    """An ImageFolder of noisy solid-colour images; ``split`` adds train/ and val/ folders."""
    g = torch.Generator().manual_seed(0)
    parts = (("train", per_class), ("val", max(2, per_class // 2))) if split else (("", per_class),)
    for part, count in parts:
        for name in classes:
            folder = root / part / name if part else root / name
            folder.mkdir(parents=True, exist_ok=True)
            base = torch.tensor(COLOURS[name], dtype=torch.float32).view(3, 1, 1)
            for i in range(count):
                noise = torch.randint(-30, 31, (3, size[1], size[0]), generator=g)
                pixels = (base + noise).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(pixels).save(folder / f"{name}{i}.png")
    return root


def finetune_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "cifar_resnet20", "--data", str(data), "--out", str(out),
        "--weights", "none", "--input-size", "16", "--batch-size", "4", "--device", "cpu",
        "--workers", "0", "--lr", "0.05", *extra,
    ]  # fmt: skip


def test_finetune_end_to_end_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "new" / "model.pt"  # a missing folder is created
    assert main(finetune_args(data, out, "--epochs", "2", "--num-classes", "2")) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned cifar_resnet20 on 2 classes (blue, red)" in printed
    assert "validation accuracy:" in printed and f"saved to {out}" in printed
    model = netsurgeon.load(out)
    assert model.linear.out_features == 2
    extra = read_checkpoint(out)["extra"]["finetune"]
    assert extra["classes"] == ["blue", "red"] and extra["input_size"] == 16
    assert len(extra["history"]["epochs"]) == 2
    assert 0.0 <= extra["val_accuracy"] <= 1.0
    # The per-epoch checkpoint sits beside the model.
    assert load_checkpoint(out.parent / "model.pt.train.ckpt")["epoch"] == 2
    # `netsurgeon stats FILE` reads the saved model.
    # It measures at the size the model was fine-tuned at.
    stats = ["stats", str(out), "--repeats", "1", "--warmup", "0", "--json"]
    assert main(stats) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["input_size"] == 16


def test_finetune_refuses_an_input_size_the_model_cannot_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a traceback from the first training step."""
    data = make_image_folder(tmp_path / "data")
    argv = finetune_args(data, tmp_path / "m.pt", "--epochs", "1")
    argv[argv.index("cifar_resnet20")] = "alexnet"
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(
        "netsurgeon: error: alexnet does not run on 16x16 images ("
    )
    assert not (tmp_path / "m.pt").exists()


def test_finetune_trains_at_the_models_own_input_size(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "model.pt"
    argv = finetune_args(data, out, "--epochs", "1", "--max-steps", "1")
    at = argv.index("--input-size")
    assert main(argv[:at] + argv[at + 2 :]) == 0
    assert read_checkpoint(out)["extra"]["finetune"]["input_size"] == 32  # cifar_resnet20's


def test_finetune_and_iterative_prune_normalise_as_the_timm_model_expects(
    tmp_path: Path, normalizations: list[tuple[Any, Any]]
) -> None:
    """timm's mobilenetv4_conv_small_050 was pretrained on images normalised with mean and std
    0.5. Before: every model's images were normalised with ImageNet's mean and std."""
    pytest.importorskip("timm")
    data = make_image_folder(tmp_path / "data")
    argv = finetune_args(data, tmp_path / "m.pt", "--epochs", "1", "--max-steps", "1")
    argv[argv.index("cifar_resnet20")] = "timm:mobilenetv4_conv_small_050"
    argv[argv.index("--input-size") + 1] = "32"
    assert main(argv) == 0
    prune = [
        "prune",
        "timm:mobilenetv4_conv_small_050",
        "--data",
        str(data),
        "--weights",
        "none",
        "--amount",
        "0.3",
        "--prune-steps",
        "1",
        "--finetune-steps",
        "1",
        "--finetune-epochs",
        "1",
        "--max-steps",
        "1",
        "--input-size",
        "32",
        "--train-batch-size",
        "4",
        "--workers",
        "0",
        "--out",
        str(tmp_path / "p.pt"),
    ]
    assert main(prune) == 0
    assert normalizations == [((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))] * 2


def test_finetune_in_channels_last_order_saves_a_usable_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders: list[list[bool]] = []  # per run: was each batch channels-last at the first conv?
    real_fit = it.fit

    def spy_fit(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        seen: list[bool] = []
        orders.append(seen)
        model.conv1.register_forward_pre_hook(
            lambda _m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last))
        )
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(it, "fit", spy_fit)
    data = make_image_folder(tmp_path / "data")
    out, plain_out = tmp_path / "model.pt", tmp_path / "plain.pt"
    # One step: the orders' rounding differences stay ~1e-6 (lr 0.05 amplifies them later).
    assert main(finetune_args(data, out, "--channels-last", "--max-steps", "1")) == 0
    assert read_checkpoint(out)["extra"]["finetune"]["config"]["channels_last"] is True
    assert main(finetune_args(data, plain_out, "--max-steps", "1")) == 0
    # Training and validation batches were channels-last only with --channels-last ...
    assert len(orders) == 2 and orders[0] and orders[1]
    assert all(orders[0]) and not any(orders[1])
    # ... and it trained the same model up to float rounding, saved in a usable form.
    model, plain = netsurgeon.load(out).eval(), netsurgeon.load(plain_out).eval()
    state, plain_state = model.state_dict(), plain.state_dict()
    assert state.keys() == plain_state.keys()
    for name, value in state.items():
        torch.testing.assert_close(value, plain_state[name], atol=1e-4, rtol=1e-4, msg=name)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_finetune_with_compile_saves_a_model_that_loads_eagerly(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "model.pt"
    assert main(finetune_args(data, out, "--compile", "--max-steps", "2")) == 0
    assert read_checkpoint(out)["extra"]["finetune"]["config"]["compile"] is True
    model = netsurgeon.load(out).eval()  # plain parameter names, no torch.compile wrapper
    assert type(model).__name__ == "CifarResNet"
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 2)


def test_finetune_never_overwrites_a_file_that_is_not_its_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: --checkpoint on an image of the data folder, a saved model or a text file
    overwrote it after the first epoch, and --checkpoint equal to --out lost the checkpoint."""
    data = make_image_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "model.pt"
    image = next((data / "train").rglob("*.png"))
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    for path in (image, notes):
        before = path.read_bytes()
        assert main([*finetune_args(data, out), "--checkpoint", str(path)]) == 2
        assert capsys.readouterr().err == (
            f"netsurgeon: error: checkpoint (--checkpoint) '{path}' exists and is not a training "
            "checkpoint; give another path, or delete the file if it may go\n"
        )
        assert path.read_bytes() == before and not out.exists()
    assert main([*finetune_args(data, out), "--checkpoint", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"netsurgeon: error: checkpoint (--checkpoint) '{out}' is the out file (--out) too; give "
        "the checkpoint another path\n"
    )
    ckpt = tmp_path / "run.ckpt"
    assert main([*finetune_args(data, out), "--checkpoint", str(ckpt)]) == 0
    assert main([*finetune_args(data, out, "--epochs", "2"), "--checkpoint", str(ckpt),
                 "--resume"]) == 0  # fmt: skip


def test_resume_continues_from_the_last_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_image_folder(tmp_path / "data", per_class=4)
    whole, part = tmp_path / "whole.pt", tmp_path / "part.pt"
    assert main(finetune_args(data, whole, "--epochs", "2", "--json")) == 0
    uninterrupted = json.loads(capsys.readouterr().out)
    # An interrupted run: one epoch, then the same command for two epochs with --resume.
    assert main(finetune_args(data, part, "--epochs", "1")) == 0
    first = load_checkpoint(tmp_path / "part.pt.train.ckpt")
    assert first["epoch"] == 1
    capsys.readouterr()
    # Resuming with other run settings (here the batch size, outside TrainConfig) is refused.
    assert main([*finetune_args(data, part, "--epochs", "2", "--resume"), "--batch-size", "2"]) == 2
    assert "batch_size: 4 then, 2 now" in capsys.readouterr().err
    assert main(finetune_args(data, part, "--epochs", "2", "--resume", "--json")) == 0
    resumed = json.loads(capsys.readouterr().out)
    epochs = resumed["history"]["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert epochs[0] == first["history"]["epochs"][0]  # restored, not retrained
    # On the CPU with in-process loading, resuming ends with the uninterrupted run's weights.
    a = netsurgeon.load(whole).state_dict()
    b = netsurgeon.load(part).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val_accuracy"] == uninterrupted["val_accuracy"]


class StopAtEpoch(Callback):
    """Raises ``error`` as epoch ``epoch`` (zero-based) begins: a run killed there."""

    def __init__(self, epoch: int, error: type[BaseException] = KeyboardInterrupt) -> None:
        self.epoch, self.error = epoch, error

    def on_epoch_start(self, state: TrainState, epoch: int) -> None:
        if epoch == self.epoch:
            raise self.error


def _no_data(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a refused rerun must not read the data")


def test_rerun_without_resume_keeps_an_unfinished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the same command without --resume trained afresh and overwrote the stopped
    run's checkpoint after its first epoch, without a word."""
    data = make_image_folder(tmp_path / "data", per_class=2)
    out, ckpt = tmp_path / "m.pt", tmp_path / "m.pt.train.ckpt"
    argv = finetune_args(data, out, "--epochs", "2")
    real_fit = it.fit
    monkeypatch.setattr(it, "fit", lambda *a, **k: real_fit(*a, **k, callbacks=[StopAtEpoch(1)]))
    assert main(argv) == 130  # killed as its second epoch began
    monkeypatch.setattr(it, "fit", real_fit)
    kept = ckpt.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr("netsurgeon.vision.data.load_image_data", _no_data)
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"netsurgeon: error: {ckpt} holds an unfinished run (1 of 2 epochs done); pass "
        "resume=True (--resume) to continue it, or delete it (or choose another out file, "
        "--out) to start over\n"
    )
    assert ckpt.read_bytes() == kept and not out.exists()
    # The Python function refuses too; a checkpoint given by itself is not named by --out.
    with pytest.raises(ConfigError) as refused:
        it.finetune("cifar_resnet20", data, config=TrainConfig(device="cpu"), checkpoint=ckpt)
    assert str(refused.value) == (
        f"{ckpt} holds an unfinished run (1 of 2 epochs done); pass resume=True (--resume) to "
        "continue it, or delete it to start over"
    )
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0 and out.is_file()
    # A finished run (its model saved after the checkpoint) starts over, as before.
    assert main(argv) == 0
    # So does one copied without its times (cp), whose model came out older than the
    # checkpoint: the model records the checkpoint's very history.
    os.utime(out, ns=(ckpt.stat().st_mtime_ns - 10**9,) * 2)
    assert main(argv) == 0
    # Its model deleted, a finished run is not finished: --resume would save it again.
    out.unlink()
    kept = ckpt.read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"netsurgeon: error: {ckpt} holds an unfinished run (trained to the end, but not saved "
        f"to {out} after it); pass resume=True (--resume) to continue it, or delete it (or "
        "choose another out file, --out) to start over\n"
    )
    assert ckpt.read_bytes() == kept


def test_finetune_resume_refuses_a_data_folder_whose_files_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a resume checked the folder's path and classes only, and went on training on
    other images."""
    data = make_image_folder(tmp_path / "data", per_class=2)
    out, ckpt = tmp_path / "m.pt", tmp_path / "m.pt.train.ckpt"
    assert main(finetune_args(data, out, "--epochs", "1")) == 0
    before = load_image_data(data, input_size=16).fingerprint()
    shutil.copy(data / "train" / "red" / "red0.png", data / "train" / "red" / "red9.png")
    after = load_image_data(data, input_size=16).fingerprint()
    capsys.readouterr()
    resume = finetune_args(data, out, "--epochs", "2", "--resume")
    kept = ckpt.read_bytes()
    assert main(resume) == 2
    assert capsys.readouterr().err == (
        f"netsurgeon: error: checkpoint {ckpt} was written with other settings "
        "(the data folder's image files changed (training images: 4 then, 5 now)); resume with "
        "the same settings, or delete it to start afresh\n"
    )
    assert ckpt.read_bytes() == kept
    # A checkpoint written before the fingerprint was kept still resumes.
    saved = torch.load(ckpt, weights_only=True)
    for key in before:
        del saved["run"][key]
    torch.save(saved, ckpt)
    assert main(resume) == 0
    assert load_checkpoint(ckpt)["run"]["data_sha256"] == after["data_sha256"]


def test_finetune_resume_refuses_other_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a resume with another --weights went on with the first run's weights."""
    data = make_image_folder(tmp_path / "data", per_class=2)
    out, ckpt = tmp_path / "m.pt", tmp_path / "m.pt.train.ckpt"
    assert main(finetune_args(data, out, "--epochs", "1")) == 0
    assert ckpt.is_file()
    other = tmp_path / "other.pt"
    shutil.copy(out, other)
    capsys.readouterr()
    resume = finetune_args(data, out, "--epochs", "2", "--resume")
    assert main([*resume, "--weights", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"weights: 'none' then, '{other.resolve()}' now" in err, err
    assert main(resume) == 0


def test_num_classes_contradicting_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_image_folder(tmp_path / "data", per_class=2)
    out = tmp_path / "model.pt"
    assert main(finetune_args(data, out, "--num-classes", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "num_classes=3 (--num-classes) contradicts the data" in err and "2 class folders" in err
    assert not out.exists() and not (tmp_path / "model.pt.train.ckpt").exists()


def test_seeded_split_and_bad_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = make_image_folder(tmp_path / "flat", classes=("red", "green", "blue"), split=False)
    out = tmp_path / "m.pt"
    assert main(finetune_args(flat, out, "--val-fraction", "0.25", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["blue", "green", "red"]
    assert netsurgeon.load(out).linear.out_features == 3
    # Without --val-fraction a flat folder is an error, as is an empty or missing one.
    assert main(finetune_args(flat, out)) == 2
    assert "pass val_fraction" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(finetune_args(tmp_path / "empty", out)) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(finetune_args(tmp_path / "missing", out)) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "blocker").write_text("not a folder")
    assert main(finetune_args(flat, tmp_path / "blocker" / "m.pt")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(finetune_args(flat, out, "--epochs", "0")) == 2
    assert "--epochs 0 is not allowed" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.shared
def test_finetune_torchvision_model_on_hymenoptera(
    shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shared_dir / "data" / "hymenoptera"
    if not data.is_dir():
        pytest.skip(f"{data} is absent")
    out = tmp_path / "hymenoptera.pt"
    argv = [
        "finetune", "mobilenet_v3_small", "--data", str(data), "--out", str(out),
        "--weights", "none", "--input-size", "64", "--batch-size", "16", "--epochs", "1",
        "--max-steps", "4", "--device", "cpu", "--workers", "0", "--optimizer", "adam",
        "--lr", "0.001", "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["ants", "bees"]
    (epoch,) = report["history"]["epochs"]
    assert epoch["steps"] == 4 and epoch["samples"] == 64
    assert 0.0 <= report["val_accuracy"] <= 1.0
    # 153 validation photos: the accuracy is a whole number of them.
    assert abs(report["val_accuracy"] * 153 - round(report["val_accuracy"] * 153)) < 1e-6
    model = netsurgeon.load(out)
    assert model.netsurgeon_arch["name"] == "mobilenet_v3_small"
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def test_sigterm_to_the_process_group_with_loader_workers_is_one_line(tmp_path: Path) -> None:
    """A scheduler's SIGTERM reaches the loader's worker processes too. Before: the loader's
    "worker killed" RuntimeError replaced the stop, a traceback and exit status 1."""
    data = make_image_folder(tmp_path / "data", per_class=16)
    out = tmp_path / "m.pt"
    argv = finetune_args(data, out, "--epochs", "500")
    argv[argv.index("--workers") + 1] = "1"
    process = subprocess.Popen(
        [sys.executable, "-c", "from netsurgeon.cli import run; run()", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job's
    )
    checkpoint = tmp_path / "m.pt.train.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "no epoch finished"
    time.sleep(0.3)  # into the next epoch, its worker running
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.splitlines()[-1] == (
        "netsurgeon: terminated; finished epochs are saved: rerun the command with --resume "
        "to continue"
    )
    load_checkpoint(checkpoint)  # intact


def test_grad_clip_reaches_the_training_config() -> None:
    """Before: gradient clipping was Python-only (TrainConfig(grad_clip=...))."""
    from netsurgeon.cli import build_parser
    from netsurgeon.vision.experiments_cli import _sweep_config
    from netsurgeon.vision.iterative import train_config_from_args

    parser = build_parser()
    for command in (["finetune", "resnet18"], ["prune", "resnet18", "--amount", "0.5"]):
        base = [*command, "--data", "d", "--out", "o.pt"]
        args = parser.parse_args([*base, "--grad-clip", "1.5"])
        assert train_config_from_args(args, epochs=1).grad_clip == 1.5
        assert train_config_from_args(parser.parse_args(base), epochs=1).grad_clip is None
    args = parser.parse_args(["sweep", "resnet18", "--data", "d", "--out", "o", "--grad-clip", "2"])
    config = _sweep_config(args, criteria=("l1",), levels=(0.5,), info={})
    assert config.train.grad_clip == 2.0
    with pytest.raises(ConfigError, match=r"^grad_clip=-1\.0 \(--grad-clip\) is not allowed"):
        train_config_from_args(parser.parse_args([*base, "--grad-clip", "-1"]), epochs=1)
