"""Iterative prune-and-fine-tune (Molchanov et al. 2017) on tiny synthetic data."""

from __future__ import annotations

import argparse
import math
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import netsurgeon
from netsurgeon import distributed
from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.pruning.stats import count_macs, count_params
from netsurgeon.training import TrainConfig, load_checkpoint
from netsurgeon.vision import build_model
from netsurgeon.vision import iterative as it
from netsurgeon.vision.data import make_loader
from netsurgeon.vision.iterative import (
    IterativeStep,
    LimitedBatches,
    add_iterative_arguments,
    format_iterative,
    prune_and_finetune,
    run_iterative_from_args,
)
from tests.pruning.nets import LayerNormStreamNet
from tests.vision.test_vision_cli import StopAtEpoch, make_image_folder

torch.set_num_threads(1)

SIZE = 16
EXAMPLE = torch.zeros(1, 3, SIZE, SIZE)
CONFIG = TrainConfig(device="cpu", lr=0.05, progress=False)


def loaders(n: int = 48) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, SIZE, SIZE, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    train = DataLoader(TensorDataset(x, y), batch_size=12, shuffle=False)
    val = DataLoader(TensorDataset(x[:24], y[:24]), batch_size=12)
    return train, val


def small_model() -> torch.nn.Module:
    return build_model("cifar_resnet20", num_classes=2)


class _Stop(Exception):
    pass


def test_reaches_macs_target_and_finetunes_between_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    rates: list[str] = []
    real = it.train_steps

    def spy(model: torch.nn.Module, loader: Any, **kwargs: Any) -> Any:
        calls.append((count_macs(model, EXAMPLE), kwargs["steps"]))
        rates.append(kwargs["lr"])
        return real(model, loader, **kwargs)

    monkeypatch.setattr(it, "train_steps", spy)
    model = small_model()
    macs0, params0 = count_macs(model, EXAMPLE), count_params(model)
    train, val = loaders()
    seen: list[IterativeStep] = []
    result = prune_and_finetune(
        model,
        train,
        val,
        example_inputs=EXAMPLE,
        config=CONFIG,
        criterion="taylor",
        target_macs=0.5,
        prune_steps=3,
        finetune_steps=2,
        finetune_epochs=1,
        criterion_batches=2,
        eval_steps=True,
        on_step=seen.append,
    )
    # The target is reached (within a small tolerance), on the model that was passed in.
    assert result.model is model
    assert result.before.macs == macs0 and result.before.params == params0
    assert result.after.macs == count_macs(model, EXAMPLE)
    assert 0.47 <= result.macs_ratio <= 0.5 + 1e-9
    assert result.oneshot_macs_ratio is not None and abs(result.oneshot_macs_ratio - 0.5) < 0.03
    # Fine-tuning ran once after every slice, on the just-pruned model, K steps each.
    assert len(result.steps) == 3 and seen == result.steps
    assert [k for _, k in calls] == [2, 2, 2]
    assert rates == ["constant"] * 3  # Molchanov's constant rate between slices by default
    assert [m for m, _ in calls] == [s.macs for s in result.steps]
    assert calls[0][0] < macs0 and calls[0][0] > calls[1][0] > calls[2][0]
    assert [s.step for s in result.steps] == [0, 1, 2]
    assert all(s.finetune_steps == 2 and s.finetune_loss is not None for s in result.steps)
    assert result.steps[-1].macs == result.after.macs
    # The final fine-tune ran for finetune_epochs and its last accuracy is reported.
    assert result.history is not None and len(result.history.epochs) == 1
    assert result.accuracy_after == result.history.epochs[-1].val_accuracy
    for value in (
        result.accuracy_before,
        result.accuracy_pruned,
        result.accuracy_after_slices,
        result.accuracy_after,
        *(s.val_accuracy for s in result.steps),
        *(s.finetune_accuracy for s in result.steps),
    ):
        assert value is not None and 0.0 <= value <= 1.0
    # Accuracy is a multiple of 1/24 on 24 validation samples.
    assert math.isclose(result.accuracy_before * 24, round(result.accuracy_before * 24))
    assert result.channels and all(new < old for old, new in result.channels.values())
    summary = result.to_dict()
    assert summary["after"]["macs"] == result.after.macs
    assert len(summary["steps"]) == 3 and summary["settings"]["target_macs"] == 0.5
    text = format_iterative(result, title="t")
    for label in ("before pruning", "right after pruning", "after fine-tuning"):
        assert label in text


@pytest.mark.parametrize("slice_lr", ["constant", "schedule"])
def test_slice_lr_sets_the_rate_between_slices_and_not_the_final_fit(slice_lr: str) -> None:
    lrs: dict[str, list[float]] = {"slices": [], "final": []}
    real_fit = it.fit

    class Rates(netsurgeon.training.Callback):
        def __init__(self, key: str) -> None:
            self.key = key

        def on_batch_end(self, state: Any, batch: Any) -> None:
            lrs[self.key].append(state.optimizer.param_groups[0]["lr"])

    def steps_with_rates(model: torch.nn.Module, loader: Any, **kwargs: Any) -> Any:
        return netsurgeon.training.finetune_steps(
            model, loader, callbacks=[Rates("slices")], **kwargs
        )

    def fit_with_rates(*args: Any, **kwargs: Any) -> Any:
        return real_fit(*args, callbacks=[Rates("final")], **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(it, "train_steps", steps_with_rates)
        patch.setattr(it, "fit", fit_with_rates)
        train, val = loaders()
        result = prune_and_finetune(
            small_model(),
            train,
            val,
            example_inputs=EXAMPLE,
            config=TrainConfig(device="cpu", lr=0.05, schedule="cosine", progress=False),
            criterion="l1",
            target_macs=0.5,
            prune_steps=2,
            finetune_steps=4,
            finetune_epochs=1,
            oneshot_baseline=False,
            slice_lr=slice_lr,
        )
    assert result.to_dict()["settings"]["slice_lr"] == slice_lr
    # Rates seen after each step (the scheduler has stepped): 4 per slice, 4 in the final fit.
    assert len(lrs["slices"]) == 8 and len(lrs["final"]) == 4
    if slice_lr == "constant":
        assert lrs["slices"] == [0.05] * 8
    else:  # cosine restarted and annealed to 0 within each slice's 4 steps
        assert lrs["slices"][3] == pytest.approx(0.0) and lrs["slices"][7] == pytest.approx(0.0)
        assert lrs["slices"][:4] == pytest.approx(lrs["slices"][4:])
    # The final fine-tuning follows the config's cosine schedule either way.
    assert lrs["final"][-1] == pytest.approx(0.0) and lrs["final"][0] < 0.05


def test_compile_applies_to_the_final_fine_tuning_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bool]] = []
    real_steps, real_fit = it.train_steps, it.fit

    def steps_spy(model: torch.nn.Module, loader: Any, **kwargs: Any) -> Any:
        seen.append(("slice", kwargs["config"].compile))
        return real_steps(model, loader, **kwargs)

    def fit_spy(*args: Any, config: TrainConfig, **kwargs: Any) -> Any:
        seen.append(("final", config.compile))
        # Train eagerly here: compiling is slow and tested in tests/test_training.py.
        return real_fit(*args, config=replace(config, compile=False), **kwargs)

    monkeypatch.setattr(it, "train_steps", steps_spy)
    monkeypatch.setattr(it, "fit", fit_spy)
    train, val = loaders()
    prune_and_finetune(
        small_model(),
        train,
        val,
        example_inputs=EXAMPLE,
        config=TrainConfig(device="cpu", lr=0.05, progress=False, compile=True),
        criterion="l1",
        target_macs=0.5,
        prune_steps=3,
        finetune_steps=1,
        finetune_epochs=1,
        oneshot_baseline=False,
    )
    assert seen == [("slice", False)] * 3 + [("final", True)]


def test_amount_without_finetuning(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("no fine-tuning was asked for")

    monkeypatch.setattr(it, "train_steps", forbidden)
    model = small_model()
    train, val = loaders()
    result = prune_and_finetune(
        model,
        train,
        val,
        example_inputs=EXAMPLE,
        config=CONFIG,
        criterion="l1",
        amount=0.5,
        scope="layer",
        prune_steps=2,
        finetune_steps=0,
        finetune_epochs=0,
        oneshot_baseline=False,
    )
    assert result.history is None and result.accuracy_pruned is None
    assert result.accuracy_after == result.accuracy_after_slices
    assert all(s.finetune_steps == 0 and s.finetune_loss is None for s in result.steps)
    # Two slices of 1 - sqrt(0.5) each leave about half of every prunable layer. The residual
    # streams shrink too, except for the zero channels that the padding shortcuts add.
    inner = {f"layer{i}.{j}.conv1" for i in (1, 2, 3) for j in range(3)}
    assert inner | {"conv1"} <= set(result.channels)
    assert result.channels["layer2.1.conv1"] == (32, 16)
    # The start's group sizes serve a resume only; the reported footprint leaves them out.
    assert result.before.groups is None and result.to_dict()["before"]["groups"] is None


def test_prune_layer_norms_reaches_every_slice_and_the_one_shot_twin() -> None:
    train, val = loaders()
    results = {}
    for flag in (False, True):
        model = LayerNormStreamNet()
        results[flag] = prune_and_finetune(
            model, train, val, example_inputs=EXAMPLE, config=CONFIG, criterion="l1",
            amount=0.5, scope="layer", prune_steps=2, finetune_steps=0, finetune_epochs=0,
            prune_layer_norms=flag,
        )  # fmt: skip
        assert ("a" in results[flag].channels) is flag
        assert model.norm.normalized_shape == ((4,) if flag else (8,))
        assert results[flag].settings.get("prune_layer_norms", False) is flag
    # The one-shot twin is pruned alike: a and the norm lose channels only when told.
    assert results[True].oneshot_macs_ratio < results[False].oneshot_macs_ratio


def test_random_criterion_follows_the_config_seed() -> None:
    """``criterion="random"`` draws from ``config.seed``, not always from seed 0."""

    def channels(seed: int) -> dict[str, tuple[int, int]]:
        train, val = loaders()
        config = replace(CONFIG, seed=seed)
        return prune_and_finetune(
            small_model(), train, val, example_inputs=EXAMPLE, config=config,
            criterion="random", amount=0.5, scope="global", prune_steps=2, finetune_steps=0,
            finetune_epochs=0, oneshot_baseline=False,
        ).channels  # fmt: skip

    first = channels(0)
    assert channels(0) == first
    assert channels(1) != first


def test_resume_after_interruption(tmp_path: Path) -> None:
    train, val = loaders()
    kwargs: dict[str, Any] = {
        "example_inputs": EXAMPLE,
        "config": CONFIG,
        "criterion": "l2",
        "target_macs": 0.5,
        "prune_steps": 3,
        "finetune_steps": 1,
        "finetune_epochs": 1,
        "checkpoint_dir": tmp_path / "progress",
    }

    def stop_after_two(step: IterativeStep) -> None:
        if step.step == 1:
            raise _Stop

    first = small_model()
    with pytest.raises(_Stop):
        prune_and_finetune(first, train, val, on_step=stop_after_two, **kwargs)
    macs_after_two = count_macs(first, EXAMPLE)
    saved = netsurgeon.load(tmp_path / "progress" / "iterative_state.pt")
    assert count_macs(saved, EXAMPLE) == macs_after_two

    fresh = small_model()
    result = prune_and_finetune(fresh, train, val, resume=True, **kwargs)
    assert result.model is not fresh  # rebuilt from the progress file
    assert [s.step for s in result.steps] == [0, 1, 2]
    assert result.steps[1].macs == macs_after_two
    assert 0.47 <= result.macs_ratio <= 0.5 + 1e-9
    assert result.before.macs == count_macs(small_model(), EXAMPLE)

    # Resuming a finished run redoes nothing and reports the same figures.
    again = prune_and_finetune(small_model(), train, val, resume=True, **kwargs)
    assert again.steps == result.steps and again.after == result.after
    assert again.accuracy_after_slices == result.accuracy_after_slices
    assert again.accuracy_after == result.accuracy_after
    assert again.accuracy_before == result.accuracy_before
    a, b = again.model.state_dict(), result.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(CheckpointError, match="another iterative run"):
        prune_and_finetune(small_model(), train, val, resume=True, **{**kwargs, "criterion": "l1"})
    # Every setting counts, the training configuration's included, except how a run computes.
    others = {
        "slice_lr": ("schedule", "slice_lr: 'constant' then, 'schedule' now"),
        "config": (replace(CONFIG, lr=0.5), "train_config.lr: 0.05 then, 0.5 now"),
        "criterion_batches": (2, "criterion_batches: 8 then, 2 now"),
    }
    for key, (value, named) in others.items():
        with pytest.raises(CheckpointError, match=re.escape(named)):
            prune_and_finetune(small_model(), train, val, resume=True, **{**kwargs, key: value})
    computes = replace(CONFIG, channels_last=True, progress=True)
    assert (
        prune_and_finetune(
            small_model(), train, val, resume=True, **{**kwargs, "config": computes}
        ).after
        == result.after
    )


def _resumable(tmp_path: Path, *, prune_steps: int, finetune_epochs: int) -> dict[str, Any]:
    """prune_and_finetune's arguments for a small run that keeps its progress in tmp_path."""
    return {
        "example_inputs": EXAMPLE, "config": CONFIG, "criterion": "l2", "target_macs": 0.5,
        "prune_steps": prune_steps, "finetune_steps": 1, "finetune_epochs": finetune_epochs,
        "checkpoint_dir": tmp_path / "progress",
    }  # fmt: skip


def test_resume_by_another_netsurgeon_version_warns(tmp_path: Path) -> None:
    """The slices done are kept and the rest is computed by this version: where versions
    prune or train differently, the result differs from an uninterrupted run's."""
    from netsurgeon.provenance import VERSION_KEY

    train, val = loaders()
    kwargs = _resumable(tmp_path, prune_steps=3, finetune_epochs=1)

    def stop_after_one(step: IterativeStep) -> None:
        if step.step == 0:
            raise _Stop

    with pytest.raises(_Stop):
        prune_and_finetune(small_model(), train, val, on_step=stop_after_one, **kwargs)
    path = tmp_path / "progress" / "iterative_state.pt"
    payload = torch.load(path, weights_only=True)
    assert payload["extra"]["iterative"][VERSION_KEY] == netsurgeon.__version__
    payload["extra"]["iterative"][VERSION_KEY] = "0.0.1"
    torch.save(payload, path)
    with pytest.warns(UserWarning, match=f"resuming progress file {re.escape(str(path))}, "
                      "written by netsurgeon 0.0.1, with netsurgeon"):  # fmt: skip
        result = prune_and_finetune(small_model(), train, val, resume=True, **kwargs)
    assert [s.step for s in result.steps] == [0, 1, 2]
    # Its repr gives the figures, not the model's module tree first.
    text = repr(result)
    assert "model=" not in text and f"accuracy_after={result.accuracy_after!r}" in text
    # The file the resumed run wrote is this version's; its finished run resumes quietly,
    # and so it does when another version wrote it (nothing is left to compute).
    assert torch.load(path, weights_only=True)["extra"]["iterative"][VERSION_KEY] == (
        netsurgeon.__version__
    )
    prune_and_finetune(small_model(), train, val, resume=True, **kwargs)
    payload = torch.load(path, weights_only=True)
    payload["extra"]["iterative"][VERSION_KEY] = "0.0.1"
    torch.save(payload, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # before (found by a review): "the rest is computed"
        prune_and_finetune(small_model(), train, val, resume=True, **kwargs)


def test_a_resume_inside_the_final_finetuning_by_another_version_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final fine-tuning's checkpoint speaks for what is left; the progress file, whose
    slices are all done, adds nothing (before, from a review: two warnings)."""
    from tests.vision.test_vision_cli import StopAtEpoch

    train, val = loaders()
    kwargs = _resumable(tmp_path, prune_steps=2, finetune_epochs=2)
    fit = it.fit
    monkeypatch.setattr(it, "fit", lambda *a, **k: fit(*a, **k, callbacks=[StopAtEpoch(1)]))
    with pytest.raises(KeyboardInterrupt):
        prune_and_finetune(small_model(), train, val, **kwargs)
    monkeypatch.setattr(it, "fit", fit)
    monkeypatch.setattr("netsurgeon.provenance.__version__", "9.9.9")  # a later netsurgeon
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        prune_and_finetune(small_model(), train, val, resume=True, **kwargs)
    notes = [str(w.message) for w in seen if "written by netsurgeon" in str(w.message)]
    assert len(notes) == 1 and notes[0].startswith("resuming checkpoint "), notes


def test_rerun_without_resume_keeps_an_unfinished_iterative_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a rerun without resume pruned afresh and overwrote the stopped run's progress
    after its first slice (and deleted its final fine-tuning checkpoint at once)."""
    train, val = loaders()
    folder = tmp_path / "progress"
    state, final = folder / "iterative_state.pt", folder / "final_finetune.ckpt"
    kwargs: dict[str, Any] = {
        "example_inputs": EXAMPLE, "config": CONFIG, "criterion": "l1", "target_macs": 0.5,
        "prune_steps": 2, "finetune_steps": 0, "finetune_epochs": 2, "oneshot_baseline": False,
        "checkpoint_dir": folder,
    }  # fmt: skip

    def stop_after_one(step: IterativeStep) -> None:
        if step.step == 0:
            raise _Stop

    def refusal(why: str) -> str:
        return (
            f"{folder} holds an unfinished run ({why}); pass resume=True (--resume) to "
            "continue it, or delete it to start over"
        )

    with pytest.raises(_Stop):
        prune_and_finetune(small_model(), train, val, on_step=stop_after_one, **kwargs)
    kept = state.read_bytes()
    real_pruner, real_fit = it.Pruner, it.fit
    monkeypatch.setattr(it, "Pruner", _no_training)  # refused before anything slow
    with pytest.raises(ConfigError) as refused:
        prune_and_finetune(small_model(), train, val, **kwargs)
    assert str(refused.value) == refusal("1 of 2 slices done")
    assert state.read_bytes() == kept
    monkeypatch.setattr(it, "Pruner", real_pruner)
    # Resumed, and stopped again as the final fine-tuning's second epoch began.
    stopping = [StopAtEpoch(1, _Stop)]
    monkeypatch.setattr(it, "fit", lambda *a, **k: real_fit(*a, **k, callbacks=stopping))
    with pytest.raises(_Stop):
        prune_and_finetune(small_model(), train, val, resume=True, **kwargs)
    monkeypatch.setattr(it, "fit", real_fit)
    kept, kept_final = state.read_bytes(), final.read_bytes()
    with pytest.raises(ConfigError) as refused:
        prune_and_finetune(small_model(), train, val, **kwargs)
    assert str(refused.value) == refusal(
        "all 2 slices done, the final fine-tuning 1 of 2 epochs done"
    )
    assert state.read_bytes() == kept and final.read_bytes() == kept_final
    finished = prune_and_finetune(small_model(), train, val, resume=True, **kwargs)
    assert finished.history is not None and len(finished.history.epochs) == 2
    # A finished run starts over without resume, as before.
    again = prune_and_finetune(small_model(), train, val, **kwargs)
    assert len(again.steps) == 2 and again.history is not None


def test_prune_cli_rerun_without_resume_keeps_an_unfinished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from netsurgeon.cli import main

    data = make_image_folder(tmp_path / "data", per_class=2)
    out, folder = tmp_path / "p.pt", tmp_path / "p.pt.iterative"
    state = folder / "iterative_state.pt"
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--weights", "none", "--amount",
            "0.3", "--input-size", str(SIZE), "--workers", "0", "--device", "cpu",
            "--prune-steps", "2", "--finetune-steps", "0", "--finetune-epochs", "0",
            "--no-oneshot", "--train-batch-size", "4", "--out", str(out)]  # fmt: skip

    def killed_after_the_first_slice(message: str) -> None:
        if "slice 1/2" in message:
            raise KeyboardInterrupt

    def refusal(why: str) -> str:
        return (
            f"netsurgeon: error: {folder} holds an unfinished run ({why}); pass resume=True "
            "(--resume) to continue it, or delete it (or choose another out file, --out) to "
            "start over\n"
        )

    monkeypatch.setattr(it, "_say", killed_after_the_first_slice)
    assert main(argv) == 130
    monkeypatch.undo()
    kept = state.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr("netsurgeon.vision.data.load_image_data", _no_training)
    assert main(argv) == 2
    assert capsys.readouterr().err == refusal("1 of 2 slices done")
    assert state.read_bytes() == kept and not out.exists()
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0 and out.is_file()
    assert main(argv) == 0  # a finished run starts over, as before
    # So does one copied without its times (cp), whose model came out older than its progress:
    # the model records the run's very slices (before: "finished, but not saved").
    os.utime(out, ns=(state.stat().st_mtime_ns - 10**9,) * 2)
    assert main(argv) == 0
    # Its model deleted, a finished run is not finished: --resume would save it again.
    out.unlink()
    kept = state.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr("netsurgeon.vision.data.load_image_data", _no_training)
    assert main(argv) == 2
    assert capsys.readouterr().err == refusal(f"finished, but not saved to {out} after it")
    assert state.read_bytes() == kept


def test_prune_cli_with_data_takes_per_layer_amounts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: --amounts with --data was refused (one-shot only)."""
    from netsurgeon.cli import main

    data = make_image_folder(tmp_path / "data", per_class=2)
    out = tmp_path / "p.pt"
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--weights", "none", "--amount",
            "0.5", "--scope", "layer", "--amounts", "layer3=0.75,layer1.?.conv1=0",
            "--input-size", str(SIZE), "--workers", "0", "--device", "cpu", "--prune-steps", "2",
            "--finetune-steps", "0", "--finetune-epochs", "0", "--no-oneshot",
            "--train-batch-size", "4", "--out", str(out)]  # fmt: skip

    def killed_after_the_first_slice(message: str) -> None:
        if "slice 1/2" in message:
            raise KeyboardInterrupt

    monkeypatch.setattr(it, "_say", killed_after_the_first_slice)
    assert main(argv) == 130
    monkeypatch.undo()
    capsys.readouterr()
    at = argv.index("--amounts") + 1
    other = [*argv[:at], "layer3=0.5", *argv[at + 1 :]]
    assert main([*other, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "amounts: 'layer3=0.75,layer1.?.conv1=0' then, 'layer3=0.5' now" in err, err
    assert main([*argv, "--resume"]) == 0
    model = netsurgeon.load(out)
    assert model.layer3[0].conv1.out_channels == 16  # 64 less 3/4
    assert model.layer2[0].conv1.out_channels == 16  # 32 less --amount 0.5
    assert model.layer1[0].conv1.out_channels == 16  # kept whole
    at = argv.index("--scope") + 1
    glob = [*argv[:at], "global", *argv[at + 1 :], "--out", str(tmp_path / "g.pt")]
    assert main(glob) == 2
    assert 'amounts (per-layer fractions) need amount= and scope="layer"' in capsys.readouterr().err


def test_prune_resume_refuses_another_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a resume with another --ignore went on, mixing slices of both runs."""
    from netsurgeon.cli import main

    data = make_image_folder(tmp_path / "data", per_class=2)
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--weights", "none", "--amount",
            "0.5", "--input-size", str(SIZE), "--workers", "0", "--device", "cpu",
            "--prune-steps", "2", "--finetune-steps", "0", "--finetune-epochs", "0",
            "--no-oneshot", "--train-batch-size", "4", "--out", str(tmp_path / "p.pt")]  # fmt: skip

    def killed_after_the_first_slice(message: str) -> None:
        if "slice 1/2" in message:
            raise KeyboardInterrupt

    monkeypatch.setattr(it, "_say", killed_after_the_first_slice)
    assert main([*argv, "--ignore", "layer?.?.bn2,bn1"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    assert "ignore: 'bn1,layer?.?.bn2' then, None now" in capsys.readouterr().err
    assert main([*argv, "--resume", "--ignore", "bn1,layer?.?.bn2"]) == 0  # any order


def test_prune_resume_refuses_a_data_folder_whose_files_changed(tmp_path: Path) -> None:
    """Before: a resume checked the folder's path and classes only."""
    data = make_image_folder(tmp_path / "data", classes=("red", "blue"), per_class=2)
    folder = tmp_path / "p.pt.iterative"
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--out", str(tmp_path / "p.pt"),
            "--weights", "none", "--criterion", "l1", "--amount", "0.3", "--prune-steps", "1",
            "--finetune-steps", "0", "--finetune-epochs", "0", "--input-size", str(SIZE),
            "--train-batch-size", "4", "--device", "cpu", "--workers", "0",
            "--no-oneshot"]  # fmt: skip
    assert run_iterative_from_args(_prune_parser().parse_args(argv)) == 0
    state = torch.load(folder / "iterative_state.pt", weights_only=True)
    run = state["extra"]["iterative"]["settings"]["run"]
    assert (run["data_train_images"], run["data_val_images"]) == (4, 4)
    # The same number of images, one of them rewritten at another size.
    Image.new("RGB", (40, 30), (200, 10, 10)).save(data / "train" / "red" / "red0.png")
    from netsurgeon.vision.data import load_image_data

    now = load_image_data(data, input_size=SIZE).fingerprint()["data_sha256"]
    assert now != run["data_sha256"]
    resume = _prune_parser().parse_args([*argv, "--resume"])
    with pytest.raises(CheckpointError) as refused:
        run_iterative_from_args(resume)
    assert str(refused.value) == (
        f"{folder / 'iterative_state.pt'} belongs to another iterative run (the data folder's "
        "image files changed (as many images, other names or sizes)); resume with the same "
        "settings or use another checkpoint folder"
    )
    # Progress files written before the fingerprint was kept still resume.
    for key in ("data_train_images", "data_val_images", "data_sha256"):
        del run[key]
    torch.save(state, folder / "iterative_state.pt")
    assert run_iterative_from_args(resume) == 0


class _Augmented(TensorDataset):
    """Noise from the global RNG on every read, as RandomCrop and flips draw."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        x, y = super().__getitem__(index)
        return x + 0.1 * torch.randn_like(x), y


@pytest.mark.parametrize(
    ("criterion", "plan"),
    [
        ("random", {"target_macs": 0.3, "scope": "global"}),
        ("taylor", {"target_macs": 0.3, "scope": "global"}),
        ("l1", {"amount": 0.6, "scope": "layer"}),  # each layer's share of its first size
        ("l1", {"target_macs": 0.3, "scope": "layer"}),
    ],
)
def test_resumed_run_continues_the_uninterrupted_one(
    tmp_path: Path, criterion: str, plan: dict[str, Any]
) -> None:
    """Stopped after a slice and resumed, iterative pruning ends exactly where it would have:
    same random streams, loader epoch and random-criterion draws, and the MACs schedule of the
    original plan (not a new plan from where the model stood)."""

    def run(out: Path, *, stop_after: int | None = None, resume: bool = False) -> Any:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(48, 3, SIZE, SIZE, generator=g)
        y = (x[:, 0].mean((1, 2)) > 0).long()
        train = make_loader(_Augmented(x, y), batch_size=12, train=True, seed=0, num_workers=0)
        val = make_loader(TensorDataset(x[:24], y[:24]), batch_size=12, train=False, num_workers=0)

        def on_step(step: IterativeStep) -> None:
            if step.step == stop_after:
                raise _Stop

        torch.manual_seed(123 if resume else 0)  # the process's own draws must not matter
        return prune_and_finetune(
            small_model(), train, val, example_inputs=EXAMPLE, config=CONFIG, criterion=criterion,
            **plan, prune_steps=3, finetune_steps=1, finetune_epochs=0,
            criterion_batches=1, oneshot_baseline=False, checkpoint_dir=out, resume=resume,
            on_step=on_step,
        )  # fmt: skip

    whole = run(tmp_path / "whole")
    with pytest.raises(_Stop):
        run(tmp_path / "resumed", stop_after=0)
    resumed = run(tmp_path / "resumed", resume=True)
    assert [s.macs for s in resumed.steps] == [s.macs for s in whole.steps]
    assert resumed.channels == whole.channels
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("rank", "size", "expected"), [(1, 2, 1), (0, 2, 0), (1, 3, 0)])
def test_a_resumed_process_takes_its_own_random_streams(
    monkeypatch: pytest.MonkeyPatch, rank: int, size: int, expected: int
) -> None:
    """Under torchrun every process draws from its own streams; a progress file of another
    number of processes (refused earlier) or of one process has rank 0's only."""
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        states.append(it._draws([], None)["rng"])
    draws = {**it._draws([], None), "rng": states[0], "rng_ranks": states}
    monkeypatch.setattr(distributed, "rank_and_size", lambda: (rank, size))
    it._restore_draws(draws, [], None)
    assert torch.equal(torch.get_rng_state(), states[expected]["torch"])


def test_bad_arguments_leave_the_model_unchanged() -> None:
    train, val = loaders()
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    common: dict[str, Any] = {"example_inputs": EXAMPLE, "config": CONFIG}
    with pytest.raises(ConfigError, match="prune_steps=0"):
        prune_and_finetune(model, train, val, target_macs=0.5, prune_steps=0, **common)
    with pytest.raises(ConfigError, match="exactly one of amount"):
        prune_and_finetune(model, train, val, target_macs=0.5, amount=0.5, **common)
    with pytest.raises(ConfigError, match="target_macs"):
        prune_and_finetune(model, train, val, target_macs=1.5, **common)
    with pytest.raises(ConfigError, match="resume=True needs checkpoint_dir"):
        prune_and_finetune(model, train, val, target_macs=0.5, resume=True, **common)
    with pytest.raises(ConfigError, match="train_loader is a one-pass generator"):
        prune_and_finetune(model, (b for b in train), val, target_macs=0.5, **common)
    with pytest.raises(ConfigError, match="criterion_batches=0"):
        prune_and_finetune(model, train, val, target_macs=0.5, criterion_batches=0, **common)
    with pytest.raises(ConfigError, match="slice_lr='cosine' is not allowed; use one of"):
        prune_and_finetune(model, train, val, target_macs=0.5, slice_lr="cosine", **common)
    with pytest.raises(ConfigError, match="checkpoint_dir needs a model"):
        plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
        prune_and_finetune(plain, train, val, target_macs=0.5, checkpoint_dir="x", **common)
    with pytest.raises(ConfigError, match="TrainConfig"):
        prune_and_finetune(model, train, val, example_inputs=EXAMPLE, config={}, target_macs=0.5)
    with pytest.raises(ConfigError, match="on_step=3 is not callable"):
        prune_and_finetune(model, train, val, target_macs=0.5, on_step=3, **common)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_limited_batches_is_reiterable() -> None:
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=2)
    first_two = LimitedBatches(loader, 2)
    assert len(first_two) == 2
    assert [b[0].tolist() for b in first_two] == [[0, 1], [2, 3]]
    assert [b[0].tolist() for b in first_two] == [[0, 1], [2, 3]]
    assert len(LimitedBatches(loader, None)) == 5 and len(LimitedBatches(loader, 50)) == 5


def _prune_parser() -> argparse.ArgumentParser:
    """``netsurgeon prune``'s real parser with the iterative options added, as the lead wires it."""
    from netsurgeon.pruning import cli as pruning_cli

    root = argparse.ArgumentParser()
    sub = root.add_subparsers(dest="command")
    pruning_cli.add_commands(sub)
    prune_parser = sub.choices["prune"]
    add_iterative_arguments(prune_parser)
    return root


def test_prune_with_data_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_image_folder(tmp_path / "data", classes=("red", "blue"), per_class=6, split=True)
    out = tmp_path / "pruned.pt"
    args = _prune_parser().parse_args(
        ["prune", "cifar_resnet20", "--data", str(data), "--out", str(out), "--weights", "none",
         "--criterion", "taylor", "--target-macs", "0.5", "--prune-steps", "2",
         "--finetune-steps", "2", "--finetune-epochs", "1", "--input-size", str(SIZE),
         "--train-batch-size", "4", "--device", "cpu", "--workers", "0",
         "--criterion-batches", "2", "--slice-lr", "schedule", "--min-channels", "2"]
    )  # fmt: skip
    assert run_iterative_from_args(args) == 0
    printed = capsys.readouterr().out
    for label in ("before pruning", "right after pruning", "after fine-tuning"):
        assert label in printed
    pruned = netsurgeon.load(out)
    unpruned = build_model("cifar_resnet20", num_classes=2)
    ratio = count_macs(pruned, EXAMPLE) / count_macs(unpruned, EXAMPLE)
    assert 0.47 <= ratio <= 0.5 + 1e-9
    from netsurgeon.pruning.io import read_checkpoint

    extra = read_checkpoint(out)["extra"]["iterative"]
    assert extra["classes"] == ["blue", "red"] and len(extra["steps"]) == 2
    assert extra["macs_ratio"] == pytest.approx(ratio)
    assert extra["settings"]["slice_lr"] == "schedule"
    assert (extra["settings"]["min_channels"], extra["settings"]["round_to"]) == (2, 1)
    assert 0.0 <= extra["accuracy_after"] <= 1.0
    assert (tmp_path / "pruned.pt.iterative" / "iterative_state.pt").is_file()


def test_min_channels_and_round_to_bound_every_slice_and_the_oneshot_twin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unbounded, 90 % of the filters would leave layers of 1 to 3 channels: the bounds keep at
    least 3 (rounded up to 4) on the iterative model and on its one-shot twin alike."""
    oneshot: list[dict[str, tuple[int, int]]] = []
    real_prune = it.prune

    def spy_prune(*args: Any, **kwargs: Any) -> Any:
        result = real_prune(*args, **kwargs)
        oneshot.append(result.channels)
        return result

    monkeypatch.setattr(it, "prune", spy_prune)
    train, val = loaders()
    result = prune_and_finetune(
        small_model(), train, val, example_inputs=EXAMPLE, config=CONFIG, criterion="l1",
        amount=0.9, prune_steps=2, finetune_steps=1, finetune_epochs=0, min_channels=3,
        round_to=2,
    )  # fmt: skip
    assert len(oneshot) == 1
    for channels in (result.channels, oneshot[0]):
        assert len(channels) == 19  # conv1 and the 18 block convolutions all lost filters
        assert all(new >= 3 and new % 2 == 0 for _, new in channels.values()), channels
    assert result.channels["conv1"] == (16, 4)


@pytest.mark.filterwarnings("ignore:resume was asked for")  # its first run resumes nothing
def test_prune_resume_refuses_other_run_settings(tmp_path: Path) -> None:
    """A resumed prune compares what its progress files recorded beyond the pruning settings:
    the batch size, and the weights file's content (with --distill, also the teacher)."""
    data = make_image_folder(tmp_path / "data", classes=("red", "blue"), per_class=4, split=True)
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(build_model("cifar_resnet20").state_dict(), weights)
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--out", str(tmp_path / "p.pt"),
            "--weights", str(weights), "--criterion", "l1", "--target-macs", "0.6",
            "--prune-steps", "2", "--finetune-steps", "1", "--finetune-epochs", "1",
            "--input-size", str(SIZE), "--train-batch-size", "4", "--device", "cpu",
            "--workers", "0", "--no-oneshot", "--resume"]  # fmt: skip
    assert run_iterative_from_args(_prune_parser().parse_args(argv)) == 0
    state = torch.load(tmp_path / "p.pt.iterative" / "iterative_state.pt", weights_only=True)
    run = state["extra"]["iterative"]["settings"]["run"]
    assert run["batch_size"] == 4 and run["weights"] == str(weights.resolve())
    assert run["classes"] == "blue,red" and len(run["weights_sha256"]) == 64
    # The same settings resume (here: the run is finished, so nothing is left to do).
    assert run_iterative_from_args(_prune_parser().parse_args(argv)) == 0
    with pytest.raises(CheckpointError, match=r"run\.batch_size: 4 then, 2 now"):
        run_iterative_from_args(_prune_parser().parse_args([*argv, "--train-batch-size", "2"]))
    torch.manual_seed(1)
    torch.save(build_model("cifar_resnet20").state_dict(), weights)  # other weights, same path
    with pytest.raises(CheckpointError, match=r"run\.weights_sha256"):
        run_iterative_from_args(_prune_parser().parse_args(argv))


def test_prune_resume_may_raise_max_steps(tmp_path: Path) -> None:
    """README: without a cosine schedule --max-steps may grow on resume. Before: "belongs to
    another iterative run (train_config.max_steps: 3 then, None now)"."""
    data = make_image_folder(tmp_path / "data", classes=("red", "blue"), per_class=8, split=True)
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--out", str(tmp_path / "p.pt"),
            "--weights", "none", "--criterion", "l1", "--target-macs", "0.6",
            "--prune-steps", "2", "--finetune-steps", "1", "--finetune-epochs", "2",
            "--input-size", str(SIZE), "--train-batch-size", "4", "--device", "cpu",
            "--workers", "0", "--no-oneshot"]  # fmt: skip
    assert run_iterative_from_args(_prune_parser().parse_args([*argv, "--max-steps", "3"])) == 0
    final = tmp_path / "p.pt.iterative" / "final_finetune.ckpt"
    assert load_checkpoint(final)["global_step"] == 3
    assert run_iterative_from_args(_prune_parser().parse_args([*argv, "--resume"])) == 0
    saved = load_checkpoint(final)
    assert (saved["global_step"], saved["epoch"]) == (8, 2)  # 2 epochs of 4 batches
    cosine = [*argv, "--schedule", "cosine", "--out", str(tmp_path / "c.pt")]
    assert run_iterative_from_args(_prune_parser().parse_args([*cosine, "--max-steps", "3"])) == 0
    with pytest.raises(CheckpointError, match=r"train_config\.max_steps: 3 then, None now"):
        run_iterative_from_args(_prune_parser().parse_args([*cosine, "--resume"]))


def test_iterative_arguments_on_a_bare_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    add_iterative_arguments(parser)
    args = parser.parse_args(["cifar_resnet20", "--target-macs", "0.5"])
    assert args.data is None and args.prune_steps == 5 and args.train_batch_size == 32
    assert args.criterion == "taylor" and args.scope == "global" and args.slice_lr == "constant"
    with pytest.raises(ConfigError, match="needs --data"):
        run_iterative_from_args(args)
    args = parser.parse_args(["cifar_resnet20", "--data", str(tmp_path), "--prune-steps", "0"])
    with pytest.raises(ConfigError, match="--prune-steps 0"):
        run_iterative_from_args(args)


def _finetune_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "cifar_resnet20", "--data", str(data), "--weights", "none",
            "--workers", "0", "--epochs", "1", "--batch-size", "4", "--input-size", str(SIZE),
            "--device", "cpu", "--out", str(out), *extra]  # fmt: skip


def test_finetune_checkpoint_folder_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a whole epoch trained, then IsADirectoryError in the atomic save."""
    from netsurgeon.cli import main

    data = make_image_folder(tmp_path / "data", per_class=2)
    (tmp_path / "ckdir").mkdir()
    monkeypatch.setattr("netsurgeon.vision.data.load_image_data", _no_training)
    out = tmp_path / "f.pt"
    assert main(_finetune_argv(data, out, "--checkpoint", str(tmp_path / "ckdir"))) == 2
    err = capsys.readouterr().err
    assert err == (
        f"netsurgeon: error: checkpoint (--checkpoint) {str(tmp_path / 'ckdir')!r} is a folder; "
        "give a file name\n"
    )
    (tmp_path / "f.pt.train.ckpt").mkdir()  # the default checkpoint path
    assert main(_finetune_argv(data, out)) == 2
    assert "checkpoint" in capsys.readouterr().err and not out.exists()


def test_prune_checkpoint_dir_file_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from netsurgeon.cli import main

    data = make_image_folder(tmp_path / "data", per_class=2)
    (tmp_path / "p.pt.iterative").write_text("not a folder")
    monkeypatch.setattr("netsurgeon.vision.data.load_image_data", _no_training)
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--weights", "none", "--amount",
            "0.3", "--input-size", str(SIZE), "--workers", "0",
            "--out", str(tmp_path / "p.pt")]  # fmt: skip
    assert main(argv) == 2
    assert "the progress folder" in capsys.readouterr().err
    assert main([*argv, "--checkpoint-dir", str(tmp_path / "p.pt.iterative")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint-dir" in err and "is a file; give a folder" in err


def _no_training(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("no data may be read (nor anything trained) before the paths are checked")


def test_resume_without_a_checkpoint_warns_with_its_path(tmp_path: Path) -> None:
    """Before: --resume with no checkpoint silently started from scratch."""
    from netsurgeon.cli import main

    data = make_image_folder(tmp_path / "data", per_class=2)
    out = tmp_path / "typo.pt"
    with pytest.warns(UserWarning, match=r"no checkpoint at .*typo\.pt\.train\.ckpt; starting"):
        assert main(_finetune_argv(data, out, "--resume")) == 0
    assert out.is_file()
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--weights", "none", "--amount",
            "0.3", "--input-size", str(SIZE), "--workers", "0", "--device", "cpu",
            "--prune-steps", "1", "--finetune-steps", "0", "--finetune-epochs", "0",
            "--no-oneshot", "--train-batch-size", "4", "--out", str(tmp_path / "p.pt"),
            "--resume"]  # fmt: skip
    state = tmp_path / "p.pt.iterative" / "iterative_state.pt"
    with pytest.warns(UserWarning, match=f"no checkpoint at {re.escape(str(state))}; starting"):
        assert main(argv) == 0
    assert state.is_file()


@pytest.mark.parametrize(
    ("damage", "kind"),
    [("empty", "an empty file (0 bytes)"), ("truncated", "a truncated or damaged PyTorch file")],
)
def test_unreadable_progress_file_says_how_to_get_past_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, kind: str
) -> None:
    """Before: "(OSError: [Errno 22] Invalid argument)" with no advice."""
    from netsurgeon.cli import main

    data = make_image_folder(tmp_path / "data", per_class=2)
    state = tmp_path / "p.pt.iterative" / "iterative_state.pt"
    state.parent.mkdir()
    netsurgeon.save(build_model("cifar_resnet20", num_classes=2), state)
    state.write_bytes(b"" if damage == "empty" else state.read_bytes()[:2000])
    argv = ["prune", "cifar_resnet20", "--data", str(data), "--weights", "none", "--amount",
            "0.3", "--input-size", str(SIZE), "--workers", "0", "--device", "cpu",
            "--out", str(tmp_path / "p.pt"), "--resume"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and kind in err and str(state) in err
    assert (
        "delete it to start the run over (or run without resuming: resume=False, no --resume)"
        in err
    )
