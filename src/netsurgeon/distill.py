"""Knowledge distillation: a pruned model (the student) learns from the unpruned one.

:class:`DistillationLoss` is Hinton et al. 2015's loss,

``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels)``,

with a frozen teacher in eval mode. It is a drop-in ``loss_fn`` for
:func:`netsurgeon.training.fit` and :func:`netsurgeon.training.finetune_steps`: its
``uses_inputs`` attribute tells the training loop to pass the batch's inputs too, so the teacher
sees the same (augmented) images as the student.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netsurgeon.errors import ConfigError
from netsurgeon.pruning.stats import resolve_device

__all__ = ["DEFAULT_ALPHA", "DEFAULT_TEMPERATURE", "DistillationLoss"]

#: Hinton et al.'s usual settings; the CLI and the iterative pruner default to them too.
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.9


class DistillationLoss(nn.Module):
    """Soft-target KL to a frozen teacher plus the hard-label loss.

    The teacher is put in eval mode and its parameters stop requiring gradients (pass a copy
    if it must stay trainable elsewhere); it moves to the device of the student's outputs on
    first use. The KL term is computed in float32, also under AMP.

    Args:
        teacher: The model whose outputs the student learns to match.
        temperature: Softmax temperature ``T`` > 0; the KL term is scaled by ``T**2`` so its
            gradients keep their size when ``T`` changes.
        alpha: Weight of the KL term, in [0, 1]; ``1 - alpha`` weighs the hard-label loss.
            With ``alpha=0`` the teacher is never run.
        loss_fn: The hard-label loss ``loss_fn(outputs, targets)``; defaults to
            cross-entropy.

    Raises:
        ConfigError: ``teacher`` is not a module, or ``temperature`` / ``alpha`` out of range.
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
    ) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher={teacher!r} is not allowed; pass a torch.nn.Module")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ConfigError(
                f"temperature={temperature!r} is not allowed; use a finite number > 0"
            )
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
            inputs: The batch's inputs, fed to the teacher (needed unless ``alpha=0``).

        Raises:
            ConfigError: ``inputs`` is missing while ``alpha > 0``.
        """
        hard = self.hard_loss(outputs, targets)
        if self.alpha == 0.0:
            return hard
        if inputs is None:
            raise ConfigError(
                "DistillationLoss needs the batch's inputs for the teacher: call it as "
                "loss(outputs, targets, inputs=inputs) (netsurgeon.training.fit does)"
            )
        teacher = self.teacher_logits(inputs, outputs.device)
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(outputs.float() / t, dim=1),
            F.log_softmax(teacher.float() / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return self.alpha * t * t * soft + (1.0 - self.alpha) * hard

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
