"""reconstruct: least-squares refits of the layers that lost input channels."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from netsurgeon.errors import ConfigError
from netsurgeon.pruning import Pruner, prune
from netsurgeon.pruning.surgery import prune_conv, prune_linear
from netsurgeon.reconstruction import reconstruct

torch.set_num_threads(1)


def _loader(n: int = 16, size: int = 6) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    return DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.long)), batch_size=4)


def _with_duplicate_filter(head: str) -> nn.Sequential:
    """conv(3->6) -> ReLU -> head, where filter 5 of the conv is a copy of filter 2."""
    torch.manual_seed(0)
    last: nn.Module = nn.Conv2d(6, 4, 3, padding=1) if head == "conv" else nn.Linear(6 * 36, 5)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Identity(), last)
    if head == "linear":
        model[2] = nn.Flatten()
    with torch.no_grad():
        model[0].weight[5] = model[0].weight[2]
        model[0].bias[5] = model[0].bias[2]
    return model.eval()


@pytest.mark.parametrize("head", ["conv", "linear"])
def test_a_removed_duplicate_channel_is_folded_back_exactly(head: str) -> None:
    reference = _with_duplicate_filter(head)
    model = copy.deepcopy(reference)
    keep = torch.tensor([0, 1, 2, 3, 4])
    prune_conv(model[0], out_keep=keep)
    if head == "conv":
        prune_conv(model[3], in_keep=keep)
    else:  # the flattened features of channels 0-4 (36 positions each)
        prune_linear(model[3], in_keep=torch.arange(5 * 36))
    x = next(iter(_loader()))[0]
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() > 1e-2  # pruning changed the output
    conv_before = model[0].weight.clone()

    fits = reconstruct(model, reference, _loader(), batches=4, ridge=0.0)

    # Channel 5 was a copy of channel 2: its weights move onto channel 2, the output is exact.
    assert [f.name for f in fits] == ["3"]
    assert fits[0].error_before > 1e-3 and fits[0].error_after < 1e-9
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)
    assert torch.equal(model[0].weight, conv_before)  # its inputs were intact: untouched
    rows = 16 * 36 if head == "conv" else 16
    assert fits[0].rows == rows


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's, kernel 4
@pytest.mark.parametrize(
    ("padding", "kernel", "dilation"), [("same", 3, 2), ("same", 4, 1), ("valid", 3, 1)]
)
def test_string_padding_is_unfolded_as_the_convolution_pads(
    padding: str, kernel: int, dilation: int
) -> None:
    """Before: ``padding="same"``/``"valid"`` reached ``F.unfold`` and raised a TypeError."""
    reference = _with_duplicate_filter("conv")
    torch.manual_seed(2)
    reference[3] = nn.Conv2d(6, 4, kernel, padding=padding, dilation=dilation)
    model = copy.deepcopy(reference)
    keep = torch.tensor([0, 1, 2, 3, 4])
    prune_conv(model[0], out_keep=keep)
    prune_conv(model[3], in_keep=keep)

    fits = reconstruct(model, reference, _loader(), batches=4, ridge=0.0)

    assert [f.name for f in fits] == ["3"] and fits[0].error_after < 1e-9
    x = next(iter(_loader()))[0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)
    assert fits[0].rows == 16 * reference(x[:1]).shape[2:].numel()


def _cnn() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).eval()  # fmt: skip


def test_refits_after_netsurgeon_prune_lower_every_error() -> None:
    reference = _cnn()
    model = copy.deepcopy(reference)
    x = next(iter(_loader()))[0]
    result = prune(model, x[:1], amount=0.5, criterion="l1", scope="layer")
    # Layer 3 lost inputs and outputs: its targets are the reference outputs it kept.
    assert set(result.kept) == {"0", "3", "6"}
    torch.testing.assert_close(model[0].weight, reference[0].weight[result.kept["0"]])
    with torch.no_grad():
        drift_before = (model(x) - reference(x)).square().mean()
    was = {name: m.training for name, m in model.named_modules()}

    fits = reconstruct(model, reference, _loader(), kept=result.kept, batches=4)

    assert [f.name for f in fits] == ["3", "6", "9"]  # execution order
    assert all(f.error_after <= f.error_before for f in fits)
    assert any(f.error_after < 0.9 * f.error_before for f in fits)
    with torch.no_grad():
        assert (model(x) - reference(x)).square().mean() < drift_before
    assert {name: m.training for name, m in model.named_modules()} == was


def test_batches_with_an_index_refit_as_pairs_do() -> None:
    """Before: (inputs, targets, index) batches were passed whole to the model (TypeError)."""
    fits = {}
    for name in ("pairs", "with index"):
        model, reference, kept = _pruned_pair()
        batches = [
            (x, y) if name == "pairs" else (x, y, torch.arange(len(x))) for x, y in _loader()
        ]
        fits[name] = reconstruct(model, reference, batches, kept=kept, batches=4)
    assert fits["with index"] == fits["pairs"]


def _pruned_pair() -> tuple[nn.Module, nn.Module, dict[str, torch.Tensor]]:
    reference = _cnn()
    model = copy.deepcopy(reference)
    result = prune(model, torch.zeros(1, 3, 6, 6), amount=0.5, criterion="l1", scope="layer")
    return model, reference, result.kept


def test_layers_wider_than_max_features_are_left_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, reference, kept = _pruned_pair()
    wide = model[3].weight.clone()  # 4 inputs x 9 = 36 features; layer 6 has 36 too, 9 has 3
    with caplog.at_level("WARNING", logger="netsurgeon.reconstruction"):
        fits = reconstruct(model, reference, _loader(), kept=kept, max_features=35)
    assert [f.name for f in fits] == ["9"]
    assert torch.equal(model[3].weight, wide)
    assert "left 3 as it is: its 36 input features exceed max_features=35" in caplog.text


def test_a_layer_that_lost_outputs_needs_kept() -> None:
    model, reference, _kept = _pruned_pair()
    message = r"layer '3' also lost output channels.*kept=result\.kept"
    with pytest.raises(ConfigError, match=message):
        reconstruct(model, reference, _loader())


def test_kept_composes_over_iterative_slices() -> None:
    reference = _cnn()
    model = copy.deepcopy(reference)
    pruner = Pruner(model, torch.zeros(1, 3, 6, 6), amount=0.6, steps=2, criterion="l1")
    result = pruner.run()
    assert len(pruner.history) == 2
    # The first conv's inputs are intact, so its kept rows are the reference's, by index.
    torch.testing.assert_close(model[0].weight, reference[0].weight[result.kept["0"]])
    assert result.kept["0"].numel() == model[0].out_channels < 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batches": 0}, "batches=0"),
        ({"rows_per_batch": True}, "rows_per_batch=True"),
        ({"ridge": -1.0}, r"ridge=-1\.0"),
        ({"ridge": float("nan")}, "ridge=nan"),
        ({"ridge": float("inf")}, "ridge=inf is not allowed; use a finite number"),
        ({"max_features": 0}, "max_features=0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    model = _cnn()
    with pytest.raises(ConfigError, match=message):
        reconstruct(model, copy.deepcopy(model), _loader(), **kwargs)  # type: ignore[arg-type]


def test_a_reference_that_is_not_the_unpruned_model_is_refused() -> None:
    model = _cnn()
    other = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    with pytest.raises(ConfigError, match="reference has no Conv2d named '3'"):
        reconstruct(model, other, _loader())
    smaller = copy.deepcopy(model)
    prune(smaller, torch.zeros(1, 3, 6, 6), amount=0.5, criterion="l1", scope="layer")
    with pytest.raises(ConfigError, match="larger than the reference"):
        reconstruct(model, smaller, _loader())


def test_nothing_to_refit_and_an_empty_loader() -> None:
    model = _cnn()
    before = copy.deepcopy(model.state_dict())
    assert reconstruct(model, copy.deepcopy(model), _loader()) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    pruned = copy.deepcopy(model)
    result = prune(pruned, torch.zeros(1, 3, 6, 6), amount=0.5, criterion="l1", scope="layer")
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 6, 6)), batch_size=4)
    with pytest.raises(ConfigError, match="yielded no batches"):
        reconstruct(pruned, model, empty, kept=result.kept)
    # kept as plain lists works like tensors; out-of-range indices and the model itself as its
    # own reference are refused with one message each.
    as_lists = {k: v.tolist() for k, v in result.kept.items()}
    twin = copy.deepcopy(pruned)
    assert [f.rows for f in reconstruct(twin, model, _loader(), kept=as_lists)] == [
        f.rows for f in reconstruct(copy.deepcopy(pruned), model, _loader(), kept=result.kept)
    ]
    shifted = {k: v + 100 for k, v in result.kept.items()}
    with pytest.raises(
        ConfigError,
        match=r"kept\['3'\] holds indices from 100 to 107, outside the reference layer's 8 ",
    ):
        reconstruct(copy.deepcopy(pruned), model, _loader(), kept=shifted)
    with pytest.raises(ConfigError, match="reference is the model itself"):
        reconstruct(pruned, pruned, _loader(), kept=result.kept)
    # A generator would be exhausted after the first layer, and the rest "fit" on no rows.
    with pytest.raises(ConfigError, match="loader is a one-pass generator"):
        reconstruct(pruned, model, (b for b in _loader()), kept=result.kept)


def _shard(rank: int) -> DataLoader:
    x = _loader().dataset.tensors[0][8 * rank : 8 * rank + 8]
    return DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=4)


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        model, reference, kept = _pruned_pair()
        reconstruct(model, reference, _shard(rank), kept=kept, batches=2)
        torch.save(model.state_dict(), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_processes_sum_their_statistics_and_get_the_same_weights(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    model, reference, kept = _pruned_pair()
    reconstruct(model, reference, _loader(), kept=kept, batches=4)  # both shards in one process
    for key, value in model.state_dict().items():
        assert torch.equal(states[0][key], states[1][key]), key
        torch.testing.assert_close(states[0][key], value, atol=1e-5, rtol=1e-5, msg=key)


def test_a_float32_loader_refits_a_float64_model() -> None:
    """Before: a raw dtype mismatch from the first convolution the loader's batch reached."""
    model, reference, kept = _pruned_pair()
    model, reference = model.double(), reference.double()
    fits = reconstruct(model, reference, _loader(), kept=kept, batches=2)
    assert fits and all(f.error_after <= f.error_before for f in fits)
    assert all(p.dtype == torch.float64 for p in model.parameters())
