"""Tests of the training loop: config checks, fit/evaluate, checkpoints, exact resume."""

from __future__ import annotations

import collections
import copy
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.training import (
    CHECKPOINT_FORMAT,
    BatchInfo,
    Callback,
    DataWaitTimer,
    EpochRecord,
    History,
    TrainConfig,
    TrainState,
    _split_batch,
    atomic_save,
    evaluate,
    finetune_steps,
    fit,
    load_checkpoint,
    load_model_state,
    resolve_device,
)

torch.set_num_threads(1)


class TinyCNN(nn.Module):
    """Conv + BN + dropout: exercises buffers and the RNG during training."""

    def __init__(self, classes: int = 3, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(width * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(self.drop(x.flatten(1)))


class NoisyDataset(Dataset):
    """Deterministic images whose class is the brightest channel, plus random noise drawn
    from torch's global RNG at load time (like a random augmentation)."""

    def __init__(self, n: int = 48, classes: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % classes
        self.images = torch.rand(n, 3, 8, 8, generator=g) * 0.5
        self.images[torch.arange(n), self.labels] += 0.6

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i] + 0.05 * torch.randn(3, 8, 8), self.labels[i]


def loaders(batch_size: int = 8) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(NoisyDataset(48, seed=0), batch_size=batch_size, shuffle=True)
    val_data = NoisyDataset(24, seed=1)
    val = DataLoader(TensorDataset(val_data.images, val_data.labels), batch_size=batch_size)
    return train, val


def make_model(seed: int = 0, classes: int = 3) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(classes)


def cpu_config(**kwargs) -> TrainConfig:
    base = {"device": "cpu", "lr": 0.05, "epochs": 3, "progress": False}
    return TrainConfig(**{**base, **kwargs})


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"optimizer": "rmsprop"}, "optimizer='rmsprop'"),
        ({"schedule": "linear"}, "schedule='linear'"),
        ({"lr": 0}, "lr=0"),
        ({"lr": -0.1}, "lr=-0.1 (--lr) is not allowed"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"lr": "0.1"}, "lr='0.1'"),
        ({"momentum": 1.0}, "momentum=1.0 (--momentum)"),
        ({"weight_decay": -1e-4}, "weight_decay=-0.0001 (--weight-decay)"),
        ({"epochs": 0}, "epochs=0"),
        ({"epochs": 2.5}, "epochs=2.5"),
        ({"step_size": 0}, "step_size=0"),
        ({"gamma": 0}, "gamma=0"),
        ({"seed": -1}, "seed=-1 (--seed)"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"device": "cuda:x"}, "device='cuda:x'"),
        ({"amp": True, "device": "cpu"}, "amp=True"),
        ({"amp": "yes"}, "amp='yes'"),
        ({"grad_clip": 0.0}, "grad_clip=0.0 (--grad-clip) is not allowed"),
        ({"max_steps": 0}, "max_steps=0"),
        ({"max_steps": True}, "max_steps=True"),
        ({"progress": "auto"}, "progress='auto'"),
        ({"channels_last": 1}, "channels_last=1"),
    ],
)
def test_config_rejects_bad_values_naming_them(kwargs: dict, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kwargs)
    assert shown in str(info.value)
    assert isinstance(info.value, ValueError)


def test_config_is_keyword_only_frozen_and_plain() -> None:
    with pytest.raises(TypeError):
        TrainConfig("adam")  # type: ignore[misc]
    config = TrainConfig(optimizer="adamw", schedule="cosine", grad_clip=1.0, max_steps=10)
    with pytest.raises(AttributeError):
        config.lr = 1.0  # type: ignore[misc]
    assert TrainConfig(**config.to_dict()) == config
    assert all(
        isinstance(v, (str, int, float, bool, type(None))) for v in config.to_dict().values()
    )


def test_config_takes_a_torch_device_and_keeps_its_name() -> None:
    assert TrainConfig(device=torch.device("cpu")).device == "cpu"  # type: ignore[arg-type]
    assert TrainConfig(device=torch.device("cuda", 1)).device == "cuda:1"  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="device='meta' is not allowed"):
        TrainConfig(device=torch.device("meta"))  # type: ignore[arg-type]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'cuda'"):
            resolve_device("cuda")


# --------------------------------------------------------------------------- evaluate / fit


def test_evaluate_matches_a_hand_computation_and_restores_mode() -> None:
    model = make_model()
    _, val = loaders()
    model.train()
    frozen = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    frozen.eval()  # a frozen batch norm in a model in training mode keeps its own mode
    result = evaluate(model, val, device="cpu")
    assert set(result) == {"loss", "accuracy"}
    assert model.training and not frozen.training
    assert sum(not m.training for m in model.modules()) == 1
    model.eval()
    data = val.dataset.tensors  # type: ignore[attr-defined]
    with torch.no_grad():
        logits = model(data[0])
    expected_loss = nn.functional.cross_entropy(logits, data[1]).item()
    expected_acc = (logits.argmax(1) == data[1]).float().mean().item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(expected_acc)


def test_evaluate_counts_a_nan_output_as_wrong() -> None:
    """Before: argmax of an all-nan row is 0, so a diverged model scored the share of class 0
    (0.333 here) as its accuracy."""

    class Diverged(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 3)
            out[1:] = float("nan")  # the first sample still has finite scores
            return out

    x = torch.zeros(6, 2)
    loader = [(x, torch.tensor([0, 1, 2, 0, 1, 2]))]
    result = evaluate(Diverged(), loader, device="cpu")
    assert result["accuracy"] == pytest.approx(1 / 6)  # only the finite row, a tie won by 0
    assert math.isnan(result["loss"])


def test_evaluate_rejects_an_empty_loader() -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ConfigError, match="no batches"):
        evaluate(make_model(), empty, device="cpu")


def test_fit_learns_and_records_each_epoch() -> None:
    train, val = loaders()
    model = make_model()
    before = evaluate(model, val, device="cpu")["accuracy"]
    history = fit(model, train, val, config=cpu_config(epochs=4, schedule="cosine"))
    assert [r.epoch for r in history.epochs] == [0, 1, 2, 3]
    assert all(r.steps == 6 and r.samples == 48 for r in history.epochs)
    assert history.total_steps == 24
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    last = history.last
    assert last is not None and last.val_accuracy is not None
    assert last.val_accuracy >= max(before, 0.8)
    assert last.val_accuracy == pytest.approx(evaluate(model, val, device="cpu")["accuracy"])
    for record in history.epochs:
        assert record.epoch_time_s > 0 and record.val_time_s > 0
        assert 0 <= record.data_wait_s <= record.epoch_time_s
        assert 0 <= record.data_wait_share <= 1
        assert 0 <= record.train_accuracy <= 1
    # cosine annealing over all 24 steps ends at 0
    assert last.lr == pytest.approx(0.0, abs=1e-12)
    assert History.from_dict(history.to_dict()) == history


def test_channels_last_trains_the_same_model_in_another_memory_order() -> None:
    train, val = loaders()
    plain, fast = make_model(), make_model()
    seen: list[bool] = []
    fast.conv.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    fit(plain, train, val, config=cpu_config(epochs=2))
    history = fit(fast, train, val, config=cpu_config(epochs=2, channels_last=True))
    # Weights and every batch (training and validation) were channels-last...
    assert fast.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert seen and all(seen)
    # ... and the result is the same model, up to float rounding.
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)
    last = history.last
    assert last is not None
    assert last.val_accuracy == evaluate(plain, val, device="cpu")["accuracy"]


class OptimizerPeek(Callback):
    """The optimizer of each run, seen when the run starts."""

    def __init__(self) -> None:
        self.optimizers: list[torch.optim.Optimizer] = []

    def on_fit_start(self, state: TrainState) -> None:
        self.optimizers.append(state.optimizer)


OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def test_fit_without_validation_and_with_each_optimizer() -> None:
    train, _ = loaders()
    for optimizer, kind in OPTIMIZER_CLASSES.items():
        peek = OptimizerPeek()
        config = cpu_config(optimizer=optimizer, lr=0.01, momentum=0.5, weight_decay=1e-3, epochs=1)
        history = fit(make_model(), train, None, config=config, callbacks=[peek])
        assert history.last is not None
        assert history.last.val_accuracy is None and history.last.val_loss is None
        assert math.isfinite(history.last.train_loss)
        [opt] = peek.optimizers
        assert type(opt) is kind, optimizer
        group = opt.param_groups[0]
        assert group["weight_decay"] == 1e-3, optimizer
        if optimizer == "sgd":
            assert group["momentum"] == 0.5


@pytest.mark.parametrize("name", sorted(OPTIMIZER_CLASSES))
def test_each_optimizer_steps_like_the_torch_optimizer_it_names(name: str) -> None:
    """Two steps of fit equal two steps of the torch optimizer built by hand on a copy; two
    steps, because SGD's momentum changes nothing in the first."""
    data = NoisyDataset(48, seed=0)
    train = DataLoader(TensorDataset(data.images, data.labels), batch_size=8)
    model = make_model()
    model.drop = nn.Identity()  # no random numbers: the hand-made loop sees the same batches
    by_hand = copy.deepcopy(model)
    start = copy.deepcopy(model.state_dict())
    settings = {"lr": 0.05, "weight_decay": 0.1}
    config = cpu_config(optimizer=name, momentum=0.5, max_steps=2, **settings)
    fit(model, train, None, config=config)
    extra = {"momentum": 0.5} if name == "sgd" else {}
    opt = OPTIMIZER_CLASSES[name](by_hand.parameters(), **settings, **extra)
    by_hand.train()
    batches = iter(train)
    for _ in range(2):
        inputs, targets = next(batches)
        opt.zero_grad()
        nn.CrossEntropyLoss()(by_hand(inputs), targets).backward()
        opt.step()
    for (key, got), want in zip(
        model.state_dict().items(), by_hand.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), key
        if key != "bn.num_batches_tracked":
            assert not torch.equal(got, start[key]), key  # the steps moved every weight


def test_step_schedule_decays_every_step_size_epochs() -> None:
    train, _ = loaders()
    config = cpu_config(schedule="step", step_size=1, gamma=0.5, lr=0.08, epochs=3)
    history = fit(make_model(), train, None, config=config)
    assert [r.lr for r in history.epochs] == pytest.approx([0.04, 0.02, 0.01])


def test_grad_clip_bounds_the_update() -> None:
    train, _ = loaders()
    model = make_model()
    start = [p.detach().clone() for p in model.parameters()]
    # one plain SGD step with clipped gradient norm moves the weights by at most lr * clip
    config = cpu_config(lr=1.0, momentum=0.0, grad_clip=1e-3, max_steps=1)
    fit(model, train, None, config=config)
    moved = torch.cat(
        [(p.detach() - s).flatten() for p, s in zip(model.parameters(), start, strict=True)]
    )
    assert 0 < moved.norm().item() <= 1e-3 * (1 + 1e-5)


def test_frozen_parameters_stay_put_and_all_frozen_is_an_error() -> None:
    train, _ = loaders()
    model = make_model()
    model.conv.requires_grad_(False)
    conv = model.conv.weight.detach().clone()
    fc = model.fc.weight.detach().clone()
    fit(model, train, None, config=cpu_config(epochs=1))
    assert torch.equal(model.conv.weight, conv)
    assert not torch.equal(model.fc.weight, fc)
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        fit(model, train, None, config=cpu_config(epochs=1))


def test_max_steps_stops_mid_epoch() -> None:
    train, _ = loaders()
    history = fit(make_model(), train, None, config=cpu_config(epochs=5, max_steps=8))
    assert [r.steps for r in history.epochs] == [6, 2]
    assert history.total_steps == 8


def test_amp_on_a_cpu_run_warns_and_trains_in_float32() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the CPU fallback is not reachable")
    train, _ = loaders()
    with pytest.warns(UserWarning, match="amp=True needs CUDA"):
        history = fit(make_model(), train, None, config=TrainConfig(amp=True, progress=False))
    assert history.last is not None and math.isfinite(history.last.train_loss)


def test_batches_must_be_pairs() -> None:
    triples = DataLoader(
        TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4).long(), torch.zeros(4)), batch_size=2
    )
    with pytest.raises(ConfigError, match="pairs"):
        fit(make_model(), triples, None, config=cpu_config(epochs=1))


def test_progress_bar_shows_running_loss_and_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    train, _ = loaders()
    fit(make_model(), train, None, config=cpu_config(epochs=1, progress=True))
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err
    fit(make_model(), train, None, config=cpu_config(epochs=1, progress=None))
    # pytest's captured stderr is not a terminal, so the automatic setting hides the bar
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- callbacks


class Recorder(Callback):
    def __init__(self, stop_at_step: int | None = None) -> None:
        self.events: list[str] = []
        self.stop_at_step = stop_at_step

    def on_fit_start(self, state: TrainState) -> None:
        self.events.append(f"fit_start@{state.epoch}")

    def on_epoch_start(self, state: TrainState, epoch: int) -> None:
        self.events.append(f"epoch_start{epoch}")

    def on_batch_end(self, state: TrainState, batch: BatchInfo) -> None:
        assert not batch.loss.requires_grad and batch.batch_size == 8
        self.events.append("batch")
        if batch.global_step == self.stop_at_step:
            state.request_stop()

    def on_epoch_end(self, state: TrainState, record: EpochRecord) -> None:
        self.events.append(f"epoch_end{record.epoch}")

    def on_fit_end(self, state: TrainState, history: History) -> None:
        self.events.append(f"fit_end{len(history.epochs)}")


def test_callbacks_run_in_order_and_can_stop() -> None:
    train, val = loaders()
    recorder = Recorder()
    fit(make_model(), train, val, config=cpu_config(epochs=2), callbacks=[recorder])
    assert recorder.events == [
        "fit_start@0",
        "epoch_start0",
        *["batch"] * 6,
        "epoch_end0",
        "epoch_start1",
        *["batch"] * 6,
        "epoch_end1",
        "fit_end2",
    ]
    stopper = Recorder(stop_at_step=9)
    history = fit(make_model(), train, val, config=cpu_config(epochs=5), callbacks=[stopper])
    assert [r.steps for r in history.epochs] == [6, 3]
    assert stopper.events[-1] == "fit_end2"


def test_the_base_callback_is_a_no_op() -> None:
    train, val = loaders()
    plain, called = make_model(), make_model()
    expected = fit(plain, train, val, config=cpu_config(epochs=2))
    history = fit(called, train, val, config=cpu_config(epochs=2), callbacks=[Callback()])
    assert [r.steps for r in history.epochs] == [6, 6]
    assert [r.train_loss for r in history.epochs] == [r.train_loss for r in expected.epochs]
    assert [r.val_accuracy for r in history.epochs] == [r.val_accuracy for r in expected.epochs]
    for (key, a), b in zip(plain.state_dict().items(), called.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


# --------------------------------------------------------------------------- finetune_steps


def test_finetune_steps_takes_exactly_k_steps_across_epochs() -> None:
    train, _ = loaders()  # 6 batches per pass
    model = make_model()
    start = model.fc.weight.detach().clone()
    recorder = Recorder()
    result = finetune_steps(
        model, train, steps=15, config=cpu_config(schedule="cosine"), callbacks=[recorder]
    )
    assert result.steps == 15 and recorder.events.count("batch") == 15
    assert result.samples == 15 * 8
    assert 0 <= result.accuracy <= 1 and math.isfinite(result.loss)
    assert 0 <= result.data_wait_s <= result.time_s
    assert not torch.equal(model.fc.weight, start)
    with pytest.raises(ConfigError, match="steps=0"):
        finetune_steps(model, train, steps=0, config=cpu_config())


class LrRecorder(Callback):
    """The learning rate each optimizer step was taken with."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self._pending: float | None = None

    def on_fit_start(self, state: TrainState) -> None:
        self._pending = state.optimizer.param_groups[0]["lr"]

    def on_batch_end(self, state: TrainState, batch: BatchInfo) -> None:
        # The scheduler has already stepped: record the rate this step used, keep the next.
        assert self._pending is not None
        self.lrs.append(self._pending)
        self._pending = state.optimizer.param_groups[0]["lr"]


def test_finetune_steps_lr_constant_holds_the_rate_and_schedule_anneals_it() -> None:
    train, _ = loaders()
    config = cpu_config(schedule="cosine", lr=0.1)
    annealed, constant = LrRecorder(), LrRecorder()
    finetune_steps(make_model(), train, steps=8, config=config, callbacks=[annealed])
    finetune_steps(make_model(), train, steps=8, config=config, callbacks=[constant], lr="constant")
    assert constant.lrs == [0.1] * 8
    expected = [0.05 * (1 + math.cos(math.pi * i / 8)) for i in range(8)]
    assert annealed.lrs == pytest.approx(expected)
    with pytest.raises(ConfigError, match=r"lr='linear' is not allowed; use one of constant"):
        finetune_steps(make_model(), train, steps=2, config=config, lr="linear")


@pytest.mark.slow
def test_compile_trains_like_eager_and_saves_plain_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped: list[nn.Module] = []
    real_compile = torch.compile

    def counting_compile(module: nn.Module, **kwargs: Any) -> Any:
        wrapped.append(module)
        return real_compile(module, **kwargs)

    monkeypatch.setattr(torch, "compile", counting_compile)
    data = NoisyDataset(48, seed=0)
    train = DataLoader(TensorDataset(data.images, data.labels), batch_size=8)
    models, histories = [], []
    for compiled in (False, True):
        model = make_model()
        model.drop = nn.Identity()  # compiled dropout draws other random numbers
        histories.append(
            fit(
                model,
                train,
                train,
                config=cpu_config(epochs=2, compile=compiled),
                checkpoint_path=tmp_path / f"compiled{compiled}.pt",
            )
        )
        models.append(model)
    assert wrapped == [models[1]]  # only the compile=True run, and its training steps
    # The first compiled epoch spent most of its time compiling, and says so; the second
    # reused the compiled code; eager epochs compile nothing.
    first, second = histories[1].epochs
    assert 0.5 * first.epoch_time_s < first.compile_time_s <= first.epoch_time_s
    assert second.compile_time_s == 0.0
    assert [r.compile_time_s for r in histories[0].epochs] == [0.0, 0.0]
    eager, compiled = (m.state_dict() for m in models)
    assert eager.keys() == compiled.keys()  # no "_orig_mod." prefix from torch.compile
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-4, atol=1e-5)
    saved = torch.load(tmp_path / "compiledTrue.pt", weights_only=True)["model"]
    assert saved.keys() == eager.keys()


def test_compile_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="compile='yes' is not allowed; use True or False"):
        TrainConfig(compile="yes")  # type: ignore[arg-type]


def test_finetune_steps_works_after_the_model_changes_shape() -> None:
    train, _ = loaders()
    model = make_model()
    finetune_steps(model, train, steps=2, config=cpu_config())
    model.fc = nn.Linear(16, 3)  # as a pruning step would swap layers
    new_fc = model.fc.weight.detach().clone()
    peek = OptimizerPeek()
    config = cpu_config(optimizer="adam")
    result = finetune_steps(model, train, steps=2, config=config, callbacks=[peek])
    assert result.steps == 2
    # A fresh optimizer of the requested kind, over the parameters the model has now...
    [opt] = peek.optimizers
    assert type(opt) is torch.optim.Adam
    params = [p for group in opt.param_groups for p in group["params"]]
    assert len(params) == len(list(model.parameters()))
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    # ... so the new layer was trained.
    assert not torch.equal(model.fc.weight, new_fc)


# --------------------------------------------------------------------------- checkpoints


def test_resume_without_a_checkpoint_path_is_refused() -> None:
    """Before: fit(resume=True) without a path trained from scratch, saying so at INFO level."""
    train, val = loaders()
    with pytest.raises(ConfigError, match="resume=True needs checkpoint_path"):
        fit(make_model(), train, val, config=cpu_config(epochs=1), resume=True)


def test_a_batch_of_one_at_a_batchnorm_gets_one_clear_error() -> None:
    """Before: torch's ValueError ended the run with a stack trace."""
    model = nn.Sequential(nn.Conv2d(3, 4, 8), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3))
    data = NoisyDataset(9)
    train = DataLoader(TensorDataset(data.images, data.labels), batch_size=4)
    with pytest.raises(ConfigError, match=r"a training batch of one sample reached a BatchNorm "
                       r"layer, .*drop_last=True"):  # fmt: skip
        fit(model, train, None, config=TrainConfig(epochs=1, device="cpu"))


class _TwoHeads(nn.Module):
    """Two inputs in a dict, two outputs in a tuple (an auxiliary head)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.aux = nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([batch["a"].flatten(1), batch["b"].flatten(1)], 1)
        return self.fc(h), self.aux(h)


def test_tuple_outputs_train_with_nan_accuracy_and_nested_inputs_move() -> None:
    """Before: tuple outputs raised AttributeError ('tuple' has no 'detach'), and inputs in
    a tuple, list or dict stayed where the loader left them."""
    data = [({"a": torch.randn(4, 4), "b": torch.randn(4, 4)}, torch.randint(0, 3, (4,)))] * 3

    def loss(outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs[0], targets) + 0.3 * F.cross_entropy(outputs[1], targets)

    history = fit(_TwoHeads(), data, data, config=TrainConfig(epochs=1, device="cpu"),
                  loss_fn=loss)  # fmt: skip
    record = history.epochs[-1]
    assert math.isnan(record.train_accuracy) and math.isnan(record.val_accuracy)
    assert math.isfinite(record.train_loss)
    assert math.isnan(evaluate(_TwoHeads(), data, loss_fn=loss, device="cpu")["accuracy"])
    x = torch.randn(2, 3, 4, 4)
    Pair = collections.namedtuple("Pair", "left right")
    moved, targets = _split_batch(
        ((x, [x], {"k": x}, Pair(x, 1)), torch.zeros(2)), torch.device("meta"), channels_last=True
    )
    assert targets.device.type == "meta"
    assert {t.device.type for t in (moved[0], moved[1][0], moved[2]["k"], moved[3].left)} == {
        "meta"
    }
    assert isinstance(moved[3], Pair) and moved[3].right == 1
    assert moved[0].is_contiguous(memory_format=torch.channels_last)


def test_checkpoint_is_written_each_epoch_and_loads_weights_only(tmp_path: Path) -> None:
    train, val = loaders()
    path = tmp_path / "run" / "ckpt.pt"
    seen: list[int] = []

    class Peek(Callback):
        def on_epoch_end(self, state: TrainState, record: EpochRecord) -> None:
            seen.append(torch.load(path, weights_only=True)["epoch"])

    model = make_model()
    history = fit(
        model,
        train,
        val,
        config=cpu_config(epochs=2, schedule="cosine"),
        checkpoint_path=path,
        callbacks=[Peek()],
    )
    assert seen == [1, 2]
    data = torch.load(path, weights_only=True)
    assert data["format"] == CHECKPOINT_FORMAT
    assert data["epoch"] == 2 and data["global_step"] == 12
    assert History.from_dict(data["history"]) == history
    assert data["config"] == cpu_config(epochs=2, schedule="cosine").to_dict()
    assert {"optimizer", "scheduler", "rng"} <= set(data)
    for key, value in model.state_dict().items():
        assert torch.equal(data["model"][key], value)
    assert load_checkpoint(path)["epoch"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]  # no temp files left


class Crash(Callback):
    """Kills the run at a given global step, as a power cut would."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_batch_end(self, state: TrainState, batch: BatchInfo) -> None:
        if batch.global_step == self.at_step:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "sgd", "schedule": "step", "step_size": 1, "gamma": 0.7},
        {"optimizer": "adamw", "schedule": "cosine", "lr": 0.01, "weight_decay": 0.01},
    ],
)
def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path: Path, options: dict) -> None:
    config = cpu_config(epochs=3, seed=7, **options)
    train, val = loaders()
    reference = make_model(seed=1)
    ref_history = fit(reference, train, val, config=config)

    path = tmp_path / "ckpt.pt"
    interrupted = make_model(seed=1)
    with pytest.raises(KeyboardInterrupt):  # dies mid-way through the second epoch
        fit(interrupted, train, val, config=config, checkpoint_path=path, callbacks=[Crash(9)])
    assert load_checkpoint(path)["epoch"] == 1

    resumed = make_model(seed=99)  # a fresh process: different initial weights
    history = fit(resumed, train, val, config=config, checkpoint_path=path, resume=True)
    state, ref_state = resumed.state_dict(), reference.state_dict()
    assert state.keys() == ref_state.keys()
    for key in ref_state:
        assert torch.equal(state[key], ref_state[key]), key
    strip = ("epoch_time_s", "val_time_s", "data_wait_s")
    assert [{k: v for k, v in r.__dict__.items() if k not in strip} for r in history.epochs] == [
        {k: v for k, v in r.__dict__.items() if k not in strip} for r in ref_history.epochs
    ]
    # resuming a finished run changes nothing
    again = fit(resumed, train, val, config=config, checkpoint_path=path, resume=True)
    assert len(again.epochs) == 3
    assert torch.equal(resumed.fc.weight, reference.fc.weight)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path: Path) -> None:
    train, _ = loaders()
    path = tmp_path / "none.pt"
    history = fit(
        make_model(), train, None, config=cpu_config(epochs=1), checkpoint_path=path, resume=True
    )
    assert len(history.epochs) == 1 and path.exists()


def test_a_checkpoint_for_another_model_lists_the_mismatches(tmp_path: Path) -> None:
    train, _ = loaders()
    path = tmp_path / "ckpt.pt"
    fit(make_model(classes=3), train, None, config=cpu_config(epochs=1), checkpoint_path=path)
    with pytest.raises(CheckpointError) as info:
        fit(
            make_model(classes=5),
            train,
            None,
            config=cpu_config(epochs=1),
            checkpoint_path=path,
            resume=True,
        )
    message = str(info.value)
    assert str(path) in message
    assert "fc.weight (3, 16) in checkpoint" in message and "(5, 16) in model" in message
    assert "fc.bias (3,)" in message

    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(CheckpointError) as info:
        load_model_state(other, load_checkpoint(path)["model"], source="ckpt")
    message = str(info.value)
    assert "missing keys: 0.weight, 0.bias" in message
    assert "unexpected keys: conv.weight" in message


def test_resuming_with_another_optimizer_is_refused(tmp_path: Path) -> None:
    train, _ = loaders()
    path = tmp_path / "ckpt.pt"
    fit(make_model(), train, None, config=cpu_config(epochs=1), checkpoint_path=path)
    with pytest.raises(CheckpointError, match=r"optimizer: 'sgd' then, 'adam' now"):
        fit(
            make_model(),
            train,
            None,
            config=cpu_config(epochs=2, optimizer="adam"),
            checkpoint_path=path,
            resume=True,
        )


def test_load_model_state_strips_module_prefix() -> None:
    source, target = make_model(seed=1), make_model(seed=2)
    load_model_state(target, {f"module.{k}": v for k, v in source.state_dict().items()})
    assert torch.equal(target.conv.weight, source.conv.weight)


def test_corrupt_or_foreign_checkpoint_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="another format"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.pt"
    torch.save(make_model().state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a netsurgeon training checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    train, _ = loaders()
    with pytest.raises(CheckpointError, match=str(garbage.name)):
        fit(make_model(), train, None, config=cpu_config(), checkpoint_path=garbage, resume=True)


def test_atomic_save_keeps_the_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save({"value": torch.ones(3)}, path)

    def full_disk(obj: object, handle: object) -> None:
        handle.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_save({"value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.pt"]


# --------------------------------------------------------------------------- data wait


def test_data_wait_timer_counts_only_time_blocked_on_the_loader() -> None:
    def slow_batches():
        for i in range(4):
            time.sleep(0.03)
            yield i

    timer = DataWaitTimer(slow_batches())
    start = time.perf_counter()
    items = []
    for item in timer:
        items.append(item)
        time.sleep(0.01)  # the consumer's own work is not waiting
    total = time.perf_counter() - start
    assert items == [0, 1, 2, 3] and timer.batches == 4
    assert 0.12 <= timer.wait_s < total - 0.035


def test_data_wait_timer_counts_starting_the_iterator() -> None:
    # A DataLoader starts its worker processes in iter(), before the first batch.
    class SlowStart:
        def __iter__(self):
            time.sleep(0.05)
            return iter([1, 2])

    timer = DataWaitTimer(SlowStart())
    assert list(timer) == [1, 2] and timer.batches == 2
    assert timer.wait_s >= 0.05


@pytest.mark.parametrize(
    ("first", "then", "named"),
    [
        ({"lr": 0.1}, {"lr": 0.001}, "lr: 0.1 then, 0.001 now"),
        ({"seed": 0}, {"seed": 1}, "seed: 0 then, 1 now"),
        # The cosine schedule is laid out over the run's length, restored with the scheduler.
        ({"schedule": "cosine"}, {"schedule": "cosine", "epochs": 2}, "epochs: 1 then, 2 now"),
    ],
)
def test_resuming_with_other_settings_is_refused_and_names_them(
    tmp_path: Path, first: dict[str, Any], then: dict[str, Any], named: str
) -> None:
    train, _ = loaders()
    path = tmp_path / "ckpt.pt"
    fit(make_model(), train, None, config=cpu_config(epochs=1, **first), checkpoint_path=path)
    with pytest.raises(CheckpointError, match=re.escape(named)):
        fit(
            make_model(),
            train,
            None,
            config=cpu_config(**{"epochs": 1, **then}),
            checkpoint_path=path,
            resume=True,
        )


def test_resuming_may_extend_a_run_without_cosine_and_change_how_it_computes(
    tmp_path: Path,
) -> None:
    train, _ = loaders()
    path = tmp_path / "ckpt.pt"
    fit(make_model(), train, None, config=cpu_config(epochs=1), checkpoint_path=path)
    history = fit(
        make_model(),
        train,
        None,
        config=cpu_config(epochs=2, device="cpu", channels_last=True, progress=True),
        checkpoint_path=path,
        resume=True,
    )
    assert [r.epoch for r in history.epochs] == [0, 1]


def test_run_settings_are_compared_on_resume_except_ones_added_since(tmp_path: Path) -> None:
    train, _ = loaders()
    path = tmp_path / "ckpt.pt"
    fit(make_model(), train, None, config=cpu_config(epochs=1), checkpoint_path=path,
        run_settings={"data": "a", "batch_size": 4})  # fmt: skip

    def resume(settings: dict[str, Any]) -> Any:
        return fit(make_model(), train, None, config=cpu_config(epochs=2), checkpoint_path=path,
                   resume=True, run_settings=settings)  # fmt: skip

    with pytest.raises(CheckpointError, match=re.escape("batch_size: 4 then, 8 now")):
        resume({"data": "a", "batch_size": 8})
    # A setting the checkpoint lacks was added since it was written: not compared.
    history = resume({"data": "a", "batch_size": 4, "teacher_sha256": "0" * 64})
    assert [r.epoch for r in history.epochs] == [0, 1]


def test_a_resume_under_another_number_of_processes_is_refused(tmp_path: Path) -> None:
    """torchrun's process count sets the shards and the steps per epoch: it must not change."""
    train, _ = loaders()
    path = tmp_path / "ckpt.pt"
    fit(make_model(), train, None, config=cpu_config(epochs=1), checkpoint_path=path)
    data = torch.load(path, weights_only=True)
    assert data["run"]["processes"] == 1
    data["run"]["processes"] = 2  # as if written by torchrun --nproc_per_node 2
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=re.escape("processes: 2 then, 1 now")):
        fit(make_model(), train, None, config=cpu_config(epochs=2), checkpoint_path=path,
            resume=True)  # fmt: skip


class _StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, state: TrainState, record: EpochRecord) -> None:
        state.request_stop()


def test_a_stop_requested_by_a_callback_survives_a_resume(tmp_path: Path) -> None:
    train, _ = loaders()
    path = tmp_path / "ckpt.pt"
    model = make_model()
    history = fit(model, train, None, config=cpu_config(epochs=3), checkpoint_path=path,
                  callbacks=[_StopAfterFirstEpoch()])  # fmt: skip
    assert len(history.epochs) == 1
    saved = load_checkpoint(path)
    assert saved["stop_requested"] is True and saved["epoch"] == 1
    # The resumed run ends where the stopped one ended: no epoch is trained again.
    resumed_model = make_model()
    resumed = fit(resumed_model, train, None, config=cpu_config(epochs=3), checkpoint_path=path,
                  resume=True)  # fmt: skip
    assert [r.epoch for r in resumed.epochs] == [0]
    for key, value in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        ("empty", "an empty file (0 bytes)"),
        ("text", "a text file"),
        ("truncated", "a truncated or damaged PyTorch file"),
    ],
)
def test_unreadable_checkpoint_says_what_it_is_and_what_to_do(
    tmp_path: Path, damage: str, kind: str
) -> None:
    """A checkpoint met by a resume that torch cannot read: one line naming the damage and
    the way out, not torch's "EOFError" or "[Errno 22] Invalid argument"."""
    path = tmp_path / "run.ckpt"
    model = make_model()
    train, val = loaders()
    fit(model, train, val, config=cpu_config(epochs=1), checkpoint_path=path)
    content = path.read_bytes()
    path.write_bytes({"empty": b"", "text": b"epoch 1\n", "truncated": content[:300]}[damage])
    with pytest.raises(CheckpointError) as info:
        fit(make_model(), train, val, config=cpu_config(epochs=2), checkpoint_path=path,
            resume=True)  # fmt: skip
    message = str(info.value)
    assert kind in message and str(path) in message and "\n" not in message
    assert "delete it to start the training afresh (or train without resuming: " in message
    assert "resume=False, no --resume)" in message


# --------------------------------------------------------------------------- max_steps cuts


class Unsized:
    """A loader without a length (like a streaming data set) that still reshuffles by epoch."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.sampler = loader.sampler

    def __iter__(self):
        return iter(self.loader)


def ten_step_loaders(kind: str = "shuffle") -> tuple[Any, DataLoader]:
    """10 batches of 8 an epoch: ``shuffle`` draws the order from the global RNG, ``seeded``
    from the seed and the epoch (netsurgeon's sampler), ``unsized`` has no ``len()``."""
    from netsurgeon.vision.data import SeededRandomSampler

    data = NoisyDataset(80, seed=0)
    if kind == "seeded":
        train: Any = DataLoader(data, batch_size=8, sampler=SeededRandomSampler(data, seed=3))
    else:
        train = DataLoader(data, batch_size=8, shuffle=True)
    _, val = loaders()
    return (Unsized(train) if kind == "unsized" else train), val


def cut_config(kind: str = "shuffle", **kwargs: Any) -> TrainConfig:
    """A step schedule (restored with the scheduler); none where the loader has no length."""
    options = {"epochs": 5, "seed": 7, "schedule": "step", "step_size": 2, "gamma": 0.7}
    if kind == "unsized":
        options["schedule"] = "none"
    return cpu_config(**{**options, **kwargs})


def assert_same_weights(model: nn.Module, reference: nn.Module) -> None:
    state, ref_state = model.state_dict(), reference.state_dict()
    assert state.keys() == ref_state.keys()
    for key in ref_state:
        assert torch.equal(state[key], ref_state[key]), key


def assert_same_history(history: History, reference: History) -> None:
    """Equal records; the merged loss and accuracy of a resumed epoch up to float rounding."""
    assert [r.epoch for r in history.epochs] == [r.epoch for r in reference.epochs]
    for got, want in zip(history.epochs, reference.epochs, strict=True):
        assert (got.steps, got.samples, got.lr) == (want.steps, want.samples, want.lr)
        assert (got.val_loss, got.val_accuracy) == (want.val_loss, want.val_accuracy)
        assert got.train_loss == pytest.approx(want.train_loss, rel=1e-12)
        assert got.train_accuracy == pytest.approx(want.train_accuracy, rel=1e-12)


class BatchLog(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_epoch_start(self, state: TrainState, epoch: int) -> None:
        self.events.append(f"start{epoch}")

    def on_batch_end(self, state: TrainState, batch: BatchInfo) -> None:
        self.events.append(f"{batch.epoch}.{batch.batch}")


@pytest.mark.parametrize("kind", ["shuffle", "seeded", "unsized"])
def test_a_resume_after_a_max_steps_cut_continues_inside_the_cut_epoch(
    tmp_path: Path, kind: str
) -> None:
    """Before: the cut epoch counted as finished, so a resume skipped its last 5 batches."""
    train, val = ten_step_loaders(kind)
    reference = make_model(seed=1)
    ref_history = fit(reference, train, val, config=cut_config(kind))

    path = tmp_path / "ckpt.pt"
    cut = fit(make_model(seed=1), train, val, config=cut_config(kind, max_steps=45),
              checkpoint_path=path)  # fmt: skip
    assert [r.steps for r in cut.epochs] == [10, 10, 10, 10, 5]
    saved = load_checkpoint(path)
    assert (saved["epoch"], saved.get("epoch_steps", 0), saved["global_step"]) == (4, 5, 45)

    resumed, log = make_model(seed=99), BatchLog()
    history = fit(resumed, train, val, config=cut_config(kind), checkpoint_path=path, resume=True,
                  callbacks=[log])  # fmt: skip
    assert log.events == ["start4", *[f"4.{b}" for b in range(5, 10)]]
    assert history.total_steps == 50
    assert [r.epoch for r in history.epochs] == [0, 1, 2, 3, 4]
    assert [r.steps for r in history.epochs] == [10] * 5
    assert_same_weights(resumed, reference)
    assert_same_history(history, ref_history)
    saved = load_checkpoint(path)
    assert (saved["epoch"], saved.get("epoch_steps", 0), saved["global_step"]) == (5, 0, 50)


def test_an_epoch_cut_twice_and_resumed_still_ends_with_the_uninterrupted_weights(
    tmp_path: Path,
) -> None:
    train, val = ten_step_loaders()
    reference = make_model(seed=1)
    ref_history = fit(reference, train, val, config=cut_config())

    path = tmp_path / "ckpt.pt"
    for max_steps in (43, 47, None):
        # The first part starts from the reference's weights; the resumed ones load theirs.
        model = make_model(seed=1 if max_steps == 43 else 99)
        history = fit(model, train, val, config=cut_config(max_steps=max_steps),
                      checkpoint_path=path, resume=max_steps != 43)  # fmt: skip
        if max_steps == 47:
            assert [r.steps for r in history.epochs] == [10, 10, 10, 10, 7]
            assert load_checkpoint(path).get("epoch_steps", 0) == 7
    assert history.total_steps == 50
    assert [r.epoch for r in history.epochs] == [0, 1, 2, 3, 4]
    assert_same_weights(model, reference)
    assert_same_history(history, ref_history)


@pytest.mark.parametrize("kind", ["shuffle", "unsized"])
def test_a_cut_at_an_epoch_end_is_a_finished_epoch(tmp_path: Path, kind: str) -> None:
    train, val = ten_step_loaders(kind)
    reference = make_model(seed=1)
    fit(reference, train, val, config=cut_config(kind))

    path = tmp_path / "ckpt.pt"
    history = fit(make_model(seed=1), train, val, config=cut_config(kind, max_steps=40),
                  checkpoint_path=path)  # fmt: skip
    assert [r.steps for r in history.epochs] == [10] * 4
    saved = load_checkpoint(path)
    # Without a length, the loader's end shows only when the resume finds no batch left.
    expected = (3, 10) if kind == "unsized" else (4, 0)
    assert (saved["epoch"], saved.get("epoch_steps", 0)) == expected

    resumed = make_model(seed=99)
    history = fit(resumed, train, val, config=cut_config(kind), checkpoint_path=path, resume=True)
    assert [r.epoch for r in history.epochs] == [0, 1, 2, 3, 4]
    assert [r.steps for r in history.epochs] == [10] * 5
    assert_same_weights(resumed, reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cut_epoch_resumed_on_a_gpu_ends_with_the_uninterrupted_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout draws from the GPU's generator: the resume must restore that state at the cut."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    train, val = ten_step_loaders()
    reference = make_model(seed=1)
    fit(reference, train, val, config=cut_config(device="cuda"))

    path = tmp_path / "ckpt.pt"
    fit(make_model(seed=1), train, val, config=cut_config(device="cuda", max_steps=45),
        checkpoint_path=path)  # fmt: skip
    assert load_checkpoint(path)["rng"]["cuda"], "the checkpoint keeps the GPU's RNG state"
    torch.cuda.manual_seed_all(12345)  # what a fresh process would hold, not the cut's state
    resumed = make_model(seed=99)
    history = fit(resumed, train, val, config=cut_config(device="cuda"), checkpoint_path=path,
                  resume=True)  # fmt: skip
    assert [r.steps for r in history.epochs] == [10] * 5
    assert_same_weights(resumed.cpu(), reference.cpu())


def test_a_checkpoint_without_epoch_steps_resumes_after_its_epoch(tmp_path: Path) -> None:
    """Checkpoints written before cut epochs were kept count every recorded epoch finished."""
    train, val = ten_step_loaders()
    reference = make_model(seed=1)
    fit(reference, train, val, config=cut_config(epochs=3))
    path = tmp_path / "ckpt.pt"
    fit(make_model(seed=1), train, val, config=cut_config(epochs=2), checkpoint_path=path)
    data = torch.load(path, weights_only=True)
    for key in ("epoch_steps", "epoch_rng"):
        data.pop(key, None)
    torch.save(data, path)
    resumed = make_model(seed=99)
    history = fit(resumed, train, val, config=cut_config(epochs=3), checkpoint_path=path,
                  resume=True)  # fmt: skip
    assert [r.steps for r in history.epochs] == [10] * 3
    assert_same_weights(resumed, reference)

    # One the old code wrote after a cut: its epoch counted as finished, and so it stays.
    fit(make_model(seed=1), train, val, config=cut_config(max_steps=25), checkpoint_path=path)
    data = torch.load(path, weights_only=True)
    data["epoch"] = 3  # epochs 0, 1 and the cut 2 (5 of its 10 steps)
    for key in ("epoch_steps", "epoch_rng"):
        data.pop(key, None)
    torch.save(data, path)
    history = fit(make_model(), train, val, config=cut_config(), checkpoint_path=path,
                  resume=True)  # fmt: skip
    assert [(r.epoch, r.steps) for r in history.epochs] == [(0, 10), (1, 10), (2, 5), (3, 10),
                                                             (4, 10)]  # fmt: skip


def test_a_diverged_run_is_warned_about_once() -> None:
    """Before: nan losses went by unremarked (a sweep row then showed chance accuracy)."""
    train, val = ten_step_loaders()
    broken = make_model()
    with torch.no_grad():
        next(broken.parameters()).fill_(float("inf"))  # as an overflowing step leaves it
    with pytest.warns(UserWarning, match=r"^epoch 1: the training loss is nan; training has "
                      r"diverged .* lower the learning rate \(--lr\)") as caught:  # fmt: skip
        history = fit(broken, train, val, config=cpu_config())
    assert len([w for w in caught if "diverged" in str(w.message)]) == 1
    assert all(math.isnan(r.train_loss) for r in history.epochs)


def test_a_resume_may_not_shorten_the_run_below_what_it_trained(tmp_path: Path) -> None:
    """Before: --epochs 1 on a 3-epoch checkpoint ended at once, passing the 3-epoch weights
    off as a 1-epoch run."""
    train, val = ten_step_loaders()
    path = tmp_path / "ckpt.pt"
    fit(make_model(seed=1), train, val, config=cut_config(epochs=3), checkpoint_path=path)
    before = path.read_bytes()
    for changes, message in (
        ({"epochs": 2}, "has trained 3 epochs already, more than --epochs 2; resume with "
                        "--epochs 3 or more"),
        ({"max_steps": 25}, "has trained 30 steps already, more than --max-steps 25"),
    ):  # fmt: skip
        with pytest.raises(CheckpointError, match=message):
            fit(make_model(), train, val, config=cut_config(**{"epochs": 3, **changes}),
                checkpoint_path=path, resume=True)  # fmt: skip
        assert path.read_bytes() == before
    history = fit(make_model(), train, val, config=cut_config(epochs=4), checkpoint_path=path,
                  resume=True)  # fmt: skip
    assert [r.epoch for r in history.epochs] == [0, 1, 2, 3]  # growing stays allowed


def test_data_fingerprint_changes_read_as_words_not_digests() -> None:
    from netsurgeon.training import _describe_changes

    changed = [("lr", 0.1, 0.2), ("run.data_sha256", "a" * 64, "b" * 64),
               ("run.data_train_images", 4, 5), ("run.data_val_images", 2, 2)]  # fmt: skip
    assert _describe_changes(changed) == [
        "lr: 0.1 then, 0.2 now",
        "the data folder's image files changed (training images: 4 then, 5 now; validation "
        "images: 2 then, 2 now)",
    ]
    assert _describe_changes([("info.data_sha256", "a", "b")]) == [
        "the data folder's image files changed (as many images, other names or sizes)"
    ]
    assert _describe_changes([("seed", 0, 1), ("optimizer", "sgd", "adam")]) == [
        "seed: 0 then, 1 now",
        "optimizer: 'sgd' then, 'adam' now",
    ]


def test_a_resume_by_another_netsurgeon_version_warns_while_work_is_left(tmp_path: Path) -> None:
    """What the checkpoint's run finished is kept and the rest is trained by this version:
    where versions train differently the result differs from an uninterrupted run's."""
    from netsurgeon import __version__
    from netsurgeon.provenance import VERSION_KEY

    train, val = loaders()
    path = tmp_path / "ckpt.pt"
    config = cpu_config(epochs=2, schedule="none")
    fit(
        make_model(), train, val, config=cpu_config(epochs=1, schedule="none"), checkpoint_path=path
    )
    one_epoch = torch.load(path, weights_only=True)
    assert one_epoch[VERSION_KEY] == __version__
    cases = [("0.0.1", "written by netsurgeon 0.0.1, with"), (None, "did not record its version")]
    for recorded, said in cases:
        old = {k: v for k, v in one_epoch.items() if k != VERSION_KEY}
        torch.save(old if recorded is None else {**old, VERSION_KEY: recorded}, path)
        with pytest.warns(
            UserWarning, match=f"resuming checkpoint {re.escape(str(path))}, .*{said}"
        ):
            fit(make_model(), train, val, config=config, checkpoint_path=path, resume=True)
        assert torch.load(path, weights_only=True)[VERSION_KEY] == __version__  # rewritten
    # Written by this version, or nothing left to train: no note.
    torch.save({**one_epoch, VERSION_KEY: "0.0.1"}, path)
    fit(make_model(), train, val, config=cpu_config(epochs=1, schedule="none"),
        checkpoint_path=path, resume=True)  # fmt: skip
    torch.save(one_epoch, path)
    fit(make_model(), train, val, config=config, checkpoint_path=path, resume=True)
