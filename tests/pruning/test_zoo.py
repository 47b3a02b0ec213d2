"""Real torchvision architectures: prune half the filters, and the model still runs."""

from __future__ import annotations

import copy

import pytest
import torch

from netsurgeon.pruning import prune

torchvision = pytest.importorskip("torchvision", reason="the vision extra is not installed")

MUST_HALVE = [
    "alexnet",
    pytest.param("vgg16", marks=pytest.mark.slow),
    pytest.param("vgg16_bn", marks=pytest.mark.slow),
    "resnet18",
    pytest.param("resnet50", marks=pytest.mark.slow),
    pytest.param("resnext50_32x4d", marks=pytest.mark.slow),
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    pytest.param("densenet121", marks=pytest.mark.slow),
    "squeezenet1_1",
    pytest.param("googlenet", marks=pytest.mark.slow),
    "regnet_y_400mf",
]


def _build(name: str) -> torch.nn.Module:
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    return torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)


def _check_trains(model: torch.nn.Module) -> None:
    """The pruned model runs forward and backward in training mode."""
    model.train()
    out = model(torch.randn(2, 3, 96, 96))
    outputs = list(out) if isinstance(out, tuple) else [out]  # googlenet adds auxiliary heads
    assert all(o.shape == (2, 10) for o in outputs)
    sum(o.sum() for o in outputs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", MUST_HALVE)
def test_half_the_filters_go_and_macs_fall_by_40_percent(name: str) -> None:
    model = _build(name).eval()
    x = torch.randn(1, 3, 224, 224)
    result = prune(model, x, amount=0.5, criterion="l1")
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 10)
    assert result.after.macs <= 0.6 * result.before.macs, result.macs_ratio
    assert result.after.params < result.before.params
    _check_trains(model)


@pytest.mark.parametrize(
    "name", ["shufflenet_v2_x1_0", pytest.param("convnext_tiny", marks=pytest.mark.slow)]
)
def test_partly_prunable_models_prune_what_is_safe(name: str) -> None:
    model = _build(name).eval()
    x = torch.randn(1, 3, 224, 224)
    result = prune(model, x, amount=0.5, criterion="l1")
    with torch.no_grad():
        assert model(x).shape == (1, 10)
    assert result.after.macs < 0.9 * result.before.macs
    assert result.skipped  # the shuffles / layer norms it had to keep are reported
    _check_trains(model)


def test_googlenet_auxiliary_heads_stay_valid() -> None:
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False,
                                         num_classes=10)  # fmt: skip
    model.eval()  # pruned in eval mode, where the auxiliary heads do not run
    prune(model, torch.randn(1, 3, 224, 224), amount=0.5)
    model.train()
    out = model(torch.randn(2, 3, 224, 224))
    assert out.logits.shape == out.aux_logits1.shape == out.aux_logits2.shape == (2, 10)
    assert model.aux1.conv.conv.in_channels == model.inception4a.branch1.conv.out_channels + (
        model.inception4a.branch2[1].conv.out_channels
        + model.inception4a.branch3[1].conv.out_channels
        + model.inception4a.branch4[1].conv.out_channels
    )


def _inner_convs(model: torch.nn.Module) -> list[str]:
    return [f"{stage}.{i}.conv1" for stage in ("layer1", "layer2", "layer3")
            for i in range(len(getattr(model, stage)))]  # fmt: skip


def test_cifar_resnet_with_zero_padding_shortcuts_stays_valid() -> None:
    from netsurgeon.vision import cifar_resnet20

    model = cifar_resnet20().eval()
    x = torch.randn(2, 3, 32, 32)
    result = prune(model, x, amount=0.5, criterion="l1")
    inner = _inner_convs(model)
    assert set(inner) <= set(result.channels)  # every block's inner conv lost filters
    for name in inner:
        block = model.get_submodule(name.rsplit(".", 1)[0])
        assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels
    # The stage-1 stream loses half its channels. Each zero-padding shortcut adds fixed zero
    # channels on both sides of the narrower stream; those are kept and reported, the rest of
    # each wider stream follows the stream before it.
    streams = [model.get_submodule(f"layer{s}.0.conv2").out_channels for s in (1, 2, 3)]
    assert streams == [8, 8 + 8 + 8, 16 + 24 + 16]
    assert model.conv1.out_channels == model.layer2[0].conv1.in_channels == 8
    assert model.linear.in_features == 56
    assert any("zero channels added by a pad" in s for s in result.skipped)
    assert result.macs_ratio < 0.4
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    model.train()
    model(x).sum().backward()


@pytest.mark.shared
def test_pretrained_cifar_resnet_prunes_and_keeps_working(shared_dir) -> None:
    from netsurgeon.vision import cifar_resnet32

    weights = shared_dir / "data" / "resnet_cifar10" / "resnet32-d509ac18.th"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    model = cifar_resnet32(weights=weights).eval()
    unpruned = copy.deepcopy(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    result = prune(model, x, amount=0.3, criterion="l1")
    with torch.no_grad():
        after = model(x)
    assert after.shape == before.shape
    assert result.after.macs < result.before.macs
    assert set(_inner_convs(model)) <= set(result.channels)
    # The pruned model computes what the pretrained one does once the outputs of the removed
    # filters are silenced after their BatchNorm: every kept channel kept its own weights and
    # statistics, down the residual streams too.
    assert set(result.kept) == set(result.channels)
    for name, kept in result.kept.items():
        norm = unpruned.get_submodule(name.replace("conv", "bn"))
        mask = torch.zeros(norm.num_features)
        mask[kept] = 1.0
        assert 0 < int(mask.sum()) < norm.num_features, name
        norm.register_forward_hook(lambda _m, _i, out, mask=mask: out * mask.view(1, -1, 1, 1))
    with torch.no_grad():
        silenced = unpruned(x)
    assert not torch.allclose(silenced, before, atol=1e-2)  # the silenced filters mattered
    torch.testing.assert_close(after, silenced, rtol=0.0, atol=1e-4)


def test_torchvision_stochastic_depth_passes_channels_through() -> None:
    """EfficientNet's residual streams run through torchvision's stochastic depth, which
    scales whole samples: every stream is pruned (none kept as "not understood")."""
    model = _build("efficientnet_b0").eval()
    result = prune(model, torch.randn(1, 3, 64, 64), amount=0.5, criterion="l1")
    assert result.skipped == ["classifier.1 (10 channels) kept: it reaches the model's output"]


def test_traces_that_differ_only_in_training_flags_are_analysed_once() -> None:
    """EfficientNet's stochastic depth gets training=True or False in its trace: the same
    channels flow in both modes, so one analysis pass does (a third less time to prune
    efficientnet_b4). GoogLeNet's auxiliary heads run in training only: both modes count."""
    from netsurgeon.pruning import trace_graph

    x = torch.randn(1, 3, 64, 64)
    assert not trace_graph(_build("efficientnet_b0").eval(), x).mode_sensitive
    assert trace_graph(_build("googlenet").eval(), x).mode_sensitive


def test_a_boolean_other_than_a_training_flag_still_counts_as_a_difference() -> None:
    """Only dropout, batch-norm and stochastic-depth flags are skipped: a keepdim that
    follows the mode changes which dimension a softmax normalises (found by a review)."""
    from torch import nn

    from netsurgeon.pruning import trace_graph

    class KeepdimNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x).mean((2, 3))
            return self.fc(y.mean(0, keepdim=self.training).softmax(-1).expand_as(y))

    model = KeepdimNet().eval()
    assert trace_graph(model, torch.randn(2, 3, 8, 8)).mode_sensitive
    result = prune(model, torch.randn(2, 3, 8, 8), amount=0.5, criterion="l1")
    assert "conv" not in result.channels
