"""Trace a model into channel groups: the channels that must be pruned together.

The model is traced with :mod:`torch.fx` and run once on example inputs. Every tensor in the
graph carries a :class:`Channels` description of which prunable channels lie along one of its
dimensions. Convolutions and linear layers create new channel *spaces* (their filters);
residual additions and multiplications unify spaces; concatenations lay spaces side by side;
``flatten`` into a ``Linear`` gives each channel a block of features. Any operation the tracer
does not understand on a tracked dimension *blocks* the spaces involved: their channels are
kept, and the reason is recorded, so the engine never produces a broken model.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import math
import operator
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.operator_schemas import get_signature_for_torch_op
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune
from torch.nn.utils.weight_norm import WeightNorm
from torch.overrides import TorchFunctionMode

from netsurgeon.errors import TraceError, first_line
from netsurgeon.modes import kept_buffers, kept_modes
from netsurgeon.pruning.sources import SourceUses
from netsurgeon.pruning.stats import MacCounter, as_input_tuple
from netsurgeon.pruning.surgery import SIZE_ATTRIBUTES

__all__ = [
    "ChannelGroup",
    "Channels",
    "ConsumerRecord",
    "PruningGraph",
    "Segment",
    "output_shapes",
    "register_passthrough",
    "trace_graph",
]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Their weights are (in, out / groups, *kernel): input channels first.
_CONV_TRANSPOSE_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INSTANCE_NORM_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
# Recurrent layers and cells: their first layer's input features can be pruned.
_RECURRENT_TYPES = (nn.RNNBase, nn.RNNCellBase)
# The layers surgery resizes (their channel counts are surgery.SIZE_ATTRIBUTES).
_RESIZED_TYPES = (
    *_CONV_TYPES, *_CONV_TRANSPOSE_TYPES, nn.Linear, *_BN_TYPES, *_INSTANCE_NORM_TYPES, nn.PReLU,
    nn.GroupNorm, *_RECURRENT_TYPES, nn.LayerNorm,
)  # fmt: skip

# The weights of a recurrent layer (or cell) that read its input features.
_INPUT_WEIGHTS = frozenset({"weight_ih_l0", "weight_ih_l0_reverse", "weight_ih"})

# Functional calls whose tensors may be a layer's own, as in the forward of a subclass that
# adds an activation or a padding (timm's BatchNormAct2d, GroupNormAct, Linear, Conv2dSame): the
# layer types, and each tensor's argument position by name. Such a call counts as a call of
# that layer, which surgery resizes.
_FUNCTIONAL_LAYERS: dict[Any, tuple[tuple[type[nn.Module], ...], dict[str, int]]] = {
    F.batch_norm: (_BN_TYPES, {"running_mean": 1, "running_var": 2, "weight": 3, "bias": 4}),
    F.group_norm: ((nn.GroupNorm,), {"weight": 2, "bias": 3}),
    F.layer_norm: ((nn.LayerNorm,), {"weight": 2, "bias": 3}),
    F.linear: ((nn.Linear,), {"weight": 1, "bias": 2}),
    F.conv1d: ((nn.Conv1d,), {"weight": 1, "bias": 2}),
    F.conv2d: ((nn.Conv2d,), {"weight": 1, "bias": 2}),
    F.conv3d: ((nn.Conv3d,), {"weight": 1, "bias": 2}),
}

# The attribute that holds the output channel count of each type in _FUNCTIONAL_LAYERS.
_OUTPUT_SIZES = ("out_channels", "out_features", "num_features", "num_channels")

# Modules that act on each channel independently and keep the tensor's layout.
_PASSTHROUGH_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)  # fmt: skip
# Modules that act on the trailing spatial dimensions only (dimension count in the value).
_SPATIAL_MODULES: dict[type[nn.Module], int] = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
    nn.LPPool1d: 1, nn.LPPool2d: 2, nn.Upsample: 0, nn.UpsamplingNearest2d: 2,
    nn.UpsamplingBilinear2d: 2, nn.ZeroPad2d: 2, nn.ReflectionPad2d: 2,
    nn.ReplicationPad2d: 2, nn.ConstantPad2d: 2, nn.ZeroPad1d: 1, nn.ConstantPad1d: 1,
}  # fmt: skip

_UNARY_FUNCTIONS: set[Any] = {
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.sigmoid, F.tanh, F.softplus, F.dropout,
    F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.relu, torch.relu_,
    torch.sigmoid, torch.tanh, torch.clamp, torch.clip, torch.exp, torch.abs, torch.neg,
    torch.sqrt, torch.square, torch.nn.functional.logsigmoid,
}  # fmt: skip
_UNARY_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip",
    "clamp_min", "clamp_max", "exp", "abs", "neg", "sqrt", "square", "contiguous", "clone",
    "detach", "float", "half", "double", "bfloat16", "to", "type", "type_as", "cpu", "cuda",
    "requires_grad_", "hardswish", "sqrt_", "exp_", "abs_",
}  # fmt: skip
_SPATIAL_FUNCTIONS: dict[Any, int] = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2,
    F.avg_pool3d: 3, F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2,
    F.adaptive_avg_pool3d: 3, F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2,
    F.adaptive_max_pool3d: 3, F.interpolate: 0, F.upsample: 0, F.lp_pool2d: 2,
}  # fmt: skip
_ELEMENTWISE_FUNCTIONS: set[Any] = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
    torch.maximum, torch.minimum, torch.where, torch.true_divide,
}  # fmt: skip
_ELEMENTWISE_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum",
    "masked_fill", "masked_fill_", "expand_as",
}  # fmt: skip
# Calls that return shapes or other non-tensor facts; they never constrain channels.
_NON_TENSOR_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "__len__"}
_NON_TENSOR_FUNCTIONS: set[Any] = {len, torch.numel}
# Tensor attributes that are facts about it, not tensors (``x.T``, ``x.mT`` are tensors).
_TENSOR_FACTS = {
    "shape", "dtype", "device", "ndim", "layout", "is_cuda", "is_sparse", "requires_grad",
    "is_leaf", "names",
}  # fmt: skip
_CLAMPS = {torch.clamp, torch.clip, "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_max"}
# Calls whose tensors passed by keyword the analysis follows (it aligns all their operands),
# by node kind: a module's name could be a method's.
_KEYWORD_TENSORS_FOLLOWED: dict[str, set[Any]] = {
    "call_function": _ELEMENTWISE_FUNCTIONS | _CLAMPS,
    "call_method": _ELEMENTWISE_METHODS | _CLAMPS,
    "call_module": set(),
}

# Arithmetic on Python numbers: a channel count stays one through these.
_COUNT_ARITHMETIC: set[Any] = {
    operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
    operator.mod, operator.pow, operator.neg,
}  # fmt: skip
# Calls that take channel counts as sizes of what they build or reshape.
_SHAPE_METHODS = {
    "view", "reshape", "expand", "repeat", "unflatten", "new_zeros", "new_ones", "new_empty",
    "new_full",
}  # fmt: skip
_SHAPE_FUNCTIONS: set[Any] = {torch.reshape, torch.zeros, torch.ones, torch.empty, torch.full}
# Methods whose result takes only the dtype and device of the tensor they are called on.
_NEW_TENSOR_METHODS = {"new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"}
# Functions whose result has the shape of their tensor (its channels), not its values.
_LIKE_FUNCTIONS: set[Any] = {
    torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like,
    torch.randn_like,
}  # fmt: skip
# Python operators and builtins on tensors, by the ATen operator they run.
_OPERATOR_ATEN: dict[Any, str] = {
    operator.pow: "pow", operator.ipow: "pow", operator.neg: "neg", operator.pos: "positive",
    operator.abs: "abs", abs: "abs", operator.mod: "remainder", operator.lt: "lt",
    operator.le: "le", operator.gt: "gt", operator.ge: "ge", operator.eq: "eq",
    operator.ne: "ne", operator.and_: "bitwise_and", operator.or_: "bitwise_or",
    operator.xor: "bitwise_xor", operator.invert: "bitwise_not",
}  # fmt: skip
# Element-wise functions written in Python, which no single ATen operator runs.
_PYTHON_POINTWISE: set[Any] = {
    F.softsign, F.tanhshrink, F.threshold, getattr(F, "_threshold", F.threshold), F.logsigmoid,
}  # fmt: skip


@functools.cache
def _pointwise_aten(name: str) -> bool:
    """Whether every tensor overload of ATen operator ``name`` (taking a tensor, returning
    one, no ``out=``) is tagged pointwise: element-wise, broadcasting its tensor operands,
    as ``torch.erf``, ``x ** 2`` or ``x.rsqrt()``. Python-number overloads do not count."""
    try:  # torch's operator registry: if its layout ever changes, nothing is followed
        packet = getattr(torch.ops.aten, name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            return False
        tagged = []
        for overload in packet.overloads():
            op = getattr(packet, overload)
            schema = op._schema
            if any(a.is_out for a in schema.arguments) or not any(
                str(a.type) == "Tensor" for a in schema.arguments
            ):
                continue
            if len(schema.returns) != 1 or str(schema.returns[0].type) != "Tensor":
                continue
            tagged.append(torch.Tag.pointwise in op.tags)
    except (AttributeError, RuntimeError, TypeError):
        return False
    return bool(tagged) and all(tagged)


def _pointwise_function(fn: Any) -> bool:
    """Whether ``fn`` (a traced call's target) computes element-wise on its tensors: a torch
    function or Python operator that runs a pointwise ATen operator, or one of a few
    element-wise functions written in Python."""
    if fn in _PYTHON_POINTWISE:
        return True
    if fn in _OPERATOR_ATEN:
        return _pointwise_aten(_OPERATOR_ATEN[fn])
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str):
        return False
    torch_own = any(getattr(space, name, None) is fn for space in (torch, F, torch.special))
    return torch_own and _pointwise_aten(name)


def _creates(n: fx.Node) -> bool:
    """Whether ``n`` builds a new tensor of a shape it is given (``x.new_zeros(b, c)``)."""
    return (n.op == "call_method" and n.target in _NEW_TENSOR_METHODS) or (
        n.op == "call_function" and n.target in _SHAPE_FUNCTIONS and n.target is not torch.reshape
    )


def _reshapes(n: fx.Node) -> bool:
    """Whether ``n`` views or reshapes its first argument to a shape it is given."""
    return (n.op == "call_method" and n.target in ("view", "reshape", "expand", "unflatten")) or (
        n.op == "call_function" and n.target is torch.reshape
    )


def _takes_shape(n: fx.Node) -> bool:
    return (n.op == "call_method" and n.target in _SHAPE_METHODS) or (
        n.op == "call_function" and n.target in _SHAPE_FUNCTIONS
    )


# Extra functions registered by users (or below) as channel-wise pass-through ops.
_USER_PASSTHROUGH: set[Any] = set()


def register_passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Declare that ``fn(x, ...)`` acts on each channel of ``x`` independently.

    Use it for a function that :func:`torch.fx.wrap` keeps opaque, so that the tracer can see
    through it instead of keeping the channels it touches. Returns ``fn`` (usable as a decorator).
    """
    _USER_PASSTHROUGH.add(fn)
    return fn


def _library_spatial_functions() -> dict[Any, int]:
    """Functions of model libraries, loaded already, that act on the trailing spatial
    dimensions only (dimension count in the value) and that fx cannot trace: the tracer keeps
    them single calls. timm's ``pad_same`` (the "SAME" padding of its ``Conv2dSame``) computes
    its padding from the input's size with an ``if``."""
    padding = sys.modules.get("timm.layers.padding")
    pad_same = getattr(padding, "pad_same", None) if padding is not None else None
    return {pad_same: 2} if pad_same is not None else {}


def _library_passthrough_modules() -> tuple[type[nn.Module], ...]:
    """Module types of model libraries, loaded already, that act on each channel on its own
    and are identities in eval mode: timm's stochastic depth (``DropPath``) and
    ``DropBlock2d``. They draw their masks under ``if self.training`` (DropBlock2d with
    control flow on the input's values, which fx cannot trace): the tracer keeps them single
    calls, which the criteria then run in eval mode."""
    drop = sys.modules.get("timm.layers.drop")
    if drop is None:
        return ()
    found = (getattr(drop, name, None) for name in ("DropPath", "DropBlock2d"))
    return tuple(kind for kind in found if isinstance(kind, type))


def _is_stochastic_depth(fn: Any) -> bool:
    """Whether ``fn`` is torchvision's stochastic depth, which torchvision wraps for fx; it
    scales whole samples, so it is channel-wise. Looked up only where torchvision is loaded
    already (a model that calls it has loaded it): importing torchvision takes a second."""
    ops = sys.modules.get("torchvision.ops")
    return ops is not None and fn is getattr(ops, "stochastic_depth", None)


@dataclass(frozen=True)
class Segment:
    """``length`` channels of channel space ``space``, starting at index ``start``."""

    space: int
    start: int
    length: int


@dataclass(frozen=True)
class Channels:
    """The prunable channels that lie along dimension ``dim`` of a tensor.

    Position ``p`` along ``dim`` belongs to channel ``p // repeat`` of the concatenation of
    ``segments``: after ``flatten``, each channel owns a block of ``repeat`` features. With
    ``fold`` > 1 (after a ``PixelShuffle``), that "channel" is a block of ``fold`` consecutive
    channels of the concatenation, which are pruned together.
    """

    dim: int
    segments: tuple[Segment, ...]
    repeat: int = 1
    fold: int = 1

    @property
    def size(self) -> int:
        """Number of positions along ``dim``."""
        return sum(s.length for s in self.segments) * self.repeat // self.fold


@dataclass
class _Space:
    id: int
    size: int
    parent: int
    group: int = 1  # filters must be pruned in equal numbers from `group` equal slices
    block: int = 1  # filters go in whole aligned blocks of `block` (GroupNorm, PixelShuffle)
    min_size: int = 1  # channels to keep at least (2 where a squeeze() would drop the dim)
    blocked: list[str] = field(default_factory=list)
    # A space split into consecutive pieces that are pruned independently (see _Analyzer._split).
    children: list[int] | None = None
    members: list[int] = field(default_factory=list)  # on a root: every space unioned into it

    def keep(self, reason: str) -> None:
        """Record why these channels are kept, once: pieces of one space meet the same calls,
        and repeats would grow with every union (exponentially over a view as 32 groups)."""
        if reason not in self.blocked:
            self.blocked.append(reason)


def _expand(spaces: dict[int, _Space], segments: Iterable[Segment]) -> list[Segment]:
    """Rewrite segments over split spaces as segments over their (unsplit) pieces."""
    out: list[Segment] = []
    stack = list(reversed(list(segments)))
    while stack:
        seg = stack.pop()
        children = spaces[seg.space].children
        if children is None:
            out.append(seg)
            continue
        pieces = []
        offset = 0
        for child in children:
            size = spaces[child].size
            lo, hi = max(seg.start, offset), min(seg.start + seg.length, offset + size)
            if lo < hi:
                pieces.append(Segment(child, lo - offset, hi - lo))
            offset += size
        stack.extend(reversed(pieces))
    return out


@dataclass
class ConsumerRecord:
    """A module whose parameters index the channels of one tensor."""

    name: str
    module: nn.Module
    channels: Channels
    # "input" (conv/linear input), "member" (pruned along its outputs too), or "parameter":
    # ``name`` is then a parameter of ``module`` (a layer scale) cut along ``channels.dim``.
    role: str
    # Entries of ``module``'s tuple attributes that hold a parameter's size (the shape it is
    # viewed to), as (attribute, index): surgery sets them to the new size.
    sizes: tuple[tuple[str, int], ...] = ()


@dataclass
class _MacRecord:
    name: str
    macs: int
    out_space: int | None
    in_channels: Channels | None
    depthwise: bool


@dataclass
class ChannelGroup:
    """Channels that are pruned together, with the same indices everywhere.

    Attributes:
        id: Stable identifier within one :class:`PruningGraph`.
        size: Number of channels.
        sources: Names of the layers whose output filters are these channels.
        divisor: Filters must be removed in equal numbers from ``divisor`` equal slices
            (grouped convolutions), so the kept count is a multiple of it.
        blocked: Why these channels must be kept; empty when the group is prunable.
        slices: ``(source, offset, length)``: which output filters of each source layer form
            the group (all of them unless residual streams were split, as at a channel pad).
        min_size: Channels the group keeps at least, whatever the pruner's ``min_channels``
            (2 where a ``squeeze()`` without a dimension would drop a 1-channel dimension).
        block: Filters are removed in whole aligned blocks of this many channels: the groups
            of a ``GroupNorm``, whose other groups then normalise exactly as before, or the
            channels that a ``PixelShuffle`` folds into one.
    """

    id: int
    size: int
    sources: list[str]
    divisor: int
    blocked: list[str]
    slices: list[tuple[str, int, int]] = field(default_factory=list)
    min_size: int = 1
    block: int = 1

    @property
    def prunable(self) -> bool:
        """Whether any channel of this group may be removed."""
        return not self.blocked

    @property
    def unit(self) -> int:
        """The group keeps a multiple of this many channels (``divisor`` or ``block``)."""
        return math.lcm(self.divisor, self.block)


class PruningGraph:
    """The result of tracing: channel groups and every layer that depends on them."""

    def __init__(
        self,
        model: nn.Module,
        fx_graph: fx.Graph,
        spaces: dict[int, _Space],
        sources: dict[str, tuple[int, nn.Module, str, int]],
        consumers: dict[str, ConsumerRecord],
        macs: list[_MacRecord],
        observe: dict[str, tuple[str, int]],
        norms: dict[str, str],
    ) -> None:
        self.model = model
        self.fx_graph = fx_graph  # run over the model itself (fx.Interpreter's graph=)
        self._spaces = spaces
        self._sources = sources
        self.consumers = consumers
        self._macs = macs
        self.observe = observe
        self.norms = norms
        self.output_shapes: Any = None
        # Sizes kept by modules that split channels at them (module, attribute, index in the
        # attribute or None), each with the channels of one part it sizes.
        self.split_sizes: dict[tuple[str, str, int | None], Channels] = {}
        self.total_macs = 0  # every MAC of one forward pass, as MacCounter counts
        self.mode_sensitive = False  # the forward differs between train and eval mode
        self.notes: list[str] = []
        self.groups: dict[int, ChannelGroup] = {}
        for name, (space, _module, _node, _dim) in sources.items():
            offset = 0
            for seg in self.expand([Segment(space, 0, spaces[space].size)]):
                root = self.find(seg.space)
                group = self.groups.get(root)
                if group is None:
                    info = spaces[root]
                    group = ChannelGroup(
                        root, info.size, [], info.group, list(info.blocked),
                        min_size=info.min_size, block=info.block,
                    )  # fmt: skip
                    self.groups[root] = group
                if name not in group.sources:
                    group.sources.append(name)
                group.slices.append((name, offset, seg.length))
                offset += seg.length

    @property
    def graph_module(self) -> fx.GraphModule:
        """The traced graph compiled into a ``torch.fx.GraphModule`` over the model, for
        inspection (``.code``); built on each access. The engine runs :attr:`fx_graph` over
        the model itself, without compiling it."""
        return fx.GraphModule(self.model, self.fx_graph, type(self.model).__name__)

    def expand(self, segments: Iterable[Segment]) -> list[Segment]:
        """Segments over unsplit channel spaces."""
        return _expand(self._spaces, segments)

    def find(self, space: int) -> int:
        """The root id of a channel space."""
        while self._spaces[space].parent != space:
            parent = self._spaces[space].parent
            self._spaces[space].parent = self._spaces[parent].parent
            space = parent
        return space

    def source_group(self, name: str) -> int:
        """The group id of the (first) output channels of source layer ``name``."""
        space = self._sources[name][0]
        return self.find(self.expand([Segment(space, 0, self._spaces[space].size)])[0].space)

    def source_channels(self, name: str) -> Channels:
        """The output channels of source layer ``name``."""
        space, _module, _node, dim = self._sources[name]
        return Channels(dim, (Segment(space, 0, self._spaces[space].size),))

    def source_module(self, name: str) -> nn.Module:
        """The module of source layer ``name``."""
        return self._sources[name][1]

    @property
    def source_names(self) -> list[str]:
        """Names of every layer that creates channels (conv and linear layers)."""
        return list(self._sources)

    def prunable_groups(self) -> list[ChannelGroup]:
        """Groups that may lose channels."""
        return [g for g in self.groups.values() if g.prunable]

    def skipped(self) -> list[str]:
        """One human-readable reason per group that must keep its channels."""
        reasons = []
        for group in self.groups.values():
            if group.blocked:
                names = ", ".join(group.sources[:4]) + (" ..." if len(group.sources) > 4 else "")
                unique = list(dict.fromkeys(group.blocked))
                reasons.append(f"{names} ({group.size} channels) kept: {'; '.join(unique[:3])}")
        return reasons + self.notes

    def positions(self, channels: Channels, keep: dict[int, torch.Tensor]) -> torch.Tensor | None:
        """Positions along ``channels.dim`` that remain when groups keep ``keep[group]``.

        Returns ``None`` when no group of these channels loses anything.
        """
        segments = self.expand(channels.segments)
        roots = [self.find(s.space) for s in segments]
        if not any(r in keep for r in roots):
            return None
        parts = []
        offset = 0
        for seg, root in zip(segments, roots, strict=True):
            kept = keep.get(root)
            if kept is None:
                local = torch.arange(seg.length)
            else:
                inside = kept[(kept >= seg.start) & (kept < seg.start + seg.length)]
                local = inside - seg.start
            parts.append(local + offset)
            offset += seg.length
        idx = torch.cat(parts)
        if channels.fold > 1:  # whole blocks of `fold` channels (a PixelShuffle's) are kept
            blocks = idx.reshape(-1, channels.fold)
            idx = blocks[:, 0] // channels.fold
            if not torch.equal(blocks, idx[:, None] * channels.fold + torch.arange(channels.fold)):
                raise RuntimeError("internal error: a PixelShuffle's block was cut apart")
        if channels.repeat > 1:
            r = channels.repeat
            idx = (idx[:, None] * r + torch.arange(r)[None, :]).reshape(-1)
        return idx

    def predicted_macs(self, kept_counts: dict[int, int]) -> int:
        """MACs of the traced convs and linears when groups keep ``kept_counts[group]``."""
        total = 0.0
        for rec in self._macs:
            frac = 1.0
            if rec.out_space is not None:
                size = self._spaces[rec.out_space].size
                kept = 0.0
                for seg in self.expand([Segment(rec.out_space, 0, size)]):
                    root = self.find(seg.space)
                    kept += (
                        seg.length
                        * kept_counts.get(root, self._spaces[root].size)
                        / (self._spaces[root].size)
                    )
                frac *= kept / size
            if rec.in_channels is not None:
                kept = 0
                for seg in self.expand(rec.in_channels.segments):
                    root = self.find(seg.space)
                    share = kept_counts.get(root, self._spaces[root].size) / self._spaces[root].size
                    kept += seg.length * share
                frac *= kept / sum(s.length for s in rec.in_channels.segments)
            total += rec.macs * frac
        return round(total)

    @property
    def traced_macs(self) -> int:
        """MACs of the traced convs and linears of the unpruned model."""
        return sum(rec.macs for rec in self._macs)


class _Tracer(fx.Tracer):
    """An fx tracer that remembers which submodule it is inside, for error messages, and
    records the modules named in ``leaves`` as single calls instead of tracing into them.

    It names the parameters and buffers that forward reads from a table: fx searches the
    model's ``named_parameters()`` / ``named_buffers()`` on every read, which made tracing
    quadratic in the model's size (a third of pruning timm's efficientnet_b0, whose norms
    read their four tensors in their own forward).
    """

    def __init__(self, leaves: Iterable[str] = ()) -> None:
        super().__init__(autowrap_functions=tuple(_library_spatial_functions()))
        self.stack: list[str] = []
        self.leaves = frozenset(leaves)
        self.library_leaves = _library_passthrough_modules()
        # id -> (qualified name, tensor), made at the first read of a trace: the first name,
        # as fx's search finds; the tensor is held, so that its id cannot be reused meanwhile.
        self.tensor_names: dict[int, tuple[str, torch.Tensor]] | None = None

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        self.tensor_names = None
        return super().trace(root, concrete_args)

    def _name_of(self, tensor: Any) -> str | None:
        if self.tensor_names is None:
            self.tensor_names = {}
            if isinstance(self.root, nn.Module):
                named = itertools.chain(self.root.named_parameters(), self.root.named_buffers())
                for name, value in named:
                    self.tensor_names.setdefault(id(value), (name, value))
        entry = self.tensor_names.get(id(tensor))
        return entry[0] if entry is not None and entry[1] is tensor else None

    def create_arg(self, a: Any) -> Any:
        name = self._name_of(a) if isinstance(a, torch.Tensor) else None
        if name is not None:
            return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        name = self._name_of(attr_val) if isinstance(attr_val, nn.Parameter) else None
        if name is None:
            return super().getattr(attr, attr_val, parameter_proxy_cache)
        if name not in parameter_proxy_cache:
            parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
        return parameter_proxy_cache[name]

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            module_qualified_name in self.leaves
            or isinstance(m, self.library_leaves)
            or super().is_leaf_module(m, module_qualified_name)
        )

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        self.stack.append(self.path_of_module(m))
        result = super().call_module(m, forward, args, kwargs)
        self.stack.pop()  # left in place on failure: it then names the innermost module
        return result


def _positional_names(target: Any) -> tuple[tuple[str, ...], ...]:
    """The names of ``target``'s positional parameters, one tuple per known signature."""
    if isinstance(target, nn.Module):
        return _names_of(_signatures(target.forward))
    try:
        return _cached_function_names(target)
    except TypeError:  # an unhashable callable
        return _function_names(target)


def _function_names(function: Any) -> tuple[tuple[str, ...], ...]:
    return _names_of(list(get_signature_for_torch_op(function) or []) or _signatures(function))


# A model calls the same functions many times (F.relu(x, inplace=True)), and torch's schemas
# are slow to match.
_cached_function_names = functools.cache(_function_names)


def _signatures(function: Any) -> list[inspect.Signature]:
    try:
        return [inspect.signature(function)]
    except (TypeError, ValueError):  # a builtin without a signature
        return []


def _names_of(signatures: list[inspect.Signature]) -> tuple[tuple[str, ...], ...]:
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(
        tuple(p.name for p in s.parameters.values() if p.kind in positional) for s in signatures
    )


def _keywords_to_positions(model: nn.Module, graph: fx.Graph) -> None:
    """Pass by position the leading arguments that ``forward`` passed by keyword.

    The analysis reads a call's tensors by position (``torch.sigmoid(input=x)`` and
    ``self.bn(input=x)`` would otherwise look as if they carried no channels).
    """
    for n in graph.nodes:
        if not n.kwargs or n.op not in ("call_function", "call_module"):
            continue
        target = model.get_submodule(str(n.target)) if n.op == "call_module" else n.target
        options = _positional_names(target)
        args, kwargs = list(n.args), dict(n.kwargs)
        while options:
            at = len(args)
            names = {names[at] if at < len(names) else None for names in options}
            name = names.pop()
            if names or name is None or name not in kwargs:  # overloads disagree, or done
                break
            args.append(kwargs.pop(name))
        if len(args) != len(n.args):
            n.args, n.kwargs = tuple(args), kwargs


class _WatchedCount(int):
    """A layer's channel count that records, while the model is traced, being used as a
    number: fx keeps only the result, which pruning would silently change."""

    reads: dict[str, str]
    label: str
    index: int | None  # its place in a tuple attribute
    # A size kept by a module that is no layer (``self.splits`` of timm's MixedConv2d), whose
    # uses are recorded by its label: surgery may rewrite it where it only sizes a split.
    sizes_split: bool

    def __new__(
        cls,
        value: int,
        reads: dict[str, str],
        label: str,
        index: int | None = None,
        *,
        sizes_split: bool = False,
    ) -> _WatchedCount:
        count = super().__new__(cls, value)
        count.reads, count.label, count.index = reads, label, index
        count.sizes_split = sizes_split
        return count

    @property
    def entry(self) -> tuple[str, str, int | None]:
        """Where the count is kept: (module, attribute, index in the attribute or None)."""
        owner, _, attr = self.label.rpartition(".")
        return owner, attr, self.index

    def __reduce__(self) -> Any:  # copies and pickles are plain ints
        return int, (int(self),)


def _counts_given_to_calls(graph: fx.Graph, reads: dict[str, str]) -> None:
    """Record in ``reads`` the layers whose channel count ``forward`` passed as is to a traced
    call other than a view or reshape (``y * self.conv.out_channels``: the tensor's operator
    runs first, so the count's own methods never see it, and fx keeps the number), including
    one that builds a tensor of that size (``y.new_zeros(n, self.conv.out_channels)``)."""

    def visit(value: Any) -> Any:
        if isinstance(value, _WatchedCount) and not value.sizes_split:
            _record_use(value)
        return value

    def visit_size(value: Any) -> Any:
        if isinstance(value, _WatchedCount) and value.sizes_split:
            _record_use(value)
        return value

    for n in graph.nodes:
        # A split's sizes are what surgery rewrites; any other use keeps them. A slice of
        # the channels at one of them is a split too: the analysis decides (_getitem).
        if (
            n.op in ("call_function", "call_method")
            and not _splits(n)
            and n.target is not operator.getitem
        ):
            fx.node.map_aggregate((n.args, n.kwargs), visit_size)
        if n.op == "call_function" and n.target in _FUNCTIONAL_LAYERS:
            continue  # a layer's own call (F.group_norm(x, self.num_groups, ...)): checked there
        if n.op in ("call_function", "call_method") and (not _takes_shape(n) or _creates(n)):
            fx.node.map_aggregate((n.args, n.kwargs), visit)


_USED_ELSEWHERE = "forward also uses it as a number"


def _record_use(count: _WatchedCount) -> None:
    """Record that forward used ``count`` as a number: a layer's count keeps its layer's
    channels, a size a module keeps keeps its value."""
    if count.sizes_split:
        count.reads.setdefault(count.label, _USED_ELSEWHERE)
    else:
        owner, _, attr = count.label.rpartition(".")
        count.reads.setdefault(owner, f"has its {attr} used as a number in forward")


class _TraceTimeCalls(TorchFunctionMode):
    """Torch calls that run while the model is traced because no traced value takes part
    (``torch.split(self.buffer, self.sizes)``, ``self.buffer[:self.a]``,
    ``torch.zeros(self.conv.out_channels)``): fx keeps only their result, a constant that
    pruning would not change, so the counts given to them are uses."""

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        counts: list[_WatchedCount] = []
        traced = False
        # Looked through, not rebuilt as fx's map_aggregate does: a namedtuple of one's own
        # may not be rebuilt from its fields.
        todo: list[Any] = [args, kwargs]
        while todo:
            a = todo.pop()
            if isinstance(a, fx.Proxy):
                traced = True
            elif isinstance(a, _WatchedCount):
                counts.append(a)
            elif isinstance(a, list | tuple):
                todo.extend(a)
            elif isinstance(a, dict):
                todo.extend(a.values())
            elif isinstance(a, slice):
                todo.extend((a.start, a.stop, a.step))
        if not traced:
            for count in counts:
                _record_use(count)
        return func(*args, **kwargs)


def _kept_sizes(value: Any) -> list[_WatchedCount]:
    """The sizes kept by modules (not layers) within a call's arguments."""
    found: list[_WatchedCount] = []

    def visit(a: Any) -> Any:
        if isinstance(a, _WatchedCount) and a.sizes_split:
            found.append(a)
        return a

    fx.node.map_aggregate(value, visit)
    return found


def _splits(n: fx.Node) -> bool:
    """Whether ``n`` splits a tensor at sizes it is given (``torch.split(x, [a, b])``)."""
    return (n.op == "call_method" and n.target == "split") or (
        n.op == "call_function" and n.target is torch.split
    )


def _watching(name: str) -> Callable[..., Any]:
    plain = getattr(int, name)

    def method(self: _WatchedCount, *args: Any) -> Any:
        _record_use(self)
        return plain(int(self), *(int(a) if isinstance(a, _WatchedCount) else a for a in args))

    return method


for _name in (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__",
    "__rpow__", "__neg__", "__abs__", "__float__", "__bool__", "__lt__", "__le__", "__gt__",
    "__ge__", "__eq__", "__ne__", "__divmod__", "__rdivmod__",
):  # fmt: skip
    setattr(_WatchedCount, _name, _watching(_name))
_WatchedCount.__hash__ = int.__hash__  # type: ignore[method-assign]


class _CountWatch:
    """Within ``with``, the channel counts of the layers surgery resizes are
    :class:`_WatchedCount` s; :attr:`reads` maps each layer whose count forward used as a
    number to the reason it must keep its channels."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.reads: dict[str, str] = {}
        # The labels of the sizes kept by other modules that forward used other than to
        # split channels at, each with the reason.
        self.split_reads: dict[str, str] = {}
        self._saved: list[tuple[nn.Module, str, int | tuple[int, ...] | list[int]]] = []

    def __enter__(self) -> _CountWatch:
        for name, module in self.model.named_modules():
            if not isinstance(module, _RESIZED_TYPES):
                continue
            for attr in SIZE_ATTRIBUTES:
                if attr == "hidden_size" and not isinstance(module, nn.RNNBase):
                    continue  # a cell's hidden units are never cut
                value = module.__dict__.get(attr)
                label = f"{name}.{attr}"
                if type(value) is int:
                    self._saved.append((module, attr, value))
                    module.__dict__[attr] = _WatchedCount(value, self.reads, label)
                elif size_tuple(value):
                    self._saved.append((module, attr, value))  # a LayerNorm's normalized_shape
                    module.__dict__[attr] = tuple(
                        _WatchedCount(v, self.reads, label) for v in value
                    )
        # The shape a layer scale of one's own is viewed to (timm's ``self.shape = (dim, 1,
        # 1)``): surgery rewrites it where forward only views the parameter with it. Only a
        # broadcast shape of its size, so that a tuple meaning something else is not watched.
        for owner, param in _bare_parameters(self.model).values():
            module = self.model.get_submodule(owner)
            size = max(param.shape)
            for attr, value in list(vars(module).items()):
                if (
                    attr[0] != "_"
                    and size_tuple(value)
                    and sorted(value, reverse=True)[:1] == [size]
                    and math.prod(value) == size
                ):
                    self._saved.append((module, attr, value))
                    label = f"{owner}.{attr}" if owner else attr
                    module.__dict__[attr] = tuple(
                        _WatchedCount(v, self.reads, label, i) for i, v in enumerate(value)
                    )
        # Sizes kept by the modules fx traces into (not torch's own, which it calls whole),
        # which forward may split channels at (``torch.split(x, self.splits, 1)``).
        for name, module in self.model.named_modules():
            if isinstance(module, _RESIZED_TYPES) or type(module).__module__.startswith("torch."):
                continue
            for attr, value in list(vars(module).items()):
                if attr[0] == "_":
                    continue
                label = f"{name}.{attr}" if name else attr
                if type(value) is int:
                    self._saved.append((module, attr, value))
                    module.__dict__[attr] = _WatchedCount(
                        value, self.split_reads, label, sizes_split=True
                    )
                elif kept_size(value):
                    self._saved.append((module, attr, value))
                    module.__dict__[attr] = type(value)(
                        _WatchedCount(v, self.split_reads, label, i, sizes_split=True)
                        for i, v in enumerate(value)
                    )
        return self

    def __exit__(self, *exc: object) -> None:
        for module, attr, value in self._saved:
            module.__dict__[attr] = value
        self._saved.clear()


def size_tuple(value: Any) -> bool:
    """Whether ``value`` is a tuple of plain ints (a shape kept in a module)."""
    return type(value) is tuple and all(type(v) is int for v in value)


def kept_size(value: Any) -> bool:
    """Whether ``value`` is an int, or a non-empty list or tuple of ints: a size a module may
    keep (and split channels at)."""
    if type(value) in (list, tuple):
        return bool(value) and all(type(v) is int for v in value)
    return type(value) is int


def _read_from(value: Any, label: str) -> bool:
    """Whether ``value``, an argument of a traced call, is the count ``label`` (``"gn.num_groups"``)
    read from its layer during the trace, rather than a number written in forward."""
    return isinstance(value, _WatchedCount) and value.label == label


def count_attribute(module: nn.Module, size: int) -> str | None:
    """The name of an integer attribute of ``module`` equal to ``size`` (a module of one's own
    that keeps its channel count beside its per-channel parameter), if it has one: cutting the
    parameter would leave that count behind."""
    return next(
        (k for k, v in vars(module).items() if type(v) is int and v == size and k[0] != "_"),
        None,
    )


def _bare_parameters(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """Parameters of modules that surgery does not resize, with one dimension longer than 1
    (a layer scale, ``(C,)`` or ``(C, 1, 1)``), by qualified name, with their owner's name.
    A parameter tied under several names is left out: cutting it would cut them all."""
    names = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    found: dict[str, tuple[str, nn.Parameter]] = {}
    for owner, module in model.named_modules():
        if isinstance(module, _RESIZED_TYPES):
            continue
        for attr, param in module.named_parameters(recurse=False):
            if names[id(param)] == 1 and sum(1 for size in param.shape if size > 1) == 1:
                found[f"{owner}.{attr}" if owner else attr] = (owner, param)
    return found


def _read_parameters(model: nn.Module, graph: fx.Graph) -> dict[str, str]:
    """Layers surgery resizes whose parameters or buffers ``forward`` reads directly (a tied
    weight, ``x * self.bn.weight``): they keep their channels, as cutting would break the read."""
    reads: dict[str, str] = {}
    for n in graph.nodes:
        if n.op != "get_attr":
            continue
        owner, _, attr = str(n.target).rpartition(".")
        module = model.get_submodule(owner) if owner else None
        if not isinstance(module, _RESIZED_TYPES):
            continue
        if attr == "num_batches_tracked" and isinstance(module, _BN_TYPES):
            continue  # a count of batches, not per channel (a BatchNorm subclass updates it)
        if all(
            _is_own_argument(user, n, attr) or _reads_kernel_size(user, module, attr)
            for user in n.users
        ):
            continue  # the layer itself, called functionally: resized with the layer
        reads.setdefault(owner, f"has its tensor '{n.target}' read directly in forward")
    return reads


def _reads_kernel_size(user: fx.Node, module: nn.Module, attr: str) -> bool:
    """Whether ``user`` reads only the spatial sizes of a convolution's weight, as timm's
    ``conv2d_same`` does with ``weight.shape[-2:]``: pruning leaves them as they are."""
    if not (isinstance(module, _CONV_TYPES) and attr == "weight"):
        return False
    if not (user.op == "call_function" and user.target is getattr and user.args[1:] == ("shape",)):
        return False
    ndim = module.weight.dim()  # (out, in / groups, *kernel)
    for read in user.users:
        index = read.args[1] if read.target is operator.getitem and len(read.args) > 1 else None
        if isinstance(index, slice) and index.stop is None and index.step is None:
            index = index.start
        if not isinstance(index, int) or isinstance(index, bool) or not -ndim <= index < ndim:
            return False
        if index % ndim < 2:
            return False
    return True


def _node_arg(n: fx.Node, index: int, key: str, default: Any = None) -> Any:
    """Argument ``index`` of call ``n``, or the keyword ``key`` when fewer were positional."""
    if index < len(n.args):
        return n.args[index]
    return n.kwargs.get(key, default)


def _is_own_argument(user: fx.Node, tensor: fx.Node, attr: str) -> bool:
    """Whether ``user`` is a functional layer that takes ``tensor`` (a layer's ``attr``) as the
    argument of that name, as ``F.batch_norm(x, self.running_mean, ...)`` in the forward of a
    BatchNorm subclass. Whether all its tensors are that layer's is checked where it runs."""
    if user.op != "call_function" or user.target not in _FUNCTIONAL_LAYERS:
        return False
    position = _FUNCTIONAL_LAYERS[user.target][1].get(attr)
    if position is None:
        return False
    given = _node_arg(user, position, attr)
    others = [*user.args[:position], *user.args[position + 1 :]]
    others += [v for k, v in user.kwargs.items() if k != attr]
    return given is tensor and not any(a is tensor for a in others)


class _ModuleTraceError(TraceError):
    """A submodule's forward could not be traced: ``module`` names it, ``reason`` says why."""

    def __init__(self, message: str, module: str, reason: str) -> None:
        super().__init__(message)
        self.module = module
        self.reason = reason


# Submodules called whole at most, after their forward could not be traced (a bound on the
# retraces; each is a full trace).
_MAX_UNTRACEABLE = 64


def _trace_calling_whole(
    model: nn.Module, leaves: frozenset[str], given: int | None = None
) -> tuple[fx.Graph, dict[str, str]]:
    """``model``'s graph, with every submodule whose forward fx cannot trace called whole, as
    ``leaf_modules`` would: its parameters and the channels it takes and gives are kept.

    Returns:
        The graph and, per submodule called whole this way, why it could not be traced.

    Raises:
        TraceError: The model's own forward cannot be traced, or too many submodules fail.
    """
    untraceable: dict[str, str] = {}
    while True:
        try:
            return _trace(model, leaves | untraceable.keys(), given), untraceable
        except _ModuleTraceError as exc:
            if exc.module in untraceable:
                raise
            if len(untraceable) >= _MAX_UNTRACEABLE:
                names = ", ".join(f"'{n}'" for n in list(untraceable)[:3])
                raise TraceError(
                    f"cannot trace {type(model).__name__} with torch.fx: more than "
                    f"{_MAX_UNTRACEABLE} of its submodules fail ({names}, ...; the first: "
                    f"{untraceable[next(iter(untraceable))]}). Pass them as leaf_modules "
                    "(patterns such as 'blocks.*.attn' or their type) to call them whole"
                ) from None
            untraceable[exc.module] = exc.reason


def _defaults_not_given(model: nn.Module, given: int) -> dict[str, Any]:
    """The arguments of ``model.forward`` after the first ``given`` that have a default: the
    model runs with those values (``mask=None``), so they are traced as such rather than as
    tensors (fx would take the ``if mask is not None:`` branch)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # a forward without a signature (a C function)
        return {}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {
        p.name: p.default
        for i, p in enumerate(parameters)
        if i >= given
        and (p.default is None or type(p.default) in (bool, int, float, str))
        and (p.kind in positional or p.kind is inspect.Parameter.KEYWORD_ONLY)
    }


def _trace(model: nn.Module, leaves: Iterable[str] = (), given: int | None = None) -> fx.Graph:
    """``model``'s fx graph, run by interpreters over the model itself: compiling it into a
    ``GraphModule`` (its Python code) cost more than tracing and was never run.

    The modules named in ``leaves`` appear as single calls, not traced into. Where ``given``
    (the number of example inputs) is known, the arguments after them keep their defaults.

    Raises:
        TraceError: fx failed; a :class:`_ModuleTraceError` when it failed inside a submodule's
            forward, naming that submodule.
    """
    tracer = _Tracer(leaves)
    try:
        concrete = _defaults_not_given(model, given) if given is not None else {}
        graph = tracer.trace(model, concrete or None)
    except Exception as exc:
        where = tracer.stack[-1] if tracer.stack else ""
        place = (
            f"module '{where}' ({type(model.get_submodule(where)).__name__})"
            if where
            else (f"the forward of {type(model).__name__}")
        )
        # fx's own TraceError is control flow on a traced value; anything else is a call fx
        # cannot record (torch.zeros(x.size(0), ...)), which torch.fx.wrap can keep whole.
        fix = (
            "make that forward free of data-dependent control flow"
            if isinstance(exc, fx.proxy.TraceError)
            else "rewrite the failing call in a form torch.fx can trace (x.new_zeros(x.shape) "
            "for torch.zeros(x.size(0), ...); torch.fx.wrap keeps a function whole)"
        )
        advice = [
            *([f"pass leaf_modules=['{where}'] to keep that module whole"] if where else []),
            "prune a traceable sub-module instead"
            + (f" (one without '{where}')" if where else " (for example model.features)"),
            fix,
        ]
        listed = ", ".join(advice[:-1]) + f", or {advice[-1]}"
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        message = (
            f"cannot trace {type(model).__name__} with torch.fx: {place} failed ({reason}). "
            f"{listed[0].upper()}{listed[1:]}."
        )
        if where:
            raise _ModuleTraceError(message, where, reason) from None
        raise TraceError(message) from None
    _keywords_to_positions(model, graph)
    return graph


def _shape_of(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return [_shape_of(v) for v in value]
    return None


def output_shapes(output: Any) -> Any:
    """The shapes of a model's output, with the same nesting (for before/after checks)."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (list, tuple)):
        return tuple(output_shapes(o) for o in output)
    if isinstance(output, dict):
        return {k: output_shapes(v) for k, v in output.items()}
    return None


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) for v in value)


class _EvalInterpreter(fx.Interpreter):
    """Runs a traced graph as the model runs in eval mode. A trace keeps the training flag
    that functional dropout, batch norm and stochastic depth were given (``training=True``
    from a training-mode trace), which ``model.eval()`` cannot turn off: it is turned off
    here, so a pass neither updates batch-norm statistics nor draws dropout masks. Masks a
    forward draws itself under ``if self.training`` (timm's stochastic depth and DropBlock:
    ``bernoulli_(keep_prob)``) have no flag: they take their mean, so a pass is deterministic
    and, for masks rescaled by ``1 / keep_prob``, computes what eval mode computes."""

    def call_function(self, target: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        if target in _TRAINING_FLAG_FUNCTIONS or _is_stochastic_depth(target):
            args, kwargs = _training_flag_off(target, args, kwargs)
        elif target is torch.bernoulli:
            return _bernoulli_mean(*args, **kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        if target == "bernoulli":
            return _bernoulli_mean(*args, **kwargs)
        if target == "bernoulli_":
            return _bernoulli_mean_(*args, **kwargs)
        return super().call_method(target, args, kwargs)


def _bernoulli_mean(probabilities: torch.Tensor, p: float | None = None, **_: Any) -> torch.Tensor:
    """The mean of ``torch.bernoulli(probabilities[, p])``: the probabilities themselves."""
    if p is not None:
        return torch.full_like(probabilities, p)
    return probabilities.clone()


def _bernoulli_mean_(tensor: torch.Tensor, p: float | torch.Tensor = 0.5, **_: Any) -> torch.Tensor:
    """The mean of ``tensor.bernoulli_(p)``, written in place as the draw would be."""
    if isinstance(p, torch.Tensor):
        return tensor.copy_(p.expand_as(tensor))
    return tensor.fill_(p)


@functools.cache
def _python_signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _training_flag_off(target: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``args`` and ``kwargs`` with an explicit ``training=True`` made False. A batch norm
    without running statistics keeps it: batch statistics are all it has."""
    signature = _python_signature(target)
    if signature is None:
        return args, kwargs
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return args, kwargs
    given = bound.arguments
    if given.get("training") is not True:
        return args, kwargs
    if target is F.batch_norm and (
        given.get("running_mean") is None or given.get("running_var") is None
    ):
        return args, kwargs
    given["training"] = False
    return bound.args, bound.kwargs


class _Analyzer(_EvalInterpreter):
    """Runs the traced graph and derives each tensor's :class:`Channels`."""

    def __init__(
        self,
        model: nn.Module,
        graph: fx.Graph,
        kept: dict[str, str],
        shared: _Analyzer | None = None,
        leaves: Iterable[str] = (),
        untraceable: Iterable[str] = (),
        prune_layer_norms: bool = False,
        split_reads: dict[str, str] | None = None,
    ) -> None:
        super().__init__(model, graph=graph)
        # Labels of sizes kept by modules that forward used other than in a split.
        self.split_reads = split_reads if split_reads is not None else {}
        self.source_uses: SourceUses | None = shared.source_uses if shared else None
        self.sized: list[_WatchedCount] = []  # the sizes the current call splits channels at
        # Each size kept by a module that a split's part has (module, attribute, index),
        # with the parts: surgery sets it to what they keep.
        self.split_entries: dict[tuple[str, str, int | None], list[Channels]] = (
            shared.split_entries if shared else {}
        )
        self.prune_layer_norms = prune_layer_norms
        self.modules = dict(model.named_modules(remove_duplicate=False))
        self.bare_parameters = shared.bare_parameters if shared else _bare_parameters(model)
        # The spaces of those parameters' entries, shared with the other mode's analysis.
        # The space of each per-channel parameter forward reads itself, to its name.
        self.parameter_spaces: dict[int, str] = shared.parameter_spaces if shared else {}
        self.spatial_functions = {**_SPATIAL_FUNCTIONS, **_library_spatial_functions()}
        self.passthrough_modules = _PASSTHROUGH_MODULES + _library_passthrough_modules()
        self.kept = kept  # module name -> why its parameters must not change
        # Those fx traces into (not layers called whole), whose boundaries keep their width.
        self.kept_within = {name for name in kept if name and _traced_into(model, name)}
        self.leaves = frozenset(leaves)  # modules called whole (leaf_modules), not traced into
        self.untraceable = frozenset(untraceable)  # leaves because fx failed inside them
        # Layers whose forward computes the weight it calls its functional form with (weight
        # standardisation): never a source, so named in a note.
        self.computed_weights: dict[str, str] = shared.computed_weights if shared else {}
        # Each entry of a module's tuple that surgery rewrites (module, attribute, index),
        # with the parameters viewed with it: they must keep the same channels.
        self.size_entries: dict[tuple[str, str, int], list[Channels]] = (
            shared.size_entries if shared else {}
        )
        self.info: dict[fx.Node, Any] = {}
        self.shapes: dict[fx.Node, Any] = {}
        # A second trace (the model's other train/eval mode) adds its constraints to the first.
        self.spaces: dict[int, _Space] = shared.spaces if shared else {}
        self.sources: dict[str, tuple[int, nn.Module, str, int]] = shared.sources if shared else {}
        self.consumers: dict[str, ConsumerRecord] = shared.consumers if shared else {}
        # Modules called (at least once) on channels that cannot be pruned, such as the image.
        self.fixed_inputs: set[str] = shared.fixed_inputs if shared else set()
        self.macs: list[_MacRecord] = []
        self.chain_nodes: set[str] = set()  # channel-wise ops that may follow a source
        self.norm_nodes: dict[str, str] = {}  # node name -> module name of a BN-like member
        # Python values that hold channel counts: a count used as a number (a scale such as
        # c ** -0.5) changes when the channels are pruned, so those channels must stay.
        # `sizes`: x.size() or x.shape of a tracked tensor, with its number of dimensions;
        # `counts`: channel counts read from them, and numbers computed from those.
        self.sizes: dict[fx.Node, tuple[Channels, int]] = {}
        self.counts: dict[fx.Node, list[Channels]] = {}
        # Counts that size a view or reshape of a tensor, with that tensor's channels: checked
        # once every channel is tied (finish()).
        self.shaped: list[tuple[fx.Node, list[Channels], Any]] = []

    # ----- channel spaces -------------------------------------------------------------
    def _new_space(self, size: int) -> int:
        sid = len(self.spaces)
        self.spaces[sid] = _Space(sid, size, sid, members=[sid])
        return sid

    def _find(self, sid: int) -> int:
        while self.spaces[sid].parent != sid:
            sid = self.spaces[sid].parent
        return sid

    def _block_space(self, sid: int, reason: str) -> None:
        self._block_segments([Segment(sid, 0, self.spaces[sid].size)], reason)

    def _block_segments(self, segments: Iterable[Segment], reason: str) -> None:
        for seg in _expand(self.spaces, segments):
            self.spaces[self._find(seg.space)].keep(reason)

    def _block(self, info: Any, reason: str) -> None:
        # Only the pieces the channels lie in: a split's other parts are pruned on their own.
        for channels in _iter_channels(info):
            self._block_segments(channels.segments, reason)

    def _constrain(self, sid: int, divisor: int) -> None:
        space = self.spaces[self._find(sid)]
        combined = math.lcm(space.group, divisor)
        if space.size % combined:
            space.keep(f"grouped convolutions need {divisor} equal slices of {space.size} channels")
        else:
            space.group = combined
        self._check_block(space)

    def _constrain_block(self, sid: int, block: int, by: str = "GroupNorm") -> None:
        """Channels of ``sid`` go in whole aligned blocks of ``block``: a GroupNorm's groups
        (``by="GroupNorm"``) or the channels a PixelShuffle folds into one (``"PixelShuffle"``)."""
        space = self.spaces[self._find(sid)]
        combined = math.lcm(space.block, block)
        if combined == space.size and space.size > 1:  # only all or nothing: keep them
            if block != space.size:
                reason = (
                    f"blocks of {space.block} and {block} channels (GroupNorms, PixelShuffles) "
                    f"share these {space.size} channels: they align only as one block"
                )
            elif by == "GroupNorm":
                reason = (
                    f"GroupNorm normalises all {space.size} channels as one group (see "
                    "prune_layer_norms)"
                )
            else:
                reason = f"a PixelShuffle folds all {space.size} channels into one"
            space.keep(reason)
        elif space.size % combined:
            space.keep(
                f"{'GroupNorm groups' if by == 'GroupNorm' else 'PixelShuffle blocks'} of "
                f"{block} channels do not tile these {space.size}"
                if space.block == 1
                else f"blocks of {space.block} and {block} channels (GroupNorms, PixelShuffles) "
                f"do not tile these {space.size} channels together"
            )
        else:
            space.block = combined
        self._check_block(space)

    def _whole_blocks(self, info: Channels, block: int, by: str, holder: str) -> None:
        """Every piece of ``info`` (a layer's channels, as after a U-Net's concatenation) must
        hold whole blocks of ``block`` channels, aligned in the piece and in its layer; then
        each layer loses whole blocks. ``holder`` starts the message where they would not."""
        offset = 0
        pieces = _expand(self.spaces, info.segments)
        for piece in pieces:
            if offset % block or piece.length % block or piece.start % block:
                raise _Unsupported(
                    f"{holder} of {block} channels that mix channels of several layers, or of "
                    "parts of one"
                )
            offset += piece.length
        for piece in pieces:
            self._constrain_block(piece.space, block, by=by)

    def _check_block(self, space: _Space) -> None:
        if space.block > 1 and space.group > 1:
            space.keep("a grouped convolution and a GroupNorm or PixelShuffle share these channels")

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        sa, sb = self.spaces[ra], self.spaces[rb]
        sb.parent = ra
        for reason in sb.blocked:
            sa.keep(reason)
        sa.members.extend(sb.members)
        sa.min_size = max(sa.min_size, sb.min_size)
        self._constrain(ra, sb.group)
        self._constrain_block(ra, sb.block)

    def _split_space(self, sid: int, cuts: list[int], parts: int | None = None) -> str | None:
        """Cut a channel space (and everything unioned with it) into consecutive pieces.

        Pieces are pruned independently. This is how a residual stream meets a zero-padded
        shortcut: the padded channels are fixed, the others follow the narrower stream.

        Args:
            sid: The space.
            cuts: Where to cut it.
            parts: Set where the caller then unions ``parts`` equal pieces of the space with
                each other (ResNeSt's radix splits): a grouped convolution's equal
                slices may then be cut along whole slices, or into equal pieces of slices.

        Returns:
            None once cut; else why the space cannot be cut there.
        """
        root = self.spaces[self._find(sid)]
        group = 1
        if root.group > 1:
            whole = parts is not None and (parts % root.group == 0 or root.group % parts == 0)
            if not whole or any(cut % (root.size // parts) for cut in cuts):
                return "grouped convolutions divide these channels into equal slices"
            group = max(root.group // parts, 1)  # each piece's slices, if it holds several
        if any(cut % root.block for cut in cuts):  # pieces of whole groups only
            return f"the cut would split blocks of {root.block} channels (GroupNorm, PixelShuffle)"
        bounds = [0, *cuts, root.size]
        sizes = [b - a for a, b in itertools.pairwise(bounds)]
        pieces: list[list[int]] = []
        for member in root.members:
            kids = [self._new_space(size) for size in sizes]
            for kid in kids:
                self.spaces[kid].blocked = list(root.blocked)
                self.spaces[kid].min_size = root.min_size
                self.spaces[kid].block = root.block
                self.spaces[kid].group = group
            self.spaces[member].children = kids
            pieces.append(kids)
        for other in pieces[1:]:
            for a, b in zip(pieces[0], other, strict=True):
                self._union(a, b)
        return None

    def _unify(self, a: Channels, b: Channels, reason: str, parts: int | None = None) -> bool:
        """Make the channels of ``a`` and ``b`` pruned with the same indices, or block both.

        Where their segments have different boundaries, the spaces are split so that both
        sides consist of the same number of whole pieces, which are then unioned pairwise.
        ``parts``: see :meth:`_split_space`.
        """
        if a.repeat != b.repeat or a.fold != b.fold or a.size != b.size:
            return self._fail_unify(a, b, reason)
        for _ in range(16):
            segs_a = _expand(self.spaces, a.segments)
            segs_b = _expand(self.spaces, b.segments)
            bounds = set(_boundaries(segs_a)) | set(_boundaries(segs_b))
            split_any = False
            for side in (segs_a, segs_b):
                pos = 0
                for seg in side:
                    size = self.spaces[seg.space].size
                    cuts = {seg.start} | {seg.start + seg.length}
                    cuts |= {seg.start + x - pos for x in bounds if pos < x < pos + seg.length}
                    cuts = sorted(c for c in cuts if 0 < c < size)
                    if cuts:
                        why = self._split_space(seg.space, cuts, parts)
                        if why is not None:
                            return self._fail_unify(a, b, f"{reason} ({why})")
                        split_any = True
                        break  # re-expand: the split may touch other segments too
                    pos += seg.length
                if split_any:
                    break
            if not split_any:
                break
        else:
            return self._fail_unify(a, b, reason)
        for x, y in zip(segs_a, segs_b, strict=True):
            self._union(x.space, y.space)
        return True

    def _whole_space(self, info: Channels) -> int | None:
        """The space whose channels ``info`` holds all of, alone and unsplit (one layer's
        output), if it does."""
        pieces = _expand(self.spaces, info.segments)
        whole = len(pieces) == 1 and pieces[0].length == self.spaces[pieces[0].space].size
        return pieces[0].space if whole else None

    def _unify_all(
        self, first: Channels, others: Sequence[Channels], reason: str, parts: int | None = None
    ) -> bool:
        """:meth:`_unify` ``first`` with each of ``others`` (the operands of one call). Where a
        pair cannot be aligned, it keeps its channels with the reason why, and every other
        operand keeps its own: left free, one would lose channels alone. ``parts``: see
        :meth:`_split_space`."""
        for info in others:
            if not self._unify(first, info, reason, parts):
                for other in others:
                    if other is not info:
                        self._block(other, reason)
                return False
        return True

    def _fail_unify(self, a: Channels, b: Channels, reason: str) -> bool:
        self._block(a, reason)
        self._block(b, reason)
        return False

    # ----- interpretation ---------------------------------------------------------------
    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.shapes[n] = _shape_of(result)
        self.sized = []
        self._kept_boundaries(n)
        try:
            self._track_counts(n, result)
            self.info[n] = self._visit(n, result)
        except _Unsupported as exc:
            self._block(self._arg_infos(n), f"{_describe(n)}: {exc}")
            self.info[n] = None
        except Exception as exc:  # an unusual call signature: keep its channels, never crash
            reason = f"{_describe(n)}: not understood ({type(exc).__name__})"
            self._block(self._arg_infos(n), reason)
            self.info[n] = None
        finally:
            # Sizes kept by modules that this call did not take as the widths of parts it
            # splits the channels into: a use that pruning must not change.
            for size in _kept_sizes((n.args, n.kwargs)):
                if not any(size is s for s in self.sized):
                    self.split_reads.setdefault(size.label, _USED_ELSEWHERE)
        return result

    def _kept_boundaries(self, n: fx.Node) -> None:
        """Channels that enter or leave a module that must not change (an ignored one fx
        traces into) keep their width, so that it takes and gives what it did, also
        where it passes channels on untouched (FasterNet's partial convolution)."""
        if not self.kept_within:
            return
        inside = self._kept_around(n)
        for arg in n.all_input_nodes:
            around = self._kept_around(arg)
            for module in sorted(inside ^ around):
                self._block(self.info.get(arg), f"'{module}' {self.kept[module]}")

    def _kept_around(self, n: fx.Node) -> set[str]:
        """The modules that must not change whose code ``n`` runs in."""
        return set(n.meta.get("nn_module_stack", ())) & self.kept_within

    def _sizes_an_upsampling(self, n: fx.Node) -> bool:
        """Whether ``n`` calls a transposed convolution: a count reaches it only as its
        ``output_size``, of which it reads the spatial sizes alone (``up(x, skip.size())``)."""
        return n.op == "call_module" and isinstance(
            self.modules.get(str(n.target)), _CONV_TRANSPOSE_TYPES
        )

    def _track_counts(self, n: fx.Node, result: Any) -> None:
        """Follow channel counts read as Python values; keep the channels of a count that is
        used other than as a shape (where pruning changes it consistently)."""
        if n.op in ("call_method", "call_function") and n.target in ("size", getattr):
            info, shape = self._in(n)
            attr = n.args[1] if n.target is getattr and len(n.args) > 1 else None
            if isinstance(info, Channels) and (n.target == "size" or attr == "shape"):
                dim = self._arg(n, 1, "dim") if n.target == "size" else None
                if dim is None:
                    self.sizes[n] = (info, len(shape))
                elif isinstance(dim, int) and dim % len(shape) == info.dim:
                    self.counts[n] = [info]
                return
        if n.target is operator.getitem and n.args[0] in self.sizes:
            (info, ndim), index = self.sizes[n.args[0]], n.args[1]
            if isinstance(index, int):
                hit = index % ndim == info.dim
            else:  # a slice of the sizes (or an index only known at run time)
                hit = not isinstance(index, slice) or info.dim in range(ndim)[index]
            if hit:
                self.counts[n] = [info]
            return
        if not self.counts and not self.sizes:  # most models: no count read, nothing to follow
            return
        carried: list[Channels] = []

        def collect(a: Any) -> Any:
            if isinstance(a, fx.Node):
                carried.extend(self.counts.get(a, ()))
                if a in self.sizes:
                    carried.append(self.sizes[a][0])
            return a

        fx.node.map_arg((n.args, n.kwargs), collect)
        if not carried:
            return
        if (
            n.op == "call_function"
            and n.target in _COUNT_ARITHMETIC
            and not isinstance(result, torch.Tensor)
        ):
            self.counts[n] = carried  # c // 2, c * 4: still a count
        elif _reshapes(n):
            shaped = n.args[0] if n.args else None
            self.shaped.append((n, carried, self.info.get(shaped) if shaped else None))
        elif _creates(n):  # a new tensor whose size pruning would change, as fixed channels
            for info in carried:
                self._block(info, f"{_describe(n)} sizes a new tensor with the channel count")
        elif not _takes_shape(n) and not self._sizes_an_upsampling(n):
            for info in carried:
                self._block(info, f"{_describe(n)} uses the channel count as a value")

    def finish(self) -> None:
        """Checks that need every channel tied: a count may size a view or reshape only of a
        tensor with those channels, whose count pruning changes alike (``x.view(b, c, -1)``
        with ``c`` read from ``x``). A count shaping other channels (a reshape of an attention
        output to its input's width) would no longer fit them: both keep their channels."""
        for n, carried, shaped in self.shaped:
            roots = {
                self._find(seg.space)
                for c in _iter_channels(shaped)
                for seg in _expand(self.spaces, c.segments)
            }
            for info in carried:
                if any(
                    self._find(seg.space) not in roots
                    for seg in _expand(self.spaces, info.segments)
                ):
                    # Both: the shaped channels would take the other count's new width.
                    reason = f"{_describe(n)} shapes other channels with their count"
                    self._block(info, reason)
                    self._block(shaped, reason)
        for entry, parts in list(self.split_entries.items()):
            label = f"{entry[0]}.{entry[1]}" if entry[0] else entry[1]
            if label in self.split_reads:  # used otherwise after the split was seen
                del self.split_entries[entry]
                for part in parts:
                    self._block(part, f"channels split at {self._kept_size(label)}")
        for (owner, attr, _), infos in self.size_entries.items():
            roots = {
                self._find(seg.space) for c in infos for seg in _expand(self.spaces, c.segments)
            }
            if len(roots) > 1:
                where = f"'{owner}.{attr}'" if owner else f"the model's '{attr}'"
                for info in infos:
                    self._block(info, f"{where} sizes the views of parameters of other channels")

    def _arg_infos(self, n: fx.Node) -> list[Any]:
        out: list[Any] = []

        def collect(a: Any) -> Any:
            if isinstance(a, fx.Node):
                out.append(self.info.get(a))
            return a

        fx.node.map_arg((n.args, n.kwargs), collect)
        return out

    def _visit(self, n: fx.Node, result: Any) -> Any:
        if n.op == "placeholder":
            return None
        if n.op == "get_attr":
            return self._parameter(n)
        if n.op == "output":
            self._block(self._arg_infos(n), "it reaches the model's output")
            return None
        if n.kwargs and n.target not in _KEYWORD_TENSORS_FOLLOWED[n.op]:
            keyword_infos: list[Any] = []
            fx.node.map_arg(n.kwargs, lambda a: keyword_infos.append(self.info.get(a)))
            if any(True for _ in _iter_channels(keyword_infos)):
                raise _Unsupported("it takes a tensor by keyword, which is not followed")
        if n.op == "call_module":
            return self._visit_module(n, self.modules[str(n.target)], result)
        if n.op == "call_function":
            return self._visit_function(n, n.target, result)
        if n.op == "call_method":
            return self._visit_method(n, str(n.target), result)
        raise _Unsupported("unknown node kind")

    def _in(self, n: fx.Node, index: int = 0, key: str | None = None) -> tuple[Any, Any]:
        arg = n.args[index] if index < len(n.args) else (n.kwargs.get(key) if key else None)
        if isinstance(arg, fx.Node):
            return self.info.get(arg), self.shapes.get(arg)
        return None, None

    def _arg(self, n: fx.Node, index: int, key: str, default: Any = None) -> Any:
        return _node_arg(n, index, key, default)

    def _parameter_only(self, info: Channels) -> bool:
        """Whether ``info`` holds only parameters' own entries (:meth:`_parameter`), which no
        layer's channels have joined yet."""
        if not self.parameter_spaces:
            return False
        roots = {self._find(seg.space) for seg in _expand(self.spaces, info.segments)}
        return roots <= {self._find(sid) for sid in self.parameter_spaces} and not any(
            self._find(source[0]) in roots for source in self.sources.values()
        )

    def _parameter(self, n: fx.Node) -> Channels | None:
        """A per-channel parameter that ``forward`` reads itself (a layer scale, ``gamma *
        x``): a member of the channels it meets, cut along with them. Others are fixed."""
        name = str(n.target)
        found = self.bare_parameters.get(name)
        if found is None or found[0] in self.kept:
            return None
        previous = self.consumers.get(name)  # read again, or in the model's other mode
        if previous is not None:
            return previous.channels
        owner, param = found
        dim = next(d for d, size in enumerate(param.shape) if size > 1)
        sid = self._new_space(param.shape[dim])
        self.parameter_spaces[sid] = name
        info = Channels(dim, (Segment(sid, 0, param.shape[dim]),))
        module = self.modules[owner]
        count = count_attribute(module, param.shape[dim])
        if count is not None:
            where = f"'{owner}.{count}'" if owner else f"the model's '{count}'"
            self._block_space(sid, f"'{name}' has its channel count in {where} too")
            return info
        self.consumers[name] = ConsumerRecord(name, module, info, "parameter")
        return info

    # modules ---------------------------------------------------------------------------
    def _visit_module(self, n: fx.Node, module: nn.Module, result: Any) -> Any:
        name = str(n.target)
        info, shape = self._in(n)
        if name in self.untraceable:
            raise _Unsupported("torch.fx cannot trace it, so it is called whole")
        if name in self.leaves:
            raise _Unsupported("it is kept whole (leaf_modules), its inside is not traced")
        if name in self.kept:
            self._block(info, f"'{name}' {self.kept[name]}")
        if isinstance(module, _CONV_TYPES):
            return self._conv_call(n, name, module, info, result)
        if isinstance(module, _CONV_TRANSPOSE_TYPES):  # weight (in, out, *kernel)
            if module.groups > 1:
                raise _Unsupported(f"'{name}' is a grouped transposed convolution")
            # Every input element is spread over out_channels x kernel outputs.
            macs = math.prod(shape) * module.out_channels * math.prod(module.kernel_size)
            return self._conv(n, name, module, info, macs)
        if isinstance(module, nn.Linear):
            return self._linear(n, name, module, info, shape, result)
        if isinstance(module, _RECURRENT_TYPES):
            return self._recurrent(n, name, module, info, shape, result)
        if isinstance(module, nn.GroupNorm):
            return self._group_norm(n, name, module, info)
        if isinstance(module, _BN_TYPES + _INSTANCE_NORM_TYPES) or (
            isinstance(module, nn.PReLU) and module.num_parameters > 1
        ):
            return self._per_channel(n, name, module, info)
        if isinstance(module, self.passthrough_modules) or (
            isinstance(module, nn.PReLU) and module.num_parameters == 1
        ):
            self.chain_nodes.add(n.name)
            return self._same(info, shape, result)
        for kind, ndims in _SPATIAL_MODULES.items():
            if isinstance(module, kind):
                return self._spatial(info, shape, result, ndims)
        if isinstance(module, nn.Flatten):
            return self._reshape(n, info, shape, result, literal_shape=None)
        if isinstance(module, nn.PixelShuffle):
            return self._pixel_shuffle(n, info, shape, module.upscale_factor, up=True)
        if isinstance(module, nn.PixelUnshuffle):
            return self._pixel_shuffle(n, info, shape, module.downscale_factor, up=False)
        if isinstance(module, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
            return self._softmax(info, shape, module.dim)
        if isinstance(module, nn.LayerNorm):
            return self._layer_norm(n, name, module, info, shape)
        if info is None and not any(i is not None for i in self._arg_infos(n)):
            return None
        raise _Unsupported(f"{type(module).__name__} is not understood")

    def _per_channel(self, n: fx.Node, name: str, module: nn.Module, info: Any) -> Any:
        """A batch or instance norm, or a PReLU with one slope per channel: a member of the
        channels it sees, which it resizes with them."""
        has_state = any(True for _ in module.parameters(recurse=False)) or any(
            b is not None for b in module.buffers(recurse=False)
        )
        # A stateless InstanceNorm still checks its num_features (it warns on every call).
        sized = has_state or isinstance(module, _INSTANCE_NORM_TYPES)
        if info is None:
            if sized:
                self._fixed_input(name)
            return None
        if info.dim != 1:
            raise _Unsupported("a per-channel layer sees channels on another dimension")
        if sized:
            self._member(name, module, info)
        if has_state:
            self.norm_nodes[n.name] = name
        self.chain_nodes.add(n.name)
        return info

    def _note_computed(self, tensor: Any, attr: str, fn: Any) -> None:
        """Name the layer of ``fn``'s type whose own ``attr`` the computed ``tensor`` derives
        from (``F.conv2d(x, standardise(self.weight))``), looking a few calls back."""
        types = _FUNCTIONAL_LAYERS[fn][0]
        frontier, seen = [tensor], 0
        while frontier and seen < 32:
            node = frontier.pop()
            seen += 1
            if not isinstance(node, fx.Node):
                continue
            owner, _, read = str(node.target).rpartition(".")
            if (
                node.op == "get_attr"
                and read == attr
                and isinstance(self.modules.get(owner), types)
            ):
                module = self.modules[owner]
                size = next(
                    (
                        getattr(module, a)
                        for a in _OUTPUT_SIZES
                        if type(getattr(module, a, None)) is int
                    ),
                    None,
                )
                self.computed_weights.setdefault(
                    owner,
                    f"{owner} ({size} channels) kept: its forward ({type(module).__name__}) "
                    f"computes the {attr} it calls `F.{fn.__name__}` with (as weight "
                    "standardisation does), which pruning does not follow",
                )
                return
            frontier.extend(node.all_input_nodes)

    def _functional_layer(
        self, n: fx.Node, fn: Any, info: Any, shape: Any, result: torch.Tensor
    ) -> Any:
        """A functional norm, linear or convolution on one layer's own tensors, as in the
        forward of a subclass that adds an activation or a padding (timm's BatchNormAct2d,
        Conv2dSame): that layer, as if it had been called. Other tensors (a weight computed
        from the layer's, as a weight-standardised convolution's) are not understood."""
        types, positions = _FUNCTIONAL_LAYERS[fn]
        owners = set()
        for attr, position in positions.items():
            tensor = self._arg(n, position, attr)
            if tensor is None:
                continue
            if not (isinstance(tensor, fx.Node) and tensor.op == "get_attr"):
                self._note_computed(tensor, attr, fn)
                raise _Unsupported("its tensors are not a layer's own")
            owner, _, read = str(tensor.target).rpartition(".")
            if read != attr:
                raise _Unsupported("its tensors are not a layer's own")
            owners.add(owner)
        if not owners and fn is F.layer_norm:  # no weights: each position's own statistics
            given = self._arg(n, 1, "normalized_shape")
            span = 1 if isinstance(given, int) else len(given)
            if info is not None and info.dim >= len(shape) - span:
                raise _Unsupported("it normalises across the channels")
            return info
        name = owners.pop() if len(owners) == 1 else ""
        module = self.modules.get(name)
        if not isinstance(module, types):
            raise _Unsupported("its tensors are not those of one layer")
        # A size that pruning changes must be read from the layer (``self.gn.num_groups``),
        # which surgery updates; a number written in forward would stay behind.
        if isinstance(module, nn.GroupNorm):
            groups = self._arg(n, 1, "num_groups")
            if operator.index(groups) != module.num_groups:
                raise _Unsupported(f"it splits the channels of '{name}' into other groups")
            if not _read_from(groups, f"{name}.num_groups"):
                raise _Unsupported(f"it gives '{name}' its group count as a number")
            return self._group_norm(n, name, module, info)
        if isinstance(module, nn.LayerNorm):
            given = self._arg(n, 1, "normalized_shape")
            if isinstance(given, int):
                given = (given,)
            if not isinstance(given, (tuple, list)) or tuple(given) != module.normalized_shape:
                raise _Unsupported(f"it normalises other dimensions than '{name}' does")
            if self.prune_layer_norms and not all(
                _read_from(size, f"{name}.normalized_shape") for size in given
            ):
                raise _Unsupported(f"it gives '{name}' its normalised shape as numbers")
            return self._layer_norm(n, name, module, info, shape)
        if isinstance(module, nn.Linear):
            return self._linear(n, name, module, info, shape, result)
        if isinstance(module, _CONV_TYPES):
            groups = self._arg(n, 6, "groups", 1)
            if operator.index(groups) != module.groups:
                raise _Unsupported(f"it groups the channels of '{name}' otherwise")
            depthwise = module.groups > 1 and module.groups == module.in_channels
            if depthwise and not _read_from(groups, f"{name}.groups"):
                raise _Unsupported(f"it gives '{name}' its group count as a number")
            return self._conv_call(n, name, module, info, result)
        return self._per_channel(n, name, module, info)

    def _layer_norm(
        self, n: fx.Node, name: str, norm: nn.LayerNorm, info: Any, shape: Any
    ) -> Channels | None:
        """A LayerNorm: it passes on channels it does not normalise over (spatial dimensions).
        Over the channels, it keeps them, or with ``prune_layer_norms``, loses them too (it
        normalises the remaining ones over themselves: an approximation, unlike every other
        cut, which fine-tuning has to recover)."""
        if info is None:
            if self.prune_layer_norms and len(norm.normalized_shape) == 1:
                self._fixed_input(name)
            return None
        if info.dim < len(shape) - len(norm.normalized_shape):
            return info
        if not self.prune_layer_norms:
            raise _Unsupported("it normalises across the channels (see prune_layer_norms)")
        if (
            len(norm.normalized_shape) != 1
            or info.dim != len(shape) - 1
            or info.repeat != 1
            or info.fold != 1
        ):
            raise _Unsupported("it normalises across the channels and other dimensions")
        self._member(name, norm, info)
        return info

    def _conv_call(
        self, n: fx.Node, name: str, conv: nn.Module, info: Any, result: torch.Tensor
    ) -> Channels | None:
        # Every output element reads in / groups x kernel input elements.
        reads = (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)
        return self._conv(n, name, conv, info, result.numel() * reads)

    def _group_norm(self, n: fx.Node, name: str, norm: nn.GroupNorm, info: Any) -> Channels | None:
        """A GroupNorm: its channels go in whole groups, so that every group it keeps is
        normalised over the same channels as before (removing some channels of a group would
        change its mean and variance). It always checks its channel count, affine or not."""
        if info is None:
            self._fixed_input(name)
            return None
        if info.dim != 1:
            raise _Unsupported("a per-channel layer sees channels on another dimension")
        if norm.num_groups == 1 and self.prune_layer_norms:
            # One group: a LayerNorm over the channels and the positions (PoolFormer's), cut as
            # the LayerNorms are with prune_layer_norms (approximately).
            self._member(name, norm, info)
            self.chain_nodes.add(n.name)
            return info
        # Each layer loses whole groups, also after a concatenation (a U-Net's decoder). A
        # group of `size` positions: size / repeat channels that fold layers' blocks each, or
        # part of one channel spread over several positions (a flattened 3-D map's).
        size, repeat = norm.num_channels // norm.num_groups, info.repeat
        if size % repeat and repeat % size:
            raise _Unsupported(
                f"'{name}' has groups of {size} positions that cut channels spread over {repeat}"
            )
        block = info.fold * (size // repeat if size % repeat == 0 else 1)
        self._whole_blocks(info, block, "GroupNorm", f"'{name}' has groups")
        self._member(name, norm, info)
        if norm.affine:
            self.norm_nodes[n.name] = name
        self.chain_nodes.add(n.name)
        return info

    def _conv(
        self, n: fx.Node, name: str, conv: nn.Module, info: Any, macs: int
    ) -> Channels | None:
        """A convolution (or an ungrouped transposed one) of ``macs`` multiply-accumulates:
        a consumer of its input channels and the source of its filters."""
        groups, cin, cout = conv.groups, conv.in_channels, conv.out_channels
        if info is not None and info.dim != 1:
            self._block(info, f"{_describe(n)} reads channels on another dimension")
            info = None
        if groups > 1 and groups == cin == cout:  # depthwise: filter i reads channel i only
            self.macs.append(_MacRecord(name, macs, None, info, True))
            if info is None:
                self._fixed_input(name)
                return None
            if name in self.kept:  # its input channels are its filters: both stay
                self._block(info, f"'{name}' {self.kept[name]}")
                return None
            self._member(name, conv, info)
            return info
        if info is not None:
            if groups > 1:
                space = self._whole_space(info)
                if cin // groups == 1 or space is None or info.repeat != 1 or info.fold != 1:
                    self._block(info, f"'{name}' is a grouped convolution ({groups} groups)")
                else:
                    self._constrain(space, groups)
            self._consumer(name, conv, info)
        else:
            self._fixed_input(name)
        out = self._source(name, conv, n, cout, dim=1)
        if groups > 1:
            self._constrain(out.segments[0].space, groups)
        self.macs.append(_MacRecord(name, macs, out.segments[0].space, info, False))
        return out

    def _linear(
        self,
        n: fx.Node,
        name: str,
        linear: nn.Linear,
        info: Any,
        shape: Any,
        result: torch.Tensor,
    ) -> Channels:
        last = len(shape) - 1
        info = self._features_consumer(n, name, linear, info, last)
        out = self._source(name, linear, n, linear.out_features, dim=last)
        self.macs.append(
            _MacRecord(name, result.numel() * linear.in_features, out.segments[0].space, info,
                       False)
        )  # fmt: skip
        return out

    def _features_consumer(
        self, n: fx.Node, name: str, module: nn.Module, info: Any, last: int
    ) -> Channels | None:
        """A layer that reads its input's last dimension (``last``; -1 for none) as features:
        a consumer of those channels; channels on another dimension are kept. Returns the
        channels it consumes, or ``None`` where its inputs are fixed."""
        if info is not None and info.dim != last:
            self._block(info, f"{_describe(n)} reads channels on another dimension")
            info = None
        if info is not None:
            self._consumer(name, module, info)
        else:
            self._fixed_input(name)
        return info

    def _recurrent(
        self, n: fx.Node, name: str, rnn: nn.Module, info: Any, shape: Any, result: Any
    ) -> Any:
        """A recurrent layer or cell: a consumer of its first layer's input features (the
        columns of ``weight_ih_l0`` and of its reverse direction). A layer (``RNN``, ``LSTM``,
        ``GRU``) is also the source of its hidden units, one channel group for every layer and
        direction (they share ``hidden_size``): its output holds them once per direction, its
        final states once per layer and direction. A cell's hidden units, a layer given an
        initial state or with projections keep theirs."""
        self._block(self._arg_infos(n)[1:], f"'{name}' takes them as its hidden state")
        tensor_shape = isinstance(shape, tuple)  # not a PackedSequence
        info = self._features_consumer(n, name, rnn, info, len(shape) - 1 if tensor_shape else -1)
        if not isinstance(rnn, nn.RNNBase):
            self._recurrent_macs(name, rnn, shape, info, None)
            return None
        units = self._source(name, rnn, n, rnn.hidden_size, dim=-1)
        space = units.segments[0].space
        if rnn.proj_size:
            self._block_space(space, f"'{name}' projects its hidden units (proj_size)")
        if len(n.args) > 1 or n.kwargs:
            self._block_space(space, f"'{name}' is given an initial hidden state")
        self._recurrent_macs(name, rnn, shape, info, space)
        hidden = Segment(space, 0, rnn.hidden_size)
        directions = 2 if rnn.bidirectional else 1
        if not (isinstance(result, tuple) and isinstance(result[0], torch.Tensor)):
            self._block_space(space, f"'{name}' returns a packed sequence, which is not followed")
            return None
        output = Channels(result[0].dim() - 1, (hidden,) * directions)
        states = result[1] if isinstance(result[1], tuple) else (result[1],)
        finals = tuple(Channels(h.dim() - 1, (hidden,)) for h in states)
        return [output, finals if isinstance(result[1], tuple) else finals[0]]

    def _recurrent_macs(
        self, name: str, rnn: nn.Module, shape: Any, info: Any, space: int | None
    ) -> None:
        """Every step multiplies its input and hidden state by every weight matrix: the first
        layer's input weights scale with the input features and the hidden units kept, the
        others with the hidden units kept twice (untraced for a packed sequence)."""
        if not isinstance(shape, tuple):
            return
        rows = math.prod(shape[:-1])
        weights = {k: w for k, w in rnn.named_parameters(recurse=False) if w.dim() == 2}
        inputs = sum(w.numel() for k, w in weights.items() if k in _INPUT_WEIGHTS)
        rest = sum(w.numel() for k, w in weights.items() if k not in _INPUT_WEIGHTS)
        units = None
        if space is not None:
            size = self.spaces[space].size
            directions = 2 if rnn.bidirectional else 1
            units = Channels(0, (Segment(space, 0, size),))
            inner = {k: w for k, w in weights.items() if k.startswith("weight_ih_l") and
                     k not in _INPUT_WEIGHTS}  # fmt: skip
            if inner:  # layers after the first read every direction's units
                reads = Channels(0, (Segment(space, 0, size),) * directions)
                cost = rows * sum(w.numel() for w in inner.values())
                self.macs.append(_MacRecord(name, cost, space, reads, False))
                rest -= sum(w.numel() for w in inner.values())
        self.macs.append(_MacRecord(name, rows * inputs, space, info, False))
        self.macs.append(_MacRecord(name, rows * rest, space, units, False))

    def _source(self, name: str, module: nn.Module, n: fx.Node, size: int, dim: int) -> Channels:
        if name in self.sources:  # a module called twice shares its filters
            sid = self.sources[name][0]
        else:
            sid = self._new_space(size)
            self.sources[name] = (sid, module, n.name, dim)
            if name in self.kept:
                self._block_space(sid, f"'{name}' {self.kept[name]}")
        return Channels(dim, (Segment(sid, 0, size),))

    def _consumer(self, name: str, module: nn.Module, info: Channels) -> None:
        self._record(name, module, info, "input")

    def _member(self, name: str, module: nn.Module, info: Channels) -> None:
        self._record(name, module, info, "member")

    def _fixed_input(self, name: str) -> None:
        """``name`` is called on channels that cannot be pruned: so must be its other calls'."""
        self.fixed_inputs.add(name)
        previous = self.consumers.get(name)
        if previous is not None:
            self._block(previous.channels, f"'{name}' is also called on fixed channels")

    def _record(self, name: str, module: nn.Module, info: Channels, role: str) -> None:
        if name in self.kept:
            self._block(info, f"'{name}' {self.kept[name]}")
        if name in self.fixed_inputs:
            self._block(info, f"'{name}' is also called on fixed channels")
        previous = self.consumers.get(name)
        if previous is not None:  # a module called twice must see the same channels
            self._unify(previous.channels, info, f"'{name}' is called on different channels")
            return
        self.consumers[name] = ConsumerRecord(name, module, info, role)

    # functions and methods --------------------------------------------------------------
    def _visit_function(self, n: fx.Node, fn: Any, result: Any) -> Any:
        info, shape = self._in(n)
        if fn in _NON_TENSOR_FUNCTIONS:
            return None
        if fn is getattr:
            return self._attribute(n, info, shape, result)
        if fn is operator.getitem:
            return self._getitem(n, result)
        if fn in _CLAMPS and self._tensor_bounds(n):
            return self._elementwise(n, result)
        if fn in _LIKE_FUNCTIONS:
            return self._same(info, shape, result)
        if fn in _FUNCTIONAL_LAYERS:
            return self._functional_layer(n, fn, info, shape, result)
        if fn in _UNARY_FUNCTIONS or fn in _USER_PASSTHROUGH or _is_stochastic_depth(fn):
            self.chain_nodes.add(n.name)
            return self._same(info, shape, result)
        if fn in self.spatial_functions:
            return self._spatial(info, shape, result, self.spatial_functions[fn])
        if fn in _ELEMENTWISE_FUNCTIONS:
            return self._elementwise(n, result)
        if fn in (torch.cat, torch.concat, torch.concatenate):
            return self._cat(n, result)
        if fn is torch.flatten:
            return self._reshape(n, info, shape, result, literal_shape=None)
        if fn is torch.unflatten:
            return self._unflatten(n, info, shape, result)
        if fn is F.pixel_shuffle:
            return self._pixel_shuffle(n, info, shape, self._arg(n, 1, "upscale_factor"), up=True)
        if fn is F.pixel_unshuffle:
            factor = self._arg(n, 1, "downscale_factor")
            return self._pixel_shuffle(n, info, shape, factor, up=False)
        if fn is torch.reshape:
            return self._reshape(n, info, shape, result, literal_shape=self._arg(n, 1, "shape"))
        if fn in (torch.max, torch.min) and isinstance(self._arg(n, 1, "other"), fx.Node):
            return self._elementwise(n, result)  # torch.max(x, y): element-wise
        if fn in (torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var):
            return self._reduce(n, info, shape, result, 1)
        if fn in (torch.norm, torch.linalg.vector_norm):  # (input, p or ord, dim, keepdim)
            return self._reduce(n, info, shape, result, 2)
        if fn is F.normalize:  # (input, p, dim): each channel alone unless over the channels
            dim = self._arg(n, 2, "dim", 1)
            if info is not None and isinstance(dim, int) and dim % len(shape) == info.dim:
                raise _Unsupported("it normalises across the channels")
            return self._same(info, shape, result)
        if fn is torch.permute:
            return self._permute(info, self._arg(n, 1, "dims"))
        if fn in (torch.movedim, torch.moveaxis):
            return self._movedim(
                info, shape, self._arg(n, 1, "source"), self._arg(n, 2, "destination")
            )
        if fn in (torch.roll, torch.flip):
            key = "dims"
            return self._along(info, shape, result, self._arg(n, 2 if fn is torch.roll else 1, key))
        if fn is torch.stack:
            return self._stack(n, result)
        if fn is torch.transpose:
            return self._transpose(info, shape, self._arg(n, 1, "dim0"), self._arg(n, 2, "dim1"))
        if fn is torch.unsqueeze:
            return self._unsqueeze(info, shape, self._arg(n, 1, "dim"))
        if fn is torch.squeeze:
            return self._squeeze(info, shape, result, self._arg(n, 1, "dim"))
        if fn in (torch.chunk, torch.split, torch.tensor_split):
            chunks = self._arg(n, 1, "chunks") if fn is torch.chunk else None
            size = self._arg(n, 1, "split_size_or_sections") if fn is torch.split else None
            return self._split(n, info, shape, result, self._arg(n, 2, "dim", 0), chunks, size)
        if fn is F.pad:
            return self._pad(
                info, shape, self._arg(n, 1, "pad"), self._arg(n, 2, "mode"),
                self._arg(n, 3, "value"),
            )  # fmt: skip
        if fn in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
            return self._softmax(info, shape, self._arg(n, 1, "dim"))
        if _pointwise_function(fn):
            return self._elementwise(n, result)
        if all(i is None for i in self._arg_infos(n)):
            return None
        raise _Unsupported("this function is not understood on the channel dimension")

    def _visit_method(self, n: fx.Node, method: str, result: Any) -> Any:
        info, shape = self._in(n)
        if method in _NON_TENSOR_METHODS or method in _NEW_TENSOR_METHODS:
            return None
        if method in _CLAMPS and self._tensor_bounds(n):
            return self._elementwise(n, result)
        if method in _UNARY_METHODS:
            self.chain_nodes.add(n.name)
            return self._same(info, shape, result)
        if method in _ELEMENTWISE_METHODS:
            return self._elementwise(n, result)
        if method in ("view", "reshape"):
            literal = (
                n.args[1:]
                if len(n.args) > 2
                or not isinstance(n.args[1] if len(n.args) > 1 else None, (list, tuple))
                else n.args[1]
            )
            return self._reshape(n, info, shape, result, literal_shape=literal)
        if method == "flatten":
            return self._reshape(n, info, shape, result, literal_shape=None)
        if method == "unflatten":
            return self._unflatten(n, info, shape, result)
        if method in ("max", "min") and isinstance(self._arg(n, 1, "other"), fx.Node):
            return self._elementwise(n, result)  # x.max(y): element-wise
        if method in ("mean", "sum", "amax", "amin", "std", "var", "max", "min"):
            return self._reduce(n, info, shape, result, 1)
        if method == "norm":  # x.norm(p, dim, keepdim)
            return self._reduce(n, info, shape, result, 2)
        if method == "permute":
            dims = n.args[1:] if len(n.args) > 2 else self._arg(n, 1, "dims")
            return self._permute(info, dims)
        if method in ("movedim", "moveaxis"):
            return self._movedim(
                info, shape, self._arg(n, 1, "source"), self._arg(n, 2, "destination")
            )
        if method == "roll":
            return self._along(info, shape, result, self._arg(n, 2, "dims"))
        if method == "flip":
            dims = n.args[1:] if len(n.args) > 2 else self._arg(n, 1, "dims")
            return self._along(info, shape, result, dims)
        if method == "transpose":
            return self._transpose(info, shape, self._arg(n, 1, "dim0"), self._arg(n, 2, "dim1"))
        if method == "unsqueeze":
            return self._unsqueeze(info, shape, self._arg(n, 1, "dim"))
        if method == "squeeze":
            return self._squeeze(info, shape, result, self._arg(n, 1, "dim"))
        if method in ("chunk", "split", "tensor_split"):
            chunks = self._arg(n, 1, "chunks") if method == "chunk" else None
            size = self._arg(n, 1, "split_size") if method == "split" else None
            return self._split(n, info, shape, result, self._arg(n, 2, "dim", 0), chunks, size)
        if method in ("softmax", "log_softmax"):
            return self._softmax(info, shape, self._arg(n, 1, "dim"))
        if method == "expand":
            return self._expand(n, info, shape, result)
        if _pointwise_aten(method):  # x.rsqrt(), x.pow(2), x.sign(), x.erf_()
            return self._elementwise(n, result)
        if all(i is None for i in self._arg_infos(n)):
            return None
        raise _Unsupported(f"method .{method}() is not understood on the channel dimension")

    # op families -----------------------------------------------------------------------
    def _attribute(self, n: fx.Node, info: Any, shape: Any, result: Any) -> Any:
        attr = self._arg(n, 1, "name")
        if attr == "data":  # the same values, outside autograd
            return self._same(info, shape, result)
        if info is None or attr in _TENSOR_FACTS:
            return None
        raise _Unsupported(f"it reads the attribute .{attr}")

    @staticmethod
    def _tensor_bounds(n: fx.Node) -> bool:
        """Whether a clamp's bounds are tensors, which combine with its input element-wise."""
        return any(isinstance(a, fx.Node) for a in (*n.args[1:], *n.kwargs.values()))

    def _same(self, info: Any, shape: Any, result: Any) -> Any:
        if info is None:
            return None
        if not isinstance(result, torch.Tensor) or tuple(result.shape) != tuple(shape):
            raise _Unsupported("it changes the tensor's shape")
        return info

    def _spatial(self, info: Any, shape: Any, result: Any, ndims: int) -> Any:
        if info is None:
            return None
        out_shape = tuple(result.shape)
        ndims = ndims or len(shape) - 2  # 0: every dimension after (batch, channel)
        if (
            len(out_shape) != len(shape)
            or info.dim >= len(shape) - ndims
            or (out_shape[info.dim] != shape[info.dim])
        ):
            raise _Unsupported("it pools or resizes along the channels")
        return info

    def _elementwise(self, n: fx.Node, result: Any) -> Any:
        if not isinstance(result, torch.Tensor):
            return None
        out_ndim = result.dim()
        operands = [
            (self.info.get(a), self.shapes.get(a))
            for a in (*n.args, *n.kwargs.values())
            if isinstance(a, fx.Node) and _is_shape(self.shapes.get(a))
        ]
        tracked = [(i, s) for i, s in operands if i is not None]
        if not tracked:
            return None
        # A parameter's own entries (a layer scale's) join the channels they meet; on another
        # dimension (a weight per row or per position) they are values like any fixed tensor.
        layers = [(i, s) for i, s in tracked if not self._parameter_only(i)]
        first, first_shape = (layers or tracked)[0]
        d_out = first.dim + out_ndim - len(first_shape)
        reason = f"{_describe(n)} combines channels that cannot be aligned"
        joined = []
        for info, shape in operands:
            aligned = d_out - (out_ndim - len(shape))
            if info is not None and info.dim != aligned and self._parameter_only(info):
                self._block(info, f"{_describe(n)} applies it along another dimension")
                info = None
            involved = 0 <= aligned < len(shape) and shape[aligned] != 1
            if info is None:
                if involved:
                    for i, _ in tracked:
                        self._block(i, f"{_describe(n)} combines channels with a fixed tensor")
                    return None
            elif info.dim != aligned:
                for i, _ in tracked:
                    self._block(i, reason)
                return None
            elif info is not first:
                joined.append(info)
        if not self._unify_all(first, joined, reason):
            return None
        # Broadcast to more dimensions (a (C, 1, 1) layer scale times an (N, C, H, W) map):
        # the channels lie where they landed.
        return first if first.dim == d_out else dataclasses.replace(first, dim=d_out)

    def _sequence(self, tensors: Any) -> tuple[list[Any], list[Any]]:
        """The channels and shapes of a call's tensors: a list of them, or one call's tuple of
        results (``torch.cat(x.split(4, 1), 1)``)."""
        if isinstance(tensors, fx.Node):
            info, shape = self.info.get(tensors), self.shapes.get(tensors)
            if not isinstance(shape, list):
                raise _Unsupported("it takes a tensor where a sequence of tensors goes")
            return list(info) if isinstance(info, tuple) else [None] * len(shape), shape
        return [self.info.get(t) for t in tensors], [self.shapes.get(t) for t in tensors]

    def _cat(self, n: fx.Node, result: torch.Tensor) -> Any:
        tensors = self._arg(n, 0, "tensors")
        dim = self._arg(n, 1, "dim", 0) % result.dim()
        infos, shapes = self._sequence(tensors)
        for k, info in enumerate(infos):
            # Blocks of a PixelShuffle beside plain channels: those stay, the others can go.
            if info is not None and info.dim == dim and info.fold != 1:
                self._block(info, f"{_describe(n)} concatenates channels a PixelShuffle folded")
                infos[k] = None
        tracked = [i for i in infos if i is not None]
        if not tracked:
            return None
        plain = all(i.dim == dim and i.fold == 1 for i in tracked)
        if plain and len({i.repeat for i in tracked}) == 1:
            repeat = tracked[0].repeat
            segments: list[Segment] = []
            for info, shape in zip(infos, shapes, strict=True):
                if info is None:  # fixed channels (an input, say) sit beside prunable ones
                    size = shape[dim]
                    if size % repeat:
                        raise _Unsupported("it concatenates channels of unequal feature blocks")
                    sid = self._new_space(size // repeat)
                    self._block_space(sid, "fixed channels")
                    segments.append(Segment(sid, 0, size // repeat))
                else:
                    segments.extend(info.segments)
            return Channels(dim, tuple(segments), repeat)
        if len(tracked) == len(infos) and all(i.dim == tracked[0].dim != dim for i in infos):
            if not self._unify_all(infos[0], infos[1:], f"{_describe(n)} joins unaligned channels"):
                return None
            return infos[0]
        raise _Unsupported("it concatenates channels that cannot be aligned")

    def _getitem(self, n: fx.Node, result: Any) -> Any:
        src = n.args[0]
        info = self.info.get(src) if isinstance(src, fx.Node) else None
        index = n.args[1]
        if isinstance(info, (list, tuple)):
            if isinstance(index, int):
                return info[index]
            raise _Unsupported("it takes a slice of a sequence of tensors")
        if info is None:
            return None
        shape = self.shapes.get(src)
        if not isinstance(result, torch.Tensor):
            return None
        items = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, (fx.Node, list, torch.Tensor)) for i in items):
            raise _Unsupported("it indexes with tensors")
        explicit = sum(1 for i in items if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for item in items:
            if item is Ellipsis:
                expanded.extend([slice(None)] * (len(shape) - explicit))
            else:
                expanded.append(item)
        p = q = 0
        new_dim = None
        for item in expanded:
            if item is None:
                q += 1
                continue
            if p == info.dim:
                if not _takes_all(item, shape[p]):
                    info = self._slice_at_size(info, item)
                new_dim = q
            p += 1
            if isinstance(item, slice):
                q += 1
        if new_dim is None:  # the channel dim is after every index: it maps one to one
            new_dim = info.dim - p + q
        return dataclasses.replace(info, dim=new_dim)

    def _slice_at_size(self, info: Channels, item: Any) -> Channels:
        """``x[:, :a]`` or ``x[:, a:]`` with ``a`` a size a module keeps and uses only so (DPN's
        ``x[:, :self.num_1x1_c]``): a split there, whose first part's count surgery writes
        into ``a`` (the second part follows from the width)."""
        size = None
        if isinstance(item, slice) and item.step is None:
            # No == on a kept size: that would record a use of it.
            from_start = item.start is None or (type(item.start) is int and item.start == 0)
            if from_start and isinstance(item.stop, _WatchedCount):
                size, first = item.stop, True
            elif isinstance(item.start, _WatchedCount) and item.stop is None:
                size, first = item.start, False
        if size is not None and size.sizes_split and self._used_otherwise(size):
            raise _Unsupported(f"it slices the channels at {self._kept_size(size.label)}")
        if (
            size is None
            or not size.sizes_split
            or not 0 < int(size) < info.size
            or info.repeat != 1
            or info.fold != 1
        ):
            raise _Unsupported("it slices the channels")
        width = int(size)
        if not self._cut_at(info, [width]):  # pieces pruned as one could lose a part entirely
            raise _Unsupported("it slices the channels where they cannot be cut")
        head = _slice_channels(info, 0, width)
        self._size_parts(size, head)
        return head if first else _slice_channels(info, width, info.size - width)

    def _reshape(self, n: fx.Node, info: Any, shape: Any, result: Any, literal_shape: Any) -> Any:
        if info is None:
            return None
        out = tuple(result.shape)
        d = info.dim
        # Dimensions before the channels' that the reshape merges into them (the groups of
        # ResNeSt's radix softmax, ``(B, radix, C) -> (B, radix * C)``): each index along
        # them holds a copy of the channels, one after the other. Never the batch dimension.
        starts = {math.prod(shape[:k]): math.prod(shape[k:d]) for k in range(d, min(d, 1) - 1, -1)}
        literal = _literal_list(literal_shape)
        for j in range(len(out)):
            copies = starts.get(math.prod(out[:j]))
            if copies is None:
                continue
            if copies > 1:
                merged = self._merge_copies(info, shape, out[j], copies)
                if merged is not None:
                    _check_not_literal(literal, j)
                    return dataclasses.replace(merged, dim=j)
                continue
            e = d + 1
            size = shape[d]
            while size < out[j] and e < len(shape):
                size *= shape[e]
                e += 1
            if size != out[j]:
                if j + 1 < len(out) and out[j] > 1 and out[j] * out[j + 1] == shape[d]:
                    _check_not_literal(literal, j + 1)
                    return self._split_groups(n, info, out[j], j)
                continue
            if not self._viewed_with_own_size(info, literal, j):
                _check_not_literal(literal, j)
            spread = math.prod(shape[d + 1 : e])
            return dataclasses.replace(info, dim=j, repeat=info.repeat * spread)
        raise _Unsupported("it reshapes the channel dimension")

    def _merge_copies(self, info: Channels, shape: Any, width: int, copies: int) -> Channels | None:
        """The channels after the ``copies`` positions of the dimensions just before them are
        merged with them, and with the dimensions after them, into ``width`` positions; None
        if ``width`` is not all of them."""
        d, spread, e = info.dim, 1, info.dim + 1
        while copies * shape[d] * spread < width and e < len(shape):
            spread *= shape[e]
            e += 1
        if copies * shape[d] * spread != width:
            return None
        if info.fold != 1:
            raise _Unsupported("it merges channels spread over several positions with others")
        return Channels(info.dim, info.segments * copies, repeat=info.repeat * spread)

    def _viewed_with_own_size(self, info: Channels, literal: list[Any], j: int) -> bool:
        """Whether ``info`` is a per-channel parameter viewed with its size at ``j`` read from
        a tuple attribute of its own module (``self.scale.view(self.shape)``): surgery then
        rewrites that entry of the tuple."""
        count = literal[j] if j < len(literal) else None
        if (
            not isinstance(count, _WatchedCount)
            or count.index is None
            or len(info.segments) != 1
            or info.repeat != 1
            or info.fold != 1
        ):
            return False
        seg = info.segments[0]
        name = self.parameter_spaces.get(seg.space)
        record = self.consumers.get(name) if name is not None else None
        owner, _, attr = count.label.rpartition(".")
        if (
            record is None
            or record.channels != info
            or name.rpartition(".")[0] != owner
            or seg.length != self.spaces[seg.space].size
        ):
            return False
        if (attr, count.index) not in record.sizes:
            record.sizes += ((attr, count.index),)
        self.size_entries.setdefault((owner, attr, count.index), []).append(info)
        return True

    def _unflatten(self, n: fx.Node, info: Any, shape: Any, result: Any) -> Any:
        """``unflatten(dim, sizes)``: a reshape whose sizes written in forward are ``sizes``."""
        if info is None:
            return None
        dim = self._arg(n, 1, "dim") % len(shape)
        sizes = list(self._arg(n, 2, "sizes"))
        literal = [None] * dim + sizes + [None] * (len(shape) - dim - 1)
        return self._reshape(n, info, shape, result, literal_shape=literal)

    def _split_groups(self, n: fx.Node, info: Channels, groups: int, j: int) -> Channels | None:
        """A view of the channels as ``groups`` consecutive equal groups along dimension
        ``j`` (ShuffleNet's channel shuffle, SKNet's attention over its branches): the groups
        are pruned with the same indices, so each keeps the same width; the channels of one
        group then lie along dimension ``j + 1``."""
        if info.repeat != 1 or info.fold != 1:
            raise _Unsupported("it splits channels spread over several positions into groups")
        width = info.size // groups
        pieces = [_slice_channels(info, g * width, width) for g in range(groups)]
        reason = f"{_describe(n)} splits the channels into {groups} groups that cannot be aligned"
        # A grouped convolution's slices may be cut only where every piece of its space is then
        # pruned alike: where the groups are pieces of that one space (ResNeSt's radix splits).
        # Over a concatenation, its pieces would be tied to other layers' channels apart.
        alone = self._whole_space(info) is not None
        if not self._unify_all(pieces[0], pieces[1:], reason, parts=groups if alone else None):
            return None
        return Channels(j + 1, pieces[0].segments)

    def _reduce(self, n: fx.Node, info: Any, shape: Any, result: Any, dim_index: int) -> Any:
        if info is None:
            return None
        dims = self._arg(n, dim_index, "dim")
        keepdim = bool(self._arg(n, dim_index + 1, "keepdim", False))
        if dims is None:
            raise _Unsupported("it reduces over the channels")
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [x % len(shape) for x in dims]
        if info.dim in dims:
            raise _Unsupported("it reduces over the channels")
        if not isinstance(result, torch.Tensor):
            raise _Unsupported("it returns several values")
        new_dim = info.dim if keepdim else info.dim - sum(1 for x in dims if x < info.dim)
        return dataclasses.replace(info, dim=new_dim)

    def _permute(self, info: Any, dims: Any) -> Any:
        if info is None:
            return None
        dims = [int(x) % len(dims) for x in dims]
        return dataclasses.replace(info, dim=dims.index(info.dim))

    def _movedim(self, info: Any, shape: Any, source: Any, destination: Any) -> Any:
        """``movedim``: a permutation, worked out as ``numpy.moveaxis`` does."""
        if info is None:
            return None
        ndim = len(shape)
        src = [int(s) % ndim for s in (source if isinstance(source, (list, tuple)) else [source])]
        dst = [
            int(d) % ndim
            for d in (destination if isinstance(destination, (list, tuple)) else [destination])
        ]
        order = [d for d in range(ndim) if d not in src]
        for d, s in sorted(zip(dst, src, strict=True)):
            order.insert(d, s)
        return self._permute(info, order)

    def _along(self, info: Any, shape: Any, result: Any, dims: Any) -> Any:
        """``roll`` or ``flip`` along ``dims``: each channel alone unless along the channels
        (or, for a roll without dimensions, over the flattened tensor)."""
        if info is None:
            return None
        if dims is None:
            raise _Unsupported("it rolls the whole tensor, channels included")
        dims = [int(d) % len(shape) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if info.dim in dims:
            raise _Unsupported("it moves values along the channels")
        return self._same(info, shape, result)

    def _stack(self, n: fx.Node, result: Any) -> Any:
        """``torch.stack``: like an element-wise operation (the tensors' channels are aligned,
        as SKNet's branches are before they are weighted and summed), along a new dimension."""
        tensors = self._arg(n, 0, "tensors")
        dim = self._arg(n, 1, "dim", 0) % result.dim()
        infos, _ = self._sequence(tensors)
        tracked = [i for i in infos if i is not None]
        if not tracked:
            return None
        first = tracked[0]
        if len(tracked) != len(infos):
            for info in tracked:
                self._block(info, f"{_describe(n)} stacks channels with a fixed tensor")
            return None
        reason = f"{_describe(n)} stacks channels that cannot be aligned"
        if any(i.dim != first.dim for i in tracked):
            for info in tracked:
                self._block(info, reason)
            return None
        if not self._unify_all(first, tracked[1:], reason):
            return None
        return dataclasses.replace(first, dim=first.dim + (1 if dim <= first.dim else 0))

    def _transpose(self, info: Any, shape: Any, a: int, b: int) -> Any:
        if info is None:
            return None
        a, b = a % len(shape), b % len(shape)
        d = b if info.dim == a else a if info.dim == b else info.dim
        return dataclasses.replace(info, dim=d)

    def _unsqueeze(self, info: Any, shape: Any, dim: int) -> Any:
        if info is None:
            return None
        dim = dim % (len(shape) + 1)
        return dataclasses.replace(info, dim=info.dim + (1 if dim <= info.dim else 0))

    def _squeeze(self, info: Any, shape: Any, result: Any, dim: Any) -> Any:
        if info is None:
            return None
        if dim is None:
            removed = [i for i, s in enumerate(shape) if s == 1]
            # Pruned to one channel, the channel dimension would be squeezed away too.
            for seg in _expand(self.spaces, info.segments):
                root = self.spaces[self._find(seg.space)]
                root.min_size = max(root.min_size, 2)
        else:
            dims = [dim] if isinstance(dim, int) else list(dim)
            removed = [x % len(shape) for x in dims if shape[x % len(shape)] == 1]
        if info.dim in removed:
            raise _Unsupported("it squeezes the channel dimension")
        return dataclasses.replace(info, dim=info.dim - sum(1 for x in removed if x < info.dim))

    def _split(
        self,
        n: fx.Node,
        info: Any,
        shape: Any,
        result: Any,
        dim: int,
        chunks: Any = None,
        size: Any = None,
    ) -> Any:
        if info is None:
            return None
        if dim % len(shape) != info.dim:
            return tuple(info for _ in result)
        if chunks is None and isinstance(size, (list, tuple)) and len(size) == len(result):
            return self._split_at_sizes(n, info, size)
        if chunks is None and (
            not isinstance(size, int) or (isinstance(size, _WatchedCount) and not size.sizes_split)
        ):  # a layer's count, which pruning changes, or sizes it cannot follow
            raise _Unsupported("it splits the channels at fixed sizes")
        if chunks is None and len(result) == 1:  # one size, at least the width: a no-op
            return (info,)
        if (
            isinstance(size, _WatchedCount)
            and size.sizes_split
            and int(size) * len(result) == info.size
            and not self._used_otherwise(size)
        ):  # equal parts of a size a module keeps (Res2Net's torch.split(x, self.width)): as
            # one size for several parts, so they lose the same channels and it is rewritten
            return self._split_at_sizes(n, info, [size] * len(result))
        space = self._whole_space(info)
        if info.repeat != 1 or info.fold != 1:
            raise _Unsupported("it splits channels spread over several positions, or folded")
        if space is None:
            raise _Unsupported("it splits channels of several layers or of part of one")
        if chunks is None:
            return self._split_at_size(n, space, info, size, len(result))
        # chunk(k) splits whatever the width into k parts: the parts stay equal when they
        # lose the same channels. The layer's filters are cut into k pieces pruned as one
        # (so a part can also join a residual addition, as in YOLOv8's C2f bottlenecks).
        if not isinstance(chunks, int) or len(result) != chunks or info.size % chunks:
            raise _Unsupported("it splits the channels into unequal parts")
        width = info.size // chunks
        if chunks > 1:
            why = self._split_space(space, [j * width for j in range(1, chunks)])
            if why is not None:
                raise _Unsupported(f"it cannot split these channels: {why}")
            kids = self.spaces[space].children
            assert kids is not None
            for kid in kids[1:]:
                self._union(kids[0], kid)
        return tuple(Channels(info.dim, (Segment(space, j * width, width),)) for j in range(chunks))

    def _split_at_size(
        self, n: fx.Node, space: int, info: Channels, size: int, parts: int
    ) -> tuple[Channels, ...]:
        """``split(size)`` with ``size`` written in the code (CSPNet's ``x.split(
        self.expand_chs // 2)``): parts of ``size`` channels and a last part of the rest,
        which may shrink (to one channel) and the split still gives as many parts; the
        parts before it keep their channels."""
        cut = size * (parts - 1)
        why = self._split_space(space, [cut])
        if why is not None:
            raise _Unsupported(f"it cannot split these channels: {why}")
        kids = self.spaces[space].children
        assert kids is not None
        self._block_space(
            kids[0],
            f"{_describe(n)} splits the channels at a size written in the code ({size}): "
            "the parts before the last keep theirs",
        )
        return tuple(
            Channels(info.dim, (Segment(space, j * size, min(size, info.size - j * size)),))
            for j in range(parts)
        )

    def _split_at_sizes(self, n: fx.Node, info: Channels, sizes: Sequence[Any]) -> Any:
        """``torch.split(x, sizes)``: where a part's size is kept by a module (``self.splits``
        of timm's MixedConv2d, ``[self.dim_conv3, self.dim_untouched]`` of FasterNet) and
        used only to split, the part is pruned on its own and surgery sets that size to the
        channels it keeps; parts of one size keep equal numbers. A part whose size is
        written in forward keeps its channels."""
        widths = [int(size) for size in sizes]  # int(): not a use of the count
        if info.repeat != 1 or info.fold != 1:
            raise _Unsupported("it splits channels spread over several positions, or folded")
        if min(widths) < 1:
            raise _Unsupported("it splits off an empty part")
        starts = list(itertools.accumulate([0, *widths[:-1]]))
        parts = [_slice_channels(info, a, w) for a, w in zip(starts, widths, strict=True)]
        by_module = [isinstance(size, _WatchedCount) and size.sizes_split for size in sizes]
        if not any(by_module):
            raise _Unsupported("it splits the channels at fixed sizes")
        # Each part's layers are cut where it begins, so that it is pruned on its own (pieces
        # pruned as one, by a grouped convolution's slices, could leave a part empty).
        if not self._cut_at(info, starts[1:]):
            raise _Unsupported("it splits the channels where they cannot be cut")
        for part, size, own in zip(parts, sizes, by_module, strict=True):
            if not own or self._used_otherwise(size):
                why = self._kept_size(size.label) if own else "a size written in the code"
                self._block(part, f"{_describe(n)} splits the channels at {why}")
                continue
            self._size_parts(size, part)
        return tuple(parts)

    def _used_otherwise(self, size: _WatchedCount) -> bool:
        """Whether forward uses ``size`` (kept by a module) other than as the width of the
        channel parts it splits: seen in the trace, or in the source (``range(self.a)``:
        uses that leave no trace in the graph); or whether a module that must not change
        (an ignored one) keeps it."""
        owner = size.entry[0]
        for module in sorted(self.kept_within):
            if owner == module or owner.startswith(f"{module}."):
                self.split_reads.setdefault(size.label, f"'{module}' {self.kept[module]}")
        if self.source_uses is None:
            self.source_uses = SourceUses(self.module)
        if size.label not in self.split_reads and self.source_uses.other_than_split(
            owner, size.entry[1]
        ):
            self.split_reads[size.label] = _USED_ELSEWHERE
        return size.label in self.split_reads

    def _kept_size(self, label: str) -> str:
        """What the size ``label`` (kept by a module) is, that keeps its value."""
        reason = self.split_reads[label]
        if reason == _USED_ELSEWHERE:
            return f"a size that forward also uses as a number ('{label}')"
        return f"a size of a module that must not change ('{label}': {reason})"

    def _size_parts(self, size: _WatchedCount, part: Channels) -> None:
        """Record that ``size`` (kept by a module) is the width of ``part``; one size for
        several parts (here or in another split) keeps them equal."""
        self.sized.append(size)
        owned = self.split_entries.setdefault(size.entry, [])
        reason = f"'{size.label}' sizes several parts"
        if not owned or owned[0] == part or self._unify(owned[0], part, reason):
            owned.append(part)

    def _cut_at(self, info: Channels, offsets: Sequence[int]) -> bool:
        """Cut the spaces under ``info`` so that each of ``offsets`` (along ``info``) falls
        between two pieces; whether they all could be."""
        for _ in range(4 * len(offsets) + 4):  # each pass cuts one piece
            position = 0
            for seg in _expand(self.spaces, info.segments):
                inner = sorted({seg.start + x - position for x in offsets})
                inner = [c for c in inner if seg.start < c < seg.start + seg.length]
                if inner:
                    if self._split_space(seg.space, inner) is not None:
                        return False
                    break  # re-expand: the cut may touch other segments too
                position += seg.length
            else:
                return True
        return False

    def _pad(
        self, info: Any, shape: Any, pad: Sequence[int], mode: Any = None, value: Any = None
    ) -> Any:
        if info is None:
            return None
        k = len(shape) - 1 - info.dim  # pad pairs run from the last dim backwards
        if 2 * k + 1 >= len(pad) or not (pad[2 * k] or pad[2 * k + 1]):
            return info
        before, after = pad[2 * k], pad[2 * k + 1]
        zero = mode in (None, "constant") and not value
        if not zero or info.repeat != 1 or info.fold != 1 or before < 0 or after < 0:
            raise _Unsupported("it pads the channel dimension")
        # Zero channels beside the input's: fixed ones that never change with pruning.
        segments = []
        for size in (before, after):
            sid = self._new_space(size) if size else None
            if sid is not None:
                self._block_space(sid, "zero channels added by a pad")
            segments.append(() if sid is None else (Segment(sid, 0, size),))
        return Channels(info.dim, segments[0] + info.segments + segments[1], 1)

    def _pixel_shuffle(self, n: fx.Node, info: Any, shape: Any, factor: Any, up: bool) -> Any:
        """``PixelShuffle(r)`` moves each block of r*r consecutive channels into one channel
        of an r-times larger image: those channels are then pruned as one (whole, aligned
        blocks of the layers' filters). ``PixelUnshuffle(r)`` spreads each channel over r*r
        consecutive ones, as ``flatten`` spreads it over features."""
        if info is None:
            return None
        if info.dim != len(shape) - 3:
            raise _Unsupported("it moves channels into the image from another dimension")
        area = operator.index(factor) ** 2
        if not up:
            return dataclasses.replace(info, repeat=info.repeat * area)
        if info.repeat % area == 0:  # undoes a PixelUnshuffle's spreading
            return dataclasses.replace(info, repeat=info.repeat // area)
        if info.repeat != 1:
            raise _Unsupported("it folds channels whose features were spread otherwise")
        block = info.fold * area
        self._whole_blocks(info, block, "PixelShuffle", "it folds blocks")
        return dataclasses.replace(info, fold=block)

    def _softmax(self, info: Any, shape: Any, dim: Any) -> Any:
        if info is None:
            return None
        if dim is None or int(dim) % len(shape) == info.dim:
            raise _Unsupported("it normalises across the channels")
        return info

    def _expand(self, n: fx.Node, info: Any, shape: Any, result: Any) -> Any:
        if info is None:
            return None
        one = n.args[1] if len(n.args) == 2 else None
        sizes = one if isinstance(one, (list, tuple, fx.Node)) else n.args[1:]
        offset = result.dim() - len(shape)
        # The sizes as one value read at run time (``x.expand(y.shape)``) write no number.
        literal = sizes[info.dim + offset] if isinstance(sizes, (list, tuple)) else None
        if isinstance(literal, int) and literal != -1:
            raise _Unsupported(f"it hard-codes {literal} channels in expand")
        return dataclasses.replace(info, dim=info.dim + offset)


def _literal_list(literal_shape: Any) -> list[Any]:
    """The sizes written in a reshape's call, as a list (one size, or none, alone)."""
    return list(literal_shape) if isinstance(literal_shape, (list, tuple)) else [literal_shape]


def _check_not_literal(literal: list[Any], j: int) -> None:
    """A reshape's size at ``j``, where the channels land, must not be written in forward."""
    if j < len(literal) and isinstance(literal[j], int) and literal[j] != -1:
        raise _Unsupported(f"it hard-codes {literal[j]} channels in a reshape")


def _slice_channels(info: Channels, start: int, length: int) -> Channels:
    """Channels ``start`` to ``start + length`` of the concatenation of ``info.segments``."""
    segments = []
    offset = 0
    for seg in info.segments:
        lo, hi = max(start, offset), min(start + length, offset + seg.length)
        if lo < hi:
            segments.append(Segment(seg.space, seg.start + lo - offset, hi - lo))
        offset += seg.length
    return Channels(info.dim, tuple(segments))


class _Unsupported(Exception):
    """Raised inside the analyzer when an op must keep the channels it touches."""


def _boundaries(segments: list[Segment]) -> list[int]:
    """Positions, in channels, where one segment ends and the next begins."""
    out, pos = [], 0
    for seg in segments:
        pos += seg.length
        out.append(pos)
    return out[:-1]


def _iter_channels(info: Any) -> Iterable[Channels]:
    if isinstance(info, Channels):
        yield info
    elif isinstance(info, (list, tuple)):
        for item in info:
            yield from _iter_channels(item)


def _describe(n: fx.Node) -> str:
    if n.op == "call_module":
        return f"module '{n.target}'"
    if n.op == "call_method":
        return f"`.{n.target}()` (node {n.name})"
    target = getattr(n.target, "__name__", str(n.target))
    module = getattr(n.target, "__module__", "") or ""
    prefix = "F." if module.startswith("torch.nn.functional") else ""
    return f"`{prefix}{target}` (node {n.name})"


def wrapped_model(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The model inside a ``DataParallel`` or ``DistributedDataParallel`` (``"module"``) or
    ``torch.compile`` (``"_orig_mod"``) wrapper, with that attribute; None for a plain model."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module, "module"
    inner = getattr(model, "_orig_mod", None)
    if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module):
        return inner, "_orig_mod"
    return None


def _check_prunable(model: nn.Module) -> None:
    """Refuse wrappers and modules whose parameters netsurgeon cannot cut, saying what to do."""
    wrapped = wrapped_model(model)
    if wrapped is not None and wrapped[1] == "module":
        raise TraceError(
            f"the model is wrapped in {type(model).__name__}: prune the model inside "
            "(model.module), then wrap it again"
        )
    if wrapped is not None:
        raise TraceError(
            "the model was compiled with torch.compile: prune the original model "
            "(model._orig_mod), then compile the pruned one"
        )
    for name, module in model.named_modules():
        label = f"'{name}'" if name else "the model"
        if parametrize.is_parametrized(module):
            tensors = ", ".join(module.parametrizations)
            raise TraceError(
                f"{label} has parametrizations on {tensors} (torch.nn.utils.parametrize, as "
                "weight_norm and spectral_norm add): netsurgeon cuts plain parameters; remove "
                f"them first (torch.nn.utils.parametrize.remove_parametrizations(module, "
                f"'{next(iter(module.parametrizations))}')), prune, then add them again"
            )
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                raise TraceError(
                    f"{label} holds a mask from torch.nn.utils.prune ({hook._tensor_name}_orig "
                    f"and {hook._tensor_name}_mask): make it permanent first with "
                    f"torch.nn.utils.prune.remove(module, '{hook._tensor_name}'), then prune"
                )
            if isinstance(hook, WeightNorm):
                raise TraceError(
                    f"{label} has torch.nn.utils.weight_norm on '{hook.name}': remove it first "
                    "(torch.nn.utils.remove_weight_norm(module)), prune, then add it again"
                )


def _kept_modules(model: nn.Module, ignore: Iterable[str]) -> dict[str, str]:
    """Modules whose parameters must not change, each with the reason.

    Besides the ignored ones: modules with forward hooks (what a hook does to the channels is
    invisible to the trace) and modules that share a parameter (cutting one would untie them).
    """
    kept: dict[str, str] = {}
    owners: dict[int, list[tuple[str, str]]] = {}
    for name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append((name, param_name))
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if hooks:
            # A hook may say why it is there (netsurgeon's distillation hooks do).
            reasons = {getattr(hook, "netsurgeon_reason", None) for hook in hooks}
            kept[name] = (
                reasons.pop()
                if len(reasons) == 1 and None not in reasons
                else "has forward hooks, whose effect on its channels cannot be traced"
            )
    for shared in owners.values():
        for name, param_name in shared if len(shared) > 1 else ():
            others = ", ".join(f"'{other}'" for other, _ in shared if other != name)
            kept[name] = f"shares its {param_name} with {others}"
    kept.update({name: "is ignored" for name in ignore})
    return kept


def trace_graph(
    model: nn.Module,
    example_inputs: Any,
    *,
    ignore: Iterable[str] = (),
    leaf_modules: Iterable[str] = (),
    prune_layer_norms: bool = False,
) -> PruningGraph:
    """Trace ``model`` into channel groups.

    The model is traced in its current mode and, when its forward differs between training
    and evaluation (auxiliary heads, for example), in the other mode too, so that pruning is
    safe in both. The traced graphs run once on ``example_inputs`` in eval mode without
    gradients (batch-norm statistics are untouched); training flags are restored afterwards.

    Args:
        model: The network to analyse. It is not modified.
        example_inputs: A tensor or a tuple of positional inputs.
        ignore: Qualified names of modules whose parameters must not change. Modules with
            forward hooks and modules that share a parameter are kept this way too.
        leaf_modules: Qualified names of modules to call whole instead of tracing into.
            Their parameters, inputs and outputs keep all their channels. Submodules whose
            forward torch.fx cannot trace (data-dependent control flow, for example) are
            called whole too, each with a note among :meth:`PruningGraph.skipped`.
        prune_layer_norms: LayerNorms over the channels (and GroupNorms of one group, which
            normalise the channels and positions together) join the channels' groups (pruned
            with them, approximately) instead of keeping them.

    Returns:
        The channel groups, their consumers, and the reasons some channels must be kept.

    Raises:
        TraceError: The model's own forward cannot be traced with torch.fx; or it is wrapped
            (``DataParallel``, ``torch.compile``), or has parametrizations, a
            ``torch.nn.utils.prune`` mask or ``weight_norm``, which must be removed first.
    """
    _check_prunable(model)
    # A training-mode trace runs buffer updates written in forward, and a traced functional
    # batch norm keeps its training flag when the analysis runs it: the model gets its
    # statistics back.
    with kept_buffers(model):
        return _trace_graph(
            model, example_inputs, ignore, frozenset(leaf_modules), prune_layer_norms
        )


def _traced_into(model: nn.Module, name: str) -> bool:
    """Whether fx traces into the submodule ``name``: one not of ``torch.nn``'s own layers
    (its containers are traced into)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return False
    return not fx.Tracer().is_leaf_module(module, name)


def _trace_graph(
    model: nn.Module,
    example_inputs: Any,
    ignore: Iterable[str],
    leaves: frozenset[str],
    prune_layer_norms: bool,
) -> PruningGraph:
    given = len(as_input_tuple(example_inputs))
    with kept_modes(model), _CountWatch(model) as counts, _TraceTimeCalls():
        graph, untraceable = _trace_calling_whole(model, leaves, given)
        leaves = leaves | untraceable.keys()
        model.train(not model.training)
        try:
            other: fx.Graph | None
            other, more = _trace_calling_whole(model, leaves, given)
        except TraceError:
            other, more = None, {}
        if more:  # called whole in the other mode: so in this one, for one analysis
            untraceable.update(more)
            leaves = leaves | more.keys()
            model.train(not model.training)
            graph = _trace(model, leaves, given)
            model.train(not model.training)
    for traced in (graph, other):
        if traced is not None:
            _counts_given_to_calls(traced, counts.reads)
    kept = {
        **counts.reads,
        **_read_parameters(model, graph),
        **(_read_parameters(model, other) if other is not None else {}),
        **_kept_modules(model, ignore),
    }
    analyzer = _Analyzer(
        model, graph, kept, leaves=leaves, untraceable=untraceable,
        prune_layer_norms=prune_layer_norms, split_reads=counts.split_reads,
    )  # fmt: skip
    output, macs = _run(model, analyzer, example_inputs)
    mac_records = analyzer.macs
    mode_sensitive = other is not None and not _differs_in_flags_only(graph, other)
    if mode_sensitive:
        assert other is not None
        other_analyzer = _Analyzer(
            model, other, kept, shared=analyzer, leaves=leaves, untraceable=untraceable,
            prune_layer_norms=prune_layer_norms, split_reads=counts.split_reads,
        )  # fmt: skip
        other_output, other_macs = _run(model, other_analyzer, example_inputs)
        if model.training:
            # Outputs and MACs are those of eval mode, as the pruned model is checked and
            # counted (a training-mode forward may add auxiliary heads).
            output, macs, mac_records = other_output, other_macs, other_analyzer.macs
    observe, norms = _observation_points(graph, analyzer)
    pruning_graph = PruningGraph(
        model, graph, analyzer.spaces, analyzer.sources, analyzer.consumers, mac_records,
        observe, norms,
    )  # fmt: skip
    pruning_graph.split_sizes = {entry: parts[0] for entry, parts in analyzer.split_entries.items()}
    pruning_graph.output_shapes = output_shapes(output)
    pruning_graph.total_macs = macs
    pruning_graph.mode_sensitive = mode_sensitive
    if other is None:
        mode = "evaluation" if model.training else "training"
        pruning_graph.notes.append(
            f"the model cannot be traced in {mode} mode: only the other was checked"
        )
    pruning_graph.notes.extend(_untraceable_notes(model, untraceable))
    pruning_graph.notes.extend(
        note
        for name, note in analyzer.computed_weights.items()
        if name not in pruning_graph.source_names
    )
    return pruning_graph


def _untraceable_notes(model: nn.Module, untraceable: dict[str, str]) -> list[str]:
    """One note per module type and reason (the blocks of a transformer fail alike)."""
    alike: dict[tuple[str, str], list[str]] = {}
    for name, reason in untraceable.items():
        alike.setdefault((type(model.get_submodule(name)).__name__, reason), []).append(name)
    notes = []
    for (kind, reason), names in alike.items():
        listed = ", ".join(f"'{n}'" for n in names[:4]) + (" ..." if len(names) > 4 else "")
        what = f"{listed} ({kind})" if len(names) == 1 else f"{listed} ({len(names)} {kind})"
        notes.append(
            f"{what} cannot be traced with torch.fx ({reason}): called whole, keeping "
            f"{'its' if len(names) == 1 else 'their'} parameters and the channels "
            f"{'it takes and gives' if len(names) == 1 else 'they take and give'} "
            "(leaf_modules does so without this note)"
        )
    return notes


# Functions whose boolean arguments are training flags: they change no channel.
_TRAINING_FLAG_FUNCTIONS = frozenset({
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    F.feature_alpha_dropout, F.batch_norm, F.instance_norm,
})  # fmt: skip


def _differs_in_flags_only(a: fx.Graph, b: fx.Graph) -> bool:
    """Whether two traces of a model differ at most in the training flags given to dropout,
    batch norm or torchvision's stochastic depth, which change no channel (identical traces
    included). Then the second mode needs no analysis pass of its own (a forward pass of the
    whole model). Any other difference (a ``keepdim=self.training``, say) counts, and so does
    an argument that cannot be compared (an array constant, say)."""
    nodes_a, nodes_b = list(a.nodes), list(b.nodes)
    if len(nodes_a) != len(nodes_b):
        return False

    def masked(value: Any, flags: bool) -> Any:
        def mask(x: Any) -> Any:
            if isinstance(x, fx.Node):
                return x.name
            if isinstance(x, float) and math.isnan(x):  # nan != nan: each trace makes its own
                return "nan"
            return bool if flags and isinstance(x, bool) else x

        return fx.node.map_aggregate(value, mask)

    for x, y in zip(nodes_a, nodes_b, strict=True):
        if (x.op, x.target, x.name) != (y.op, y.target, y.name):
            return False
        flags = x.op == "call_function" and (
            x.target in _TRAINING_FLAG_FUNCTIONS or _is_stochastic_depth(x.target)
        )
        try:
            if masked((x.args, x.kwargs), flags) != masked((y.args, y.kwargs), flags):
                return False
        except Exception:  # an == that gives no truth value (a tensor or array constant)
            return False
    return True


def _run(model: nn.Module, analyzer: _Analyzer, example_inputs: Any) -> tuple[Any, int]:
    """Run the analysis pass; returns the outputs and the MACs it counted on the way."""
    with kept_modes(model):
        model.eval()
        try:
            with torch.no_grad(), MacCounter() as counter:
                output = analyzer.run(*as_input_tuple(example_inputs))
            analyzer.finish()
            return output, counter.macs
        except Exception as exc:
            raise TraceError(
                f"{type(model).__name__} failed on the example inputs while tracing "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "check their shape and dtype"
            ) from None


def _observation_points(
    graph: fx.Graph, analyzer: _Analyzer
) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    """For each source layer, the node whose output its consumers read, and its norm layer.

    Data-driven criteria look at the activation after the norm and non-linearity that follow a
    convolution: that is the tensor that disappears when a filter is removed.
    """
    nodes = {node.name: node for node in graph.nodes}
    observe: dict[str, tuple[str, int]] = {}
    norms: dict[str, str] = {}
    for name, (_sid, module, node_name, dim) in analyzer.sources.items():
        node = nodes.get(node_name)
        if node is None or not _runs_layer(node, name):
            continue  # a layer that only runs in the model's other mode
        if isinstance(module, nn.RNNBase):
            # Its hidden units: in the final states (one row per layer and direction, the
            # units last), read where forward takes them, else in the output sequence.
            node = _recurrent_observation(node, isinstance(module, nn.LSTM))
            if node is None:
                continue
        while len(node.users) == 1:
            user = next(iter(node.users))
            if user.name not in analyzer.chain_nodes or user.args[0] is not node:
                break
            if user.name in analyzer.norm_nodes and name not in norms:
                norms[name] = analyzer.norm_nodes[user.name]
            node = user
        observe[name] = (node.name, dim)
    return observe, norms


def _recurrent_observation(node: fx.Node, lstm: bool) -> fx.Node | None:
    """Where a recurrent layer's hidden units can be observed: its final hidden states
    (``output, h_n = rnn(x)``, ``output, (h_n, c_n) = lstm(x)``: one row per layer and
    direction, the units last) where forward reads them; else its output sequence (each
    direction's units side by side, which the criteria fold); ``None`` when it reads neither."""
    parts = {u.args[1]: u for u in node.users if u.target is operator.getitem}
    states = parts.get(1)
    if states is not None and lstm:
        states = next(
            (u for u in states.users if u.target is operator.getitem and u.args[1] == 0), None
        )
    if states is not None and states.users:
        return states
    output = parts.get(0)
    return output if output is not None and output.users else None


def _takes_all(item: Any, size: int) -> bool:
    """Whether index ``item`` takes all ``size`` entries of its dimension, in order: ``:``, or
    ``:c`` with ``c`` at least the channel count (GhostNet's ``out[:, :self.out_chs]`` of a
    concatenation exactly that wide), which still takes them all after pruning."""
    if not isinstance(item, slice) or item.step not in (None, 1):
        return False
    if item.start is not None and operator.index(item.start) != 0:
        return False
    return item.stop is None or operator.index(item.stop) >= size


def _runs_layer(node: fx.Node, name: str) -> bool:
    """Whether ``node`` runs the convolution or linear layer ``name``: a call of the module, or
    its functional form on the layer's own weight."""
    if node.op == "call_module":
        return node.target == name
    if node.op != "call_function" or node.target not in _FUNCTIONAL_LAYERS:
        return False
    weight = _node_arg(node, _FUNCTIONAL_LAYERS[node.target][1]["weight"], "weight")
    return (
        isinstance(weight, fx.Node)
        and weight.op == "get_attr"
        and weight.target == f"{name}.weight"
    )
