"""Knowledge distillation: a pruned model (the student) learns from the unpruned one.

:class:`DistillationLoss` is Hinton et al. 2015's loss,

``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels)``,

with a frozen teacher in eval mode, and optionally a feature term (FitNets, Romero et al. 2015):
``feature_weight`` times the mean, over the named modules, of the squared distance between the
student's and the teacher's outputs of that module, relative to the teacher's mean square.
After pruning with the residual streams kept whole, a ResNet's block outputs have the same shape
in both models, so every block gets a dense target instead of the logits alone.

It is a drop-in ``loss_fn`` for
:func:`netsurgeon.training.fit` and :func:`netsurgeon.training.finetune_steps`: its
``uses_inputs`` attribute tells the training loop to pass the batch's inputs too, so the teacher
sees the same (augmented) images as the student.
"""

from __future__ import annotations

import fnmatch
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netsurgeon.choices import DEFAULT_ALPHA, DEFAULT_FEATURE_WEIGHT, DEFAULT_TEMPERATURE
from netsurgeon.errors import ConfigError
from netsurgeon.pruning.stats import resolve_device

__all__ = ["DEFAULT_ALPHA", "DEFAULT_FEATURE_WEIGHT", "DEFAULT_TEMPERATURE", "DistillationLoss"]


class DistillationLoss(nn.Module):
    """Soft-target KL to a frozen teacher plus the hard-label loss.

    The teacher is put in eval mode and its parameters stop requiring gradients, so it must be
    a separate copy of the model (``copy.deepcopy(model)`` before pruning), never the student
    itself; :meth:`attach` refuses a student that shares parameters with it. It moves to the
    device of the student's outputs on first use. The KL term is computed in float32, also
    under AMP.

    Args:
        teacher: The model whose outputs the student learns to match.
        temperature: Softmax temperature ``T`` > 0; the KL term is scaled by ``T**2`` so its
            gradients keep their size when ``T`` changes.
        alpha: Weight of the KL term, in [0, 1]; ``1 - alpha`` weighs the hard-label loss.
            With ``alpha=0`` and no ``features`` the teacher is never run (the feature term
            needs its module outputs, so with ``features`` it runs whatever ``alpha``).
        loss_fn: The hard-label loss ``loss_fn(outputs, targets)``; defaults to
            cross-entropy.
        features: Names of modules (or ``fnmatch`` patterns over module names, e.g.
            ``"layer?.?"``) whose outputs the student must match; each output must have the
            same shape in student and teacher. Call :meth:`attach` with the student before
            training.
        feature_weight: Weight of the feature term (> 0); unused without ``features``.

    Raises:
        ConfigError: ``teacher`` is not a module, ``temperature`` / ``alpha`` /
            ``feature_weight`` out of range, or ``features`` not a list of names.
    """

    #: Tells :func:`netsurgeon.training.fit` to call ``loss(outputs, targets, inputs=inputs)``.
    uses_inputs = True

    def __init__(
        self,
        teacher: nn.Module,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        alpha: float = DEFAULT_ALPHA,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        features: Sequence[str] = (),
        feature_weight: float = DEFAULT_FEATURE_WEIGHT,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher={teacher!r} is not allowed; pass a torch.nn.Module")
        _check_positive("temperature", temperature)
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not 0.0 <= alpha <= 1.0
        ):
            raise ConfigError(f"alpha={alpha!r} is not allowed; use a number in [0, 1]")
        if loss_fn is not None and not callable(loss_fn):
            raise ConfigError(f"loss_fn={loss_fn!r} is not allowed; pass a callable or None")
        self.teacher = teacher.eval()
        self.teacher.requires_grad_(False)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.hard_loss: Callable[..., torch.Tensor] = (
            loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        )
        if isinstance(features, str) or not all(isinstance(f, str) and f for f in features):
            raise ConfigError(
                f"features={features!r} is not allowed; pass a list of module names or patterns"
            )
        _check_positive("feature_weight", feature_weight)
        self.features = tuple(features)
        self.feature_weight = float(feature_weight)
        self._names: list[str] = []
        self._handles: list[Any] = []
        self._student: dict[str, torch.Tensor] = {}
        self._teacher: dict[str, torch.Tensor] = {}

    def attach(self, student: nn.Module) -> list[str]:
        """Hook the modules named by ``features`` in ``student`` and in the teacher.

        Hooks from an earlier call are removed first. The hooks only record outputs of the
        hooked module objects themselves, so a deep copy of the student (which copies its
        hooks) does not feed this loss. Module identity survives netsurgeon's pruning, so one
        call before iterative pruning is enough.

        Args:
            student: The model being trained.

        Returns:
            The matched module names, in the student's order.

        Raises:
            ConfigError: The student is the teacher or shares parameters with it, a name or
                pattern matches no module of the student, or a matched module is missing from
                the teacher.
        """
        _check_separate(self.teacher, student)
        self.detach()
        if not self.features:
            return []
        student_modules = {n: m for n, m in student.named_modules() if n}
        for pattern in self.features:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in student_modules):
                raise ConfigError(
                    f"distillation feature {pattern!r} matches no module of the student; "
                    f"use module names such as {', '.join(list(student_modules)[:4])}"
                )
        # In the student's module order, each module once however many patterns match it.
        chosen = [
            n for n in student_modules if any(fnmatch.fnmatchcase(n, p) for p in self.features)
        ]
        teacher_modules = dict(self.teacher.named_modules())
        missing = [n for n in chosen if n not in teacher_modules]
        if missing:
            raise ConfigError(
                f"distillation features {', '.join(missing)} are not modules of the teacher; "
                "name modules that both models have"
            )
        for name in chosen:
            self._handles.append(_record(student_modules[name], name, self._student))
            self._handles.append(_record(teacher_modules[name], name, self._teacher))
        self._names = chosen
        return list(chosen)

    def detach(self) -> None:
        """Remove the hooks of :meth:`attach` and drop recorded outputs."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._names = [], []
        self._student.clear()
        self._teacher.clear()

    def feature_loss(self) -> torch.Tensor:
        """Mean over the attached modules of ``mean((s - t)^2) / mean(t^2)`` for the last batch.

        Raises:
            ConfigError: :meth:`attach` was not called, a module did not run, or its output
                shapes differ between student and teacher.
        """
        if not self._names:
            raise ConfigError(
                "DistillationLoss has features but no student: call loss.attach(student) first"
            )
        terms = []
        for name in self._names:
            s, t = self._student.get(name), self._teacher.get(name)
            if s is None or t is None:
                raise ConfigError(
                    f"distillation feature {name!r} produced no output in the last forward pass"
                )
            if not isinstance(s, torch.Tensor) or not isinstance(t, torch.Tensor):
                raise ConfigError(
                    f"distillation feature {name!r} outputs {type(s).__name__}, not a tensor; "
                    "name modules that return one tensor"
                )
            if s.shape != t.shape:
                raise ConfigError(
                    f"distillation feature {name!r} has shape {tuple(s.shape)} in the student "
                    f"but {tuple(t.shape)} in the teacher; name modules whose channels are "
                    "not pruned (e.g. keep them with ignore=...)"
                )
            s, t = s.float(), t.float().to(s.device)
            terms.append((s - t).pow(2).mean() / t.pow(2).mean().clamp_min(1e-12))
        self._student.clear()
        self._teacher.clear()
        return torch.stack(terms).mean()

    def train(self, mode: bool = True) -> DistillationLoss:
        """Switch the mode of the loss but keep the teacher in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_logits(self, inputs: Any, device: torch.device) -> torch.Tensor:
        """The teacher's outputs for ``inputs``, without gradients, on ``device``."""
        if resolve_device(None, self.teacher) != device:  # None: where its weights are
            self.teacher.to(device)
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher(inputs)

    def forward(
        self, outputs: torch.Tensor, targets: torch.Tensor, *, inputs: Any = None
    ) -> torch.Tensor:
        """The loss of the student's ``outputs`` for a batch.

        Args:
            outputs: The student's ``(batch, classes)`` scores.
            targets: Class indices for the hard-label loss.
            inputs: The batch's inputs, fed to the teacher (needed unless ``alpha=0`` and
                there are no ``features``).

        Raises:
            ConfigError: ``inputs`` is missing while the teacher must run, or the teacher's
                outputs do not have the shape of ``outputs`` (another class count).
        """
        hard = self.hard_loss(outputs, targets)
        if self.alpha == 0.0 and not self.features:
            return hard
        if inputs is None:
            raise ConfigError(
                "DistillationLoss needs the batch's inputs for the teacher: call it as "
                "loss(outputs, targets, inputs=inputs) (netsurgeon.training.fit does)"
            )
        teacher = self.teacher_logits(inputs, outputs.device)
        total = (1.0 - self.alpha) * hard
        if self.features:
            total = total + self.feature_weight * self.feature_loss()
        if self.alpha == 0.0:
            return total
        if not isinstance(teacher, torch.Tensor) or teacher.shape != outputs.shape:
            got = tuple(teacher.shape) if isinstance(teacher, torch.Tensor) else type(teacher)
            raise ConfigError(
                f"the teacher's outputs have shape {got} but the student's {tuple(outputs.shape)}; "
                "distillation needs both to score the same classes (same num_classes)"
            )
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(outputs.float() / t, dim=1),
            F.log_softmax(teacher.float() / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return self.alpha * t * t * soft + total

    def extra_repr(self) -> str:
        extra = f", features={list(self.features)}, feature_weight={self.feature_weight}"
        return f"temperature={self.temperature}, alpha={self.alpha}" + (
            extra if self.features else ""
        )


def _check_positive(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name}={value!r} is not allowed; use a finite number > 0")


def _check_separate(teacher: nn.Module, student: nn.Module) -> None:
    """Refuse a student that is (or shares parameters with) the frozen teacher."""
    teacher_params = {id(p) for p in teacher.parameters()}
    if student is teacher or any(id(p) in teacher_params for p in student.parameters()):
        raise ConfigError(
            "the student is the teacher (or shares its parameters): DistillationLoss froze it "
            "and put it in eval mode; the teacher must be a separate copy, e.g. "
            "DistillationLoss(copy.deepcopy(model)) before pruning, and the student's "
            "requires_grad and training mode restored (or the model rebuilt)"
        )


def _record(module: nn.Module, name: str, store: dict[str, torch.Tensor]) -> Any:
    """A forward hook that stores ``module``'s output under ``name``."""
    target = weakref.ref(module)

    def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
        if mod is target():  # deep copies share this hook; only this module records
            store[name] = output

    # What the pruner says when it keeps this module's channels (a hooked layer is kept).
    hook.netsurgeon_reason = "is a distillation feature (its outputs are matched to the teacher's)"  # type: ignore[attr-defined]
    return module.register_forward_hook(hook)
