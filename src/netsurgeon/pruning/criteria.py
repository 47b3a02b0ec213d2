"""Importance criteria: callables that give one score per filter; low scores are pruned.

A criterion is called with a :class:`Filters` (the layer's name, module and following norm
layer) and returns a 1-D tensor with one score per output filter. Any callable with that
signature works, for example ``lambda f: f.rows().abs().amax(1)`` (:meth:`Filters.rows` holds
each filter's weights as a row, for every kind of layer).

Data-driven criteria (``activation``, ``apoz``, ``taylor``) first look at real data: the
pruner calls their ``collect`` method with a data loader and a loss function, then scores.
Under ``torch.distributed`` (``torchrun``) every process scores its own batches and the
statistics are added over the processes, so that all of them prune the same filters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import fx, nn

from netsurgeon.distributed import is_distributed
from netsurgeon.errors import ConfigError
from netsurgeon.modes import kept_modes
from netsurgeon.pruning.graph import _CONV_TRANSPOSE_TYPES, PruningGraph, _EvalInterpreter
from netsurgeon.pruning.stats import batch_inputs
from netsurgeon.pruning.surgery import gate_parameters, gates

__all__ = [
    "CRITERIA",
    "FPGM",
    "APoZ",
    "Activation",
    "BNScale",
    "DataCriterion",
    "Filters",
    "L1Norm",
    "L2Norm",
    "Random",
    "Taylor",
    "get_criterion",
]


@dataclass(frozen=True)
class Filters:
    """The filters of one prunable layer, as a criterion sees them.

    Attributes:
        name: Qualified name of the layer in the model.
        module: The conv or linear layer whose output filters are scored (a transposed
            convolution's weight is ``(in, out, *kernel)``: its filters are dimension 1), or
            the recurrent layer (``LSTM``, ``GRU``, ``RNN``) whose hidden units are: it has no
            ``weight``; :meth:`rows` serves every kind.
        norm: The BatchNorm (or other per-channel norm) right after it, if any.
    """

    name: str
    module: nn.Module
    norm: nn.Module | None = None

    def rows(self) -> torch.Tensor:
        """The weights as one row per filter (detached): a convolution's flattened, a
        transposed convolution's with its filters first, a recurrent layer's per hidden unit
        (its rows of every gate, layer and direction, side by side)."""
        return _rows(self.module)


Criterion = Callable[[Filters], torch.Tensor]


def _rows(module: nn.Module) -> torch.Tensor:
    """One row of weights per output filter (per hidden unit of a recurrent layer: its rows
    of every gate, layer and direction, side by side)."""
    if isinstance(module, nn.RNNBase):
        units, per_unit = module.hidden_size, gates(module)
        parts = [
            w.detach().reshape(per_unit, units, -1).transpose(0, 1).reshape(units, -1)
            for w in gate_parameters(module)
            if w.dim() == 2
        ]
        return torch.cat(parts, 1)
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return weight
    if isinstance(module, _CONV_TRANSPOSE_TYPES):
        weight = weight.transpose(0, 1)  # (in, out, *kernel): outputs second
    return weight.flatten(1)


class L1Norm:
    """Sum of absolute filter weights (Li et al. 2017)."""

    def __call__(self, filters: Filters) -> torch.Tensor:
        return _rows(filters.module).abs().sum(1).float()


class L2Norm:
    """Euclidean norm of each filter's weights."""

    def __call__(self, filters: Filters) -> torch.Tensor:
        return _rows(filters.module).float().norm(dim=1)


class FPGM:
    """Filter pruning via geometric median (He et al. 2019).

    A filter's score is the sum of its Euclidean distances to the layer's other filters. The
    filters closest to the layer's geometric median score lowest: what they compute is best
    replaced by the filters that stay, whatever their norm. A layer with one filter scores 0.
    """

    def __call__(self, filters: Filters) -> torch.Tensor:
        # float64: the distance sums of near-identical filters must not tie from rounding.
        rows = _rows(filters.module).double()
        return torch.cdist(rows.unsqueeze(0), rows.unsqueeze(0)).squeeze(0).sum(1).float()


class Random:
    """Uniform random scores from a seeded generator, the baseline every criterion must beat."""

    def __init__(self, *, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, filters: Filters) -> torch.Tensor:
        return torch.rand(_rows(filters.module).shape[0], generator=self.generator)


class BNScale:
    """|gamma| of the BatchNorm that follows the layer (network slimming, Liu et al. 2017).

    Layers without a following affine norm (such as a squeeze-excitation's convs) fall back to
    the L1 norm of their filters.
    """

    def __call__(self, filters: Filters) -> torch.Tensor:
        norm = filters.norm
        if norm is not None and getattr(norm, "weight", None) is not None:
            return norm.weight.detach().abs().float()
        return L1Norm()(filters)


@runtime_checkable
class DataCriterion(Protocol):
    """A criterion that needs to see data before it can score filters."""

    requires_data: bool

    def collect(
        self,
        graph: PruningGraph,
        data: Iterable[Any],
        loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    ) -> None:
        """Run ``data`` through the traced model and accumulate statistics."""

    def __call__(self, filters: Filters) -> torch.Tensor:
        """Scores for the filters of one layer, after :meth:`collect`."""


def _split_batch(batch: Any) -> tuple[tuple[Any, ...], Any]:
    """The model's inputs (:func:`~netsurgeon.pruning.stats.batch_inputs`) and the targets."""
    targets = batch[1] if isinstance(batch, (list, tuple)) and len(batch) >= 2 else None
    return batch_inputs(batch), targets


class _Recorder(_EvalInterpreter):
    """Runs the traced model, as in eval mode, and hands chosen intermediate tensors to a
    callback."""

    def __init__(
        self,
        model: nn.Module,
        graph: fx.Graph,
        wanted: dict[str, list[str]],
        sink: Callable[[str, Any], None],
    ) -> None:
        super().__init__(model, graph=graph)
        self.wanted = wanted
        self.sink = sink

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        layers = self.wanted.get(n.name, ())
        if not layers:
            return result
        for layer in layers:
            self.sink(layer, result)
        # Later in-place ops (``out += identity``) must not change the recorded tensor.
        return result.clone()


def _add_over_processes(
    layers: list[str],
    sums: dict[str, torch.Tensor],
    counts: dict[str, int],
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Under ``torch.distributed``, each layer's statistics summed over every process.

    Each process scored its own shard of the data; adding them up gives every process the
    same scores, hence the same filters to prune. A process that saw no batch adds zeros.
    """
    if not is_distributed():
        return sums, counts
    sizes = torch.tensor([len(sums[k]) if k in sums else 0 for k in layers], device=device)
    dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
    flat = torch.cat(
        [
            torch.tensor([float(counts.get(k, 0)) for k in layers], device=device),
            *(
                sums[k].float() if k in sums else torch.zeros(int(n), device=device)
                for k, n in zip(layers, sizes.tolist(), strict=True)
            ),
        ]
    )
    dist.all_reduce(flat)
    total_counts = flat[: len(layers)].round().long().tolist()
    parts = flat[len(layers) :].split(sizes.tolist())
    kept = [i for i, c in enumerate(total_counts) if c > 0]
    return (
        {layers[i]: parts[i] for i in kept},
        {layers[i]: int(total_counts[i]) for i in kept},
    )


class _ActivationStatistic:
    """Shared machinery: per-channel statistics of the tensors a layer's consumers read."""

    requires_data = True
    needs_loss = False

    def __init__(self) -> None:
        self.scores: dict[str, torch.Tensor] = {}

    def collect(
        self,
        graph: PruningGraph,
        data: Iterable[Any],
        loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    ) -> None:
        model = graph.model
        wanted: dict[str, list[str]] = {}
        for layer, (node, _dim) in graph.observe.items():
            wanted.setdefault(node, []).append(layer)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        with kept_modes(model):
            model.eval()
            label = type(self).__name__.lower()  # the name in CRITERIA
            for index, batch in enumerate(data):
                inputs, targets = _split_batch(batch)
                inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
                if isinstance(targets, torch.Tensor):
                    targets = targets.to(device)
                if self.needs_loss and targets is None:
                    raise ConfigError(
                        f"criterion {label!r} needs (inputs, targets) batches for its loss, "
                        f"but data batch {index} has no targets"
                    )
                try:
                    self._batch(graph, wanted, inputs, targets, loss_fn, sums, counts)
                except ConfigError:
                    raise
                except Exception as exc:  # the user's batch or loss, not the engine
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    raise ConfigError(
                        f"criterion {label!r} failed on data batch {index} "
                        f"({type(exc).__name__}: {first}); data must yield (inputs, targets) "
                        "batches the model accepts, like example_inputs (a single batch must "
                        "be wrapped in a list)"
                    ) from None
        sums, counts = _add_over_processes(sorted(graph.observe), sums, counts, device)
        if not counts:
            raise ConfigError("the data loader given to the criterion yielded no batches")
        self.scores = self._finish(sums, counts)

    def _batch(
        self,
        graph: PruningGraph,
        wanted: dict[str, list[str]],
        inputs: tuple[Any, ...],
        targets: Any,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None,
        sums: dict[str, torch.Tensor],
        counts: dict[str, int],
    ) -> None:
        seen: dict[str, torch.Tensor] = {}

        def sink(layer: str, value: Any) -> None:
            seen[layer] = value

        grads: dict[str, torch.Tensor | None] = {}
        if self.needs_loss:
            assert loss_fn is not None
            with torch.enable_grad():
                # Gradients with respect to the activations only: parameters' .grad stay as is.
                inputs = tuple(
                    x.detach().requires_grad_(True)
                    if isinstance(x, torch.Tensor) and x.is_floating_point()
                    else x
                    for x in inputs
                )
                outputs = _Recorder(graph.model, graph.fx_graph, wanted, sink).run(*inputs)
                loss = loss_fn(outputs, targets)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss)
                    raise ConfigError(
                        f"loss_fn must return one number per batch, got {shape}; "
                        "use a mean (e.g. reduction='mean')"
                    )
                layers = [k for k, v in seen.items() if v.requires_grad]
                found = torch.autograd.grad(loss, [seen[k] for k in layers], allow_unused=True)
                grads = dict(zip(layers, found, strict=True))
        else:
            with torch.no_grad():
                _Recorder(graph.model, graph.fx_graph, wanted, sink).run(*inputs)
        for layer, value in seen.items():
            dim = graph.observe[layer][1]
            grad = grads.get(layer)
            stat = self._statistic(
                value.detach().float(), None if grad is None else grad.float(), dim
            )
            module = graph.source_module(layer)
            if isinstance(module, nn.RNNBase) and stat.numel() != module.hidden_size:
                stat = stat.view(-1, module.hidden_size).mean(0)  # one block per direction
            sums[layer] = sums.get(layer, 0) + stat
            counts[layer] = counts.get(layer, 0) + 1

    @staticmethod
    def _per_channel(t: torch.Tensor, dim: int) -> torch.Tensor:
        """Mean over every dimension except ``dim``."""
        return t.transpose(0, dim).reshape(t.shape[dim], -1).mean(1)

    def _statistic(
        self, activation: torch.Tensor, grad: torch.Tensor | None, dim: int
    ) -> torch.Tensor:
        """One value per channel for one batch; ``grad`` is set only when ``needs_loss``."""
        raise NotImplementedError

    def _finish(
        self, sums: dict[str, torch.Tensor], counts: dict[str, int]
    ) -> dict[str, torch.Tensor]:
        return {k: (v / counts[k]).cpu() for k, v in sums.items()}

    def __call__(self, filters: Filters) -> torch.Tensor:
        if filters.name not in self.scores:
            raise ConfigError(
                f"{type(self).__name__} has no statistics for layer '{filters.name}': "
                "call collect() with data first"
            )
        return self.scores[filters.name]


class Activation(_ActivationStatistic):
    """Mean absolute activation of each channel after the layer's norm and non-linearity."""

    def _statistic(
        self, activation: torch.Tensor, grad: torch.Tensor | None, dim: int
    ) -> torch.Tensor:
        return self._per_channel(activation.abs(), dim)


class APoZ(_ActivationStatistic):
    """Average percentage of zeros (Hu et al. 2016), scored as ``1 - APoZ``.

    Channels that are mostly zero after the non-linearity get low scores and go first.
    """

    def _statistic(
        self, activation: torch.Tensor, grad: torch.Tensor | None, dim: int
    ) -> torch.Tensor:
        return self._per_channel((activation <= 0).float(), dim)

    def _finish(
        self, sums: dict[str, torch.Tensor], counts: dict[str, int]
    ) -> dict[str, torch.Tensor]:
        return {k: 1.0 - v for k, v in super()._finish(sums, counts).items()}


class Taylor(_ActivationStatistic):
    """First-order Taylor expansion of the loss change (Molchanov et al. 2017, eq. 8).

    For each example, the score of channel k is ``|mean over positions of a_k * dL/da_k|``,
    where ``a_k`` is the activation that the layer's consumers read; as in the paper, it is
    computed for each example separately and averaged over the examples, then each layer's
    scores are divided by their L2 norm. The absolute value per example matters for a trained
    model: near a minimum, ``a_k * dL/da_k`` tends to average to zero over a batch, so a
    batch-level absolute value is mostly noise while the per-example magnitudes are not.

    The first dimension of an activation is taken as the batch. The loss is expected to average
    over the batch (PyTorch's default ``reduction="mean"``), so that each example's gradient
    carries a factor ``1 / batch size``, which the criterion undoes.
    """

    needs_loss = True

    def _statistic(
        self, activation: torch.Tensor, grad: torch.Tensor | None, dim: int
    ) -> torch.Tensor:
        if grad is None:  # the loss does not depend on this activation
            return torch.zeros(activation.shape[dim], device=activation.device)
        product = activation * grad
        dim %= product.dim()
        if dim == 0:  # no batch dimension to split: one score for the whole tensor
            return self._per_channel(product, dim).abs()
        batch = product.shape[0]
        per_example = product.movedim(dim, 1).reshape(batch, product.shape[dim], -1)
        # Each example's gradient carries the loss's 1 / batch: undo it, so that every example
        # weighs the same in the average whatever the size of its batch.
        return per_example.mean(2).abs().sum(0) * batch

    def _finish(
        self, sums: dict[str, torch.Tensor], counts: dict[str, int]
    ) -> dict[str, torch.Tensor]:
        out = {}
        for layer, total in sums.items():
            total = total.cpu()
            out[layer] = total / total.norm().clamp_min(1e-12)
        return out


CRITERIA: dict[str, Callable[[], Any]] = {
    "random": Random,
    "l1": L1Norm,
    "l2": L2Norm,
    "activation": Activation,
    "apoz": APoZ,
    "taylor": Taylor,
    "bn_scale": BNScale,
    "fpgm": FPGM,
}


def get_criterion(criterion: str | Criterion, *, seed: int = 0) -> Any:
    """Resolve a criterion name (see :data:`CRITERIA`) or pass a callable through.

    Args:
        criterion: A name from :data:`CRITERIA`, or a callable returned as it is.
        seed: Seed of a criterion that draws random numbers (``"random"``); the others
            ignore it.

    Raises:
        ConfigError: The name is unknown; the message lists the valid names.
    """
    if callable(criterion):
        return criterion
    if isinstance(criterion, str) and criterion in CRITERIA:
        factory = CRITERIA[criterion]
        return factory(seed=seed) if factory is Random else factory()
    valid = ", ".join(sorted(CRITERIA))
    raise ConfigError(f"unknown criterion {criterion!r}; valid criteria are: {valid}")


def requires_data(criterion: Any) -> bool:
    """Whether ``criterion`` must see data before scoring."""
    return bool(getattr(criterion, "requires_data", False))


def needs_loss(criterion: Any) -> bool:
    """Whether ``criterion`` needs a loss function with its data."""
    return bool(getattr(criterion, "needs_loss", False))
