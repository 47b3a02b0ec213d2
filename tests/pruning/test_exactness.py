"""Pruning filters whose channels are exactly zero must not change the outputs."""

from __future__ import annotations

import collections
import copy
import operator
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netsurgeon.pruning import Filters, PruneResult, prune, trace_graph
from netsurgeon.pruning.surgery import zero_filters
from tests.pruning.nets import (
    CRNN,
    BatchNormAct2d,
    ChunkNet,
    ConcatNet,
    GhostNet,
    GroupNormNet,
    MixedConv,
    NormActNet,
    PartialConv,
    PointwiseNet,
    ReorderNet,
    ResNet,
    SelectiveKernelNet,
    SeqNet,
    SplitAttentionNet,
    SplitSizesNet,
    SubPixelNet,
    UNet,
)


def _randomise_norms(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.GroupNorm) and m.affine:
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)


def _zero_half_of_every_group(model: nn.Module, x: torch.Tensor) -> int:
    """Make half the channels of every prunable group output exactly zero; return the count."""
    graph = trace_graph(model, x)
    keep = {}
    removed_total = 0
    for group in graph.prunable_groups():
        # As many from each of the group's equal slices (grouped convolutions, chunks), or
        # whole blocks (a GroupNorm's groups).
        width = group.size // group.divisor
        removed = torch.cat(
            [torch.randperm(width)[: width // 2] + j * width for j in range(group.divisor)]
        )
        if group.block > 1:
            blocks = torch.randperm(group.size // group.block)[: group.size // group.block // 2]
            removed = (blocks[:, None] * group.block + torch.arange(group.block)).flatten()
        mask = torch.ones(group.size, dtype=torch.bool)
        mask[removed] = False
        keep[group.id] = mask.nonzero().flatten()
        removed_total += removed.numel()
        with torch.no_grad():
            for name, offset, _length in group.slices:
                zero_filters(graph.source_module(name), removed + offset)
    for record in graph.consumers.values():
        if record.role != "member":
            continue
        kept = graph.positions(record.channels, keep)
        if kept is None:
            continue
        mask = torch.ones(record.channels.size, dtype=torch.bool)
        mask[kept] = False
        with torch.no_grad():
            for name in ("weight", "bias"):
                param = getattr(record.module, name, None)
                if param is not None:
                    param[mask] = 0
    return removed_total


def _weight_l1(filters: Filters) -> torch.Tensor:
    return filters.rows().abs().sum(1)


def _prune_half_zeroed(model: nn.Module, x: torch.Tensor) -> tuple[int, PruneResult]:
    """Zero half of every prunable group, prune those filters, and check the outputs stayed.

    Returns:
        The number of filters zeroed, and the prune's result.
    """
    removed = _zero_half_of_every_group(model, x)
    with torch.no_grad():
        expected = model(x)
    result = prune(model, x, amount=0.5, criterion=_weight_l1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
    return removed, result


def _cifar_resnet20() -> nn.Module:
    from netsurgeon.vision import cifar_resnet20

    return cifar_resnet20()


def _c2f_with_shortcut() -> nn.Module:
    return ChunkNet(shortcut=True)


def _cifar_resnet20_group_norm() -> nn.Module:
    """Option-A shortcuts under GroupNorm(8, C): the zero-padded channels (8 + 16 + 8 of a
    32-channel stream) fall on group boundaries, so the streams can be cut there."""
    model = _cifar_resnet20()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.BatchNorm2d):
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, nn.GroupNorm(8, module.num_features))
    return model


@pytest.mark.parametrize(
    "net",
    [
        SeqNet,
        ResNet,
        ConcatNet,
        _cifar_resnet20,
        UNet,
        ChunkNet,
        _c2f_with_shortcut,
        GroupNormNet,
        _cifar_resnet20_group_norm,
        NormActNet,
        GhostNet,
        CRNN,
        SubPixelNet,
        PointwiseNet,
        ReorderNet,
        SelectiveKernelNet,
        SplitAttentionNet,
        SplitSizesNet,
    ],
)
def test_pruning_zero_channels_keeps_outputs(net: Callable[[], nn.Module]) -> None:
    model = net().eval()
    _randomise_norms(model)
    x = torch.randn(2, 3, 8, 8)
    removed = _zero_half_of_every_group(model, x)
    assert removed > 0
    with torch.no_grad():
        expected = model(x)
    params_before = sum(p.numel() for p in model.parameters())

    result = prune(model, x, amount=0.5, criterion=_weight_l1)

    with torch.no_grad():
        actual = model(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in model.parameters()) == result.after.params < params_before
    assert sum(old - new for old, new in result.channels.values()) > 0


def test_a_channel_shuffle_over_grouped_convolutions_keeps_their_slices_even() -> None:
    """Found by a fuzzer after ResNeSt's split attention landed: a grouped convolution's
    slices were cut where a channel shuffle's groups fell inside a concatenation, and its
    pieces, tied to other layers, lost different numbers of filters: Conv2d(groups=2) then
    read 4 + 2 filters as 3 + 3, and the outputs changed silently."""

    class Shuffled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.g4 = nn.Conv2d(8, 4, 3, padding=1, groups=4)
            self.p = nn.Conv2d(8, 4, 1, bias=False)
            self.g2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
            self.head = nn.Conv2d(16, 5, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.stem(x)
            t = torch.cat([self.g4(s), self.p(s), self.g2(s)], 1)
            return self.head(t.unflatten(1, (2, -1)).transpose(2, 1).flatten(1, 2))

    model = Shuffled().eval()
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {"stem": (8, 4)} and removed == 4
    assert any(s.startswith("g2 (8 channels) kept:") for s in result.skipped), result.skipped


def test_a_call_s_parts_passed_whole_to_cat_and_stack_are_followed() -> None:
    """``torch.cat(x.split(4, 1), 1)`` and ``torch.stack(x.chunk(2, 1), 1)``: the sequence is
    one call's result. Before: "not understood (TypeError)", so the layers kept their
    channels (found by a fuzzer)."""

    class Parts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
            self.head = nn.Conv2d(8 + 4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.cat(F.relu(self.a(x)).split(4, 1), 1)
            b = torch.stack(F.relu(self.b(x)).chunk(2, 1), 1).sum(1)
            return self.head(torch.cat([a, b], 1)).mean((2, 3))

    removed, result = _prune_half_zeroed(Parts().eval(), torch.randn(2, 3, 8, 8))
    assert result.channels == {"a": (8, 6), "b": (8, 4)} and removed == 2 + 2


def test_channels_merged_after_the_dimensions_before_them() -> None:
    """Branches stacked before the channels, then flattened with them and the positions after
    them into a linear layer's features: each branch's copy loses the same channels, each
    channel its block of positions. Before: "it reshapes the channel dimension", kept."""

    class Merged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(2 * 8 * 4 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.a(x))
            return self.fc(torch.stack([y, -y], 1).flatten(1))

    model = Merged().eval()
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 4, 4))
    assert result.channels == {"a": (8, 4)} and removed == 4
    assert model.fc.in_features == 2 * 4 * 4 * 4


def test_convolutions_read_channels_spread_over_several_positions() -> None:
    """A 3-D convolution's maps flattened into a 2-D one's channels (depth x channels, as in
    video and bird's-eye-view nets): the 2-D convolution and its batch norm lose each pruned
    filter's block of positions. Before: "reads channels on another dimension", kept."""

    class Flattened(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c3d, self.bn = nn.Conv3d(3, 6, 3, padding=1), nn.BatchNorm2d(6 * 4)
            self.c2d, self.head = nn.Conv2d(6 * 4, 8, 3, padding=1), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.bn(self.c3d(x).flatten(1, 2)))  # (N, 6 * 4, H, W)
            return self.head(F.relu(self.c2d(y)).mean((2, 3)))

    model = Flattened().eval()
    _randomise_norms(model)
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 4, 8, 8))
    assert removed == 3 + 4
    assert model.bn.num_features == model.c2d.in_channels == 3 * 4
    assert result.channels == {"c3d": (6, 3), "c2d": (8, 4)}
    # A GroupNorm there: groups of 8 positions hold 2 filters' maps, of 2 positions part of one.
    for groups, block in ((3, 2), (12, 1)):
        model = Flattened().eval()
        model.bn = nn.GroupNorm(groups, 6 * 4)  # type: ignore[assignment]
        _randomise_norms(model)
        graph = trace_graph(model, torch.randn(2, 3, 4, 8, 8))
        assert graph.groups[graph.source_group("c3d")].block == block
        _prune_half_zeroed(model, torch.randn(2, 3, 4, 8, 8))
        assert model.bn.num_channels == model.c2d.in_channels < 24
        assert model.bn.num_channels // model.bn.num_groups == 24 // groups  # as before
    model = Flattened().eval()
    model.bn = nn.GroupNorm(8, 6 * 4)  # type: ignore[assignment]  # groups of 3 positions
    skipped = trace_graph(model, torch.randn(2, 3, 4, 8, 8)).skipped()
    assert any(
        "'bn' has groups of 3 positions that cut channels spread over 4" in r for r in skipped
    )


def test_residual_members_share_indices() -> None:
    model = ResNet().eval()
    x = torch.randn(1, 3, 8, 8)
    graph = trace_graph(model, x)
    stage1 = graph.source_group("conv1")
    assert graph.source_group("layer1.0.conv2") == stage1
    assert graph.source_group("layer1.1.conv2") == stage1
    assert graph.source_group("layer1.0.se2") == stage1  # squeeze-excitation multiplies
    stage2 = graph.source_group("layer2.0.down.0")
    assert graph.source_group("layer2.1.conv2") == stage2 != stage1
    assert graph.source_group("layer1.0.conv1") not in (stage1, stage2)
    # The classifier's outputs reach the model's output and are never pruned.
    assert not graph.groups[graph.source_group("fc")].prunable


def test_concat_offsets_per_input() -> None:
    model = ConcatNet().eval()
    x = torch.randn(1, 3, 8, 8)
    prune(model, x, amount=0.5, criterion="l1")
    assert model.stem.out_channels == 4
    assert model.grow1.out_channels == 2
    assert model.norm1.num_features == 6
    assert model.grow2.in_channels == 6
    assert model.branch_a.in_channels == 4 + 2 + 3
    assert model.norm2.num_features == model.head.in_channels == 2 + 3
    assert model(x).shape == (1, 5)


class _AttributeNet(nn.Module):
    """``.data`` passes the channels on; ``.mT`` moves them somewhere the engine keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.f = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(8, 4, 1),
            nn.Conv2d(3, 8, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(torch.relu(self.a(x)).data)
        return y.mean((2, 3)) + self.f(x).flatten(2).mT.mean((1, 2)).unsqueeze(1)


class _StemNet(nn.Module):
    """stem -> a -> (the pattern under test, :meth:`pattern`) -> b; the stem stays prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)

    def pattern(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.pattern(self.a(torch.relu(self.stem(x))))).mean((2, 3))


class _ClampNet(_StemNet):
    """Per-channel clamp bounds, combined with the channels element-wise, in a buffer (which
    is not cut with them; a parameter is)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bound", torch.linspace(0.1, 1.0, 8).view(1, 8, 1, 1))

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return torch.clamp(y, max=self.bound)


class _SplitSliceNet(_StemNet):
    """A slice of a tuple of spatial pieces."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat(torch.split(y, 2, dim=3)[1:3], 3)


class _SharedOnImageNet(nn.Module):
    """One convolution reads the image and, in a second call, another layer's output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.shared = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.shared(x) + self.shared(torch.relu(self.a(x)))).mean((2, 3))


class _KeywordReduceNet(_StemNet):
    """A tensor passed by keyword (``input=``) into a sum over the channels."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.sigmoid(input=y).sum(dim=1, keepdim=True)


class _ReadBiasNet(_StemNet):
    """A layer's parameter read directly in forward: pruning would change what is read."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.stem.bias.abs().mean()


class _CountAttributeNet(_StemNet):
    """Scales by a layer's channel count (fx keeps only the number it computed)."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.stem.out_channels**-0.5


class _CountOperandNet(_StemNet):
    """Scales by a layer's channel count given as is to the tensor's operator, and builds a
    tensor of that many channels: the count's own methods never run, fx keeps the number."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        extra = y.new_zeros(y.shape[0], self.stem.out_channels, 1, 1)
        return y * self.stem.out_channels + extra.sum(1, keepdim=True)


class _CountFactoryNet(_StemNet):
    """A tensor built from a layer's channel count and nothing traced: it is built while the
    model is traced, so fx keeps only the tensor."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.ones(self.stem.out_channels).sum()


class _Both(collections.namedtuple("_Both", "first second")):
    """A namedtuple whose ``__new__`` takes other arguments than its fields."""

    def __new__(cls, both: torch.Tensor) -> _Both:
        return super().__new__(cls, both, both)


class _NamedTupleAtTraceTime(_StemNet):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("gain", torch.linspace(0.5, 1.5, 8))

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.stack(_Both(self.gain)).mean(0).sum()


def test_torch_calls_during_the_trace_on_any_arguments() -> None:
    """Found by fuzzing: the watch on torch calls made during the trace rebuilt their
    arguments, which this namedtuple does not allow, and the model could not be traced."""
    removed, result = _prune_half_zeroed(_NamedTupleAtTraceTime().eval(), torch.randn(2, 3, 8, 8))
    assert removed > 0 and result.channels


class _PartSliceNet(_StemNet):
    """A slice of part of the channels (GhostNet's cut when the width is odd)."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y, y], 1)[:, 4:12]


class _CountShapesOtherNet(_StemNet):
    """The input's channel count reshapes a tensor of other channels, which are kept (split at
    written sizes), as timm's LambdaLayer does with ``out.reshape(B, C, H, W)``."""

    def __init__(self) -> None:
        super().__init__()
        self.v = nn.Conv2d(8, 8, 1)

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = y.shape
        q, k = torch.split(self.v(y), [5, 3], dim=1)
        return torch.cat([q, k], 1).reshape(b, c, h, w)


class _MixedNormNet(_StemNet):
    """A functional batch norm on the statistics of one norm layer and the scale and shift of
    another: neither can be resized as the layer of that call."""

    def __init__(self) -> None:
        super().__init__()
        self.n1, self.n2 = nn.BatchNorm2d(8), nn.BatchNorm2d(8)

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            y, self.n1.running_mean, self.n1.running_var, self.n2.weight, self.n2.bias
        )


class _ReadNormWeightNet(_StemNet):
    """A norm layer that calls ``F.batch_norm`` on its own tensors, one of which forward also
    reads elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.n = BatchNormAct2d(8)

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return self.n(y) * self.n.weight.view(1, -1, 1, 1)


@pytest.mark.parametrize(
    ("net", "layer", "reason"),
    [
        (_KeywordReduceNet, "a (8 channels) kept: ", "it reduces over the channels"),
        (_MixedNormNet, "a (8 channels) kept: ", "its tensors are not those of one layer"),
        (_PartSliceNet, "a (8 channels) kept: ", "it slices the channels"),
        (_CountShapesOtherNet, "a (8 channels) kept: ", "shapes other channels with their count"),
        (_ReadNormWeightNet, "a (8 channels) kept: ", "'n.weight' read directly in forward"),
        (_ReadBiasNet, "stem (6 channels) kept: ", "'stem.bias' read directly in forward"),
        (_CountAttributeNet, "stem (6 channels) kept: ", "its out_channels used as a number"),
        (_CountOperandNet, "stem (6 channels) kept: ", "its out_channels used as a number"),
        (_CountFactoryNet, "stem (6 channels) kept: ", "its out_channels used as a number"),
        (_AttributeNet, "f (8 channels) kept: ", "it reads the attribute .mT"),
        (_ClampNet, "a (8 channels) kept: ", "(node clamp) combines channels with a fixed tensor"),
        (_SplitSliceNet, "a (8 channels) kept: ", "it takes a slice of a sequence of tensors"),
        (_SharedOnImageNet, "a (3 channels) kept: ", "'shared' is also called on fixed channels"),
    ],
)
def test_patterns_the_engine_keeps_are_kept_and_the_rest_prunes_exactly(
    net: Callable[[], nn.Module], layer: str, reason: str
) -> None:
    """Before: .data / .mT dropped the channels' trail (silently wrong outputs), and the other
    three pruned what they should keep, so the prune failed as 'does not run'. The keyword
    tensor, the parameter read and the count attributes changed the outputs silently."""
    removed, result = _prune_half_zeroed(net().eval(), torch.randn(2, 3, 8, 8))
    assert any(s.startswith(layer) and reason in s for s in result.skipped), result.skipped
    assert sum(old - new for old, new in result.channels.values()) == removed > 0


class _LayerScaleNet(nn.Module):
    """Per-channel parameters a forward reads itself: a layer scale on a residual branch as
    torchvision's ConvNeXt has it, ``(C, 1, 1)``; one of shape ``(C,)`` viewed as timm's
    ``LayerScale2d`` does; a clamp bound; and on the residual stream, a per-channel shift."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.expand, self.project = nn.Conv2d(8, 12, 1), nn.Conv2d(12, 8, 1)
        self.layer_scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.gamma = nn.Parameter(torch.rand(12) + 0.5)
        self.bound = nn.Parameter(torch.rand(1, 12, 1, 1) + 0.5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        h = torch.clamp(torch.relu(self.expand(x)) * self.gamma.view(1, -1, 1, 1), max=self.bound)
        x = x + self.layer_scale * self.project(h)
        return self.head(x).mean((2, 3))


def test_per_channel_parameters_are_cut_with_their_channels() -> None:
    """Before: a parameter read in forward was a fixed tensor, so every channel it met was
    kept ("combines channels with a fixed tensor"): ConvNeXt's layer scale kept the residual
    streams (with the LayerNorms), a layer-scaled BatchNorm network (timm's MobileNetV4
    hybrids) the blocks too."""
    model = _LayerScaleNet().eval()
    _randomise_norms(model)
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {"stem": (8, 4), "project": (8, 4), "expand": (12, 6)}
    assert removed == 4 + 6
    assert model.layer_scale.shape == (4, 1, 1) and model.gamma.shape == (6,)
    assert model.bound.shape == (1, 6, 1, 1)


class _ShapedScale(nn.Module):
    """timm's MetaFormer ``Scale``: a ``(C,)`` parameter viewed to a shape its module keeps in
    ``self.shape``; ``use`` adds another use of that shape."""

    def __init__(self, dim: int, use: str = "") -> None:
        super().__init__()
        self.shape, self.use = (dim, 1, 1), use
        self.scale = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.scale.view(self.shape)
        if self.use == "number":
            y = y + torch.ones(self.shape)
        elif self.use == "activation":
            y = y.reshape(y.shape[0], *self.shape[:1], -1).view(y.shape)
        return y


class _ShapedScaleNet(_StemNet):
    def __init__(self, use: str = "") -> None:
        super().__init__()
        self.scale = _ShapedScale(8, use)

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale(y)


def test_a_scale_viewed_to_a_shape_its_module_keeps_is_cut_with_that_shape() -> None:
    """Before: the size written in the kept shape made the scale a fixed tensor ("combines
    channels with a fixed tensor"), so timm's MetaFormers (PoolFormer, ConvFormer) kept their
    residual streams. Now the shape's entry follows the parameter."""
    model = _ShapedScaleNet().eval()
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {"stem": (6, 3), "a": (8, 4)} and removed == 7
    assert model.scale.scale.shape == (4,) and model.scale.shape == (4, 1, 1)


@pytest.mark.parametrize(
    ("use", "reason"),
    [
        ("number", "combines channels with a fixed tensor"),
        ("activation", "hard-codes 8 channels in a reshape"),
    ],
)
def test_a_kept_shape_used_otherwise_keeps_the_channels(use: str, reason: str) -> None:
    """The shape also sizes a new tensor, or views the activations: cutting would break that
    use, so the channels stay (and the shape with them)."""
    model = _ShapedScaleNet(use).eval()
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {"stem": (6, 3)} and removed == 3
    assert any(s.startswith("a ") and reason in s for s in result.skipped), result.skipped
    assert model.scale.shape == (8, 1, 1)


class _ExpandedToShapeNet(_StemNet):
    """timm's filter response norm: a per-channel statistic expanded to the shape of the
    channels it divides, read at run time (``rms.expand(y.shape)``)."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        rms = y.square().mean(dim=(2, 3), keepdim=True).add(1e-5).rsqrt()
        return y * rms.expand(y.shape) * rms.expand(y.size(0), -1, y.size(2), y.size(3))


def test_a_statistic_expanded_to_a_shape_read_at_run_time_keeps_the_channels_prunable() -> None:
    """Before: "`.expand()` (node expand): not understood (IndexError)", so timm's
    resnetv2_50d_frn kept every channel."""
    removed, result = _prune_half_zeroed(_ExpandedToShapeNet().eval(), torch.randn(2, 3, 8, 8))
    assert result.channels == {"stem": (6, 3), "a": (8, 4)} and removed == 7


def test_a_shape_that_views_parameters_of_several_layers_keeps_their_channels() -> None:
    """Found by a fuzzer: two scales viewed to one kept shape, on two layers pruned apart;
    the shape cannot fit both, and the prune failed ("Please report this")."""

    class TwoScales(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
            self.g1, self.g2 = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.rand(8))
            self.shape, self.head = (8, 1, 1), nn.Conv2d(16, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = self.a(x) * self.g1.view(self.shape), self.b(x) * self.g2.view(self.shape)
            return self.head(torch.cat([a, b], 1))

    model = TwoScales().eval()
    x = torch.randn(2, 3, 8, 8)
    result = prune(model, x, amount=0.5, amounts={"a": 0.75}, criterion="l1")
    assert result.channels == {} and model.shape == (8, 1, 1)
    reason = "the model's 'shape' sizes the views of parameters of other channels"
    assert any(s.startswith("a (8 channels) kept:") and reason in s for s in result.skipped)


class _OtherDimensionParameterNet(_StemNet):
    """Parameters whose one long dimension is not the channels': a weight per row, one per
    column (broadcast from the right), a position embedding over flattened positions."""

    def __init__(self) -> None:
        super().__init__()
        self.rows, self.columns = nn.Parameter(torch.rand(8)), nn.Parameter(torch.rand(8))
        self.positions = nn.Parameter(torch.rand(1, 1, 64))

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        y = self.rows.view(1, 1, -1, 1) * y * self.columns
        return (y.flatten(2) * self.positions).view(y.shape)


def test_parameters_along_other_dimensions_leave_the_channels_prunable() -> None:
    """Before: such a parameter, tracked as if its long dimension held channels, kept the
    channels it met ("cannot be aligned"); it is a fixed tensor there, as it was before
    layer scales were followed."""
    removed, result = _prune_half_zeroed(
        _OtherDimensionParameterNet().eval(), torch.randn(2, 3, 8, 8)
    )
    assert result.channels == {"stem": (6, 3), "a": (8, 4)} and removed == 7
    assert not [s for s in result.skipped if not s.startswith("b ")], result.skipped


class _SpatialNormsNet(_StemNet):
    """Norms over the spatial dimensions, each channel alone (the first half of ConvNeXt V2's
    global response norm; a per-channel L2 normalisation of the flattened map)."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        y = y * y.norm(p=2, dim=(2, 3), keepdim=True)
        y = y + torch.norm(y, 2, (2, 3), True) * torch.linalg.vector_norm(y, 2, (2, 3), True)
        return F.normalize(y.flatten(2), dim=2).view(y.shape)


def test_norms_over_other_dimensions_prune_exactly() -> None:
    """Before: x.norm(), torch.norm, torch.linalg.vector_norm and F.normalize kept the
    channels whatever the dimension ("not understood")."""
    removed, result = _prune_half_zeroed(_SpatialNormsNet().eval(), torch.randn(2, 3, 8, 8))
    assert result.channels == {"stem": (6, 3), "a": (8, 4)} and removed == 7


class _ChannelNormNet(_StemNet):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        if self.how == "normalize":
            return F.normalize(y, dim=1)
        return y / (y.norm(dim=1, keepdim=True) + 1.0)


@pytest.mark.parametrize(
    ("how", "reason"),
    [("normalize", "it normalises across the channels"), ("norm", "it reduces over the channels")],
)
def test_norms_over_the_channels_keep_them(how: str, reason: str) -> None:
    removed, result = _prune_half_zeroed(_ChannelNormNet(how).eval(), torch.randn(2, 3, 8, 8))
    assert "a" not in result.channels and removed > 0
    assert any(s.startswith("a (8 channels) kept") and reason in s for s in result.skipped)


class _FixedParameterNet(nn.Module):
    """Parameters whose channels cannot be cut alone: one tied to another module's, one of
    an ignored module, one whose module keeps their count too, one of two long dimensions."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.scale = nn.Parameter(torch.rand(8, 1, 1))
        self.inner = nn.Module()
        self.inner.scale = self.scale if how == "tied" else nn.Parameter(torch.rand(8, 1, 1))
        if how == "counted":
            self.inner.channels = 8
        self.mix = nn.Parameter(torch.rand(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        if self.how == "tied":
            y = y * self.scale + self.inner.scale
        elif self.how in ("ignored", "counted"):
            y = y * self.inner.scale
        else:
            y = torch.einsum("nchw,cd->ndhw", y, self.mix) * self.scale
        return self.b(y).mean((2, 3))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("tied", "combines channels with a fixed tensor"),
        ("ignored", "combines channels with a fixed tensor"),
        ("counted", "'inner.scale' has its channel count in 'inner.channels' too"),
        ("matrix", "einsum"),
    ],
)
def test_parameters_that_cannot_follow_their_channels_keep_them(how: str, reason: str) -> None:
    model = _FixedParameterNet(how).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    result = prune(
        model, x, amount=0.5, criterion="l1", ignore=["inner"] if how == "ignored" else ()
    )
    assert model.a.out_channels == 8 and model.scale.shape == (8, 1, 1)
    assert any(s.startswith("a (8 channels) kept") and reason in s for s in result.skipped)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


class _CountScaleNet(_StemNet):
    """Scales by the channel count read at run time, which pruning would change."""

    def pattern(self, y: torch.Tensor) -> torch.Tensor:
        return y * y.shape[1] ** -0.5


class _CountShapeNet(nn.Module):
    """Squeeze-excitation written with the sizes unpacked: counts used as shapes only."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.fc, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 8), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        b, c, _, _ = y.size()
        gate = torch.sigmoid(self.fc(y.mean((2, 3)).view(b, c))).view(b, c, 1, 1)
        return self.b(y * gate.expand(b, c, y.size(2), y.size(3))).mean((2, 3))


class _KeywordCallNet(nn.Module):
    """Layers and functions called with their tensors passed by keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(input=self.bn(input=self.a(input=x)))
        return self.b(input=torch.add(input=y, other=y, alpha=2)).mean((2, 3))


def test_tensors_passed_by_keyword_prune_as_passed_by_position() -> None:
    """Before: bn(input=...) was left out of the conv's group, and the prune failed."""
    model = _KeywordCallNet().eval()
    _randomise_norms(model)
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {"a": (8, 4)} and model.bn.num_features == 4 and removed == 4


def test_a_channel_count_used_as_a_value_keeps_its_channels_and_as_a_shape_does_not() -> None:
    """Before: y * y.shape[1] ** -0.5 pruned y's producer, and the scale changed silently."""
    x = torch.randn(2, 3, 8, 8)
    removed, result = _prune_half_zeroed(_CountScaleNet().eval(), x)
    assert any(s.startswith("a (8 channels) kept: ") and "uses the channel count as a value" in s
               for s in result.skipped), result.skipped  # fmt: skip
    assert set(result.channels) == {"stem"} and removed == 3
    # Counts that only size a view or an expand prune with the rest.
    removed, result = _prune_half_zeroed(_CountShapeNet().eval(), x)
    assert result.channels["a"] == (8, 4) and removed > 0


@pytest.mark.parametrize("sized", [False, True])
def test_a_transposed_convolution_loses_output_filters_and_input_channels(sized: bool) -> None:
    """Weights (in, out, *kernel): its filters are its second dimension. Before: the whole
    U-Net decoder was kept ("ConvTranspose2d is not understood"). Given the skip connection's
    size() as output_size, it reads the spatial sizes only: the skip's channels still go."""
    model = UNet(sized=sized).eval()
    _randomise_norms(model)
    _, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {"enc.0": (8, 4), "down": (16, 8), "up": (8, 4), "dec": (8, 4)}
    assert tuple(model.up.weight.shape) == (8, 4, 2, 2) and model.up.bias.shape == (4,)
    assert (model.up_bn.num_features, model.dec.in_channels) == (4, 8)
    assert result.skipped == ["head (2 channels) kept: it reaches the model's output"]


def test_transposed_convolutions_under_a_macs_target_and_grouped_ones_kept() -> None:
    model = UNet().eval()
    x = torch.randn(1, 3, 16, 16)
    for scope in ("global_macs", "layer"):  # the MACs model of a transposed convolution
        result = prune(copy.deepcopy(model), x, target_macs=0.5, scope=scope, criterion="l2")
        assert 0.4 <= result.macs_ratio <= 0.5, scope
    assert set(result.channels) == {"enc.0", "down", "up", "dec"}

    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv1d(2, 8, 3)
            self.up = nn.ConvTranspose1d(8, 8, 2, stride=2, groups=2)
            self.b = nn.Conv1d(8, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.up(torch.relu(self.a(x)))))

    grouped = Grouped().eval()
    result = prune(grouped, torch.randn(1, 2, 12), amount=0.5, criterion="l1")
    assert result.channels == {}
    assert any("'up' is a grouped transposed convolution" in s for s in result.skipped)


@pytest.mark.parametrize("shortcut", [False, True])
def test_chunked_channels_lose_the_same_filters_from_each_part(shortcut: bool) -> None:
    """x.chunk(k, dim=1) keeps splitting into k equal parts after pruning when each part loses
    the same channels; a part may join a residual addition (YOLOv8's backbone C2f). Before:
    the chunked layer was kept ("it splits the channels")."""
    model = ChunkNet(shortcut=shortcut).eval()
    _randomise_norms(model)
    _, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    # With the shortcut the bottleneck's output is pruned like its input half.
    assert result.channels == {"cv1.0": (16, 8), "m.0": (8, 4), "cv2": (8, 4)}
    assert result.skipped == ["fc (4 channels) kept: it reaches the model's output"]
    assert (model.m[0].in_channels, model.cv2.in_channels) == (4, 12)
    x = torch.randn(1, 3, 8, 8)
    for scope in ("global", "global_macs"):
        pruned = ChunkNet(shortcut=shortcut).eval()
        result = prune(pruned, x, amount=0.6, scope=scope, criterion="l1")
        cv1 = result.channels.get("cv1.0", (16, 16))[1]
        assert cv1 % 2 == 0 and pruned.m[0].in_channels == cv1 // 2, scope
        assert pruned(x).shape == (1, 4)


class _SplitNet(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a, self.b = nn.Conv2d(3, 12, 1), nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(12, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if self.how == "split":  # sizes written in the code: they cannot follow pruning
            parts = torch.split(y, [6, 6], dim=1)
        elif self.how == "thirds of a concatenation":
            parts = torch.cat([y, self.b(x)], 1).chunk(4, 1)[:2]
        else:  # "unequal": 12 channels in 5 chunks
            parts = y.chunk(5, 1)[:2]
        first, second = parts[0], parts[1]
        return self.c(torch.cat([first, second, first, second], 1)[:, :12])


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("split", "it splits the channels at fixed sizes"),
        ("thirds of a concatenation", "it splits channels of several layers or of part of one"),
        ("unequal", "it splits the channels into unequal parts"),
    ],
)
def test_splits_that_cannot_follow_pruning_keep_their_channels(how: str, reason: str) -> None:
    model = _SplitNet(how).eval()
    result = prune(model, torch.randn(1, 3, 4, 4), amount=0.5, criterion="l1")
    assert "a" not in result.channels
    assert any(s.startswith("a (12 channels) kept:") and reason in s for s in result.skipped)


class _SplitAtSizeNet(nn.Module):
    """CSPNet's stage (``xs, xb = x.split(self.expand_chs // 2)``: the blocks work on the
    last part) and Res2Net's scales (``torch.split(x, self.width)``, the last part passed on
    alone), each with its size written in the code."""

    def __init__(self) -> None:
        super().__init__()
        self.expand, self.block = nn.Conv2d(3, 12, 1), nn.Conv2d(6, 6, 3, padding=1)
        self.transition = nn.Conv2d(12, 12, 1)
        self.scales = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(2))
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, xb = F.relu(self.expand(x)).split(6, dim=1)
        y = F.relu(self.transition(torch.cat([xs, F.relu(self.block(xb))], 1)))
        parts = torch.split(y, 4, 1)
        out, sp = [], parts[0]
        for i, conv in enumerate(self.scales):
            sp = F.relu(conv(sp if i == 0 else sp + parts[i]))
            out.append(sp)
        return self.head(torch.cat([*out, parts[-1]], 1)).mean((2, 3))


def test_a_split_at_a_written_size_prunes_its_last_part() -> None:
    """Before: "it splits the channels at fixed sizes", so the layers before a split kept
    all their filters (timm's cspdarknet53 kept 0.435 of its parameters at amount 0.5)."""
    model = _SplitAtSizeNet().eval()
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    # scales.0's output is added to the transition's second part, which keeps its channels.
    assert result.channels == {
        "expand": (12, 9), "block": (6, 3), "transition": (12, 10), "scales.1": (4, 2),
    }  # fmt: skip
    assert removed == 3 + 3 + 2 + 2
    assert any(
        s.startswith("expand (6 channels) kept:")
        and "splits the channels at a size written in the code (6)" in s
        for s in result.skipped
    ), result.skipped


def test_an_ignored_module_keeps_the_channels_that_pass_through_it() -> None:
    """Found by fuzzing: FasterNet's partial convolution, ignored, kept its convolution but
    the channels it passes on untouched were pruned, and its size for them rewritten."""
    model = SplitSizesNet().eval()
    result = prune(model, torch.randn(2, 3, 8, 8), amount=0.5, criterion="l1", ignore=["partial"])
    assert (model.partial.dim_conv3, model.partial.dim_untouched) == (4, 8)
    assert "pw" not in result.channels and "mlp" not in result.channels
    assert any(s.startswith("pw, mlp") and "'partial' is ignored" in s for s in result.skipped)


class _SplitAtAChildsSizes(nn.Module):
    """A parent that splits channels at the sizes its partial convolution keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.pc = nn.Conv2d(3, 8, 1), PartialConv(8, 4)
        self.c, self.head = nn.Conv2d(4, 4, 1), nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.stem(x), [self.pc.dim_conv3, self.pc.dim_untouched], 1)
        return self.head(self.pc(torch.cat([self.c(a), b], 1))).mean((2, 3))


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), self.b(x)


class _TakesAPairWhole(nn.Module):
    """A module's tuple output taken whole (``list(outs)``), which fx cannot do with a module
    called whole."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.pair, self.head = nn.Conv2d(3, 8, 1), _Pair(), nn.Conv2d(14, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.pair(F.relu(self.stem(x)))
        return self.head(torch.cat(list(outs), 1)).mean((2, 3))


@pytest.mark.parametrize(
    ("make", "ignored"), [(_SplitAtAChildsSizes, "pc"), (_TakesAPairWhole, "pair")]
)
def test_ignored_modules_stay_as_they_were(make: Callable[[], nn.Module], ignored: str) -> None:
    """Found by fuzzing: an ignored module's sizes, split at by its parent, were rewritten and
    the pruned model failed; and calling ignored modules whole (as tried first) made a model
    that takes one's tuple output whole untraceable."""
    model, x = make().eval(), torch.randn(2, 3, 8, 8)
    _zero_half_of_every_group(model, x)
    state = copy.deepcopy(model.get_submodule(ignored).state_dict())
    sizes = dict(vars(model.get_submodule(ignored)))
    with torch.no_grad():
        expected = model(x)
    result = prune(model, x, amount=0.5, criterion=_weight_l1, ignore=[ignored])
    module = model.get_submodule(ignored)
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())
    assert {k: v for k, v in vars(module).items() if type(v) is int} == {
        k: v for k, v in sizes.items() if type(v) is int
    }
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
    assert any(f"'{ignored}' is ignored" in s for s in result.skipped), result.skipped


def test_splits_at_sizes_that_modules_keep_follow_pruning() -> None:
    """Before: "it splits the channels at fixed sizes", so every layer before such a split
    kept its filters (timm's mixnet_s kept 0.596 of its parameters at amount 0.5, now 0.277;
    fasternet_t0 0.532, now 0.252). Surgery now sets the sizes to what each part keeps."""
    model = SplitSizesNet().eval()
    _randomise_norms(model)
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {
        "pw": (12, 6), "mix.convs.0": (8, 4), "mix.convs.1": (4, 2), "partial.conv": (4, 2),
        "mlp": (12, 6), "m": (6, 3),
    }  # fmt: skip
    assert removed == 6 + 2
    assert model.mix.splits == [4, 2] and type(model.mix.splits) is list
    assert (model.partial.dim_conv3, model.partial.dim_untouched, model.c) == (2, 4, 3)


class _Res2NetScales(nn.Module):
    """Res2Net's scales at a width the block keeps (``torch.split(out, self.width, 1)``):
    each scale's convolution reads its part plus the previous scale's output, the last part
    is passed on alone."""

    def __init__(self) -> None:
        super().__init__()
        self.width = 4
        self.conv1 = nn.Conv2d(3, 12, 1)
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(2))
        self.conv3 = nn.Conv2d(12, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spx = torch.split(F.relu(self.conv1(x)), self.width, 1)
        spo, sp = [], spx[0]
        for i, conv in enumerate(self.convs):
            sp = F.relu(conv(sp if i == 0 else sp + spx[i]))
            spo.append(sp)
        return self.conv3(torch.cat([*spo, spx[-1]], 1)).mean((2, 3))


def test_equal_parts_of_a_width_a_module_keeps_are_pruned_alike() -> None:
    """Before: the parts before the last kept their channels (a size written in the code),
    so conv1 lost only its last 4 filters' share."""
    model = _Res2NetScales().eval()
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {"conv1": (12, 6), "convs.0": (4, 2), "convs.1": (4, 2)}
    assert removed == 2 + 2 and model.width == 2


class _DualPathNet(nn.Module):
    """DPN's dual path block (``x_s[:, :self.num_1x1_c]`` and ``x_s[:, self.num_1x1_c:]``
    of two layers, the first parts added) and ReXNet's partial shortcut (``torch.cat([x[:,
    0:self.in_channels] + shortcut, x[:, self.in_channels:]])``); ``spatial`` also slices
    rows at the first size, a use that keeps its channels."""

    def __init__(self, spatial: bool = False) -> None:
        super().__init__()
        self.spatial = spatial
        self.num_1x1_c, self.in_channels = 8, 6
        self.proj, self.a = nn.Conv2d(3, 12, 1), nn.Conv2d(3, 6, 1)
        self.c, self.t = nn.Conv2d(6, 12, 1), nn.Conv2d(16, 6, 1)
        self.exp, self.head = nn.Conv2d(16, 10, 1), nn.Conv2d(10, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_s = self.proj(x)
        y = self.c(F.relu(self.a(x)))
        if self.spatial:
            y = y[:, :, : self.num_1x1_c]
        n = self.num_1x1_c
        s = F.relu(torch.cat([x_s[:, :n] + y[:, :n], x_s[:, n:], y[:, n:]], 1))
        z = self.exp(s)
        z = torch.cat([z[:, 0 : self.in_channels] + self.t(s), z[:, self.in_channels :]], dim=1)
        return self.head(z).mean((2, 3))


def test_slices_at_sizes_that_modules_keep_follow_pruning() -> None:
    """Before: "it slices the channels" (timm's dpn68 kept 0.487 of its parameters at amount
    0.5, now 0.252; rexnet_100 0.429, now 0.263)."""
    model = _DualPathNet().eval()
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert result.channels == {
        "proj": (12, 6), "a": (6, 3), "c": (12, 6), "t": (6, 3), "exp": (10, 5),
    }  # fmt: skip
    assert removed == 4 + 2 + 2 + 3 + 3 + 2 and (model.num_1x1_c, model.in_channels) == (4, 3)
    model = _DualPathNet(spatial=True).eval()
    _, result = _prune_half_zeroed(model, torch.randn(2, 3, 8, 8))
    assert model.num_1x1_c == 8 and "proj" not in result.channels
    assert any(
        "at a size that forward also uses as a number ('num_1x1_c')" in s for s in result.skipped
    ), result.skipped


class _SplitSizesUsedNet(nn.Module):
    """A split at sizes the module keeps, one of which forward also uses otherwise
    (subclasses: forward's source is read, so each use has a class of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes = [4, 8]
        self.a, self.b = nn.Conv2d(3, 12, 1), nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(12, 2, 1)


class _SplitSizesScaled(_SplitSizesUsedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), self.sizes, 1)
        return self.head(torch.cat([self.b(p) * self.sizes[0] ** -0.5, q], 1))


class _SplitSizesSliced(_SplitSizesUsedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), self.sizes, 1)
        return self.head(torch.cat([self.b(p), q[:, : self.sizes[1]]], 1))


class _SplitSizesWritten(_SplitSizesUsedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), [self.sizes[0], 8], 1)
        return self.head(torch.cat([self.b(p), q], 1))


class _SplitSizesFactory(_SplitSizesUsedNet):
    """Uses of a size that leave no trace in the graph: they run while it is traced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), self.sizes, 1)
        return self.head(torch.cat([self.b(p), q], 1)) * torch.ones(self.sizes[0]).sum()


class _SplitSizesRange(_SplitSizesUsedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), self.sizes, 1)
        return self.head(torch.cat([self.b(p), q], 1)) * len(range(self.sizes[0]))


class _SplitSizesIndex(_SplitSizesUsedNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), self.sizes, 1)
        return self.head(torch.cat([self.b(p), q], 1)) * operator.index(self.sizes[0])


class _SplitSizesProperty(_SplitSizesUsedNet):
    @property
    def norm(self) -> int:
        return operator.index(self.sizes[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), self.sizes, 1)
        return self.head(torch.cat([self.b(p), q], 1)) / self.norm


class _SplitSizesBuffer(_SplitSizesUsedNet):
    """The sizes also split or slice a buffer: that runs while the model is traced."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.register_buffer("gain", torch.linspace(0.5, 1.5, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), self.sizes, 1)
        if self.how == "buffer-split":
            g = torch.split(self.gain, self.sizes)[0]
        else:
            g = self.gain[: self.sizes[0]]
        return self.head(torch.cat([self.b(p), q], 1)) * g.sum()


class _SplitSizesAlsoOther(_SplitSizesUsedNet):
    """The sizes also split something else than these channels: the batch, the rows, or
    channels the engine does not follow (the input's)."""

    def __init__(self, other: str) -> None:
        super().__init__()
        self.other = other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.a(x), self.sizes, 1)
        y = self.head(torch.cat([self.b(p), q], 1))
        if self.other == "input":
            u, v = torch.split(x.repeat(1, 4, 1, 1), self.sizes, 1)
        else:
            u, v = torch.split(y, self.sizes, 0 if self.other == "batch" else 2)
        return y.sum() + u.sum() - v.sum()


_USED = "at a size that forward also uses as a number ('sizes')"


@pytest.mark.parametrize(
    ("how", "channels", "reason"),
    [
        ("scale", {"b": (4, 2)}, "splits the channels at a size that forward also uses as a "
         "number ('sizes')"),
        ("slice", {"b": (4, 2)}, "at a size that forward also uses as a number ('sizes')"),
        ("written", {"a": (12, 10), "b": (4, 2)}, "splits the channels at a size written in "
         "the code"),
        ("factory", {"b": (4, 2)}, _USED),
        ("range", {"b": (4, 2)}, _USED),
        ("index", {"b": (4, 2)}, _USED),
        ("property", {"b": (4, 2)}, _USED),
        ("buffer-split", {"b": (4, 2)}, _USED),
        ("buffer-slice", {"b": (4, 2)}, _USED),
        ("batch", {"b": (4, 2)}, _USED),
        ("rows", {"b": (4, 2)}, _USED),
        ("input", {"b": (4, 2)}, _USED),
    ],
)  # fmt: skip
def test_split_sizes_used_otherwise_keep_their_channels(
    how: str, channels: dict[str, tuple[int, int]], reason: str
) -> None:
    """Found by fuzzing: sizes that also split the batch, rows or the input, or that
    ``range``, ``operator.index`` (in forward or a property), a tensor factory or a split of
    a buffer used while the model was traced, were
    rewritten for the channels' split, which broke those other uses."""
    make = {
        "scale": _SplitSizesScaled,
        "slice": _SplitSizesSliced,
        "written": _SplitSizesWritten,
        "factory": _SplitSizesFactory,
        "range": _SplitSizesRange,
        "index": _SplitSizesIndex,
        "property": _SplitSizesProperty,
    }
    if how in make:
        model = make[how]().eval()
    else:
        other = _SplitSizesBuffer if how.startswith("buffer") else _SplitSizesAlsoOther
        model = other(how).eval()
    x = torch.randn(12, 3, 12, 12)
    _, result = _prune_half_zeroed(model, x)
    assert result.channels == channels
    assert model.sizes == ([2, 8] if how == "written" else [4, 8])
    assert any(s.startswith("a (") and reason in s for s in result.skipped), result.skipped


class _MixedConvUncut(nn.Module):
    """A MixedConv's split inside the slices of a grouped convolution or of GroupNorm's
    groups (6 channels each), which the engine prunes as wholes."""

    def __init__(self, grouped: bool) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 12, 1)
        self.g = nn.Conv2d(12, 12, 1, groups=2) if grouped else nn.GroupNorm(2, 12)
        self.mix, self.head = MixedConv([4, 8]), nn.Conv2d(12, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(F.relu(self.g(self.a(x))))).mean((2, 3))


@pytest.mark.parametrize("grouped", [True, False])
def test_splits_inside_pieces_pruned_as_one_keep_their_channels(grouped: bool) -> None:
    """Found by fuzzing: a split inside pieces pruned as one (a grouped convolution's
    slices, GroupNorm's groups) lost a part's channels elsewhere than its new sizes said,
    and the pruned model computed something else."""
    model = _MixedConvUncut(grouped).eval()
    _, result = _prune_half_zeroed(model, torch.randn(2, 3, 6, 6))
    assert model.mix.splits == [4, 8] and not any(n.startswith("mix.") for n in result.channels)
    reason = "splits the channels where they cannot be cut"
    assert any(reason in s for s in result.skipped), result.skipped


def test_group_norm_streams_split_at_zero_padded_shortcuts() -> None:
    """Found by a review: with GroupNorm instead of BatchNorm, a CIFAR ResNet's residual
    streams were kept whole (the split at the zero-padded channels was refused), with a
    reason that did not name the GroupNorm. Cuts on group boundaries are allowed now; a
    chunk that would cut a group says so."""
    model = _cifar_resnet20_group_norm().eval()
    result = prune(model, torch.randn(2, 3, 8, 8), amount=0.5, criterion="l1")
    assert "layer2.0.conv2" in result.channels and "layer3.2.conv2" in result.channels

    class ChunkAfterNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.g, self.fc = nn.Conv2d(3, 12, 1), nn.GroupNorm(2, 12), nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = self.g(self.c(x)).chunk(4, 1)[:2]
            return self.fc(torch.cat([a, b], 1).mean((2, 3)))

    skipped = trace_graph(ChunkAfterNorm().eval(), torch.randn(1, 3, 4, 4)).skipped()
    assert any("would split blocks of 6 channels (GroupNorm" in reason for reason in skipped)


def test_timm_same_padding_convolutions_prune_exactly() -> None:
    """timm's Conv2dSame pads with ``pad_same`` (an ``if`` on the input's size, which fx cannot
    trace) and calls ``F.conv2d`` on its own weight after reading ``weight.shape[-2:]``. Before:
    every ``tf_*`` timm model failed to trace."""
    conv2d_same = pytest.importorskip("timm.layers.conv2d_same")
    same = conv2d_same.Conv2dSame
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
        same(8, 8, 3, stride=2, groups=8), nn.BatchNorm2d(8), nn.ReLU(),  # depthwise
        same(8, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1),
    ).eval()  # fmt: skip
    _randomise_norms(model)
    removed, result = _prune_half_zeroed(model, torch.randn(2, 3, 9, 9))
    assert result.channels == {"0": (8, 4), "3": (8, 4), "6": (6, 3)} and removed == 7
    assert (model[3].groups, model[3].weight.shape[0], model[6].in_channels) == (4, 4, 4)
