"""Checkpoints without pickled code: exact round trips of pruned models, and every bad file."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.pruning import io
from netsurgeon.vision import build_model, cifar_resnet20, register_builder
from netsurgeon.vision import models as registry

# Hand-made pruning: the same edits the engine makes, module objects changed in place.


def _keep_out(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    conv.weight = nn.Parameter(conv.weight.detach()[keep].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[keep].clone())
    conv.out_channels = len(keep)


def _keep_in(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    conv.weight = nn.Parameter(conv.weight.detach()[:, keep].clone())
    conv.in_channels = len(keep)


def _keep_depthwise(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    _keep_out(conv, keep)  # weight (C, 1, k, k): one filter per channel
    conv.in_channels = conv.groups = len(keep)


def _keep_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    bn.weight = nn.Parameter(bn.weight.detach()[keep].clone())
    bn.bias = nn.Parameter(bn.bias.detach()[keep].clone())
    bn.running_mean = bn.running_mean[keep].clone()
    bn.running_var = bn.running_var[keep].clone()
    bn.num_features = len(keep)


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial running statistics, so that a lost buffer would change the outputs."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)


def _outputs(model: nn.Module, size: int = 64) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x.to(next(model.parameters()).dtype))


def _pruned_resnet18() -> nn.Module:
    model = build_model("resnet18", num_classes=10)
    _randomise_bn(model)
    block = model.layer1[0]
    keep = torch.randperm(64, generator=torch.Generator().manual_seed(2))[:40].sort().values
    _keep_out(block.conv1, keep)
    _keep_bn(block.bn1, keep)
    _keep_in(block.conv2, keep)
    return model


def test_round_trip_of_a_pruned_resnet18(tmp_path: Path) -> None:
    model = _pruned_resnet18()
    extra = {"prune": {"amount": 0.4, "levels": [0.1, 0.2]}, "mask": torch.arange(3)}
    path = io.save(model, tmp_path / "sub" / "resnet18.pt", extra=extra)
    assert path == tmp_path / "sub" / "resnet18.pt"
    assert [p.name for p in path.parent.iterdir()] == ["resnet18.pt"]  # no temporary left

    loaded = io.load(path)
    assert not loaded.training
    assert loaded.netsurgeon_arch == {"name": "resnet18", "kwargs": {"num_classes": 10}}
    conv1 = loaded.layer1[0].conv1
    assert (conv1.out_channels, tuple(conv1.weight.shape)) == (40, (40, 64, 3, 3))
    assert loaded.layer1[0].bn1.num_features == 40 and loaded.layer1[0].conv2.in_channels == 40
    assert torch.equal(_outputs(loaded), _outputs(model))

    payload = io.read_checkpoint(path)
    assert payload["extra"]["prune"] == extra["prune"]
    assert torch.equal(payload["extra"]["mask"], extra["mask"])
    assert payload["modules"]["layer1.0.conv1"] == {
        "type": "Conv2d",
        "in_channels": 64,
        "out_channels": 40,
        "groups": 1,
    }
    assert payload["modules"]["fc"] == {"type": "Linear", "in_features": 512, "out_features": 10}


def test_round_trip_of_a_depthwise_conv_whose_groups_change(tmp_path: Path) -> None:
    model = build_model("mobilenet_v2", num_classes=5)
    _randomise_bn(model)
    keep = torch.arange(0, 32, 4)  # the stem's 32 channels down to 8
    stem, first = model.features[0], model.features[1].conv
    _keep_out(stem[0], keep)
    _keep_bn(stem[1], keep)
    _keep_depthwise(first[0][0], keep)
    _keep_bn(first[0][1], keep)
    _keep_in(first[1], keep)
    assert first[0][0].groups == 8

    loaded = io.load(io.save(model, tmp_path / "mobilenet.pt"))
    depthwise = loaded.features[1].conv[0][0]
    assert (depthwise.in_channels, depthwise.out_channels, depthwise.groups) == (8, 8, 8)
    assert torch.equal(_outputs(loaded), _outputs(model))


def test_round_trip_of_a_pruned_cifar_resnet_in_double(tmp_path: Path) -> None:
    model = cifar_resnet20().double()  # the builder alone records the architecture
    _randomise_bn(model)
    block = model.layer2[1]
    keep = torch.tensor([0, 3, 5, 30])
    _keep_out(block.conv1, keep)
    _keep_bn(block.bn1, keep)
    _keep_in(block.conv2, keep)
    loaded = io.load(io.save(model, tmp_path / "cifar.pt"))
    assert loaded.linear.weight.dtype == torch.float64
    assert torch.equal(_outputs(loaded, size=32), _outputs(model, size=32))


def test_a_wrapped_model_saves_the_model_inside(tmp_path: Path) -> None:
    """Before: "cannot tell which architecture this DataParallel is", or, with arch=, a state
    dict whose keys all carried the wrapper's prefix."""
    model = cifar_resnet20()
    _randomise_bn(model)
    # Before wrapping: on a GPU machine DataParallel moves the model to cuda:0; load gives CPU.
    expected = _outputs(model, size=32)
    keys = model.state_dict().keys()
    for wrapped in (
        nn.DataParallel(model),
        torch.compile(model),
        torch.compile(nn.DataParallel(model)),
    ):
        loaded = io.load(io.save(wrapped, tmp_path / "wrapped.pt"))
        assert loaded.state_dict().keys() == keys
        assert torch.equal(_outputs(loaded, size=32), expected)


def test_builder_flags_survive_the_round_trip(tmp_path: Path) -> None:
    model = build_model("googlenet", num_classes=3, transform_input=True, init_weights=False)
    loaded = io.load(io.save(model, tmp_path / "googlenet.pt"))
    assert loaded.transform_input and loaded.aux1 is None
    assert torch.equal(_outputs(loaded, size=32), _outputs(model, size=32))


def test_arch_for_a_model_not_built_by_netsurgeon(tmp_path: Path) -> None:
    model = torchvision.models.resnet18(num_classes=4)
    with pytest.raises(ConfigError, match="arch="):
        io.save(model, tmp_path / "x.pt")
    loaded = io.load(
        io.save(model, tmp_path / "x.pt", arch="resnet18", arch_kwargs={"num_classes": 4})
    )
    assert torch.equal(_outputs(loaded), _outputs(model))


class ChannelScale(nn.Module):
    """A per-channel layer of the user's own, which checkpoints do not know."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1)


class ScaleNet(nn.Module):
    def __init__(self, *, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = ChannelScale(8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv(x)).mean((2, 3)))


def test_another_norm_is_one_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_USER_BUILDERS", {})
    monkeypatch.setattr(io, "_RESIZABLE", dict(io._RESIZABLE))
    register_builder("scalenet", ScaleNet)
    model = build_model("scalenet")
    keep = torch.tensor([0, 1, 4, 5])
    _keep_out(model.conv, keep)
    model.norm.weight = nn.Parameter(model.norm.weight.detach()[keep].clone())
    model.norm.channels = 4
    model.fc.weight = nn.Parameter(model.fc.weight.detach()[:, keep].clone())
    model.fc.in_features = 4
    path = tmp_path / "scale.pt"
    # ChannelScale is not known yet: save refuses to write a file that load() could not restore.
    with pytest.raises(
        ConfigError, match=r"norm.weight.*'norm' \(ChannelScale\).*register_resizable"
    ):
        io.save(model, path)
    assert not path.exists()

    def scale_shapes(module: nn.Module, sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {"weight": (sizes["channels"],)}

    io.register_resizable(ChannelScale, attrs=("channels",), shapes=scale_shapes)
    loaded = io.load(io.save(model, path))
    assert loaded.norm.channels == 4
    assert torch.equal(_outputs(loaded, size=16), _outputs(model, size=16))


def _pruned_and_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builder: Callable[..., nn.Module], x: Any
) -> tuple[nn.Module, nn.Module]:
    """``builder``'s model registered, pruned by half (l1), and loaded back from a save."""
    from netsurgeon.pruning import prune

    name = builder.__name__.lower()
    monkeypatch.setattr(registry, "_USER_BUILDERS", {})
    register_builder(name, builder)
    model = build_model(name).eval()
    prune(model, x, amount=0.5, criterion="l1")
    return model, io.load(io.save(model, tmp_path / f"{name}.pt"))


def test_engine_pruned_group_norms_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GroupNorm is resized by the engine (whole groups) and restored by load()."""
    from tests.pruning.nets import GroupNormNet

    x = torch.randn(2, 3, 8, 8)
    model, loaded = _pruned_and_reloaded(tmp_path, monkeypatch, GroupNormNet, x)
    sizes = [(g.num_groups, g.num_channels) for g in (model.g1, model.g2, model.g3, model.g4)]
    assert sizes == [(2, 8), (4, 8), (3, 12), (2, 8)]
    assert [
        (g.num_groups, g.num_channels) for g in (loaded.g1, loaded.g2, loaded.g3, loaded.g4)
    ] == sizes
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_engine_pruned_pixel_shuffle_nets_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers cut in a PixelShuffle's blocks are restored by load() with their sizes."""
    from tests.pruning.nets import SubPixelNet

    x = torch.randn(2, 3, 8, 8)
    model, loaded = _pruned_and_reloaded(tmp_path, monkeypatch, SubPixelNet, x)
    assert model.up_a.out_channels < 32 and model.up_a.out_channels % 4 == 0
    for name in ("up_a", "bn2", "dw", "c3"):
        assert str(loaded.get_submodule(name)) == str(model.get_submodule(name))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class NormNet(nn.Module):
    """Per-channel layers besides batch norm that the pruner resizes."""

    def __init__(self, *, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.norm = nn.InstanceNorm2d(8, affine=True, track_running_stats=True)
        self.act = nn.PReLU(8)
        self.conv2 = nn.Conv1d(8, 8, 1)
        self.norm1d = nn.InstanceNorm1d(8, affine=True)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv1(x))).flatten(2)
        return self.fc(self.norm1d(self.conv2(x)).mean(2))


def test_engine_pruned_instance_norm_and_prelu_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netsurgeon.pruning import prune

    monkeypatch.setattr(registry, "_USER_BUILDERS", {})
    register_builder("normnet", NormNet)
    model = build_model("normnet")
    model.train()(torch.randn(4, 3, 16, 16))  # non-trivial running statistics
    x = torch.randn(2, 3, 16, 16)
    prune(model.eval(), x, amount=0.5, criterion="l2")
    sizes = (model.norm.num_features, model.act.num_parameters, model.norm1d.num_features)
    assert sizes == (4, 4, 4)
    loaded = io.load(io.save(model, tmp_path / "norm.pt"))
    assert (loaded.norm.num_features, loaded.act.num_parameters) == (4, 4)
    assert tuple(loaded.norm.running_mean.shape) == (4,)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_pruned_transposed_convolution_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.pruning.nets import UNet

    x = torch.randn(2, 3, 16, 16)
    model, loaded = _pruned_and_reloaded(tmp_path, monkeypatch, UNet, x)
    assert (loaded.up.in_channels, loaded.up.out_channels) == (8, 4)
    assert tuple(loaded.up.weight.shape) == (8, 4, 2, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_pruned_recurrent_layer_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LSTM's input and hidden sizes and the GRU cell's input size are recorded and
    restored."""
    from tests.pruning.nets import CRNN

    x = torch.randn(2, 3, 8, 8)
    model, loaded = _pruned_and_reloaded(tmp_path, monkeypatch, CRNN, x)
    assert loaded.rnn.input_size == loaded.cell.input_size == model.rnn.input_size == 12
    assert loaded.rnn.hidden_size == model.rnn.hidden_size == 5
    assert tuple(loaded.rnn.weight_ih_l0_reverse.shape) == (20, 12)
    assert tuple(loaded.rnn.weight_ih_l1.shape) == (20, 10)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class LayerScaleNet(nn.Module):
    """A residual block whose branch ends in a layer scale, and a head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem, self.branch = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.block = nn.Module()
        self.block.layer_scale = nn.Parameter(torch.rand(8, 1, 1))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.block.layer_scale * self.branch(x)
        return self.fc(x.mean((2, 3)))


def test_a_pruned_layer_scale_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A parameter cut with its channels, of a module without size records: its shape is
    recorded and restored."""
    x = torch.randn(2, 3, 8, 8)
    model, loaded = _pruned_and_reloaded(tmp_path, monkeypatch, LayerScaleNet, x)
    assert model.block.layer_scale.shape == loaded.block.layer_scale.shape == (4, 1, 1)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    payload = io.read_checkpoint(tmp_path / "layerscalenet.pt")
    record = payload["modules"]["block.layer_scale"]
    assert record == {"type": "Parameter", "shape": [4, 1, 1]}
    for shape, match in [
        ([4, 1], r"'block.layer_scale' has an invalid recorded shape \[4, 1\]"),
        ([0, 1, 1], "invalid recorded shape"),
        ("4", "invalid recorded shape"),
    ]:
        damaged = {**payload["modules"], "block.layer_scale": {**record, "shape": shape}}
        with pytest.raises(CheckpointError, match=match):
            io.load(_write(tmp_path, {**payload, "modules": damaged}))
    damaged = {**payload["modules"], "block.scale": record}
    with pytest.raises(CheckpointError, match=r"parameter 'block.scale' is not in the rebuilt"):
        io.load(_write(tmp_path, {**payload, "modules": damaged}))


class ShapedScaleNet(nn.Module):
    """A residual block whose branch ends in timm's MetaFormer ``Scale``: a ``(C,)``
    parameter viewed to the shape its module keeps in ``self.shape``."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem, self.branch = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.block = nn.Module()
        self.block.shape = (8, 1, 1)
        self.block.scale = nn.Parameter(torch.rand(8))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.block.scale.view(self.block.shape) * self.branch(x)
        return self.fc(x.mean((2, 3)))


def test_a_pruned_scale_round_trips_with_its_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tuple the scale is viewed to is recorded with its shape and restored; a damaged
    one is refused by name."""
    x = torch.randn(2, 3, 8, 8)
    model, loaded = _pruned_and_reloaded(tmp_path, monkeypatch, ShapedScaleNet, x)
    assert model.block.shape == loaded.block.shape == (4, 1, 1)
    assert loaded.block.scale.shape == (4,)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    payload = io.read_checkpoint(tmp_path / "shapedscalenet.pt")
    record = payload["modules"]["block.scale"]
    assert record == {"type": "Parameter", "shape": [4], "sizes": {"shape": [4, 1, 1]}}
    for sizes, match in [
        ({"shape": [4, 1]}, r"'block.scale' has an invalid recorded size 'shape': \[4, 1\]"),
        ({"shape": [0, 1, 1]}, "invalid recorded size 'shape'"),
        ({"training": [4]}, "invalid recorded size 'training'"),
        ({"_parameters": [4]}, "invalid recorded size '_parameters'"),
        ([4, 1, 1], "invalid recorded sizes"),
    ]:
        damaged = {**payload["modules"], "block.scale": {**record, "sizes": sizes}}
        with pytest.raises(CheckpointError, match=match):
            io.load(_write(tmp_path, {**payload, "modules": damaged}))


def test_the_sizes_a_module_splits_at_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sizes kept by modules that are no layers (a list, two ints, one int) are recorded
    where pruning changed them and restored with their types; damaged ones are refused by
    name. Without them the split would fail, or, where the sizes still add up, hand the
    layers the wrong channels."""
    from tests.pruning.nets import SplitSizesNet

    x = torch.randn(2, 3, 8, 8)
    model, loaded = _pruned_and_reloaded(tmp_path, monkeypatch, SplitSizesNet, x)
    assert loaded.mix.splits == model.mix.splits and type(loaded.mix.splits) is list
    assert (loaded.partial.dim_conv3, loaded.partial.dim_untouched, loaded.c) == (
        model.partial.dim_conv3, model.partial.dim_untouched, model.c,
    )  # fmt: skip
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    payload = io.read_checkpoint(tmp_path / "splitsizesnet.pt")
    records = {k: v for k, v in payload["modules"].items() if v["type"] == "Sizes"}
    assert records == {
        "": {"type": "Sizes", "values": {"c": model.c}},
        "mix": {"type": "Sizes", "values": {"splits": model.mix.splits}},
        "partial": {"type": "Sizes", "values": {
            "dim_conv3": model.partial.dim_conv3, "dim_untouched": model.partial.dim_untouched,
        }},
    }  # fmt: skip
    for name, values, match in [
        ("mix", {"splits": [4]}, r"'mix' has an invalid recorded size 'splits': \[4\]"),
        ("mix", {"splits": 6}, "invalid recorded size 'splits'"),
        ("partial", {"dim_conv3": [2]}, "invalid recorded size 'dim_conv3'"),
        ("partial", {"dim_conv3": True}, "invalid recorded size 'dim_conv3'"),
        ("partial", {"conv": 2}, "invalid recorded size 'conv'"),
        ("partial", {"_modules": 2}, "invalid recorded size '_modules'"),
        ("partial", [2, 4], "invalid recorded sizes"),
        ("nothing", {"c": 2}, "'nothing' is not in the rebuilt"),
    ]:
        damaged = {**payload["modules"], name: {"type": "Sizes", "values": values}}
        with pytest.raises(CheckpointError, match=match):
            io.load(_write(tmp_path, {**payload, "modules": damaged}))


class NoShiftGroupNormNet(nn.Module):
    """A GroupNorm subclass without a shift, as timm's ``GroupNorm1NoBias``."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(4, 8)
        self.norm.bias = None
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def test_a_pruned_group_norm_without_a_shift_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: save() failed with "'NoneType' object has no attribute 'shape'"."""
    x = torch.randn(2, 3, 8, 8)
    model, loaded = _pruned_and_reloaded(tmp_path, monkeypatch, NoShiftGroupNormNet, x)
    assert (loaded.norm.num_groups, loaded.norm.num_channels) == (2, 4)
    assert loaded.norm.bias is None and loaded.norm.weight.shape == (4,)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_pruned_layer_norms_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netsurgeon.pruning import prune
    from tests.pruning.nets import ConvNeXtNet

    monkeypatch.setattr(registry, "_USER_BUILDERS", {})
    register_builder("convnextnet", ConvNeXtNet)
    model = build_model("convnextnet").eval()
    x = torch.randn(2, 3, 8, 8)
    prune(model, x, amount=0.5, criterion="l1", prune_layer_norms=True)
    path = io.save(model, tmp_path / "convnext.pt")
    loaded = io.load(path)
    assert loaded.norm.normalized_shape == loaded.stem_norm.normalized_shape == (4,)
    assert loaded.gamma.shape == (4,)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    payload = io.read_checkpoint(path)
    assert payload["modules"]["norm"] == {"type": "LayerNorm", "normalized_shape": (4,)}
    for bad in ([0], [], "4"):
        damaged = {**payload["modules"], "norm": {"type": "LayerNorm", "normalized_shape": bad}}
        with pytest.raises(CheckpointError, match="'norm' has invalid sizes"):
            io.load(_write(tmp_path, {**payload, "modules": damaged}))


class WidthsFromTensors(nn.Module):
    """Computes its sizes with tensor values, which the meta device does not have."""

    def __init__(self, *, num_classes: int = 3) -> None:
        super().__init__()
        width = int(torch.tensor([2.0, 3.0]).prod().item())
        self.conv = nn.Conv2d(3, width, 3)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_save_builds_for_real_what_cannot_be_built_on_the_meta_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_USER_BUILDERS", {})
    register_builder("widths", WidthsFromTensors)
    model = build_model("widths")
    _keep_out(model.conv, torch.tensor([0, 2, 5]))
    model.fc.weight = nn.Parameter(model.fc.weight.detach()[:, [0, 2, 5]].clone())
    model.fc.in_features = 3
    loaded = io.load(io.save(model, tmp_path / "w.pt"))
    assert torch.equal(_outputs(loaded, size=8), _outputs(model, size=8))
    with pytest.raises(ConfigError, match=r"'widths'.*1 tensors not in the rebuilt \(extra\)"):
        model.register_buffer("extra", torch.zeros(1))
        io.save(model, tmp_path / "w.pt")


# ---- save: bad input ------------------------------------------------------------------------


def test_save_refuses_a_model_of_another_architecture(tmp_path: Path) -> None:
    model = build_model("cifar_resnet20")
    with pytest.raises(
        ConfigError,
        match=r"does not fit architecture 'resnet18'.*'layer1\.2\.conv1' is not in the rebuilt",
    ):
        io.save(model, tmp_path / "x.pt", arch="resnet18")
    with pytest.raises(ConfigError, match=r"'cifar_resnet32'.*tensors missing from the model"):
        io.save(model, tmp_path / "x.pt", arch="cifar_resnet32")
    assert not list(tmp_path.iterdir())


class _Tensor(torch.Tensor):
    """A tensor subclass: torch.save pickles its class."""


class _Rate(float):
    """A float subclass, as numpy.float64 is: torch.save pickles its class."""


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"extra": {"lr": _Rate(0.1)}},
            r"extra\['lr'\] is a .*_Rate: 0\.1; convert it with float\(x\)",
        ),
        (
            {"extra": {"opt": [{"lr": _Rate(0.1)}]}},
            r"extra\['opt'\]\[0\]\['lr'\] is a .*_Rate",
        ),
        ({"arch_kwargs": {"w": _Rate(2.0)}}, r"arch_kwargs\['w'\]"),
        (
            {"extra": {"mask": torch.zeros(2).as_subclass(_Tensor)}},
            r"extra\['mask'\] is a .*_Tensor",
        ),
    ],
)
def test_save_refuses_subclasses_of_plain_types(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        io.save(build_model("cifar_resnet20"), tmp_path / "x.pt", **kwargs)
    assert not list(tmp_path.iterdir())


def test_save_refuses_numpy_scalars_with_a_conversion(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    model = build_model("cifar_resnet20")
    with pytest.raises(ConfigError, match=r"extra\['lr'\] is a numpy.float64.*float\(x\)"):
        io.save(model, tmp_path / "x.pt", extra={"lr": np.float64(0.1)})
    with pytest.raises(ConfigError, match=r"arch_kwargs\['num_classes'\] is a numpy.int64.*item"):
        io.save(model, tmp_path / "x.pt", arch_kwargs={"num_classes": np.int64(10)})
    assert not list(tmp_path.iterdir())
    # Exactly-plain values, an OrderedDict and a Parameter load back as they were saved.
    extra = {"lr": 0.1, "state": OrderedDict(a=(1, None)), "p": nn.Parameter(torch.ones(2))}
    payload = io.read_checkpoint(io.save(model, tmp_path / "x.pt", extra=extra))
    assert payload["extra"]["state"] == OrderedDict(a=(1, None))


def test_save_to_a_folder_or_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    model = build_model("cifar_resnet20")
    with pytest.raises(ConfigError, match=r"is a folder; give a file name"):
        io.save(model, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"'.*file' is a file, not a folder"):
        io.save(model, tmp_path / "file" / "x.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_save_rejects_attributes_that_contradict_the_tensors(tmp_path: Path) -> None:
    model = build_model("cifar_resnet20")
    conv = model.layer1[0].conv1
    conv.weight = nn.Parameter(conv.weight.detach()[:8].clone())  # out_channels left at 16
    with pytest.raises(ConfigError, match=r"'layer1.0.conv1'.*update those attributes"):
        io.save(model, tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "no_such_net"}, "unknown architecture 'no_such_net'"),
        ({"arch_kwargs": ["num_classes", 4]}, "arch_kwargs must be a dict"),
        ({"arch_kwargs": {"num_classes": 4}}, "num_classes=4 but the model's classifier has 10"),
        ({"arch_kwargs": {"act": nn.ReLU}}, "arch_kwargs may hold only"),
        ({"extra": {"callback": print}}, "extra may hold only"),
        ({"extra": {1: "a"}}, "string keys"),
    ],
)
def test_save_rejects_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        io.save(build_model("cifar_resnet20"), tmp_path / "x.pt", **kwargs)
    assert not list(tmp_path.iterdir())


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("cifar_resnet20")
    path = io.save(model, tmp_path / "model.pt")
    before = path.read_bytes()

    def disk_full(obj: object, handle: object) -> None:
        handle.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


# ---- load: bad files ------------------------------------------------------------------------


def _payload(tmp_path: Path) -> dict:
    return io.read_checkpoint(io.save(build_model("cifar_resnet20"), tmp_path / "good.pt"))


def _write(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    return path


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        io.load(tmp_path / "absent.pt")


def test_load_truncated_file(tmp_path: Path) -> None:
    path = io.save(build_model("cifar_resnet20"), tmp_path / "model.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.pt: not a readable PyTorch file"):
        io.load(path)


def test_load_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"notes\.txt: not a readable PyTorch file"):
        io.load(path)


PICKLED_OBJECTS = (
    r"thing\.pkl: holds pickled objects \(classes or functions\) besides tensors and plain "
    r"types, which netsurgeon refuses to load \(no pickled code is ever executed\)$"
)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        # A bare pickle of plain types is not in torch's file format at all.
        (
            {1, 2, 3},
            r"thing\.pkl: not a readable PyTorch file: a pickle file not written by "
            r"torch\.save \(\d+ bytes\)",
        ),
        (nn.Linear(2, 2), PICKLED_OBJECTS),
        (pickle.dumps, PICKLED_OBJECTS),
    ],
)
def test_load_random_pickles(tmp_path: Path, obj: object, message: str) -> None:
    path = tmp_path / "thing.pkl"
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)
    with pytest.raises(CheckpointError, match=message):
        io.load(path)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"conv.weight": torch.zeros(1)}, "plain state dict"),
        ({"state_dict": {"conv.weight": torch.zeros(1)}, "best_prec1": 1.0}, "legacy"),
        ([torch.zeros(1)], "holds a list"),
    ],
)
def test_load_foreign_torch_files(tmp_path: Path, obj: object, match: str) -> None:
    with pytest.raises(CheckpointError, match=f"not a netsurgeon checkpoint.*{match}"):
        io.load(_write(tmp_path, obj))


def test_load_a_training_checkpoint_says_to_give_the_saved_model(tmp_path: Path) -> None:
    """Before: "not a netsurgeon checkpoint (it holds a dict without the ... marker)"."""
    from netsurgeon.training import CHECKPOINT_FORMAT

    path = _write(tmp_path, {"format": CHECKPOINT_FORMAT, "model": {}, "epoch": 1})
    with pytest.raises(CheckpointError, match=(
        f"^{path}: a training checkpoint, which resumes a fine-tuning run \\(--resume\\), not "
        "a model; give the model file the run saved \\(its --out\\)$"
    )):  # fmt: skip
        io.load(path)


def test_load_other_format_version(tmp_path: Path) -> None:
    payload = {**_payload(tmp_path), "version": 99}
    with pytest.raises(CheckpointError, match=r"format version 99.*reads version 1"):
        io.load(_write(tmp_path, payload))


def test_load_unknown_architecture(tmp_path: Path) -> None:
    payload = _payload(tmp_path)
    payload["arch"] = {"name": "my_private_net", "kwargs": {}}
    with pytest.raises(CheckpointError, match=r"'my_private_net'.*register_builder"):
        io.load(_write(tmp_path, payload))


def test_load_damaged_payloads(tmp_path: Path) -> None:
    payload = _payload(tmp_path)
    with pytest.raises(CheckpointError, match="'state_dict' is not a dict of tensors"):
        io.load(_write(tmp_path, {**payload, "state_dict": {"a": 1}}))
    with pytest.raises(CheckpointError, match="'arch' is not"):
        io.load(_write(tmp_path, {**payload, "arch": "cifar_resnet20"}))
    modules = {**payload["modules"], "layer1.0.bn1": {"type": "Conv2d", "in_channels": 1}}
    with pytest.raises(CheckpointError, match=r"'layer1.0.bn1' was saved as Conv2d"):
        io.load(_write(tmp_path, {**payload, "modules": modules}))
    modules = {**payload["modules"], "layer9.conv": payload["modules"]["conv1"]}
    with pytest.raises(CheckpointError, match=r"'layer9.conv' is not in the rebuilt"):
        io.load(_write(tmp_path, {**payload, "modules": modules}))
    modules = {**payload["modules"], "conv1": {**payload["modules"]["conv1"], "groups": 5}}
    with pytest.raises(CheckpointError, match=r"'conv1' has invalid sizes.*divisible"):
        io.load(_write(tmp_path, {**payload, "modules": modules}))


def test_load_state_that_does_not_fit(tmp_path: Path) -> None:
    payload = _payload(tmp_path)
    state = dict(payload["state_dict"])
    state["layer1.0.conv1.weight"] = torch.zeros(4, 16, 3, 3)
    with pytest.raises(CheckpointError, match=r"layer1.0.conv1.weight: checkpoint \(4, 16, 3, 3\)"):
        io.load(_write(tmp_path, {**payload, "state_dict": state}))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "cifar_resnet20"])
def test_engine_pruned_model_round_trips(tmp_path, name: str) -> None:
    from netsurgeon.pruning import prune

    model = build_model(name, weights="none", num_classes=10).eval()
    size = 32 if name.startswith("cifar") else 64
    x = torch.randn(2, 3, size, size)
    prune(model, x, amount=0.5, criterion="l2")
    path = io.save(model, tmp_path / "pruned.pt")
    loaded = io.load(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
