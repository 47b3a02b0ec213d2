"""Importance criteria: one score per filter, and Taylor agrees with the real loss change."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netsurgeon import ConfigError
from netsurgeon.pruning import CRITERIA, Filters, get_criterion, prune, trace_graph
from netsurgeon.pruning.criteria import APoZ, Taylor
from tests.pruning.nets import DropPathNet, NormActNet, ResNet, SeqNet


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 12, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def _task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 8x8 images: a bright top, a bright left side, or neither."""
    x = torch.randn(n, 1, 8, 8, generator=generator) * 0.5
    y = torch.randint(0, 3, (n,), generator=generator)
    x[y == 0, :, :3, :] += 1.5
    x[y == 1, :, :, :3] += 1.5
    return x, y


def test_taylor_ranking_matches_brute_force_loss_change() -> None:
    g = torch.Generator().manual_seed(0)
    model = Tiny()
    x, y = _task(512, g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(20):  # partly trained: filters matter unequally, the loss is not yet ~0
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    graph = trace_graph(model, x[:1])
    taylor = Taylor()
    taylor.collect(graph, [(x, y)], F.cross_entropy)

    with torch.no_grad():
        base = F.cross_entropy(model(x), y)
    for layer, act in (("conv1", model.act1), ("conv2", model.act2)):
        oracle = []
        for k in range(12):

            def ablate(_m: nn.Module, _i: object, out: torch.Tensor, k: int = k) -> torch.Tensor:
                out = out.clone()
                out[:, k] = 0
                return out

            handle = act.register_forward_hook(ablate)
            with torch.no_grad():
                oracle.append(float((F.cross_entropy(model(x), y) - base).abs()))
            handle.remove()
        scores = taylor(Filters(layer, model.get_submodule(layer)))
        assert scores.shape == (12,)
        assert torch.isclose(scores.norm(), torch.tensor(1.0))  # per-layer L2 normalisation
        rho = _spearman(scores, torch.tensor(oracle))
        assert rho >= 0.8, f"{layer}: Spearman {rho:.3f}"


def test_taylor_is_averaged_over_per_example_absolute_values() -> None:
    """Molchanov et al. 2017, eq. 8: |mean over positions of a * dC/da| for each example,
    then averaged over the batch; a batch-level absolute value would let examples cancel."""
    g = torch.Generator().manual_seed(1)
    model = Tiny().eval()
    x, y = _task(6, g)
    graph = trace_graph(model, x[:1])
    taylor = Taylor()
    taylor.collect(graph, [(x[:4], y[:4]), (x[4:], y[4:])], F.cross_entropy)

    acts: dict[str, torch.Tensor] = {}
    hooks = [
        act.register_forward_hook(lambda _m, _i, out, k=k: acts.__setitem__(k, out))
        for k, act in (("conv1", model.act1), ("conv2", model.act2))
    ]
    expected = {"conv1": torch.zeros(12), "conv2": torch.zeros(12)}
    for i in range(6):  # each example alone: its own loss, gradient and absolute value
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, [acts["conv1"], acts["conv2"]])
        for layer, grad in zip(("conv1", "conv2"), grads, strict=True):
            expected[layer] += (acts[layer] * grad)[0].mean((1, 2)).abs()
    for hook in hooks:
        hook.remove()
    for layer, total in expected.items():
        scores = taylor(Filters(layer, model.get_submodule(layer)))
        torch.testing.assert_close(scores, total / total.norm(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_every_criterion_scores_each_filter(name: str) -> None:
    model = ResNet().eval()
    x = torch.randn(4, 3, 8, 8)
    graph = trace_graph(model, x[:1])
    criterion = get_criterion(name)
    if getattr(criterion, "requires_data", False):
        criterion.collect(graph, [(x, torch.randint(0, 10, (4,)))], F.cross_entropy)
    for layer in graph.source_names:
        module = graph.source_module(layer)
        norm = graph.norms.get(layer)
        scores = criterion(Filters(layer, module, model.get_submodule(norm) if norm else None))
        assert scores.shape == (module.weight.shape[0],)
        assert torch.isfinite(scores).all()


def test_activation_is_the_mean_absolute_activation_after_the_norm_and_relu() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 1)
            self.bn = nn.BatchNorm2d(3)
            self.act = nn.ReLU()
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.act(self.bn(self.conv(x))))

    weight, bias = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, -0.5])
    mean, var = torch.tensor([0.5, -1.0, 0.0]), torch.tensor([4.0, 1.0, 0.25])
    gamma, beta = torch.tensor([2.0, -1.0, 3.0]), torch.tensor([0.0, 0.5, -1.0])
    model = Net().eval()
    with torch.no_grad():
        model.conv.weight.copy_(weight.view(3, 1, 1, 1))
        model.conv.bias.copy_(bias)
        model.bn.running_mean.copy_(mean)
        model.bn.running_var.copy_(var)
        model.bn.weight.copy_(gamma)
        model.bn.bias.copy_(beta)
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    activation = get_criterion("activation")
    activation.collect(trace_graph(model, x[:1]), [(x[:4], None), (x[4:], None)], None)
    scores = activation(Filters("conv", model.conv, model.bn))
    # By hand: the 1x1 conv of one input channel, the norm with its running statistics, ReLU.
    shape = (1, 3, 1, 1)
    pre = x * weight.view(shape) + bias.view(shape)
    normed = (pre - mean.view(shape)) / (var.view(shape) + 1e-5).sqrt()
    post = (normed * gamma.view(shape) + beta.view(shape)).clamp_min(0)
    torch.testing.assert_close(scores, post.mean((0, 2, 3)))
    assert scores.unique().numel() == 3


def test_norm_following_each_conv_is_found() -> None:
    model = SeqNet()
    graph = trace_graph(model, torch.randn(1, 3, 8, 8))
    assert graph.norms["features.0"] == "features.1"
    assert graph.norms["features.3"] == "features.4"
    assert "classifier.0" not in graph.norms
    # bn_scale scores each filter by |gamma| of the norm found after it.
    gammas = [-3.0, 0.5, 2.0, -0.25, 0.0, 1.5, -1.0, 4.0]
    with torch.no_grad():
        model.features[1].weight.copy_(torch.tensor(gammas))
    norm = model.get_submodule(graph.norms["features.0"])
    scores = get_criterion("bn_scale")(Filters("features.0", model.features[0], norm))
    assert scores.tolist() == [3.0, 0.5, 2.0, 0.25, 0.0, 1.5, 1.0, 4.0]


def test_bn_scale_without_an_affine_norm_is_the_l1_norm() -> None:
    model = ResNet()
    graph = trace_graph(model, torch.randn(1, 3, 8, 8))
    se1 = model.layer1[0].se1  # a squeeze-excitation conv: no norm follows it
    assert "layer1.0.se1" not in graph.norms
    expected = se1.weight.detach().abs().sum((1, 2, 3))
    bn_scale = get_criterion("bn_scale")
    torch.testing.assert_close(bn_scale(Filters("layer1.0.se1", se1)), expected)
    plain = nn.BatchNorm2d(4, affine=False)  # a norm without gamma
    torch.testing.assert_close(bn_scale(Filters("layer1.0.se1", se1, plain)), expected)


def test_weight_norms_are_exact() -> None:
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0], [0.0, 0.0]]).view(3, 2, 1, 1))
    filters = Filters("conv", conv)
    assert get_criterion("l1")(filters).tolist() == [3.0, 7.0, 0.0]
    assert get_criterion("l2")(filters).tolist() == pytest.approx([5**0.5, 5.0, 0.0])


def test_fpgm_is_each_filters_summed_distance_to_the_others() -> None:
    conv = nn.Conv2d(3, 5, 2, bias=False)
    weight = conv.weight.detach().flatten(1)
    expected = torch.tensor(
        [sum(float((weight[i] - weight[j]).norm()) for j in range(5)) for i in range(5)]
    )
    torch.testing.assert_close(get_criterion("fpgm")(Filters("conv", conv)), expected)
    linear = nn.Linear(4, 1)  # one filter: no other filter to be near
    assert get_criterion("fpgm")(Filters("fc", linear)).tolist() == [0.0]


def test_fpgm_prunes_the_redundant_filter_where_l1_prunes_the_small_one() -> None:
    # Filters 1 and 2 are copies: nearest the geometric median, so FPGM scores them lowest,
    # while the tiny filter 0 is what a norm criterion removes first.
    model = SeqNet()
    conv = model.features[0]
    first = conv.weight.detach()[0].flatten()
    direction = first / first.norm()
    with torch.no_grad():
        for i, scale in enumerate([0.01, 5.0, 5.0, 9.0, 12.0, -6.0, 15.0, 2.0]):
            conv.weight[i] = (direction * scale).view_as(conv.weight[i])
    fpgm = get_criterion("fpgm")(Filters("features.0", conv))
    l1 = get_criterion("l1")(Filters("features.0", conv))
    assert fpgm[1] == fpgm[2] and set(fpgm.argsort()[:2].tolist()) == {1, 2}
    assert int(fpgm.argmin()) != 0 and int(l1.argmin()) == 0
    result = prune(model, torch.randn(1, 3, 8, 8), amount=0.125, scope="layer", criterion="fpgm")
    kept = result.kept["features.0"].tolist()
    assert len(kept) == 7 and 0 in kept and (1 in kept) != (2 in kept)


def test_apoz_scores_mostly_zero_channels_lowest() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 1)
            self.act = nn.ReLU()
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.act(self.conv(x)))

    model = Net()
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1, 1))
        model.conv.bias.copy_(torch.tensor([0.0, -1.0, 1.0]))  # channel 1 is always zero
    x = torch.randn(8, 1, 4, 4)
    apoz = APoZ()
    apoz.collect(trace_graph(model, x), [(x, None)], None)
    scores = apoz(Filters("conv", model.conv))
    assert scores[1] == 0.0 and scores[2] == 1.0
    assert 0.3 < scores[0] < 0.7


def test_custom_callable_and_random_are_deterministic() -> None:
    assert get_criterion(len) is len
    conv = nn.Conv2d(1, 5, 1)
    a = get_criterion("random")(Filters("c", conv))
    b = get_criterion("random")(Filters("c", conv))
    assert torch.equal(a, b)
    # ... and random: one uniform score in [0, 1) per filter, drawn from the seed.
    assert a.shape == (5,) and a.dtype == torch.float32
    assert ((a >= 0) & (a < 1)).all() and a.unique().numel() == 5
    assert not torch.equal(get_criterion("random", seed=1)(Filters("c", conv)), a)


def test_unknown_criterion_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_criterion("magnitude")
    assert "'magnitude'" in str(err.value)
    for name in CRITERIA:
        assert name in str(err.value)


def test_bad_data_for_a_data_driven_criterion_gets_one_clear_message() -> None:
    """Batches the model cannot run, a missing target or a per-example loss name the cause,
    and the model is left as it was."""
    from netsurgeon.pruning import prune

    x = torch.randn(2, 3, 8, 8)
    y = torch.tensor([0, 1])
    per_example = lambda o, t: F.cross_entropy(o, t, reduction="none")  # noqa: E731
    cases = [
        ({"criterion": "activation", "data": (x, y)}, "'activation' failed on data batch 1"),
        (
            {"criterion": "apoz", "data": [(torch.randn(2, 4, 8, 8), y)]},
            r"'apoz' failed on data batch 0 \(RuntimeError: .*4 channels",
        ),
        (
            {"criterion": "taylor", "data": [x], "loss_fn": F.cross_entropy},
            "'taylor' needs \\(inputs, targets\\) batches for its loss, but data batch 0",
        ),
        (
            {"criterion": "taylor", "data": [(x, y)], "loss_fn": per_example},
            r"loss_fn must return one number per batch, got \(2,\)",
        ),
    ]
    for kwargs, message in cases:
        model = SeqNet()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ConfigError, match=message):
            prune(model, x[:1], amount=0.5, **kwargs)
        after = model.state_dict()
        assert after.keys() == before.keys()
        assert all(torch.equal(after[k], before[k]) for k in before)


def test_data_driven_criteria_see_a_training_mode_model_as_in_eval_mode() -> None:
    """A training-mode trace keeps ``training=True`` in functional dropout and batch norm calls.
    Before: the criteria ran them so (random dropout masks, batch statistics) although they run
    the model's modules in eval mode, and updated the running statistics."""
    model = NormActNet()
    with torch.no_grad():
        model.n1.running_mean.uniform_(-1, 1)
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = {}
    for training in (False, True):
        model.train(training)
        before = copy.deepcopy(model.state_dict())
        activation = get_criterion("activation")
        activation.collect(trace_graph(model, x[:1]), [(x, None)], None)
        scores[training] = [
            activation(Filters("c1", model.c1, model.n1)),  # after F.batch_norm
            activation(Filters("c3", model.c3, model.n3)),  # after F.dropout
        ]
        after = model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items())
    for in_training, in_eval in zip(scores[True], scores[False], strict=True):
        torch.testing.assert_close(in_training, in_eval)


def test_data_driven_criteria_use_the_mean_of_random_masks_drawn_in_training_only() -> None:
    """Stochastic depth as timm writes it draws its masks under ``if self.training``, so only
    the training-mode trace has them and no training flag can turn them off. Before: Taylor's
    scores of a training-mode model depended on the masks drawn (a dropped branch scored zero)."""
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 5
    torch.manual_seed(0)
    model = DropPathNet()
    scores = []
    for training, seed in ((False, 0), (True, 1), (True, 2)):
        model.train(training)
        torch.manual_seed(seed)
        taylor = get_criterion("taylor")
        taylor.collect(trace_graph(model, x[:1]), [(x, y)], F.cross_entropy)
        scores.append([taylor(Filters(c, getattr(model, c), getattr(model, b)))
                       for c, b in (("stem", "bn"), ("c1", "b1"), ("c2", "b2"))])  # fmt: skip
    for in_training in scores[1:]:
        for got, want in zip(in_training, scores[0], strict=True):
            torch.testing.assert_close(got, want)
    # The whole prune of a training-mode model keeps the same channels whatever the draws.
    kept = []
    for seed in (1, 2):
        torch.manual_seed(0)
        pruned = DropPathNet().train()
        torch.manual_seed(seed)
        prune(pruned, x[:1], amount=0.5, criterion="taylor", data=[(x, y)],
              loss_fn=F.cross_entropy)  # fmt: skip
        kept.append([pruned.c1.weight.detach().clone(), pruned.c2.weight.detach().clone()])
    for a, b in zip(*kept, strict=True):
        torch.testing.assert_close(a, b)
