"""DistillationLoss: value, limits, frozen teacher, and use as fit()'s loss."""

from __future__ import annotations

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
