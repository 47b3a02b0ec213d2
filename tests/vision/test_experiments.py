"""Tests of the sweep and compare-models runners on tiny in-memory models and data."""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from netsurgeon.errors import ConfigError, NetsurgeonError
from netsurgeon.pruning import CRITERIA
from netsurgeon.training import TrainConfig
from netsurgeon.vision import experiments
from netsurgeon.vision.data import SeededRandomSampler
from netsurgeon.vision.demo import DigitsCNN
from netsurgeon.vision.experiments import (
    COMPARE_COLUMNS,
    REFERENCE,
    SWEEP_COLUMNS,
    LimitedLoader,
    SweepConfig,
    check_criteria,
    check_levels,
    compare_models,
    parse_criteria,
    parse_levels,
    run_sweep,
)
from tests.pruning.nets import LayerNormStreamNet

torch.set_num_threads(1)


def tiny_loaders(n_per_class: int = 16, classes: int = 3) -> tuple[DataLoader, DataLoader]:
    """Learnable 1x8x8 data: each class is a different brightness plus noise."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = torch.randn(len(labels), 1, 8, 8, generator=generator) * 0.5
    images += (labels.float() - 1).view(-1, 1, 1, 1)
    data = TensorDataset(images, labels)
    train = DataLoader(data, batch_size=8, sampler=SeededRandomSampler(data, seed=0))
    return train, DataLoader(data, batch_size=24)


def tiny_model(classes: int = 3) -> DigitsCNN:
    torch.manual_seed(0)
    return DigitsCNN(num_classes=classes, width=4)


def tiny_config(**overrides: object) -> SweepConfig:
    settings: dict[str, object] = {
        "criteria": ("l1", "taylor"),
        "levels": (0.25, 0.5),
        "finetune_epochs": 1,
        "latency_repeats": 2,
        "latency_warmup": 0,
        "train": TrainConfig(optimizer="adam", lr=1e-2, device="cpu", progress=False),
    }
    settings.update(overrides)
    return SweepConfig(**settings)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- validation


def test_parse_levels_expands_progression() -> None:
    assert parse_levels("0.1,0.2,...,0.5") == (0.1, 0.2, 0.3, 0.4, 0.5)
    assert parse_levels("0.1,0.2,...,0.9") == tuple(round(0.1 * k, 9) for k in range(1, 10))
    assert parse_levels(" 0.25 , 0.75 ") == (0.25, 0.75)
    assert parse_levels("0.2,0.4,...,0.8,0.9") == (0.2, 0.4, 0.6, 0.8, 0.9)


@pytest.mark.parametrize("text, bad", [("0.5,1.5", "1.5"), ("0,0.5", "0.0"), ("-0.1", "-0.1"),
                                       ("0.3,1", "1.0")])  # fmt: skip
def test_levels_outside_open_interval_name_the_value(text: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=rf"level {bad} is not allowed.*between 0 and 1"):
        parse_levels(text)


def test_parse_levels_rejects_junk() -> None:
    with pytest.raises(ConfigError, match="'abc' is not a number"):
        parse_levels("0.1,abc")
    with pytest.raises(ConfigError, match=r"'\.\.\.' needs two levels"):
        parse_levels("0.1,...,0.5")
    with pytest.raises(ConfigError, match="given twice"):
        parse_levels("0.5,0.5")
    with pytest.raises(ConfigError, match="no pruning levels"):
        parse_levels(" , ")
    with pytest.raises(ConfigError, match="level True is not allowed"):
        check_levels([True])


def test_unknown_criterion_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_criteria("l1,magic")
    message = str(info.value)
    assert "'magic'" in message
    for name in CRITERIA:
        assert name in message
    assert check_criteria(["taylor", "l1"]) == ("taylor", "l1")
    with pytest.raises(ConfigError, match="given twice"):
        check_criteria(["l1", "l1"])


def test_sweep_config_validates_every_field() -> None:
    with pytest.raises(ConfigError, match="level 2 is not allowed"):
        SweepConfig(levels=(0.5, 2))
    with pytest.raises(ConfigError, match="unknown criterion 'nope'"):
        SweepConfig(criteria=("nope",))
    with pytest.raises(ConfigError, match="finetune_epochs=-1"):
        SweepConfig(finetune_epochs=-1)
    with pytest.raises(ConfigError, match="level_kind='flops'"):
        SweepConfig(level_kind="flops")
    with pytest.raises(ConfigError, match="scope='net'"):
        SweepConfig(scope="net")
    with pytest.raises(ConfigError, match="prune_steps=0"):
        SweepConfig(prune_steps=0)
    with pytest.raises(ConfigError, match="pass a TrainConfig"):
        SweepConfig(train={"lr": 0.1})  # type: ignore[arg-type]
    config = SweepConfig(criteria="l1,apoz", levels=(0.5,))  # type: ignore[arg-type]
    assert config.criteria == ("l1", "apoz")
    assert config.trials() == [(REFERENCE, 0.0), ("l1", 0.5), ("apoz", 0.5)]
    assert json.loads(json.dumps(config.to_dict()))["train"]["lr"] == config.train.lr


def test_limited_loader_keeps_length_and_sampler() -> None:
    train, _ = tiny_loaders()
    limited = LimitedLoader(train, 2)
    assert len(train) == 6
    assert len(limited) == 2
    assert len(list(limited)) == 2
    assert limited.sampler is train.sampler
    assert len(LimitedLoader(train, 100)) == 6
    with pytest.raises(ConfigError, match="max_batches=0"):
        LimitedLoader(train, 0)


# --------------------------------------------------------------------------- sweeps


def test_sweep_rows_columns_and_invariants(tmp_path: object) -> None:
    train, val = tiny_loaders()
    model = tiny_model()
    original = copy.deepcopy(model.state_dict())
    result = run_sweep(model, train, val, config=tiny_config(), out_dir=tmp_path)

    keys = [(r["criterion"], r["level"]) for r in result.rows]
    assert keys == [(REFERENCE, 0.0), ("l1", 0.25), ("l1", 0.5), ("taylor", 0.25), ("taylor", 0.5)]
    assert result.ran == keys and result.resumed == []
    for row in result.rows:
        assert set(row) == set(SWEEP_COLUMNS)
        assert row["model"] == "DigitsCNN"
        assert 0.0 <= row["acc_before"] <= 1.0
        assert 0.0 <= row["acc_after"] <= 1.0
        assert row["latency_ms"] > 0 and row["size_bytes"] > 0
        assert len(row["epoch_times_s"]) == 1
        assert row["epoch_time_s"] == pytest.approx(row["epoch_times_s"][0])
    ref = result.rows[0]
    assert ref["params_ratio"] == 1.0 and ref["macs_ratio"] == 1.0
    for criterion in ("l1", "taylor"):
        quarter, half = (r for r in result.rows if r["criterion"] == criterion)
        assert ref["macs"] > quarter["macs"] > half["macs"]
        assert ref["params"] > quarter["params"] > half["params"]
        assert half["macs_ratio"] == pytest.approx(half["macs"] / ref["macs"])
    # Every trial started from the same base: the caller's model is untouched.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result.rows))
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(SWEEP_COLUMNS)
    assert len(csv_lines) == 1 + len(result.rows)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["criteria"] == ["l1", "taylor"] and config["levels"] == [0.25, 0.5]
    for name in ("accuracy_vs_level", "accuracy_vs_macs", "time_vs_level", "report_html"):
        assert result.files[name].is_file()


def test_interrupted_sweep_resumes_without_rerunning(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = tiny_loaders()
    calls: list[tuple[str, float]] = []
    real_trial = experiments.run_trial

    def counting_trial(base: object, **kwargs: object) -> dict:
        calls.append((kwargs["criterion"], kwargs["level"]))  # type: ignore[arg-type]
        return real_trial(base, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(experiments, "run_trial", counting_trial)

    def crash_after_two(row: dict) -> None:
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a user's Ctrl-C looks like mid-sweep

    config = tiny_config()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            tiny_model(), train, val, config=config, out_dir=tmp_path, on_trial_end=crash_after_two
        )
    first = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["criterion"], r["level"]) for r in first] == [(REFERENCE, 0.0), ("l1", 0.25)]
    assert not (tmp_path / "report.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    calls.clear()
    result = run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path)
    assert calls == [("l1", 0.5), ("taylor", 0.25), ("taylor", 0.5)]
    assert result.resumed == [(REFERENCE, 0.0), ("l1", 0.25)]
    keys = [(r["criterion"], r["level"]) for r in result.rows]
    assert len(keys) == len(set(keys)) == 5
    # Finished rows are kept as they were written, not re-measured.
    assert result.rows[:2] == first
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 6

    calls.clear()
    again = run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path)
    assert calls == [] and again.ran == [] and len(again.rows) == 5


def test_a_loader_with_its_own_shuffling_generator_is_warned_about(tmp_path: Path) -> None:
    train, val = tiny_loaders()
    shuffled = DataLoader(
        train.dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    config = tiny_config(criteria=("l1",), levels=(0.5,), finetune_epochs=0)
    with pytest.warns(UserWarning, match=r"shuffles with its own torch\.Generator.*resumed"):
        run_sweep(tiny_model(), shuffled, val, config=config, out_dir=tmp_path / "a",
                  write_report=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the epoch-seeded sampler is the remedy: no warning
        run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path / "b",
                  write_report=False)  # fmt: skip


def test_different_config_in_same_out_dir_is_an_error(
    tmp_path: object,
) -> None:
    train, val = tiny_loaders()
    config = tiny_config(criteria=("l1",), levels=(0.5,), finetune_epochs=0)
    run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path, write_report=False)
    changed = tiny_config(criteria=("l1",), levels=(0.5,), finetune_epochs=0, scope="global")
    with pytest.raises(NetsurgeonError, match=r"different configuration \(scope: 'layer' then"):
        run_sweep(tiny_model(), train, val, config=changed, out_dir=tmp_path)
    # Progress bars do not change results, so they may differ on resume.
    quiet = tiny_config(
        criteria=("l1",), levels=(0.5,), finetune_epochs=0,
        train=TrainConfig(optimizer="adam", lr=1e-2, device="cpu", progress=True),
    )  # fmt: skip
    assert run_sweep(tiny_model(), train, val, config=quiet, out_dir=tmp_path).ran == []
    # A folder from before channels_last existed resumes with the old behaviour, not another.
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    del saved["train"]["channels_last"], saved["train"]["compile"], saved["slice_lr"]
    del saved["prune_layer_norms"]
    config_file.write_text(json.dumps(saved))
    old = replace(config, slice_lr="schedule")  # what such a folder ran between slices
    assert run_sweep(tiny_model(), train, val, config=old, out_dir=tmp_path).ran == []
    with pytest.raises(NetsurgeonError, match=r"slice_lr: 'schedule' then, 'constant' now"):
        run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path)
    saved["slice_lr"] = "constant"
    config_file.write_text(json.dumps(saved))
    assert run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path).ran == []
    # How the run computes may change on resume (README), noted for the trials left to run
    # (none here); a folder from before these settings existed counts as having had them off.
    for added in ("channels_last", "compile"):
        changed = tiny_config(
            criteria=("l1",), levels=(0.5,), finetune_epochs=0,
            train=TrainConfig(optimizer="adam", lr=1e-2, device="cpu", **{added: True}),
        )  # fmt: skip
        assert run_sweep(tiny_model(), train, val, config=changed, out_dir=tmp_path).ran == []
        note = experiments._prepare_out_dir(tmp_path, changed.to_dict())
        assert note is not None and f"train.{added}: False then, True now" in note
    # A results file whose rows lack the trial keys is refused, not silently rerun.
    (tmp_path / "results.json").write_text(
        json.dumps({"format": "netsurgeon.sweep.results/1", "rows": [{"level": 0.5}]})
    )
    with pytest.raises(NetsurgeonError, match="without a valid criterion and level"):
        run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path)


def test_foreign_files_in_out_dir_are_refused(tmp_path: object) -> None:
    train, val = tiny_loaders()
    (tmp_path / "results.json").write_text("{}")
    config = tiny_config(criteria=("l1",), levels=(0.5,), finetune_epochs=0)
    with pytest.raises(NetsurgeonError, match=r"results\.json but no config\.json"):
        run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(NetsurgeonError, match="not written by this kind of netsurgeon run"):
        run_sweep(tiny_model(), train, val, config=config, out_dir=other)


def test_without_finetuning_and_by_macs(tmp_path: object) -> None:
    train, val = tiny_loaders()
    config = tiny_config(
        criteria=("l2", "activation"), levels=(0.5,), finetune_epochs=0, level_kind="macs"
    )
    result = run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path)
    for row in result.rows[1:]:
        assert row["acc_after"] is None and row["epoch_times_s"] == []
        # A MACs level removes at least that share of the MACs.
        assert row["macs_ratio"] <= 0.5 + 1e-9
        assert row["level_kind"] == "macs"
    assert (tmp_path / "report.html").is_file()


def test_base_epochs_trains_once_and_is_reused(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = tiny_loaders()
    fits: list[int] = []
    real_fit = experiments.fit

    def counting_fit(model: object, *args: object, config: TrainConfig, **kwargs: object) -> object:
        fits.append(config.epochs)
        return real_fit(model, *args, config=config, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(experiments, "fit", counting_fit)
    config = tiny_config(criteria=("l1",), levels=(0.5,), base_epochs=2, finetune_epochs=1,
                         reference=False)  # fmt: skip
    first = run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path, write_report=False)
    assert fits == [2, 1]
    assert (tmp_path / "base_model.pt").is_file()
    # A resume after the base was trained loads it instead of training again.
    (tmp_path / "results.json").unlink()
    fits.clear()
    second = run_sweep(
        tiny_model(), train, val, config=config, out_dir=tmp_path, write_report=False
    )
    assert fits == [1]
    assert second.rows[0]["acc_before"] == first.rows[0]["acc_before"]


def test_sweep_stopped_in_base_finetuning_keeps_its_finished_epochs(tmp_path: Any) -> None:
    """A stop in the base fine-tuning's second epoch resumes after its first, and the base
    model ends as an uninterrupted sweep's."""
    from netsurgeon.vision.data import make_loader

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(16)
    noise = torch.randn(len(labels), 1, 8, 8, generator=g) * 0.5
    data = TensorDataset(noise + (labels.float() - 1).view(-1, 1, 1, 1), labels)
    config = tiny_config(criteria=("l1",), levels=(0.5,), base_epochs=3, finetune_epochs=0,
                         reference=False)  # fmt: skip

    class StopInSecondEpoch:
        """The training loader, raising Ctrl-C's exception in the second epoch."""

        def __init__(self, loader: Any) -> None:
            self.loader, self.sampler, self.batches = loader, loader.sampler, 0

        def __len__(self) -> int:
            return len(self.loader)

        def __iter__(self) -> Any:
            for batch in self.loader:
                self.batches += 1
                if self.batches == len(self.loader) + 2:
                    raise KeyboardInterrupt
                yield batch

    def sweep(out: Any, *, stop: bool = False) -> dict[str, torch.Tensor]:
        train = make_loader(data, batch_size=8, train=True, seed=0, num_workers=0)
        val = make_loader(data, batch_size=24, train=False, num_workers=0)
        torch.manual_seed(7)
        loader = StopInSecondEpoch(train) if stop else train
        run_sweep(tiny_model(), loader, val, config=config, out_dir=out, write_report=False)
        return torch.load(out / "base_model.pt", weights_only=True)["model"]

    whole = sweep(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path / "resumed", stop=True)
    epochs_file = tmp_path / "resumed" / "base_model.train.ckpt"
    assert torch.load(epochs_file, weights_only=True)["epoch"] == 1  # one finished epoch
    assert not (tmp_path / "resumed" / "base_model.pt").exists()
    resumed = sweep(tmp_path / "resumed")
    assert resumed.keys() == whole.keys()
    for key, value in whole.items():
        assert torch.equal(resumed[key], value), key
    assert not epochs_file.exists()  # the finished base model replaces its epoch checkpoint


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("scope", ["global", "global_macs"])
def test_prune_steps_and_global_scope(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, scope: str, steps: int
) -> None:
    pruned: list[tuple[str, dict[str, Any]]] = []  # (which entry, its keyword arguments)
    real_prune, real_pruner = experiments.prune, experiments.Pruner

    def spy_prune(*args: Any, **kwargs: Any) -> Any:
        pruned.append(("prune", kwargs))
        return real_prune(*args, **kwargs)

    def spy_pruner(*args: Any, **kwargs: Any) -> Any:
        pruned.append(("Pruner", kwargs))
        return real_pruner(*args, **kwargs)

    monkeypatch.setattr(experiments, "prune", spy_prune)
    monkeypatch.setattr(experiments, "Pruner", spy_pruner)
    train, val = tiny_loaders()
    config = tiny_config(criteria=("taylor",), levels=(0.5,), prune_steps=steps,
                         finetune_steps=2, scope=scope, reference=False)  # fmt: skip
    result = run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path,
                       write_report=False)  # fmt: skip
    (row,) = result.rows
    assert row["scope"] == scope and row["macs_ratio"] < 1.0
    assert 0.0 <= row["acc_after"] <= 1.0
    # The one trial pruned with the sweep's scope: at once, or in `steps` slices.
    ((entry, kwargs),) = pruned
    assert entry == ("prune" if steps == 1 else "Pruner") and kwargs["scope"] == scope
    assert kwargs.get("steps", 1) == steps


def test_steps_between_slices_run_eagerly_under_compile(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[bool] = []
    real = experiments.finetune_steps

    def spy(model: torch.nn.Module, loader: Any, **kwargs: Any) -> Any:
        compiled.append(kwargs["config"].compile)
        return real(model, loader, **kwargs)

    monkeypatch.setattr(experiments, "finetune_steps", spy)
    train, val = tiny_loaders()
    config = tiny_config(
        criteria=("l1",), levels=(0.5,), prune_steps=3, finetune_steps=1, finetune_epochs=0,
        reference=False, train=TrainConfig(device="cpu", compile=True, progress=False),
    )  # fmt: skip
    run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path, write_report=False)
    assert compiled == [False, False]  # after slices 1 and 2; the last one is not fine-tuned


@pytest.mark.parametrize("compile", [False, True])
def test_every_trial_compiles_afresh(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, compile: bool
) -> None:
    # Past torch.compile's recompile limit the later trials would silently run eagerly.
    events: list[str] = []
    monkeypatch.setattr(torch.compiler, "reset", lambda: events.append("reset"))
    monkeypatch.setattr(torch, "compile", lambda model, **_: events.append("compile") or model)
    train, val = tiny_loaders()
    config = tiny_config(
        criteria=("l1",), levels=(0.25, 0.5), finetune_epochs=1, base_epochs=1,
        train=TrainConfig(device="cpu", compile=compile, progress=False),
    )  # fmt: skip
    run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path, write_report=False)
    # the base model, the reference and two levels: each fit resets, then compiles
    assert events == (["reset", "compile"] * 4 if compile else [])


@pytest.mark.parametrize("steps", [1, 2])
def test_a_sweep_prunes_layer_norms_when_told(tmp_path: Path, steps: int) -> None:
    train, val = tiny_loaders()
    ratios = {}
    for flag in (False, True):
        config = tiny_config(
            criteria=("l1",), levels=(0.5,), finetune_epochs=0, reference=False,
            prune_steps=steps, prune_layer_norms=flag,
        )  # fmt: skip
        torch.manual_seed(0)
        out = tmp_path / str(flag)
        result = run_sweep(
            LayerNormStreamNet(in_channels=1, num_classes=3), train, val, config=config, out_dir=out
        )
        ratios[flag] = result.rows[0]["params_ratio"]
        assert json.loads((out / "config.json").read_text())["prune_layer_norms"] is flag
    # a (8 -> 4 filters) and the norm lose channels only when told; b loses half either way.
    assert ratios[True] < ratios[False]
    with pytest.raises(ConfigError, match="prune_layer_norms='yes' is not allowed"):
        tiny_config(prune_layer_norms="yes")


@pytest.mark.parametrize("slice_lr", [None, "constant", "schedule"])
def test_steps_between_slices_take_the_slice_lr(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, slice_lr: str | None
) -> None:
    rates: list[str] = []
    real = experiments.finetune_steps

    def spy(model: torch.nn.Module, loader: Any, **kwargs: Any) -> Any:
        rates.append(kwargs["lr"])
        return real(model, loader, **kwargs)

    monkeypatch.setattr(experiments, "finetune_steps", spy)
    train, val = tiny_loaders()
    chosen = {} if slice_lr is None else {"slice_lr": slice_lr}
    config = tiny_config(
        criteria=("l1",), levels=(0.5,), prune_steps=3, finetune_steps=1, finetune_epochs=0,
        reference=False, **chosen,
    )  # fmt: skip
    run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path, write_report=False)
    assert rates == [slice_lr or "constant"] * 2  # like prune_and_finetune, constant by default
    with pytest.raises(ConfigError, match="slice_lr='cosine' is not allowed"):
        tiny_config(slice_lr="cosine")


def test_compare_models_rows_and_resume(tmp_path: object) -> None:
    train, val = tiny_loaders()
    built: list[str] = []

    def build(name: str) -> DigitsCNN:
        built.append(name)
        torch.manual_seed(0)
        return DigitsCNN(num_classes=3, width={"narrow": 4, "wide": 8}[name])

    config = tiny_config(criteria=("l1",), levels=(0.5,))
    result = compare_models(["narrow", "wide"], build=build, train_loader=train,
                            val_loader=val, config=config, out_dir=tmp_path)  # fmt: skip
    assert built == ["narrow", "wide"]
    assert [(r["model"], r["variant"]) for r in result.rows] == [
        ("narrow", "unpruned"), ("narrow", "pruned"), ("wide", "unpruned"), ("wide", "pruned"),
    ]  # fmt: skip
    for row in result.rows:
        assert set(row) == set(COMPARE_COLUMNS)
        assert row["epoch_time_s"] > 0 and row["latency_ms"] > 0
        assert 0.0 <= row["acc_after"] <= 1.0
    by = {(r["model"], r["variant"]): r for r in result.rows}
    assert by["wide", "unpruned"]["params"] > by["narrow", "unpruned"]["params"]
    for name in ("narrow", "wide"):
        assert by[name, "pruned"]["macs"] < by[name, "unpruned"]["macs"]
        assert (tmp_path / name / "results.json").is_file()
    for name in ("results_json", "results_csv", "comparison", "report_md", "report_html"):
        assert result.files[name].is_file()
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header.split(",") == list(COMPARE_COLUMNS)

    built.clear()
    again = compare_models(["narrow", "wide"], build=build, train_loader=train,
                           val_loader=val, config=config, out_dir=tmp_path)  # fmt: skip
    assert built == [] and again.ran == [] and len(again.rows) == 4
    with pytest.raises(ConfigError, match="one criterion, one level"):
        compare_models(["narrow"], build=build, train_loader=train, val_loader=val,
                       config=tiny_config(), out_dir=tmp_path / "x")  # fmt: skip
    with pytest.raises(ConfigError, match="given twice"):
        compare_models(["narrow", "narrow"], build=build, train_loader=train, val_loader=val,
                       config=config, out_dir=tmp_path / "y")  # fmt: skip
    with pytest.raises(ConfigError, match=r"normalizations names 'tall', which is not among"):
        compare_models(["narrow"], build=build, train_loader=train, val_loader=val,
                       config=config, out_dir=tmp_path / "z",
                       normalizations={"tall": ((0.5,) * 3, (0.5,) * 3)})  # fmt: skip
    assert not (tmp_path / "z").exists()  # refused before anything was written


def _truncate_last_row(path: Path) -> str:
    """Drop the CSV's last row, as a kill between results.json's and its write leaves it."""
    full = path.read_text()
    path.write_text("".join(full.splitlines(keepends=True)[:-1]))
    return full


def test_resumed_sweep_mends_a_csv_left_a_row_behind(tmp_path: Path) -> None:
    """Before: with no trial left to run, the resumed sweep kept results.csv a row short of
    results.json."""
    train, val = tiny_loaders()
    config = tiny_config(criteria=("l1",), levels=(0.5,), finetune_epochs=0)
    run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path, write_report=False)
    full = _truncate_last_row(tmp_path / "results.csv")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    again = run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path, write_report=False)
    assert again.ran == [] and len(rows) == 2
    assert (tmp_path / "results.csv").read_text() == full
    assert len(full.splitlines()) == 1 + len(rows)


def test_resumed_comparison_mends_csvs_left_a_row_behind(tmp_path: Path) -> None:
    train, val = tiny_loaders()
    config = tiny_config(criteria=("l1",), levels=(0.5,), finetune_epochs=0)

    def compare() -> Any:
        return compare_models(["narrow"], build=lambda _: tiny_model(), train_loader=train,
                              val_loader=val, config=config, out_dir=tmp_path)  # fmt: skip

    compare()
    files = (tmp_path / "results.csv", tmp_path / "narrow" / "results.csv")
    full = [_truncate_last_row(path) for path in files]
    assert compare().ran == []
    assert [path.read_text() for path in files] == full


def test_table_lists_every_row(tmp_path: object) -> None:
    train, val = tiny_loaders()
    config = tiny_config(criteria=("random",), levels=(0.5,), finetune_epochs=0)
    result = run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path,
                       write_report=False)  # fmt: skip
    lines = result.table().splitlines()
    assert lines[0].split()[:2] == ["criterion", "level"]
    assert lines[1].split()[:2] == ["none", "0.00"]
    assert lines[2].split()[:2] == ["random", "0.50"]
    assert "n/a" in lines[2]  # no fine-tuning: no accuracy after it
    assert math.isfinite(result.rows[1]["latency_ms"])


def test_resumed_sweep_scores_filters_on_the_same_batches(tmp_path: Any) -> None:
    """With a base fine-tuning, a sweep resumed after a crash (which loads the fine-tuned base
    instead of training it, so its sampler and RNG are elsewhere) prunes as an uninterrupted one.
    """
    from netsurgeon.vision.data import make_loader

    def sweep(out: Any, *, crash: bool = False) -> list[dict[str, Any]]:
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(3).repeat_interleave(16)
        noise = torch.randn(len(labels), 1, 8, 8, generator=g) * 0.5
        data = TensorDataset(noise + (labels.float() - 1).view(-1, 1, 1, 1), labels)
        train = make_loader(data, batch_size=8, train=True, seed=0, num_workers=0)
        val = make_loader(data, batch_size=24, train=False, num_workers=0)
        torch.manual_seed(0)
        model = DigitsCNN(num_classes=3, width=4)
        config = SweepConfig(
            criteria=("taylor",), levels=(0.25, 0.5), finetune_epochs=0, base_epochs=2,
            criterion_batches=1, latency_repeats=1, latency_warmup=0, reference=False,
            train=TrainConfig(optimizer="adam", lr=1e-2, device="cpu", progress=False),
        )  # fmt: skip

        def stop(row: dict[str, Any]) -> None:
            if crash:
                raise KeyboardInterrupt

        torch.manual_seed(123)  # what the process drew before must not matter
        result = run_sweep(
            model, train, val, config=config, out_dir=out, on_trial_end=stop, write_report=False
        )
        return result.rows

    whole = sweep(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path / "resumed", crash=True)
    resumed = sweep(tmp_path / "resumed")
    keys = ("criterion", "level", "params", "macs", "acc_before", "loss_before")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in whole]


def test_time_per_epoch_leaves_out_compiling(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --compile the first epoch compiles; the row's training speed must not count it."""
    from netsurgeon.training import EpochRecord, History

    def fake_fit(model: Any, *args: Any, config: TrainConfig, **kwargs: Any) -> History:
        common = {"samples": 48, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0,
                  "val_accuracy": 0.5, "val_time_s": 0.1, "data_wait_s": 0.0, "lr": 0.01,
                  "steps": 6}  # fmt: skip
        return History([
            EpochRecord(epoch=0, epoch_time_s=10.0, compile_time_s=8.0, **common),
            EpochRecord(epoch=1, epoch_time_s=2.5, compile_time_s=0.0, **common),
        ])  # fmt: skip

    monkeypatch.setattr(experiments, "_fit_afresh", fake_fit)
    train, val = tiny_loaders()
    config = tiny_config(criteria=("l1",), levels=(0.5,), finetune_epochs=2, reference=False)
    (row,) = run_sweep(tiny_model(), train, val, config=config, out_dir=tmp_path).rows
    assert row["epoch_times_s"] == [2.0, 2.5]
    assert row["epoch_time_s"] == 2.25 and row["compile_time_s"] == 8.0
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert "compile_time_s" in header


def test_a_comparison_resumed_with_other_execution_settings_says_so_once(
    tmp_path: Path,
) -> None:
    train, val = tiny_loaders()
    config = tiny_config(criteria=("l1",), levels=(0.5,), finetune_epochs=0)

    def compare(channels_last: bool) -> list[str]:
        changed = replace(config, train=replace(config.train, channels_last=channels_last))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            compare_models(["a", "b"], build=lambda _: tiny_model(), train_loader=train,
                           val_loader=val, config=changed, out_dir=tmp_path)  # fmt: skip
        return [str(w.message) for w in seen if "execution settings" in str(w.message)]

    assert compare(False) == []
    assert compare(True) == []  # every trial done: no new row can differ from the old ones
    # The report shows config.json's values, as the rows were measured (before: this call's).
    report_md = (tmp_path / "report.md").read_text()
    assert "| train.channels_last | False |" in report_md, report_md
    for name in ("a", "b"):  # both models stopped before their pruned trial
        results = json.loads((tmp_path / name / "results.json").read_text())
        (tmp_path / name / "results.json").write_text(
            json.dumps({**results, "rows": results["rows"][:1]})
        )
    assert compare(True) == [
        f"resuming {tmp_path} with other execution settings (train.channels_last: False then, "
        "True now); its earlier rows used the values in config.json, the new rows use these"
    ]


def test_a_sweep_fit_leaves_the_version_note_to_the_results_folder(tmp_path: Path) -> None:
    """A base fine-tuning or trial checkpoint from another netsurgeon version: the folder's
    own note (config.json) says it once for the sweep (found by a review: two notes)."""
    from netsurgeon.provenance import VERSION_KEY

    train, val = tiny_loaders()
    path = tmp_path / "base.ckpt"
    config = TrainConfig(device="cpu", epochs=1, progress=False)
    experiments._fit_afresh(tiny_model(), train, val, config=config, checkpoint_path=path)
    saved = torch.load(path, weights_only=True)
    torch.save({**saved, VERSION_KEY: "0.0.1"}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = experiments._fit_afresh(
            tiny_model(), train, val, config=replace(config, epochs=2), checkpoint_path=path
        )
    assert len(history.epochs) == 2
