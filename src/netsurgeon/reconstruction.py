"""Least-squares reconstruction: refit the layers that lost input channels after pruning.

When a filter is removed, every layer that read its output channel loses that input, and its
output drifts from what the unpruned network computed; right after pruning to half the MACs a
CIFAR ResNet falls to chance level. Following ThiNet (Luo et al. 2017) and channel pruning
(He et al. 2017), :func:`reconstruct` refits the weights of each such layer by ridge
regression, so that on real inputs its output matches the unpruned (reference) layer's output
as closely as a linear map of the remaining channels can. Layers are refitted in execution
order, each on the inputs the already-refitted pruned model gives it, so errors of earlier
layers are compensated rather than compounded.

It needs no gradients and no labels, and one forward pass of both models per batch and layer
(each pass stops at the layer being refitted). It is meant for models used with little or no
fine-tuning: on netsurgeon's half-MACs CIFAR ResNet benchmark it lifted accuracy right after
pruning from 14 % to 61 %, but after 3 epochs of fine-tuning the model without it was better
(``benchmarks/README.md``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from netsurgeon.distributed import is_distributed
from netsurgeon.errors import ConfigError
from netsurgeon.modes import kept_modes
from netsurgeon.pruning.stats import (
    as_input_tuple,
    batch_inputs,
    check_reiterable,
    float_dtype,
    move_inputs,
    resolve_device,
)

__all__ = ["LayerFit", "reconstruct"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerFit:
    """How one layer was refitted.

    Attributes:
        name: Qualified name of the layer.
        error_before: Squared error of its output against the reference layer's, relative to
            the reference output's squared norm, with the weights pruning left.
        error_after: The same after refitting.
        rows: Output positions (samples times spatial positions) the fit used.
    """

    name: str
    error_before: float
    error_after: float
    rows: int


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def _fittable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
    )


def _targets(
    model: nn.Module, reference: nn.Module, kept: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor | None]:
    """Layers that lost input channels, each with the reference outputs it keeps (None: all)."""
    reference_modules = dict(reference.named_modules())
    targets: dict[str, torch.Tensor | None] = {}
    for name, module in model.named_modules():
        if not _fittable(module):
            continue
        ref = reference_modules.get(name)
        if ref is None or type(ref) is not type(module):
            raise ConfigError(
                f"the reference has no {type(module).__name__} named {name!r}; pass the model "
                "as it was before pruning"
            )
        n_in, ref_in = module.weight.shape[1], ref.weight.shape[1]
        n_out, ref_out = module.weight.shape[0], ref.weight.shape[0]
        if n_in > ref_in or n_out > ref_out or module.weight.shape[2:] != ref.weight.shape[2:]:
            raise ConfigError(
                f"layer {name!r} has weight shape {tuple(module.weight.shape)}, larger than the "
                f"reference's {tuple(ref.weight.shape)}; pass the model as it was before pruning"
            )
        if n_in == ref_in:
            continue  # its inputs are intact: nothing to compensate
        index = None
        if n_out < ref_out:
            given = kept.get(name)
            index = None if given is None else torch.as_tensor(given).flatten().long()
            if index is None or index.numel() != n_out:
                raise ConfigError(
                    f"layer {name!r} also lost output channels ({ref_out} -> {n_out}); pass "
                    "kept=result.kept from the prune that removed them"
                )
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= ref_out):
                raise ConfigError(
                    f"kept[{name!r}] holds indices from {int(index.min())} to "
                    f"{int(index.max())}, outside the reference layer's {ref_out} outputs; "
                    "pass kept=result.kept from the prune of this reference"
                )
        targets[name] = index
    return targets


def _execution_order(model: nn.Module, names: Iterable[str], inputs: Any) -> list[str]:
    order: list[str] = []
    handles = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _m, _a, name=name: order.append(name) if name not in order else None
        )
        for name in names
    ]
    try:
        model(*as_input_tuple(inputs))
    finally:
        for handle in handles:
            handle.remove()
    return order


def _capture(model: nn.Module, name: str, inputs: Any, *, output: bool) -> torch.Tensor:
    """The input (or output) of layer ``name`` on ``inputs``; the pass stops right there."""
    captured: list[torch.Tensor] = []
    module = model.get_submodule(name)

    def pre_hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0])
        raise _Stop

    def hook(_m: nn.Module, _args: tuple[Any, ...], result: torch.Tensor) -> None:
        captured.append(result)
        raise _Stop

    handle = (
        module.register_forward_hook(hook) if output else module.register_forward_pre_hook(pre_hook)
    )
    try:
        model(*as_input_tuple(inputs))
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ConfigError(f"layer {name!r} did not run on the data given")
    return captured[0]


def _rows(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Design matrix (rows, features[+1]) and targets (rows, outputs) of one batch."""
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        if isinstance(padding, str):  # "valid" pads nothing; "same" pads as Conv2d does
            if padding == "same":
                pads = []  # F.pad's order: last dimension first
                for dims in zip(module.dilation[::-1], module.kernel_size[::-1], strict=True):
                    total = dims[0] * (dims[1] - 1)
                    pads += [total // 2, total - total // 2]
                x = F.pad(x, pads)
            padding = 0
        cols = F.unfold(
            x, module.kernel_size, dilation=module.dilation, padding=padding,
            stride=module.stride,
        )  # fmt: skip
        features = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        targets = y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    else:
        features = x.reshape(-1, x.shape[-1])
        targets = y.reshape(-1, y.shape[-1])
    if module.bias is not None:
        features = torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)
    return features, targets


def _flat_weight(module: nn.Module) -> torch.Tensor:
    weight = module.weight.detach().reshape(module.weight.shape[0], -1)
    if module.bias is not None:
        weight = torch.cat([weight, module.bias.detach()[:, None]], dim=1)
    return weight.double()


def _relative_error(
    weight: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, energy: float
) -> float:
    # ||Y - X W^T||^2 = ||Y||^2 - 2 tr(W X^T Y) + tr(W X^T X W^T), from the accumulated sums.
    residual = energy - 2 * torch.sum(weight.T * cross) + torch.sum((weight @ gram) * weight)
    return max(float(residual), 0.0) / max(energy, 1e-30)


def _shared_order(
    order: list[str] | None, names: list[str], device: torch.device
) -> list[str] | None:
    """The layer order of the lowest-ranked process that has data, on every process.

    ``None`` everywhere when no process has data (so that all of them raise alike).
    """
    world = dist.get_world_size()
    source = torch.tensor([dist.get_rank() if order is not None else world], device=device)
    dist.all_reduce(source, op=dist.ReduceOp.MIN)
    if int(source.item()) == world:
        return None
    # Positions in ``names``, padded with -1: layers that never ran are not refitted.
    positions = torch.full((len(names),), -1, dtype=torch.long, device=device)
    if order is not None:
        positions[: len(order)] = torch.tensor([names.index(n) for n in order], device=device)
    dist.broadcast(positions, src=int(source.item()))
    return [names[i] for i in positions.tolist() if i >= 0]


@torch.no_grad()
def reconstruct(
    model: nn.Module,
    reference: nn.Module,
    loader: Iterable[Any],
    *,
    kept: Mapping[str, torch.Tensor] | None = None,
    batches: int = 8,
    ridge: float = 1e-3,
    rows_per_batch: int = 16384,
    max_features: int = 16384,
    seed: int = 0,
) -> list[LayerFit]:
    """Refit every layer of ``model`` that lost input channels to mimic ``reference``.

    Every ``nn.Conv2d`` (ungrouped, zero padding) and ``nn.Linear`` of the pruned ``model``
    with fewer input channels than the same-named layer of ``reference`` gets new weights
    (and bias) from ridge regression: its inputs are those the pruned model computes, its
    targets the reference layer's outputs on the same data. Other layers are untouched. A
    refit that would not lower the error keeps the old weights. Under ``torch.distributed``
    the statistics of all processes are summed, so every process gets the same weights (a
    process whose shard yields nothing adds nothing).

    Args:
        model: The pruned model, changed in place. Its layer names must be the reference's
            (netsurgeon's pruning keeps them).
        reference: The model before pruning (e.g. a deep copy taken before :func:`prune`).
        loader: Yields ``(inputs, targets)`` pairs (or bare inputs); targets are unused. It
            is iterated once per refitted layer, for ``batches`` batches each time.
        kept: For layers that also lost output channels, the reference output channels they
            kept: :attr:`netsurgeon.pruning.PruneResult.kept`.
        batches: Batches per layer (positive).
        ridge: Ridge penalty relative to the mean input energy (>= 0); it keeps the fit
            stable when kept channels are nearly collinear.
        rows_per_batch: At most this many output positions per batch enter the fit, drawn at
            random (positive); it bounds time and memory for large feature maps.
        max_features: Layers whose weight rows are longer than this (input channels times
            kernel area) are left as they are, with a warning: the fit holds a square matrix
            of that side in float64 (16384: 2 GiB).
        seed: Seed of that draw.

    Returns:
        One :class:`LayerFit` per refitted layer, in execution order.

    Raises:
        ConfigError: A bad argument, a reference that does not match the model, a layer that
            lost output channels without ``kept``, or a loader that yields nothing (on every
            process, under ``torch.distributed``).
    """
    counts = {"batches": batches, "rows_per_batch": rows_per_batch, "max_features": max_features}
    for label, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label}={value!r} is not allowed; use a positive integer")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not 0 <= ridge < math.inf:
        raise ConfigError(f"ridge={ridge!r} is not allowed; use a finite number >= 0")
    check_reiterable("loader", loader)  # read once per layer
    if reference is model:
        raise ConfigError(
            "reference is the model itself; pass the model as it was before pruning "
            "(copy.deepcopy(model) before you prune it)"
        )
    targets = _targets(model, reference, kept or {})
    if not targets:
        return []
    device = resolve_device(None, model)
    ref_device = resolve_device(None, reference)
    dtype, ref_dtype = float_dtype(model), float_dtype(reference)
    generator = torch.Generator().manual_seed(seed)
    fits: list[LayerFit] = []
    with kept_modes(model, reference):
        model.eval()
        reference.eval()
        first = next(iter(loader), None)
        order = (
            None
            if first is None
            else _execution_order(model, targets, move_inputs(batch_inputs(first), device, dtype))
        )
        if is_distributed():
            # A process whose shard is empty still joins every reduction below, in the order
            # a process with data found.
            order = _shared_order(order, sorted(targets), device)
        if order is None:
            raise ConfigError("reconstruct: the data loader yielded no batches")
        for name in order:
            module = model.get_submodule(name)
            n_features = module.weight[0].numel()
            if n_features > max_features:
                logger.warning(
                    "reconstruct: left %s as it is: its %d input features exceed max_features=%d",
                    name, n_features, max_features,
                )  # fmt: skip
                continue
            gram = cross = None
            energy, rows = 0.0, 0
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                inputs = batch_inputs(batch)
                x = _capture(model, name, move_inputs(inputs, device, dtype), output=False)
                y = _capture(
                    reference, name, move_inputs(inputs, ref_device, ref_dtype), output=True
                )
                y = y.to(x.device)
                index = targets[name]
                if index is not None:  # outputs are channels: dim 1 of a conv, last of a linear
                    dim = 1 if isinstance(module, nn.Conv2d) else -1
                    y = y.index_select(dim, index.to(y.device))
                features, outputs = _rows(module, x, y)
                if features.shape[0] > rows_per_batch:
                    pick = torch.randperm(features.shape[0], generator=generator)[:rows_per_batch]
                    pick = pick.to(features.device)
                    features, outputs = features[pick], outputs[pick]
                features, outputs = features.double(), outputs.double()
                gram = features.T @ features if gram is None else gram + features.T @ features
                cross = features.T @ outputs if cross is None else cross + features.T @ outputs
                energy += float(outputs.square().sum())
                rows += features.shape[0]
            if gram is None or cross is None:  # this process's shard is empty
                n_rows = module.weight[0].numel() + (module.bias is not None)
                gram = torch.zeros(n_rows, n_rows, dtype=torch.float64, device=device)
                cross = gram.new_zeros(n_rows, module.weight.shape[0])
            if is_distributed():
                # Sum every process's statistics, so all of them solve for the same weights.
                totals = gram.new_tensor([energy, float(rows)])
                for tensor in (gram, cross, totals):
                    dist.all_reduce(tensor)
                energy, rows = float(totals[0]), int(totals[1])
            old = _flat_weight(module)
            damping = ridge * float(gram.diagonal().mean()) + 1e-12
            eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            new = torch.linalg.solve(gram + damping * eye, cross).T
            before = _relative_error(old, gram, cross, energy)
            after = _relative_error(new, gram, cross, energy)
            if after < before:
                n_weight = module.weight[0].numel()
                module.weight.copy_(new[:, :n_weight].reshape(module.weight.shape))
                if module.bias is not None:
                    module.bias.copy_(new[:, n_weight])
            else:
                after = before
            fits.append(LayerFit(name, before, after, rows))
    return fits
