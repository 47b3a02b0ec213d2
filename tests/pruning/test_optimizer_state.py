"""An optimizer given to prune() holds the cut parameters, with its state cut alike."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netsurgeon import ConfigError
from netsurgeon.pruning import Pruner, prune
from tests.pruning.nets import CRNN, ConvNeXtNet, GroupNormNet, ResNet, SeqNet, SubPixelNet


def _trained(
    net: Callable[[], nn.Module], make: Callable[..., torch.optim.Optimizer], steps: int = 2
) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = net()
    optimizer = make(model.parameters())
    x = torch.randn(4, 3, 8, 8)
    y = torch.randint(0, 2, (4,))
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), optimizer, x


def _sgd(params: object) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def _adam(params: object) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


@pytest.mark.parametrize("net", [SeqNet, ResNet, GroupNormNet, ConvNeXtNet, CRNN, SubPixelNet])
@pytest.mark.parametrize("make", [_sgd, _adam])
def test_the_state_is_cut_exactly_as_its_parameter(
    net: Callable[[], nn.Module], make: Callable[..., torch.optim.Optimizer]
) -> None:
    """Every state tensor is set to a multiple of its parameter before pruning; afterwards it
    must still be that multiple of the cut parameter, whatever indices each dimension kept
    (convolutions, depthwise ones, norms, linears, layer scales, LSTMs, PixelShuffle blocks)."""
    model, optimizer, x = _trained(net, make)
    with torch.no_grad():
        for p in model.parameters():
            for i, value in enumerate(optimizer.state[p].values()):
                if value.shape == p.shape:
                    value.copy_(p * (i + 2))
    before = {name: p for name, p in model.named_parameters()}
    steps = {name: optimizer.state[p].get("step") for name, p in before.items()}
    result = prune(model, x, amount=0.5, criterion="l1", prune_layer_norms=True,
                   optimizer=optimizer)  # fmt: skip
    assert result.channels
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in held} == {id(p) for p in model.parameters()}
    assert len(optimizer.state) == len(held)
    replaced = 0
    for name, p in model.named_parameters():
        state = optimizer.state[p]
        replaced += p is not before[name]
        if steps[name] is not None:
            assert torch.equal(state["step"], steps[name])
        for i, (key, value) in enumerate(state.items()):
            if key != "step":
                assert value.shape == p.shape, (name, key)
                torch.testing.assert_close(value, p.detach() * (i + 2), rtol=0, atol=0)
    assert replaced > 0
    optimizer.zero_grad()  # and training goes on with the cut model
    F.cross_entropy(model.train()(x), torch.zeros(4, dtype=torch.long)).backward()
    optimizer.step()


def test_momentum_carried_through_a_cut_trains_as_the_small_model_would() -> None:
    """Cutting filters whose weights, gradients and momentum are all zero must leave training
    exactly where it was: the cut model, its optimizer carried through, takes the same next
    step as the uncut one does on the remaining weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(),
                          nn.LazyLinear(2))  # fmt: skip
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    model(x)
    dropped = torch.tensor([1, 4, 6])
    with torch.no_grad():  # those filters output zero, and no gradient reaches them
        model[0].weight[dropped] = 0
        model[0].bias[dropped] = -1.0  # ReLU(-1) = 0: dead, so their gradients are zero too
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    reference = copy.deepcopy(model)
    reference_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    reference_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # it would share buffers
    result = prune(
        model,
        x,
        amount=3 / 8,
        amounts={"2": 0.0},
        criterion=lambda f: f.rows().abs().sum(1),
        optimizer=optimizer,
    )
    assert model[0].out_channels == 5 and model[2].in_channels == 5 and model[2].out_channels == 4
    assert sorted(set(range(8)) - set(result.kept["0"].tolist())) == dropped.tolist()
    for m, opt in ((model, optimizer), (reference, reference_opt)):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-6)


def test_pruner_steps_carry_the_optimizer_and_bad_optimizers_are_refused() -> None:
    model, optimizer, x = _trained(SeqNet, _sgd)
    pruner = Pruner(model, x, amount=0.5, steps=2, criterion="l1")
    while not pruner.done:
        pruner.step(optimizer=optimizer)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert held == {id(p) for p in model.parameters()}
    with pytest.raises(ConfigError, match=r"optimizer=dict is not a torch.optim.Optimizer"):
        prune(model, x, amount=0.5, optimizer={})  # type: ignore[arg-type]
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="holds none of the model's parameters"):
        prune(model, x, amount=0.5, optimizer=other)
    lbfgs = torch.optim.LBFGS(model.parameters(), max_iter=2)
    lbfgs.step(lambda: F.cross_entropy(model(x), torch.zeros(4, dtype=torch.long)))
    sizes = [p.shape for p in model.parameters()]
    with pytest.raises(ConfigError, match=r"LBFGS keeps state 'd' for parameter 'weight' of a"):
        prune(model, x, amount=0.5, optimizer=lbfgs)
    assert [p.shape for p in model.parameters()] == sizes  # the model is unchanged
