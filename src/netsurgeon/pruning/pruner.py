"""Plan and apply pruning: scope, targets, bounds, and the iterative schedule.

:func:`prune` removes filters once. :class:`Pruner` follows Molchanov et al. 2017: it prunes a
slice, lets the caller fine-tune, and repeats until the target is reached.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch
from torch import nn

from netsurgeon.choices import SCOPES
from netsurgeon.errors import ConfigError
from netsurgeon.modes import kept_buffers, kept_modes
from netsurgeon.pruning.criteria import (
    CRITERIA,
    Filters,
    get_criterion,
    needs_loss,
    requires_data,
)
from netsurgeon.pruning.graph import (
    _CONV_TRANSPOSE_TYPES,
    _CONV_TYPES,
    ChannelGroup,
    ConsumerRecord,
    PruningGraph,
    output_shapes,
    trace_graph,
)
from netsurgeon.pruning.optimizer_state import OptimizerFollower
from netsurgeon.pruning.stats import (
    MacCounter,
    as_input_tuple,
    check_reiterable,
    count_params,
)
from netsurgeon.pruning.surgery import (
    prune_conv,
    prune_conv_transpose,
    prune_linear,
    prune_norm,
    prune_parameter,
    prune_recurrent,
    restorable,
    set_size,
)

__all__ = ["Footprint", "PruneResult", "Pruner", "prune"]

_EPS = 1e-12


@dataclass(frozen=True)
class Footprint:
    """What a model costs: parameters and multiply-accumulates on the example inputs.

    ``filters`` is the number of filters the pruner may remove, and ``groups`` the size of
    every set of channels pruned together, as ``(key, size)`` pairs; a key joins the names of
    the layers that make those channels. :class:`Pruner` counts both before its first slice,
    so that a schedule given ``amount`` can be continued; ``None`` elsewhere.
    """

    params: int
    macs: int
    filters: int | None = None
    groups: tuple[tuple[str, int], ...] | None = None


@dataclass
class PruneResult:
    """What a prune did.

    Attributes:
        before: Parameters and MACs before pruning.
        after: Parameters and MACs after pruning.
        skipped: One reason per set of filters that had to be kept.
        channels: Output channels (before, after) of every layer that lost filters.
        kept: For every layer that lost filters, the indices of the output channels it kept
            (into its outputs before pruning), e.g. for :func:`netsurgeon.reconstruct`.
    """

    before: Footprint
    after: Footprint
    skipped: list[str] = field(default_factory=list)
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Index tensors: left out of the repr, which they would fill (14,000 characters for resnet18).
    kept: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def macs_ratio(self) -> float:
        """MACs after divided by MACs before."""
        return self.after.macs / self.before.macs if self.before.macs else 1.0

    @property
    def params_ratio(self) -> float:
        """Parameters after divided by parameters before."""
        return self.after.params / self.before.params if self.before.params else 1.0


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_example_inputs(example_inputs: Any) -> None:
    if example_inputs is None:
        raise ConfigError("example_inputs is required: a tensor the model accepts")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.dim() and x.shape[0] == 0:
            # An empty batch costs no MACs: every MACs target would be met by pruning nothing.
            raise ConfigError(
                f"example_inputs has an empty batch (shape {tuple(x.shape)}); "
                "pass at least one example (batch 1 is enough)"
            )


def _check_target(amount: Any, target_macs: Any) -> tuple[float | None, float | None]:
    if (amount is None) == (target_macs is None):
        given = "both" if amount is not None else "neither"
        raise ConfigError(
            f"give exactly one of amount (fraction of filters to remove) and target_macs "
            f"(fraction of MACs to keep); got {given} "
            f"(amount={amount!r}, target_macs={target_macs!r})"
        )
    if amount is not None:
        return _check_fraction("amount", amount), None
    return None, _check_fraction("target_macs", target_macs)


def _check_flag(name: str, value: object) -> bool:
    """A boolean option; anything else (a string such as ``"false"``) is refused."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _resolve_ignore(
    model: nn.Module,
    ignore: Iterable[str | nn.Module] | None,
    what: str = "ignore (--ignore)",
) -> set[str]:
    """The names of the modules ``ignore`` lists and of every module inside them."""
    names = dict(model.named_modules())
    resolved: set[str] = set()
    for name in _match_modules(model, ignore, what):
        prefix = f"{name}." if name else ""
        resolved.update(n for n in names if n == name or n.startswith(prefix))
    return resolved


def _resolve_leaves(
    model: nn.Module, leaf_modules: Iterable[str | nn.Module | type[nn.Module]] | None
) -> set[str]:
    """The names of the modules ``leaf_modules`` lists: names, patterns, modules or types."""
    if leaf_modules is None:
        return set()
    if isinstance(leaf_modules, (str, nn.Module, type)):
        leaf_modules = [leaf_modules]
    what = "leaf_modules"
    items, resolved = [], set()
    for item in leaf_modules:
        if isinstance(item, type) and issubclass(item, nn.Module):
            of_type = {n for n, m in model.named_modules() if n and isinstance(m, item)}
            if not of_type:
                raise ConfigError(f"{what}: the model has no module of type {item.__name__}")
            resolved |= of_type
        else:
            items.append(item)
    resolved |= _match_modules(model, items, what)
    if "" in resolved:
        raise ConfigError(f"{what}: the model itself cannot be a leaf; name modules inside it")
    return resolved


def _match_modules(
    model: nn.Module, items: Iterable[str | nn.Module] | None, what: str
) -> set[str]:
    """The names of the modules ``items`` lists by name, ``fnmatch`` pattern or object."""
    if items is None:
        return set()
    if isinstance(items, (str, nn.Module)):
        items = [items]
    names = dict(model.named_modules())
    by_module = {id(m): n for n, m in names.items()}
    resolved: set[str] = set()
    for item in items:
        if isinstance(item, nn.Module):
            if id(item) not in by_module:
                raise ConfigError(f"{what}: module {type(item).__name__} is not part of the model")
            item = by_module[id(item)]
        if isinstance(item, str) and item not in names and any(c in item for c in "*?["):
            matched = [n for n in names if n and fnmatch.fnmatchcase(n, item)]
            if not matched:
                raise ConfigError(f"{what}: the pattern {item!r} matches no module of the model")
        elif not isinstance(item, str) or item not in names:
            close = difflib.get_close_matches(str(item), [n for n in names if n], n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{what}: the model has no module named {item!r}{hint}")
        else:
            matched = [item]
        resolved.update(matched)
    return resolved


Amounts = list[tuple[frozenset[str], float]]


def _resolve_amounts(
    model: nn.Module, amounts: Mapping[str, float] | None, amount: float | None, scope: str
) -> Amounts | None:
    """``amounts``' entries as (module names they cover, fraction), in the given order."""
    if amounts is None:
        return None
    if not isinstance(amounts, Mapping):
        raise ConfigError(
            f"amounts must be a mapping of module names to fractions, got {amounts!r}"
        )
    if amount is None or scope != "layer":
        raise ConfigError(
            'amounts (per-layer fractions) need amount= and scope="layer" (--amount and '
            f"--scope layer); got amount={amount!r}, scope={scope!r}"
        )
    resolved: Amounts = []
    for key, value in amounts.items():
        if not isinstance(key, str):
            raise ConfigError(f"amounts: keys must be module names or patterns, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < 1:
            raise ConfigError(
                f"amounts[{key!r}] must be a number in [0, 1) (the share of that layer's "
                f"filters to remove), got {value!r}"
            )
        names = _resolve_ignore(model, [key], what="amounts (--amounts)")
        resolved.append((frozenset(names), float(value)))
    return resolved


def _resolve_criterion(criterion: Any, data: Any, loss_fn: Any) -> Any:
    resolved = get_criterion(criterion)
    label = criterion if isinstance(criterion, str) else type(resolved).__name__
    if requires_data(resolved) and data is None:
        raise ConfigError(
            f"criterion {label!r} is data-driven: pass data=<an iterable of (inputs, targets) "
            "batches>" + (" and loss_fn=<callable(outputs, targets)>" if needs_loss(resolved)
                          else "")
        )  # fmt: skip
    if needs_loss(resolved) and loss_fn is None:
        raise ConfigError(f"criterion {label!r} needs loss_fn=<callable(outputs, targets)>")
    return resolved


def _group_scores(
    graph: PruningGraph, criterion: Any, skipped: list[str], *, reduce: str = "mean"
) -> dict[int, torch.Tensor]:
    """One score per channel of every prunable group: the mean (or ``reduce="sum"``) of its
    layers' normalised scores."""
    per_group: dict[int, list[torch.Tensor]] = {}
    cache: dict[str, torch.Tensor] = {}  # each layer is scored once, even when split
    data_driven = requires_data(criterion)
    for group in graph.prunable_groups():
        sources = group.sources
        if data_driven:
            sources = [name for name in sources if name in graph.observe]
            if not sources:
                skipped.append(
                    f"{', '.join(group.sources)} ({group.size} channels) kept: only runs in the "
                    "model's other train/eval mode, so the data-driven criterion cannot score it"
                )
                continue
        for name, offset, length in group.slices:
            if name not in sources:
                continue
            if name not in cache:
                module = graph.source_module(name)
                norm_name = graph.norms.get(name)
                norm = graph.model.get_submodule(norm_name) if norm_name else None
                scores = criterion(Filters(name, module, norm))
                filters = _out_channels(module)
                if not isinstance(scores, torch.Tensor) or scores.shape != (filters,):
                    shape = (
                        tuple(scores.shape) if isinstance(scores, torch.Tensor) else (type(scores))
                    )
                    raise ConfigError(
                        f"criterion returned {shape} for layer '{name}'; it must return a 1-D "
                        f"tensor with one score per filter ({filters})"
                    )
                scores = scores.detach().float().cpu()
                if not bool(scores.isfinite().all()):  # nan sorts anywhere: an arbitrary cut
                    bad = int((~scores.isfinite()).sum())
                    raise ConfigError(
                        f"criterion returned {bad} non-finite score(s) (nan or inf) of "
                        f"{filters} for layer '{name}'; scores must be finite numbers"
                    )
                cache[name] = scores / scores.abs().mean().clamp_min(_EPS)
            per_group.setdefault(group.id, []).append(cache[name][offset : offset + length])
    if reduce == "sum":
        return {gid: torch.stack(s).sum(0) for gid, s in per_group.items()}
    return {gid: torch.stack(s).mean(0) for gid, s in per_group.items()}


def _per_mac(graph: PruningGraph, scores: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Divide each group's scores by what one of its channels costs (Molchanov et al. 2017, 2.3).

    A channel's cost is the MACs its removal saves, relative to the mean over groups, so a
    global ranking under a MACs budget removes the least importance per MAC saved, not the least
    importance per filter. Channels of early, high-resolution layers cost more and go sooner.
    """
    full = graph.traced_macs
    sizes = {g.id: g.size for g in graph.prunable_groups() if g.id in scores}
    costs = {gid: max(full - graph.predicted_macs({gid: n - 1}), 1) for gid, n in sizes.items()}
    if not costs:
        return scores
    mean = sum(costs.values()) / len(costs)
    return {gid: s / (costs[gid] / mean) for gid, s in scores.items()}


def _bounded_keep(n_keep: int, size: int, divisor: int, min_channels: int, round_to: int) -> int:
    step = math.lcm(divisor, round_to)
    keep = max(n_keep, min_channels, 1)
    keep = math.ceil(keep / step) * step
    return min(keep, size)


def _select(scores: torch.Tensor, keep: int, divisor: int, block: int = 1) -> torch.Tensor:
    """Indices of the ``keep`` best channels, equally many from each of ``divisor`` slices,
    or in whole aligned blocks of ``block`` channels ranked by their total score."""
    if block > 1:
        best = torch.topk(scores.reshape(-1, block).sum(1), keep // block, sorted=False).indices
        return (best[:, None] * block + torch.arange(block)).flatten().sort().values
    size = scores.numel()
    per = size // divisor
    k = keep // divisor
    chosen = []
    for g in range(divisor):
        block = scores[g * per : (g + 1) * per]
        top = torch.topk(block, k, largest=True, sorted=False).indices
        chosen.append(top + g * per)
    return torch.cat(chosen).sort().values


def _group_keys(graph: PruningGraph) -> dict[int, str]:
    """A name for every prunable group that stays the same when the model is pruned.

    The key joins the names of the layers whose filters the group holds; groups made by the
    same layers (pieces of a split channel stream) are numbered in channel order, ``#1`` on.
    """
    keys: dict[int, str] = {}
    seen: dict[str, int] = {}
    for group in sorted(graph.prunable_groups(), key=lambda g: g.slices[0][1]):
        name = ",".join(sorted(group.sources))
        count = seen.get(name, 0)
        seen[name] = count + 1
        keys[group.id] = f"{name}#{count}" if count else name
    return keys


def _plan(
    graph: PruningGraph,
    scores: dict[int, torch.Tensor],
    *,
    amount: float | None,
    num_filters: int | None,
    scope: str,
    min_channels: int,
    round_to: int,
    sizes: dict[int, int] | None = None,
    amounts: Amounts | None = None,
) -> dict[int, torch.Tensor]:
    """Indices each group keeps; groups that keep everything are left out.

    With ``scope="layer"`` a group keeps what ``amount`` leaves of its size in ``sizes`` (its
    size before a schedule's first slice; default: now), and never more than it holds; the
    first entry of ``amounts`` that covers one of its layers replaces ``amount``.
    """
    groups = {g.id: g for g in graph.prunable_groups() if g.id in scores}
    n_keep: dict[int, int] = {}
    if scope == "layer" and num_filters is None:
        assert amount is not None
        for gid, group in groups.items():
            size = group.size if sizes is None else sizes.get(gid, group.size)
            share = _entry_share(group, amounts, amount)
            # The epsilon keeps float error (0.5 * 16 computed as 7.999...) from losing a filter.
            n_prune = math.floor(share * size + 1e-9)
            least = max(min_channels, group.min_size)
            bounded = _bounded_keep(size - n_prune, size, group.unit, least, round_to)
            n_keep[gid] = min(bounded, group.size)
    else:
        ids = list(groups)
        if not ids:
            return {}
        # One entry per filter, or per block (a GroupNorm group, a PixelShuffle's; its mean
        # score, worth `block` filters):
        # counting filters one by one and rounding up to whole groups removed nothing from a
        # group whose share was under one group.
        entries = [scores[gid].reshape(-1, groups[gid].block).mean(1) for gid in ids]
        flat = torch.cat(entries)
        owner = torch.cat([torch.full((len(e),), i) for i, e in enumerate(entries)])
        worth = torch.cat(
            [torch.full((len(e),), groups[gid].block) for gid, e in zip(ids, entries, strict=True)]
        )
        k = _filters_asked(amount, num_filters, int(worth.sum()))
        order = torch.argsort(flat, stable=True)
        taken = int(torch.searchsorted(torch.cumsum(worth[order], 0), k)) + 1 if k else 0
        lowest = order[:taken]  # the fewest entries worth at least k filters
        counts = torch.bincount(owner[lowest], weights=worth[lowest].double(), minlength=len(ids))
        for i, gid in enumerate(ids):
            group = groups[gid]
            n_keep[gid] = _bounded_keep(
                group.size - int(counts[i]),
                group.size,
                group.unit,
                max(min_channels, group.min_size),
                round_to,
            )
    keep: dict[int, torch.Tensor] = {}
    for gid, group in groups.items():
        if n_keep[gid] < group.size:
            keep[gid] = _select(scores[gid], n_keep[gid], group.divisor, group.block)
    return keep


def _apply(
    graph: PruningGraph,
    keep: dict[int, torch.Tensor],
    example_inputs: Any,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[int, dict[str, torch.Tensor]]:
    """Cut every affected layer; restore all of them if the pruned model does not run. An
    ``optimizer`` then holds the new parameters, its state cut alike.

    Returns:
        The MACs of the pruned model, counted while checking that it runs, and the output
        channels every cut convolution or linear layer kept.
    """
    out_keep: dict[str, torch.Tensor] = {}
    for name in graph.source_names:
        kept = graph.positions(graph.source_channels(name), keep)
        if kept is not None:
            out_keep[name] = kept
    in_keep: dict[str, torch.Tensor] = {}
    member_keep: dict[str, torch.Tensor] = {}
    parameters: list[tuple[ConsumerRecord, torch.Tensor]] = []  # layer scales and the like
    for name, record in graph.consumers.items():
        positions = graph.positions(record.channels, keep)
        if positions is None:
            continue
        if record.role == "parameter":
            parameters.append((record, positions))
        else:
            (member_keep if record.role == "member" else in_keep)[name] = positions
    names = set(out_keep) | set(in_keep) | set(member_keep)
    modules = {name: graph.model.get_submodule(name) for name in names}
    owners = [record.module for record, _ in parameters]
    # The sizes modules split channels at (timm's MixedConv2d), each set to what its part keeps.
    split_sizes = []
    for (owner, attr, index), channels in graph.split_sizes.items():
        positions = graph.positions(channels, keep)
        if positions is not None:
            split_sizes.append((graph.model.get_submodule(owner), attr, index, len(positions)))
    follower = (
        None if optimizer is None else OptimizerFollower(optimizer, [*modules.values(), *owners])
    )

    def cut(module: nn.Module, name: str) -> None:
        if name in member_keep:
            if isinstance(module, _CONV_TYPES):
                prune_conv(module, out_keep=member_keep[name], in_keep=member_keep[name])
            else:
                prune_norm(module, member_keep[name])
        elif isinstance(module, nn.Linear):
            prune_linear(module, out_keep=out_keep.get(name), in_keep=in_keep.get(name))
        elif isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            prune_recurrent(module, hidden_keep=out_keep.get(name), in_keep=in_keep.get(name))
        elif isinstance(module, _CONV_TRANSPOSE_TYPES):
            prune_conv_transpose(module, out_keep=out_keep.get(name), in_keep=in_keep.get(name))
        else:
            prune_conv(module, out_keep=out_keep.get(name), in_keep=in_keep.get(name))

    try:
        with restorable([*modules.values(), *owners, *(module for module, *_ in split_sizes)]):
            for record, positions in parameters:
                attr = record.name.rpartition(".")[2]
                for owner in (record.module, *(follower.copies(record.module) if follower else ())):
                    prune_parameter(owner, attr, positions, record.channels.dim, record.sizes)
            for owner, attr, index, size in split_sizes:
                set_size(owner, attr, index, size)
            for name, module in modules.items():
                for target in (module, *(follower.copies(module) if follower else ())):
                    cut(target, name)
            macs = _verify(graph, example_inputs)
            if follower is not None:
                follower.commit()
    except _PrunedModelFails:
        if graph.mode_sensitive:  # the restored model: does it fail in training mode too?
            try:
                _training_pass(graph.model, example_inputs)
            except Exception as exc:
                raise ConfigError(
                    f"the model does not run in training mode on example_inputs, before pruning "
                    f"either ({type(exc).__name__}: {exc}); give inputs it can train on, such "
                    "as a batch of 2 or more, or a larger input size (--input-size)"
                ) from None
        raise
    kept = {
        name: index
        for name, index in {**out_keep, **member_keep}.items()
        if isinstance(modules[name], (nn.Linear, nn.RNNBase, *_CONV_TYPES, *_CONV_TRANSPOSE_TYPES))
    }
    return macs, kept


class _PrunedModelFails(RuntimeError):
    """The pruned model raised: an engine bug, unless the model failed so before pruning."""


def _training_pass(model: nn.Module, example_inputs: Any) -> None:
    """One forward pass in training mode, leaving modes, buffers and random streams as they
    were (a training-mode pass updates batch-norm statistics)."""
    with (
        kept_buffers(model),
        kept_modes(model),
        torch.no_grad(),
        torch.random.fork_rng(devices=[]),
    ):
        model.train()
        model(*as_input_tuple(example_inputs))


def _verify(graph: PruningGraph, example_inputs: Any) -> int:
    """Run the pruned model in every traced mode; returns its MACs in eval mode."""
    model = graph.model
    try:
        if graph.mode_sensitive:  # e.g. auxiliary heads that run only in training
            _training_pass(model, example_inputs)
        with kept_modes(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()
            with MacCounter() as counter:
                output = model(*as_input_tuple(example_inputs))
    except Exception as exc:  # a bug in the engine: undo and report loudly
        raise _PrunedModelFails(
            f"netsurgeon produced a model that does not run ({type(exc).__name__}: {exc}); "
            "the model was restored. Please report this with the model's code."
        ) from exc
    shapes = output_shapes(output)
    if shapes != graph.output_shapes:
        raise RuntimeError(
            f"pruning changed the output shapes from {graph.output_shapes} to {shapes}; "
            "the model was restored. Please report this with the model's code."
        )
    return counter.macs


def _prune_once(
    model: nn.Module,
    example_inputs: Any,
    *,
    amount: float | None,
    target_macs: float | None,
    num_filters: int | None,
    criterion: Any,
    scope: str,
    ignore: set[str],
    data: Any,
    loss_fn: Any,
    min_channels: int,
    round_to: int,
    filters_left: int | None = None,
    start_sizes: dict[str, int] | None = None,
    amounts: Amounts | None = None,
    leaves: set[str] | None = None,
    prune_layer_norms: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
) -> PruneResult:
    graph = trace_graph(
        model, example_inputs, ignore=ignore, leaf_modules=leaves or (),
        prune_layer_norms=prune_layer_norms,
    )  # fmt: skip
    if filters_left is not None:  # a global schedule's goal: remove down to this many filters
        num_filters = max(sum(g.size for g in graph.prunable_groups()) - filters_left, 0)
    before = Footprint(count_params(model), graph.total_macs)
    if requires_data(criterion):
        criterion.collect(graph, data, loss_fn)
    skipped = graph.skipped()
    if scope == "global_macs":
        # A channel shared by several layers (a residual stream) costs MACs in all of them, and
        # removing it loses what it carries in all of them: sum both, or streams are gutted.
        scores = _per_mac(graph, _group_scores(graph, criterion, skipped, reduce="sum"))
        scope = "global"
    else:
        scores = _group_scores(graph, criterion, skipped)
    first_sizes = None
    if start_sizes is not None and scope == "layer":  # a schedule: shares of the first sizes
        keys = _group_keys(graph)
        first_sizes = {gid: start_sizes[k] for gid, k in keys.items() if k in start_sizes}
    plan = {
        "scope": scope,
        "min_channels": min_channels,
        "round_to": round_to,
        "sizes": first_sizes,
    }
    if target_macs is not None:
        keep, note = _search_macs(graph, scores, before.macs, target_macs, plan)
        if note:
            skipped.append(note)
    else:
        keep = _plan(graph, scores, amount=amount, num_filters=num_filters, amounts=amounts, **plan)
        if scope == "global":
            note = _global_shortfall(graph, scores, keep, amount, num_filters, plan)
            if note:
                skipped.append(note)
    # Every layer whose outputs can shrink: producers, and depthwise convolutions pruned along.
    sizes = {name: graph.source_module(name) for name in graph.source_names}
    sizes.update(
        (name, record.module)
        for name, record in graph.consumers.items()
        if record.role == "member" and isinstance(record.module, _CONV_TYPES)
    )
    channels_before = {name: _out_channels(m) for name, m in sizes.items()}
    macs_after, kept = _apply(graph, keep, example_inputs, optimizer) if keep else (before.macs, {})
    channels = {
        name: (channels_before[name], _out_channels(m))
        for name, m in sizes.items()
        if _out_channels(m) != channels_before[name]
    }
    after = Footprint(count_params(model), macs_after)
    return PruneResult(before, after, skipped, channels, kept)


def _entry_share(group: ChannelGroup, amounts: Amounts | None, default: float) -> float:
    """The share of the first ``amounts`` entry that covers one of ``group``'s layers."""
    return next((a for names, a in amounts or () if not names.isdisjoint(group.sources)), default)


def _filters_asked(amount: float | None, num_filters: int | None, total: int) -> int:
    """How many of ``total`` filters a global ranking is asked to remove."""
    asked = num_filters if num_filters is not None else math.floor((amount or 0) * total + 1e-9)
    return min(asked, total)


def _schedule_share(total: float, done: float) -> float:
    """The share of the first sizes removed once ``done`` (0 to 1) of a schedule that ends at
    ``total`` is done: ``1 - (1 - total) ** done``, geometric like the slices, and ``total``
    exactly at the end, where float error could lose a filter."""
    return total if done >= 1 else 1 - (1 - total) ** done


def _global_shortfall(
    graph: PruningGraph,
    scores: dict[int, torch.Tensor],
    keep: dict[int, torch.Tensor],
    amount: float | None,
    num_filters: int | None,
    plan: dict[str, Any],
) -> str | None:
    """Why a global ranking removed fewer filters than asked, or None when it did not.

    The lowest-ranked filters are taken as a whole; a layer whose bounds (``min_channels``,
    ``round_to``, a grouped convolution's divisor, a GroupNorm's groups) keep some of its
    share keeps them.
    """
    sizes = {g.id: g.size for g in graph.prunable_groups() if g.id in scores}
    asked = _filters_asked(amount, num_filters, sum(sizes.values()))
    removed = sum(sizes[gid] - len(kept) for gid, kept in keep.items())
    if removed >= asked:
        return None
    return (
        f"the global ranking removed {removed} of the {asked} filters asked for: layers keep "
        f"the rest of their share within their bounds (min_channels={plan['min_channels']}, "
        f"round_to={plan['round_to']}, grouped convolutions' divisors, whole GroupNorm groups)"
    )


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.RNNBase):  # its hidden units
        return int(module.hidden_size)
    if isinstance(module, _CONV_TRANSPOSE_TYPES):  # weight (in, out / groups, *kernel)
        return int(module.weight.shape[1]) * module.groups
    return int(module.weight.shape[0])


def _size_before(size: int, share: float, divisor: int, min_channels: int, round_to: int) -> int:
    """A group's size before layer-scope slices took it down to what ``share`` of it leaves.

    Rounding lets several sizes fit at times. A size before is a multiple of ``divisor`` (a
    grouped convolution's slices, a GroupNorm's groups: what the group always keeps a multiple
    of). Layer widths are mostly multiples of a power of two (16, 144, 960), so of the sizes
    left the one divisible by the highest power of two wins, then the one nearest
    ``size / (1 - share)``.
    """
    return _likeliest_before(
        size,
        share,
        lambda n: (
            _bounded_keep(n - math.floor(share * n + 1e-9), n, divisor, min_channels, round_to)
            if n % divisor == 0
            else -1
        ),
    )


def _likeliest_before(now: int, share: float, left: Callable[[int], int]) -> int:
    """The count ``n`` that a slice leaving ``left(n)`` took down to ``now``; of several that
    fit, the one divisible by the highest power of two, then the one nearest the estimate."""
    estimate = now / (1 - share)
    fits = [n for n in range(now, math.floor(estimate + 1e-9) + 1) if left(n) == now]
    if not fits:
        return round(estimate)
    return min(fits, key=lambda n: (-((n & -n).bit_length()), abs(n - estimate)))


# The largest share of every layer a bisection tries (the bounds keep at least min_channels).
_MAX_AMOUNT = 0.999
# How far under target_macs a bisection may land before the result says why.
_TARGET_SLACK = 0.02


def _search_macs(
    graph: PruningGraph,
    scores: dict[int, torch.Tensor],
    macs_before: int,
    target: float,
    plan: dict[str, Any],
) -> tuple[dict[int, torch.Tensor], str | None]:
    """Bisect the pruning amount until the predicted MACs fall to ``target`` of the original."""
    untraced = macs_before - graph.traced_macs

    def ratio(keep: dict[int, torch.Tensor]) -> float:
        counts = {gid: int(idx.numel()) for gid, idx in keep.items()}
        return (untraced + graph.predicted_macs(counts)) / max(macs_before, 1)

    best = _plan(graph, scores, amount=_MAX_AMOUNT, num_filters=None, **plan)
    reached = ratio(best)
    if reached > target:
        return best, (
            f"target_macs={target:g} is not reachable with these bounds; "
            f"pruned as far as allowed (about {reached:.3f} of the MACs remain)"
        )
    lo, hi = 0.0, _MAX_AMOUNT  # bisect the uniform share where the target is met
    for _ in range(30):
        mid = (lo + hi) / 2
        keep = _plan(graph, scores, amount=mid, num_filters=None, **plan)
        tried = ratio(keep)
        if tried <= target:
            hi, best, reached = mid, keep, tried
        else:
            lo = mid
    if target - reached > _TARGET_SLACK:  # the last step down jumped far below the target
        return best, (
            f"target_macs={target:g} was met at about {reached:.3f} of the MACs: one more "
            "filter per layer goes over it, as the layers' bounds move in steps (min_channels, "
            "round_to, grouped convolutions' slices, whole GroupNorm groups); scope='global' "
            "ranks filters one by one"
        )
    return best, None


def prune(
    model: nn.Module,
    example_inputs: Any,
    *,
    amount: float | None = None,
    target_macs: float | None = None,
    criterion: str | Callable[[Filters], torch.Tensor] = "l1",
    scope: str = "layer",
    ignore: Iterable[str | nn.Module] | None = None,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    min_channels: int = 1,
    round_to: int = 1,
    amounts: Mapping[str, float] | None = None,
    leaf_modules: Iterable[str | nn.Module | type[nn.Module]] | None = None,
    prune_layer_norms: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
) -> PruneResult:
    """Physically remove convolution filters, linear and recurrent units from ``model``, in place.

    Everything tied to a removed filter goes with it: its BatchNorm channel, the matching input
    channels of every consumer (recurrent layers' included), residual partners, concatenation
    slices, flattened features and per-channel parameters such as layer scales.
    Channels that reach the model's output, or pass through an op the tracer does not
    understand, are kept and reported in ``result.skipped``; so are the channels of modules
    with forward hooks and of modules that share a parameter. Pruning replaces the parameters
    it cuts: build the optimiser after pruning, or pass it as ``optimizer`` (one built before
    and not passed keeps updating the old parameters).

    Args:
        model: The network to prune. Its modules keep their names and identity.
        example_inputs: A tensor or tuple of inputs the model accepts (batch 1 is enough).
        amount: Fraction of filters to remove, in (0, 1): per layer with ``scope="layer"``, or
            of all prunable filters with ``scope="global"``.
        target_macs: Instead of ``amount``, the fraction of MACs to keep, in (0, 1).
        criterion: A name from :data:`~netsurgeon.pruning.criteria.CRITERIA` or a callable
            ``f(filters) -> scores``; lower scores are pruned.
        scope: ``"layer"``, ``"global"`` (one ranking of per-layer normalised scores) or
            ``"global_macs"`` (the same ranking with each score divided by the MACs its channel
            costs, for MACs budgets).
        ignore: Names (or module objects) of modules that must not change; a container
            protects all its children. A name with ``*``, ``?`` or ``[`` is an ``fnmatch``
            pattern, e.g. ``"layer?.?.bn2"`` for the residual-stream norms of a ResNet.
        data: Batches of ``(inputs, targets)`` for data-driven criteria.
        loss_fn: ``loss_fn(outputs, targets)``, needed by ``taylor``.
        min_channels: Fewest channels any layer keeps.
        round_to: Kept channel counts are multiples of this (where the layer is big enough).
        amounts: Per-layer fractions that replace ``amount`` (with ``scope="layer"``), as
            Torch-Pruning's ``pruning_ratio_dict``: module names or ``fnmatch`` patterns (a
            container covers the layers inside it) to the share of filters to remove, in
            [0, 1). A channel group takes the first entry that covers one of its layers, so
            a residual stream takes the entry of any layer that writes to it.
        leaf_modules: Modules to call whole instead of tracing into: names, ``fnmatch``
            patterns, module objects or module types. They keep their parameters, and the
            channels they take and give are kept (``result.skipped`` says so). A submodule
            whose forward torch.fx cannot trace (data-dependent control flow, for example) is
            called whole without being listed, with a note in ``result.skipped``.
        prune_layer_norms: LayerNorms over the channels (ConvNeXt's, a transformer's
            residual stream) and GroupNorms of one group (PoolFormer's) lose the pruned
            channels too, instead of keeping them. They then normalise the remaining channels
            over themselves, which changes the outputs even where the removed filters gave
            zeros: fine-tune afterwards.
        optimizer: The optimizer training ``model``, if any: afterwards it holds the cut
            parameters instead of the old ones, and its state shaped like them (SGD's
            momentum, Adam's moments) is cut alike, so training resumes where it was.

    Returns:
        Parameters and MACs before and after, skipped reasons, per-layer channel counts, and
        for every layer that lost filters the indices of those it kept (``kept``).

    Raises:
        ConfigError: An argument is invalid; the model is unchanged.
        TraceError: The model's own forward cannot be traced, the model is wrapped
            (``DataParallel``, ``torch.compile``), or it has parametrizations, ``weight_norm``
            or a ``torch.nn.utils.prune`` mask (the message says how to remove them); the model
            is unchanged.
    """
    amount, target_macs = _check_target(amount, target_macs)
    crit = _resolve_criterion(criterion, data, loss_fn)
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    min_channels = _check_positive_int("min_channels", min_channels)
    round_to = _check_positive_int("round_to", round_to)
    _check_example_inputs(example_inputs)
    ignored = _resolve_ignore(model, ignore)
    per_layer = _resolve_amounts(model, amounts, amount, scope)
    leaves = _resolve_leaves(model, leaf_modules)
    _check_optimizer(optimizer, model)
    return _prune_once(
        model, example_inputs, amount=amount, target_macs=target_macs, num_filters=None,
        criterion=crit, scope=scope, ignore=ignored, data=data, loss_fn=loss_fn,
        min_channels=min_channels, round_to=round_to, amounts=per_layer, leaves=leaves,
        prune_layer_norms=_check_flag("prune_layer_norms", prune_layer_norms),
        optimizer=optimizer,
    )  # fmt: skip


def _check_optimizer(optimizer: Any, model: nn.Module) -> None:
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"optimizer={type(optimizer).__name__} is not a torch.optim.Optimizer; give the "
            "optimizer that trains the model, or None"
        )
    own = {id(p) for p in model.parameters()}
    if not any(id(p) in own for group in optimizer.param_groups for p in group["params"]):
        raise ConfigError(
            f"optimizer={type(optimizer).__name__} holds none of the model's parameters; give "
            "the optimizer that trains this model, or None"
        )


FinetuneHook = Callable[[nn.Module, int, PruneResult], None]


class Pruner:
    """Iterative pruning: prune a slice, fine-tune, repeat (Molchanov et al. 2017).

    Example:
        >>> pruner = Pruner(model, x, criterion="taylor", target_macs=0.5, steps=5,
        ...                 data=loader, loss_fn=nn.functional.cross_entropy)
        >>> result = pruner.run(lambda model, step, res: finetune(model, steps=100))

    Args:
        model: The network to prune, in place.
        example_inputs: Inputs the model accepts.
        amount: Overall fraction of filters to remove (see :func:`prune`).
        target_macs: Overall fraction of MACs to keep.
        steps: Number of slices (5 when neither this nor ``filters_per_step`` is given); each
            slice removes a geometric share of what is left so that the last one lands on the
            target. Mutually exclusive with ``filters_per_step``.
            With ``scope="layer"`` and ``amount``, slice ``i`` takes every layer down to
            what ``1 - (1 - amount) ** (i / steps)`` of its original size leaves; with
            ``target_macs``, to what the smallest share of every layer's original size that
            meets the slice's MACs goal leaves. Either way the last slice ends, layer by
            layer, where a one-shot :func:`prune` ends.
        filters_per_step: Instead of ``steps``, remove this many filters per slice (global
            ranking), Molchanov's original schedule, until the target is met.
        criterion, scope, ignore, data, loss_fn, min_channels, round_to, leaf_modules,
            prune_layer_norms: As in :func:`prune`.
        amounts: Per-layer fractions that replace ``amount`` (see :func:`prune`), with
            ``steps`` and ``scope="layer"``: slice ``i`` takes a layer whose entry says ``a``
            down to what ``1 - (1 - a) ** (i / steps)`` of its original size leaves.
        start: To continue a ``steps`` schedule after an interruption: the footprint of the
            model before its first slice (default: the model as passed in), as
            :attr:`start` gave it. One without ``filters`` and ``groups`` has them inferred
            from the schedule with ``amount`` (rounding can make several counts fit; a
            ``global_macs`` schedule, whose slices miss their filter goals by a little, is
            inferred only roughly); with ``target_macs`` a layer-scope schedule then takes
            shares of the sizes the model has now.
        completed: The number of that schedule's slices already done on ``model``; the rest
            keep the original plan (slice ``i`` aims at ``target_macs ** (i / steps)`` of
            ``start``), not a new plan from where the model is now.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        *,
        amount: float | None = None,
        target_macs: float | None = None,
        steps: int | None = None,
        filters_per_step: int | None = None,
        criterion: str | Callable[[Filters], torch.Tensor] = "taylor",
        scope: str = "global",
        ignore: Iterable[str | nn.Module] | None = None,
        data: Iterable[Any] | None = None,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        min_channels: int = 1,
        round_to: int = 1,
        start: Footprint | None = None,
        completed: int = 0,
        leaf_modules: Iterable[str | nn.Module | type[nn.Module]] | None = None,
        amounts: Mapping[str, float] | None = None,
        prune_layer_norms: bool = False,
    ) -> None:
        self.amount, self.target_macs = _check_target(amount, target_macs)
        self.prune_layer_norms = _check_flag("prune_layer_norms", prune_layer_norms)
        if steps is not None and filters_per_step is not None:
            raise ConfigError(
                f"give steps or filters_per_step, not both (got {steps!r} and {filters_per_step!r})"
            )
        if filters_per_step is None:
            self.steps: int | None = _check_positive_int("steps", 5 if steps is None else steps)
            self.filters_per_step: int | None = None
        else:
            self.steps = None
            self.filters_per_step = _check_positive_int("filters_per_step", filters_per_step)
        self.criterion = _resolve_criterion(criterion, data, loss_fn)
        if requires_data(self.criterion) and (self.steps is None or self.steps > 1):
            check_reiterable("data", data)  # every slice scores on it
        if scope not in SCOPES:
            raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        self.scope = scope
        self.min_channels = _check_positive_int("min_channels", min_channels)
        self.round_to = _check_positive_int("round_to", round_to)
        _check_example_inputs(example_inputs)
        self.model = model
        self.example_inputs = example_inputs
        self.ignore = _resolve_ignore(model, ignore)
        self.leaf_modules = _resolve_leaves(model, leaf_modules)
        self.amounts = _resolve_amounts(model, amounts, self.amount, scope)
        if self.amounts is not None and self.steps is None:
            raise ConfigError(
                "amounts (per-layer fractions) need steps, not filters_per_step (a global "
                f"schedule); got filters_per_step={self.filters_per_step!r}"
            )
        self.data = data
        self.loss_fn = loss_fn
        self.history: list[PruneResult] = []
        graph = self._trace()  # first: bad inputs get a TraceError
        groups = _group_keys(graph)
        self._now = Footprint(
            count_params(model),
            graph.total_macs,  # counted by the trace's forward pass: no second pass
            sum(g.size for g in graph.prunable_groups()),
            tuple(sorted((groups[g.id], g.size) for g in graph.prunable_groups())),
        )
        if start is not None and not isinstance(start, Footprint):
            raise ConfigError(f"start={start!r} is not allowed; pass a Footprint or None")
        self._start = start if start is not None else self._now
        if (
            isinstance(completed, bool)
            or not isinstance(completed, int)
            or completed < 0
            or (completed and (self.steps is None or completed > self.steps))
        ):
            raise ConfigError(
                f"completed={completed!r} is not allowed; use a number of slices from 0 to "
                f"steps ({self.steps}), with steps rather than filters_per_step"
            )
        self._completed = completed
        # A start counted elsewhere (or by an older version) lacks the counts: infer them
        # from the schedule, which took each down to 1 - share of it.
        done = completed / self.steps if self.amount is not None and self.steps else 0.0
        share = _schedule_share(self.amount or 0.0, done)
        assert self._now.filters is not None
        self._start_filters = self._start.filters
        if self._start_filters is None:  # a global schedule removed floor(share * n) of n
            self._start_filters = _likeliest_before(
                self._now.filters, share, lambda n: n - math.floor(share * n + 1e-9)
            )
        if self._start.groups is not None:
            self._start_groups = dict(self._start.groups)
        else:
            self._start_groups = {}
            for g in graph.prunable_groups():
                self._start_groups[groups[g.id]] = _size_before(
                    g.size,
                    _schedule_share(_entry_share(g, self.amounts, self.amount or 0.0), done),
                    g.unit,
                    max(self.min_channels, g.min_size),
                    self.round_to,
                )

    @property
    def start(self) -> Footprint:
        """The footprint of the model before the schedule's first slice."""
        return self._start

    def __repr__(self) -> str:
        criterion = next(
            (name for name, kind in CRITERIA.items() if type(self.criterion) is kind),
            getattr(self.criterion, "__name__", type(self.criterion).__name__),
        )
        target = (
            f"target_macs={self.target_macs}" if self.amount is None else f"amount={self.amount}"
        )
        pace = f"steps={self.steps}" if self.steps else f"filters_per_step={self.filters_per_step}"
        return (
            f"Pruner({target}, criterion={criterion!r}, scope={self.scope!r}, {pace}, "
            f"slices_done={self._completed + len(self.history)})"
        )

    def _trace(self) -> PruningGraph:
        return trace_graph(
            self.model, self.example_inputs, ignore=self.ignore, leaf_modules=self.leaf_modules,
            prune_layer_norms=self.prune_layer_norms,
        )  # fmt: skip

    @property
    def done(self) -> bool:
        """Whether the overall target has been reached (or no slice can remove more)."""
        if self.steps is not None:
            return self._completed + len(self.history) >= self.steps
        if self.history and not self.history[-1].channels:
            return True
        current = self.history[-1].after if self.history else self._now
        if self.target_macs is not None:
            return current.macs <= self.target_macs * self._start.macs
        assert self.amount is not None
        removed = self._start_filters - sum(g.size for g in self._trace().prunable_groups())
        return removed >= self.amount * self._start_filters

    def step(self, *, optimizer: torch.optim.Optimizer | None = None) -> PruneResult:
        """Prune one slice and return what it did.

        A ``target_macs`` slice whose MACs goal an earlier slice already met (bounds such as
        ``round_to`` can make a slice overshoot its own goal) removes nothing.

        Args:
            optimizer: The optimizer training the model between slices, if any: it then holds
                the cut parameters, its state cut alike (see :func:`prune`), so the next
                slice's fine-tuning keeps its momentum.

        Raises:
            ConfigError: The schedule is :attr:`done`, or ``optimizer`` is no optimizer.
        """
        if self.done:
            slices = self._completed + len(self.history)
            raise ConfigError(
                f"the schedule is done after {slices} slices; build a new Pruner to prune further"
            )
        _check_optimizer(optimizer, self.model)
        return self._step(optimizer)

    def _step(self, optimizer: torch.optim.Optimizer | None = None) -> PruneResult:
        kwargs: dict[str, Any] = {"amount": None, "target_macs": None, "num_filters": None}
        current = self.history[-1].after if self.history else self._now
        if self.filters_per_step is not None:
            kwargs["num_filters"] = self.filters_per_step
            scope = "global"
        else:
            assert self.steps is not None
            i = self._completed + len(self.history) + 1
            scope = self.scope
            if self.target_macs is not None:
                goal = self.target_macs ** (i / self.steps) * self._start.macs
                if current.macs <= goal:  # met already: a slice that overshot got here first
                    result = PruneResult(current, current)
                    self.history.append(result)
                    return result
                kwargs["target_macs"] = max(goal / max(current.macs, 1), 1e-6)
                if scope == "layer":  # one share of every layer's first size meets the goal
                    kwargs["start_sizes"] = self._start_groups
            else:
                assert self.amount is not None
                # Aim at the schedule's cumulative goal, counted from the sizes before the
                # first slice, not at a share of what is left: each slice's rounding would
                # compound and fall short of amount.
                share = _schedule_share(self.amount, i / self.steps)
                if scope == "layer":
                    kwargs.update(amount=share, start_sizes=self._start_groups)
                    if self.amounts is not None:
                        kwargs["amounts"] = [
                            (names, _schedule_share(a, i / self.steps)) for names, a in self.amounts
                        ]
                else:
                    goal = math.floor(share * self._start_filters + 1e-9)
                    kwargs["filters_left"] = self._start_filters - goal
        result = _prune_once(
            self.model, self.example_inputs, criterion=self.criterion, scope=scope,
            ignore=self.ignore, data=self.data, loss_fn=self.loss_fn,
            min_channels=self.min_channels, round_to=self.round_to, leaves=self.leaf_modules,
            prune_layer_norms=self.prune_layer_norms, optimizer=optimizer, **kwargs,
        )  # fmt: skip
        if self.filters_per_step is not None and not result.channels:
            # done turns true: say why the target is not reached.
            result.skipped.append(
                f"filters_per_step={self.filters_per_step} removes no filter within the bounds "
                f"(min_channels={self.min_channels}, round_to={self.round_to}); the schedule "
                "stops short of its target: remove more per slice, or use steps"
            )
        self.history.append(result)
        return result

    def run(self, finetune: FinetuneHook | None = None) -> PruneResult:
        """Alternate :meth:`step` and ``finetune(model, step_index, result)`` until done.

        The hook must rebuild its optimiser: pruning replaces the parameters.

        Returns:
            The overall result, from the first slice's ``before`` to the last one's ``after``.

        Raises:
            ConfigError: ``finetune`` is not callable (checked before any slice).
        """
        if finetune is not None and not callable(finetune):
            raise ConfigError(
                f"finetune={finetune!r} is not callable; pass f(model, step, result) or None"
            )
        while not self.done:
            result = self._step()  # done was just checked (it may trace the model)
            if finetune is not None:
                finetune(self.model, len(self.history) - 1, result)
        channels: dict[str, tuple[int, int]] = {}
        kept: dict[str, torch.Tensor] = {}
        for result in self.history:
            for name, (old, new) in result.channels.items():
                channels[name] = (channels.get(name, (old, new))[0], new)
            for name, index in result.kept.items():  # compose: indices into the original
                kept[name] = kept[name][index] if name in kept else index
        skipped = list(dict.fromkeys(s for r in self.history for s in r.skipped))
        after = self.history[-1].after if self.history else self._now
        return PruneResult(self._start, after, skipped, channels, kept)
