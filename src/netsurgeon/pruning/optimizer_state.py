"""Carry an optimizer through pruning: its parameters, and its state cut like them.

Pruning replaces the parameters it cuts, so an optimizer built before would keep updating the
old ones. Given to :func:`~netsurgeon.pruning.prune` or :meth:`Pruner.step
<netsurgeon.pruning.Pruner.step>`, it holds the new parameters afterwards, and every state
tensor shaped like its parameter (SGD's momentum buffer, Adam's moments) is cut exactly as the
parameter was: the same surgery runs on a shallow copy of each layer whose parameters are that
state. Training then goes on as if the removed filters had never been there, with its
momentum intact instead of starting again from zero after every slice.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from netsurgeon.errors import ConfigError

__all__ = ["OptimizerFollower"]


class OptimizerFollower:
    """The state of ``optimizer`` for the parameters of ``modules``, ready to be cut with them.

    Use: for every module, run the same surgery on each of :meth:`copies` as on the module;
    then :meth:`commit` once the cut model is known to work.

    Args:
        optimizer: A :class:`torch.optim.Optimizer`.
        modules: The layers about to be cut.

    Raises:
        ConfigError: The optimizer keeps state for one of their parameters that is neither
            shaped like it nor a number (L-BFGS's flat history), which cannot be cut.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, modules: Iterable[nn.Module]) -> None:
        self.optimizer = optimizer
        self._before: dict[int, tuple[nn.Module, dict[str, nn.Parameter | None]]] = {}
        self._copies: dict[int, dict[str, nn.Module]] = {}
        for module in modules:
            if id(module) in self._before:
                continue
            params = dict(module._parameters)
            self._before[id(module)] = (module, params)
            keys = set()  # the state kept per parameter element: cut with the parameter
            for name, p in params.items():
                for key, value in optimizer.state.get(p, {}).items() if p is not None else ():
                    if _shaped_like(value, p):
                        keys.add(key)
                    elif not _scalar(value):
                        raise ConfigError(
                            f"{type(optimizer).__name__} keeps state {key!r} for parameter "
                            f"{name!r} of a {type(module).__name__} that is not shaped like it, "
                            "so pruning cannot cut it: build the optimizer after pruning instead"
                        )
            self._copies[id(module)] = {key: self._copy(module, params, key) for key in keys}

    def _copy(
        self, module: nn.Module, params: dict[str, nn.Parameter | None], key: str
    ) -> nn.Module:
        """A shallow copy of ``module`` whose parameters are its state ``key`` (the real
        parameter where one has none), with dictionaries of its own, so cutting it leaves the
        module as it is."""
        shadow = copy.copy(module)
        shadow._parameters = {}
        for name, p in params.items():
            value = None if p is None else self.optimizer.state.get(p, {}).get(key)
            if p is not None and _shaped_like(value, p):
                shadow._parameters[name] = nn.Parameter(value.detach(), requires_grad=False)
            else:
                shadow._parameters[name] = p
        shadow._buffers = dict(module._buffers)
        return shadow

    def copies(self, module: nn.Module) -> list[nn.Module]:
        """The copies of ``module`` to cut exactly as ``module`` is cut."""
        return list(self._copies.get(id(module), {}).values())

    def commit(self) -> None:
        """Make the optimizer hold the modules' new parameters, with their state cut alike."""
        state = self.optimizer.state
        replaced: dict[int, nn.Parameter] = {}
        for key_id, (module, before) in self._before.items():
            copies = self._copies[key_id]
            for name, old in before.items():
                new = module._parameters.get(name)
                if old is None or new is None or new is old:
                    continue
                replaced[id(old)] = new
                if old not in state:
                    continue
                entry = state.pop(old)
                for key in entry:
                    if key in copies and _shaped_like(entry[key], old):
                        entry[key] = copies[key]._parameters[name].detach()
                state[new] = entry
        for group in self.optimizer.param_groups:
            group["params"] = [replaced.get(id(p), p) for p in group["params"]]


def _scalar(value: object) -> bool:
    return not isinstance(value, (torch.Tensor, list, tuple, dict)) or (
        isinstance(value, torch.Tensor) and value.dim() == 0
    )


def _shaped_like(value: object, param: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == param.shape and value.dim() > 0
