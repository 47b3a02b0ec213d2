"""Make layers smaller: new parameters that keep only the given channel indices.

Each function changes one module in place (the module object, and so its name in the model,
stays the same) and keeps dtype, device, memory layout and ``requires_grad``. Index tensors
are positions to keep, sorted. Optimisers that hold the old parameters must be rebuilt after
surgery.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "prune_conv",
    "prune_conv_transpose",
    "prune_linear",
    "prune_norm",
    "prune_parameter",
    "prune_recurrent",
    "restorable",
    "sync_recurrent",
    "zero_filters",
]

# The attributes that hold the channel counts of the layers surgery resizes.
SIZE_ATTRIBUTES = (
    "in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
    "num_parameters", "num_groups", "num_channels", "input_size", "hidden_size",
    "normalized_shape",
)  # fmt: skip


def _take(t: torch.Tensor | None, index: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
    if t is None:
        return None
    return t.detach().index_select(dim, index.to(t.device)).clone()


def _set_param(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    old = getattr(module, name)
    if old is None or value is None:
        return
    for ndim, layout in ((4, torch.channels_last), (5, torch.channels_last_3d)):
        # Keep a channels-last layout (model.to(memory_format=...)): index_select and clone
        # give a contiguous tensor, and mixed layouts run slower.
        if (
            old.dim() == ndim
            and not old.is_contiguous()
            and old.is_contiguous(memory_format=layout)
        ):
            value = value.contiguous(memory_format=layout)
    module._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)


def _set_buffer(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if name in module._buffers and module._buffers[name] is not None and value is not None:
        module._buffers[name] = value


def prune_conv(
    conv: nn.Module,
    *,
    out_keep: torch.Tensor | None = None,
    in_keep: torch.Tensor | None = None,
) -> None:
    """Keep output filters ``out_keep`` and input channels ``in_keep`` of a convolution.

    Grouped convolutions keep their number of groups: every group must keep the same number of
    input channels (and of output filters), which the planner guarantees. A depthwise
    convolution pruned as one channel set should be given the same indices for both.

    Args:
        conv: A :class:`~torch.nn.Conv1d`, ``Conv2d`` or ``Conv3d``.
        out_keep: Output filters to keep, or ``None`` to keep all.
        in_keep: Input channels to keep (positions in the full input), or ``None``.
    """
    assert isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    weight = conv.weight.detach()
    groups = conv.groups
    depthwise = groups > 1 and groups == conv.in_channels == conv.out_channels
    if depthwise:
        keep = out_keep if out_keep is not None else in_keep
        if keep is None:
            return
        _set_param(conv, "weight", _take(weight, keep))
        _set_param(conv, "bias", _take(conv.bias, keep))
        conv.in_channels = conv.out_channels = conv.groups = int(keep.numel())
        return
    out_idx = out_keep if out_keep is not None else torch.arange(conv.out_channels)
    weight = weight.index_select(0, out_idx.to(weight.device))
    if in_keep is not None:
        if groups == 1:
            weight = weight.index_select(1, in_keep.to(weight.device))
        else:
            per_in = conv.in_channels // groups
            per_out = conv.out_channels // groups
            local = [in_keep[(in_keep // per_in) == g] - g * per_in for g in range(groups)]
            counts = {int(x.numel()) for x in local}
            if len(counts) != 1:
                raise RuntimeError(f"uneven input pruning across {groups} groups: {counts}")
            cols = torch.stack(local).to(weight.device)[out_idx.to(weight.device) // per_out]
            shape = (-1, cols.shape[1]) + (1,) * (weight.dim() - 2)
            index = cols.reshape(shape).expand(-1, -1, *weight.shape[2:])
            weight = weight.gather(1, index)
        conv.in_channels = int(in_keep.numel())
    _set_param(conv, "weight", weight.clone())
    if out_keep is not None:
        _set_param(conv, "bias", _take(conv.bias, out_keep))
        conv.out_channels = int(out_keep.numel())


def prune_conv_transpose(
    conv: nn.Module,
    *,
    out_keep: torch.Tensor | None = None,
    in_keep: torch.Tensor | None = None,
) -> None:
    """Keep output channels ``out_keep`` and input channels ``in_keep`` of an ungrouped
    transposed convolution (``ConvTranspose1d/2d/3d``, weight ``(in, out, *kernel)``)."""
    assert isinstance(conv, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    assert conv.groups == 1
    _prune_dense(conv, out_keep, in_keep, out_dim=1, counts=("out_channels", "in_channels"))


def prune_linear(
    linear: nn.Linear,
    *,
    out_keep: torch.Tensor | None = None,
    in_keep: torch.Tensor | None = None,
) -> None:
    """Keep output features ``out_keep`` and input features ``in_keep`` of a linear layer."""
    _prune_dense(linear, out_keep, in_keep, out_dim=0, counts=("out_features", "in_features"))


def _prune_dense(
    module: nn.Module,
    out_keep: torch.Tensor | None,
    in_keep: torch.Tensor | None,
    *,
    out_dim: int,
    counts: tuple[str, str],
) -> None:
    """Keep outputs ``out_keep`` (weight dimension ``out_dim``, and the bias) and inputs
    ``in_keep`` (the other of the weight's first two dimensions) of an ungrouped layer whose
    sizes are the attributes ``counts`` (outputs, inputs)."""
    weight = module.weight.detach()
    if out_keep is not None:
        weight = weight.index_select(out_dim, out_keep.to(weight.device))
        _set_param(module, "bias", _take(module.bias, out_keep))
        setattr(module, counts[0], int(out_keep.numel()))
    if in_keep is not None:
        weight = weight.index_select(1 - out_dim, in_keep.to(weight.device))
        setattr(module, counts[1], int(in_keep.numel()))
    _set_param(module, "weight", weight.clone())


def prune_parameter(
    module: nn.Module,
    name: str,
    keep: torch.Tensor,
    dim: int,
    sizes: Iterable[tuple[str, int]] = (),
) -> None:
    """Keep entries ``keep`` along dimension ``dim`` of ``module``'s own parameter ``name`` (a
    per-channel parameter that its forward reads, as a layer scale).

    Args:
        module: The parameter's owner.
        name: The parameter's attribute name.
        keep: Indices to keep.
        dim: The dimension they index.
        sizes: Entries ``(attribute, index)`` of ``module``'s tuple attributes that hold the
            parameter's size (the shape forward views it to); they are set to ``len(keep)``.
    """
    _set_param(module, name, _take(getattr(module, name), keep, dim))
    for attr, index in sizes:
        set_size(module, attr, index, len(keep))


def set_size(module: nn.Module, attr: str, index: int | None, size: int) -> None:
    """Set a size that ``module`` keeps: its int attribute ``attr``, or entry ``index`` of
    that list or tuple attribute (a new one of the same type)."""
    if index is None:
        setattr(module, attr, size)
        return
    value = getattr(module, attr)
    items = list(value)
    items[index] = size
    setattr(module, attr, type(value)(items))


def gates(rnn: nn.Module) -> int:
    """How many gates' rows a recurrent layer's weights stack per hidden unit: 4 for an LSTM,
    3 for a GRU, 1 for a plain RNN."""
    mode = getattr(rnn, "mode", None) or type(rnn).__name__.upper()
    return 4 if "LSTM" in mode else 3 if "GRU" in mode else 1


def gate_parameters(rnn: nn.RNNBase) -> list[nn.Parameter]:
    """A recurrent layer's weights and biases that stack one row per gate and hidden unit
    (every layer and direction; not a projection's)."""
    rows = gates(rnn) * rnn.hidden_size
    return [p for p in rnn.parameters(recurse=False) if p.shape[0] == rows]


def prune_recurrent(
    rnn: nn.Module,
    *,
    hidden_keep: torch.Tensor | None = None,
    in_keep: torch.Tensor | None = None,
) -> None:
    """Keep hidden units ``hidden_keep`` and input features ``in_keep`` of a recurrent layer
    (``RNN``, ``LSTM``, ``GRU``), or input features of a cell (``LSTMCell``...).

    A hidden unit goes from every layer and direction at once (they share ``hidden_size``):
    its rows in each gate of the input and hidden weights and biases, its columns of the hidden
    weights and of the next layer's input weights. Input features are the columns of the first
    layer's input weights, in both directions. Layers with projections (``proj_size``) keep
    their hidden units.
    """
    assert isinstance(rnn, (nn.RNNBase, nn.RNNCellBase))
    if isinstance(rnn, nn.RNNCellBase):
        assert hidden_keep is None, "a cell keeps its hidden units"
        if in_keep is not None:
            _set_param(rnn, "weight_ih", _take(rnn.weight_ih, in_keep, dim=1))
            rnn.input_size = int(in_keep.numel())
        return
    assert hidden_keep is None or not rnn.proj_size
    size = rnn.hidden_size
    directions = ("", "_reverse") if rnn.bidirectional else ("",)
    rows = cols = inner = None
    if hidden_keep is not None:
        rows = torch.cat([g * size + hidden_keep for g in range(gates(rnn))])
        cols = hidden_keep
        inner = torch.cat([d * size + hidden_keep for d in range(len(directions))])
    for layer in range(rnn.num_layers):
        for sfx in directions:
            for kind in ("ih", "hh"):
                name = f"weight_{kind}_l{layer}{sfx}"
                weight = getattr(rnn, name).detach()
                columns = (in_keep if layer == 0 else inner) if kind == "ih" else cols
                if rows is not None:
                    weight = weight.index_select(0, rows.to(weight.device))
                if columns is not None:
                    weight = weight.index_select(1, columns.to(weight.device))
                _set_param(rnn, name, weight.clone())
                if rows is not None and rnn.bias:
                    bias = f"bias_{kind}_l{layer}{sfx}"
                    _set_param(rnn, bias, _take(getattr(rnn, bias), rows))
    if hidden_keep is not None:
        rnn.hidden_size = int(hidden_keep.numel())
    if in_keep is not None:
        rnn.input_size = int(in_keep.numel())
    sync_recurrent(rnn)


def sync_recurrent(module: nn.Module) -> None:
    """Lay a recurrent layer's current parameters out again in one block for cuDNN (on a GPU;
    a no-op on the CPU), as a layer built with them would have them: otherwise every forward
    warns and copies them. Its list of the weights its kernels use is re-pointed first, which
    forward would do only later. Other modules are left as they are."""
    if isinstance(module, nn.RNNBase):
        module._init_flat_weights()
        module.flatten_parameters()


def zero_filters(module: nn.Module, index: torch.Tensor) -> None:
    """Make filters ``index`` of a layer output exactly zero without removing them: their
    weights and biases (a recurrent layer's: every gate's rows of those hidden units, in every
    layer and direction, which keeps the units at zero). For checking that pruning them changes
    nothing, or for a masked baseline.

    Args:
        module: A convolution (transposed too), linear or recurrent layer.
        index: The filters (hidden units) to silence.
    """
    with torch.no_grad():
        if isinstance(module, nn.RNNBase):
            for param in gate_parameters(module):
                param.view(-1, module.hidden_size, *param.shape[1:])[:, index] = 0
            return
        weight = module.weight
        if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            weight = weight.transpose(0, 1)  # (in, out, *kernel): filters second
        weight[index] = 0
        if module.bias is not None:
            module.bias[index] = 0


def prune_norm(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep channels ``keep`` of a per-channel layer (BatchNorm, InstanceNorm, PReLU), of a
    GroupNorm, where ``keep`` must hold whole groups (the pruner only plans such cuts), or of
    a LayerNorm over one dimension or a GroupNorm of one group (which then normalise the kept
    channels only).

    Raises:
        ValueError: for a GroupNorm, ``keep`` is not made of whole groups.
    """
    if isinstance(module, nn.GroupNorm) and module.num_groups == 1:  # prune_layer_norms
        module.num_channels = int(keep.numel())
    elif isinstance(module, nn.GroupNorm):
        size = module.num_channels // module.num_groups
        blocks = keep.reshape(-1, size) if keep.numel() % size == 0 else None
        steps = torch.arange(size, device=keep.device)
        if blocks is None or not bool(
            (blocks - blocks[:, :1] == steps).all() and (blocks[:, 0] % size == 0).all()
        ):
            raise ValueError(f"keep must hold whole groups of {size} channels of the GroupNorm")
        module.num_groups = int(keep.numel()) // size
        module.num_channels = int(keep.numel())
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise ValueError("only a LayerNorm over one dimension can lose channels")
        module.normalized_shape = (int(keep.numel()),)
    for name in ("weight", "bias"):
        if getattr(module, name, None) is not None:
            _set_param(module, name, _take(getattr(module, name), keep))
    for name in ("running_mean", "running_var"):
        _set_buffer(module, name, _take(module._buffers.get(name), keep))
    if hasattr(module, "num_features"):
        module.num_features = int(keep.numel())
    if hasattr(module, "num_parameters"):
        module.num_parameters = int(keep.numel())


@contextmanager
def restorable(modules: list[nn.Module]) -> Iterator[None]:
    """Undo every parameter, buffer and size change to ``modules`` if the block raises."""
    saved: list[tuple[nn.Module, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
        (
            m,
            dict(m._parameters),
            dict(m._buffers),
            {
                **{a: getattr(m, a) for a in SIZE_ATTRIBUTES if hasattr(m, a)},
                # A scale's shape, the sizes a module splits channels at.
                **{a: v for a, v in vars(m).items() if type(v) in (int, tuple, list)},
            },
        )
        for m in modules
    ]
    try:
        yield
    except BaseException:
        for module, params, buffers, attrs in saved:
            module._parameters.clear()
            module._parameters.update(params)
            module._buffers.clear()
            module._buffers.update(buffers)
            for name, value in attrs.items():
                setattr(module, name, value)
            sync_recurrent(module)
        raise
