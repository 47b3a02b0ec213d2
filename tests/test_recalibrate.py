"""recalibrate_bn: running statistics become the data's, weights and mode stay."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from netsurgeon.errors import ConfigError
from netsurgeon.recalibrate import recalibrate_bn

torch.set_num_threads(1)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 1),
        nn.BatchNorm2d(2),
    )
    for m in model:
        if isinstance(m, nn.BatchNorm2d):  # stale statistics, as after pruning
            m.running_mean.fill_(5.0)
            m.running_var.fill_(9.0)
            m.momentum = 0.3
    return model.eval()


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, 6, 6, generator=g) * 2 + 1
    return DataLoader(TensorDataset(x, torch.zeros(12, dtype=torch.long)), batch_size=4)


def test_running_stats_become_the_data_statistics() -> None:
    model = _model()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    loader = _loader()
    assert recalibrate_bn(model, loader, batches=None) == 3

    with torch.no_grad():
        feats = [model[0](x) for x, _ in loader]  # what the first BatchNorm sees, per batch
    all_feats = torch.cat(feats)
    # Equal batches: the cumulative average of batch means is the mean over all the data.
    torch.testing.assert_close(model[1].running_mean, all_feats.mean((0, 2, 3)))
    # ... and of the unbiased batch variances, their average.
    variances = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_var, variances)
    assert int(model[1].num_batches_tracked) == 3
    # Weights untouched, mode and momentum as they were.
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    assert not model.training
    assert all(m.momentum == 0.3 for m in model if isinstance(m, nn.BatchNorm2d))


def test_batches_of_every_usual_shape_recalibrate_alike() -> None:
    """Before: an unlabelled TensorDataset's [x] and (x, y, index) batches reached the model
    as lists (TypeError); a dict fell through to the model too."""
    x = torch.randn(12, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    shapes = {
        "pairs": [(x[i : i + 4], torch.zeros(4)) for i in range(0, 12, 4)],
        "inputs only": DataLoader(TensorDataset(x), batch_size=4),
        "with index": [(x[i : i + 4], torch.zeros(4), torch.arange(4)) for i in range(0, 12, 4)],
        "tensors": [x[i : i + 4] for i in range(0, 12, 4)],
    }
    stats = {}
    for name, batches in shapes.items():
        model = _model()
        assert recalibrate_bn(model, batches, batches=None) == 3
        stats[name] = model[1].running_mean
    for name, mean in stats.items():
        torch.testing.assert_close(mean, stats["pairs"], msg=name)
    with pytest.raises(ConfigError, match="got a dict; wrap the loader"):
        recalibrate_bn(_model(), [{"image": x}])


def test_only_the_first_batches_are_used() -> None:
    model = _model()
    loader = _loader()
    assert recalibrate_bn(model, loader, batches=1) == 1
    x, _ = next(iter(loader))
    with torch.no_grad():
        feats = model[0](x)
    torch.testing.assert_close(model[1].running_mean, feats.mean((0, 2, 3)))
    torch.testing.assert_close(model[1].running_var, feats.var((0, 2, 3), unbiased=True))


def test_no_batchnorm_and_bad_arguments() -> None:
    assert recalibrate_bn(nn.Linear(2, 2), _loader(), batches=2) == 0
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match=f"batches={bad!r}"):
            recalibrate_bn(_model(), _loader(), batches=bad)  # type: ignore[arg-type]
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 6, 6), torch.zeros(0)), batch_size=4)
    model = _model()
    with pytest.raises(ConfigError, match="no batches"):
        recalibrate_bn(model, empty)
    assert model[1].momentum == 0.3 and not model.training


def _stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "batches" in k}


@pytest.mark.parametrize(
    "loader",
    [
        DataLoader(TensorDataset(torch.zeros(0, 3, 6, 6), torch.zeros(0)), batch_size=4),
        [(torch.randn(4, 5, 6, 6), torch.zeros(4))],  # 5 channels: the first conv fails
    ],
    ids=["empty", "bad batch"],
)
def test_a_failed_pass_puts_the_statistics_back(loader: object) -> None:
    model = _model()
    before = _stats(model)
    with pytest.raises((ConfigError, RuntimeError)):
        recalibrate_bn(model, loader)  # type: ignore[arg-type]
    after = _stats(model)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert model[1].momentum == 0.3


def test_every_module_keeps_its_own_mode() -> None:
    model = _model().train()
    model[1].eval()  # a frozen batch norm inside a network in training mode
    recalibrate_bn(model, _loader())
    assert [m.training for m in model] == [True, False, True, True, True]


def test_a_float32_loader_recalibrates_a_bfloat16_model() -> None:
    """Before: a raw "Input type (float) and bias type (c10::BFloat16) should be the same"."""
    model = _model().to(torch.bfloat16)
    reference = _model()
    assert recalibrate_bn(model, _loader()) == recalibrate_bn(reference, _loader()) == 3
    torch.testing.assert_close(
        model[1].running_mean.float(), reference[1].running_mean, atol=0.05, rtol=0.02
    )
    assert model[1].running_mean.dtype == torch.bfloat16
