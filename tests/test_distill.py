"""DistillationLoss: value, limits, frozen teacher, and use as fit()'s loss."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from netsurgeon.distill import DistillationLoss
from netsurgeon.errors import ConfigError
from netsurgeon.training import TrainConfig, evaluate, fit

torch.set_num_threads(1)


def _teacher() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)
    )


class _Forbidden(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the teacher must not run")


def test_value_equals_a_hand_computed_one() -> None:
    teacher = _teacher()
    inputs = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    student = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 2, 1, 1, 0])
    t, alpha = 3.0, 0.7
    loss = DistillationLoss(teacher, temperature=t, alpha=alpha)(student, targets, inputs=inputs)

    teacher.eval()
    with torch.no_grad():
        p = torch.softmax(teacher(inputs) / t, dim=1)
    log_q = torch.log_softmax(student / t, dim=1)
    kl = (p * (p.log() - log_q)).sum(dim=1).mean()  # KL(p || q), averaged over the batch
    ce = -torch.log_softmax(student, dim=1)[torch.arange(5), targets].mean()
    expected = alpha * t * t * kl + (1 - alpha) * ce
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy_and_never_runs_the_teacher() -> None:
    student = torch.randn(6, 3)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = DistillationLoss(_Forbidden(), alpha=0.0)(student, targets, inputs=torch.zeros(6, 4))
    assert torch.equal(loss, F.cross_entropy(student, targets))


def test_alpha_one_is_zero_when_the_student_is_the_teacher() -> None:
    teacher = _teacher().eval()
    x = torch.randn(7, 4)
    loss = DistillationLoss(teacher, alpha=1.0)(
        teacher(x), torch.zeros(7, dtype=torch.long), inputs=x
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_the_student_only_and_the_teacher_stays_in_eval_mode() -> None:
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = nn.Linear(4, 3)
    loss_fn = DistillationLoss(teacher)
    loss_fn.train()  # a loss switched to training mode keeps its teacher in eval mode
    assert not teacher.training
    x = torch.randn(8, 4)
    loss = loss_fn(student(x), torch.randint(0, 3, (8,)), inputs=x)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    # Eval mode: BatchNorm's running statistics are not updated by the teacher's forward.
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"temperature": 0}, "temperature=0"),
        ({"temperature": math.inf}, "temperature=inf"),
        ({"temperature": True}, "temperature=True"),
        ({"alpha": 1.5}, "alpha=1.5"),
        ({"alpha": -0.1}, "alpha=-0.1"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        DistillationLoss(_teacher(), **kwargs)  # type: ignore[arg-type]


def test_not_a_module_and_missing_inputs_are_errors() -> None:
    with pytest.raises(ConfigError, match="teacher="):
        DistillationLoss("resnet")  # type: ignore[arg-type]
    loss_fn = DistillationLoss(_teacher())
    with pytest.raises(ConfigError, match="inputs"):
        loss_fn(torch.randn(2, 3), torch.tensor([0, 1]))


def test_fit_passes_the_inputs_and_the_student_learns_the_teacher() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    teacher = _teacher().eval()
    with torch.no_grad():
        y = teacher(x).argmax(1)
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    torch.manual_seed(0)
    student = nn.Linear(4, 3)
    loss_fn = DistillationLoss(teacher, temperature=2.0, alpha=1.0)
    start = evaluate(student, train, device="cpu", loss_fn=loss_fn)["loss"]
    config = TrainConfig(device="cpu", lr=0.1, epochs=5, progress=False)
    history = fit(student, train, train, config=config, loss_fn=loss_fn)
    # Validation used the same loss (with the inputs), and it went down.
    last = history.last
    assert last is not None and last.val_loss is not None
    assert last.val_loss < start
    assert math.isclose(
        last.val_loss, evaluate(student, train, device="cpu", loss_fn=loss_fn)["loss"]
    )


# --------------------------------------------------------------------------- feature term


def _pair() -> tuple[nn.Module, nn.Module]:
    """A teacher and a perturbed copy as student; module '2' (the ReLU) has the same shape."""
    teacher = _teacher().eval()
    student = copy.deepcopy(teacher).train()
    with torch.no_grad():
        student[0].weight.add_(0.3)
    return teacher, student


def test_feature_term_equals_a_hand_computed_one() -> None:
    teacher, student = _pair()
    student.eval()  # no dropout, so the recorded features can be recomputed by hand
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    loss_fn = DistillationLoss(teacher, alpha=0.6, features=["0", "?"], feature_weight=2.5)
    assert loss_fn.attach(student) == ["0", "1", "2", "3", "4"]  # "?" matches every child
    outputs = student(x)
    value = loss_fn(outputs, targets, inputs=x)

    plain = DistillationLoss(teacher, alpha=0.6)(outputs, targets, inputs=x)
    terms = []
    s, t = x, x
    for layer_s, layer_t in zip(student, teacher, strict=True):
        s, t = layer_s(s), layer_t(t)
        terms.append((s - t).pow(2).mean() / t.pow(2).mean())
    expected = plain + 2.5 * torch.stack(terms).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    # The student is an exact copy of the teacher: the feature term vanishes.
    same = DistillationLoss(teacher, alpha=0.0, features=["2"], feature_weight=7.0)
    twin = copy.deepcopy(teacher)
    same.attach(twin)
    out = twin(x)
    assert torch.equal(same(out, targets, inputs=x), F.cross_entropy(out, targets))


def test_feature_term_trains_the_student_and_ignores_its_deep_copies() -> None:
    teacher, student = _pair()
    student.eval()
    loss_fn = DistillationLoss(teacher, alpha=0.0, features=["2"], feature_weight=1.0)
    loss_fn.attach(student)
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    clean = loss_fn(student(x), y, inputs=x)
    outputs = student(x)
    # A deep copy carries the hook, but what it computes must not replace the student's.
    copy.deepcopy(student)(torch.randn(8, 4) * 100)
    assert torch.equal(loss_fn(outputs, y, inputs=x), clean)
    assert clean.item() > F.cross_entropy(outputs, y).item()
    loss_fn(student(x), y, inputs=x).backward()
    assert student[0].weight.grad is not None and student[0].weight.grad.abs().sum() > 0
    loss_fn.detach()
    assert not any(m._forward_hooks for m in [*student.modules(), *teacher.modules()])


def test_feature_errors_name_the_feature() -> None:
    teacher, student = _pair()
    with pytest.raises(ConfigError, match="'layer9' matches no module"):
        DistillationLoss(teacher, features=["layer9"]).attach(student)
    with pytest.raises(ConfigError, match="feature_weight=0"):
        DistillationLoss(teacher, features=["2"], feature_weight=0)
    with pytest.raises(ConfigError, match="features='2'"):
        DistillationLoss(teacher, features="2")  # type: ignore[arg-type]
    loss_fn = DistillationLoss(teacher, features=["2"])
    x = torch.randn(4, 4)
    with pytest.raises(ConfigError, match=r"loss\.attach\(student\)"):
        loss_fn(student(x), torch.zeros(4, dtype=torch.long), inputs=x)
    extra = nn.Sequential(*student, nn.Identity())
    with pytest.raises(ConfigError, match="5 are not modules of the teacher"):
        DistillationLoss(teacher, features=["5"]).attach(extra)

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    paired = nn.Sequential(Pair())
    loss_fn = DistillationLoss(paired, features=["0"])
    twin = copy.deepcopy(paired)
    loss_fn.attach(twin)
    with pytest.raises(ConfigError, match="'0' outputs tuple, not a tensor"):
        loss_fn(twin(x)[0], torch.zeros(4, dtype=torch.long), inputs=x)
    narrow = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    loss_fn = DistillationLoss(teacher, features=["2"])
    loss_fn.attach(narrow)
    with pytest.raises(ConfigError, match=r"'2' has shape \(4, 6\) in the student but \(4, 8\)"):
        loss_fn(narrow(x), torch.zeros(4, dtype=torch.long), inputs=x)


# --------------------------------------------------------------------------- misuse


def test_a_teacher_with_another_class_count_is_named() -> None:
    x = torch.randn(5, 4)
    loss_fn = DistillationLoss(nn.Linear(4, 5))
    with pytest.raises(ConfigError, match=r"teacher's outputs have shape \(5, 5\).*\(5, 3\)"):
        loss_fn(nn.Linear(4, 3)(x), torch.zeros(5, dtype=torch.long), inputs=x)


@pytest.mark.parametrize("wrap", [False, True])
def test_attach_refuses_the_teacher_itself_as_student(wrap: bool) -> None:
    model = _teacher()
    loss_fn = DistillationLoss(model, features=["2"])  # the forgotten copy.deepcopy(model)
    student = nn.Sequential(model) if wrap else model  # a wrapper shares the parameters
    with pytest.raises(ConfigError, match=r"must be a separate copy.*copy\.deepcopy\(model\)"):
        loss_fn.attach(student)
    assert not loss_fn._handles  # nothing hooked
    # A deep copy is a separate teacher.
    loss_fn = DistillationLoss(copy.deepcopy(model), features=["2"])
    assert loss_fn.attach(model) == ["2"]


def test_alpha_zero_with_features_runs_the_teacher_as_documented() -> None:
    teacher, student = _pair()
    calls: list[int] = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    loss_fn = DistillationLoss(teacher, alpha=0.0, features=["2"])
    loss_fn.attach(student)
    x = torch.randn(4, 4)
    loss_fn(student(x), torch.zeros(4, dtype=torch.long), inputs=x)
    assert calls == [1]
    doc = " ".join((DistillationLoss.__doc__ or "").split())
    assert "With ``alpha=0`` and no ``features`` the teacher is never run" in doc


def test_fit_refuses_the_model_as_its_own_teacher() -> None:
    """Without features nothing calls attach(), so fit() names the forgotten deepcopy."""
    model = _teacher()
    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ConfigError, match=r"teacher is the model being trained.*deepcopy"):
        fit(model, data, config=TrainConfig(device="cpu", epochs=1, progress=False),
            loss_fn=DistillationLoss(model))  # fmt: skip
