"""BatchNorm recalibration: re-estimate running statistics after pruning.

Removing filters changes what every later layer sees, so the BatchNorm running means and
variances learned on the unpruned model no longer describe the pruned model's activations;
eval-mode accuracy right after pruning suffers from that alone. :func:`recalibrate_bn`
re-estimates them from training batches, without gradients and without touching any weight.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from netsurgeon.distributed import is_distributed
from netsurgeon.errors import ConfigError
from netsurgeon.modes import kept_modes
from netsurgeon.pruning.stats import batch_inputs, float_dtype, move_inputs, resolve_device

__all__ = ["recalibrate_bn"]


def _norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable[Any], *, batches: int | None = 100) -> int:
    """Recompute the running statistics of every BatchNorm layer of ``model`` from data.

    The running statistics are reset and replaced by the cumulative average of the batch
    statistics of the first ``batches`` batches (BatchNorm's ``momentum=None`` mode), so with
    batches of equal size the running mean is the data's mean. Weights, biases and every
    module's train/eval mode are left as they were; if the pass fails (a bad batch, or no
    batch at all), the running statistics are put back as they were too. Under
    ``torch.distributed`` the processes' statistics are averaged, each weighted by the
    batches it saw (a process whose shard yields nothing adds nothing).

    Args:
        model: The model, on the device it will run on (inputs are moved there).
        loader: Yields ``(inputs, targets)`` pairs (or bare inputs); targets are unused.
        batches: Batches to use, ``None`` for the whole loader.

    Returns:
        The number of batches used (0 when the model has no BatchNorm layer).

    Raises:
        ConfigError: ``batches`` is not a positive integer or ``None``, or the loader yields
            nothing (on every process, under ``torch.distributed``).
    """
    if batches is not None and (
        isinstance(batches, bool) or not isinstance(batches, int) or batches < 1
    ):
        raise ConfigError(f"batches={batches!r} is not allowed; use a positive integer or None")
    norms = _norm_layers(model)
    if not norms:
        return 0
    device = resolve_device(None, model)  # where its weights (or buffers) are
    dtype = float_dtype(model)  # and what its inputs must be
    momenta = [m.momentum for m in norms]
    # Put back if anything fails: a failed call must not leave reset statistics behind.
    saved = [{k: b.clone() for k, b in m.state_dict().items()} for m in norms]
    seen = 0
    try:
        with kept_modes(model):
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative moving average: every batch counts the same
            model.train()
            for batch in loader:
                if batches is not None and seen >= batches:
                    break
                model(*move_inputs(batch_inputs(batch), device, dtype))
                seen += 1
        total = seen
        distributed = is_distributed()
        if distributed:
            # Every process joins the reductions, even one whose shard yielded no batch.
            count = torch.tensor([float(seen)], device=device)
            dist.all_reduce(count)
            total = round(count.item())
        if total == 0:
            raise ConfigError("recalibrate_bn: the data loader yielded no batches")
    except BaseException:
        for m, state in zip(norms, saved, strict=True):
            m.load_state_dict(state)
        raise
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
    if distributed:
        for m in norms:
            for stat in (m.running_mean, m.running_var):
                if stat is not None:  # weighted by the batches each process saw
                    stat.mul_(seen)
                    dist.all_reduce(stat)
                    stat.div_(total)
    return seen
