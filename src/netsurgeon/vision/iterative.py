"""Transfer learning: fine-tune a model on an image folder, and prune it iteratively.

:func:`finetune` is the transfer-learning entry: build a model (pretrained, local or random
weights) with its classifier head fitted to the data's classes, fine-tune it with
:func:`netsurgeon.training.fit` (a checkpoint after every epoch, ``resume`` continues from the
last finished one) and save it with :func:`netsurgeon.save`.

:func:`prune_and_finetune` is Molchanov et al. 2017's procedure: remove a slice of filters
(:class:`netsurgeon.pruning.Pruner`), fine-tune K optimizer steps, repeat until the target is
reached, then fine-tune E epochs. It reports validation accuracy

* before pruning;
* right after pruning, without any fine-tuning: measured on a deep copy of the unpruned model
  pruned **in one shot** to the same target with the same criterion and criterion data (the
  iterative model itself is never without fine-tuning for long, so this is the figure that
  shows what fine-tuning buys); and also ``accuracy_after_slices``, the iterative model after
  its last slice and that slice's K steps, before the final E epochs;
* after fine-tuning.

:func:`add_iterative_arguments` and :func:`run_iterative_from_args` put the procedure behind
``netsurgeon prune MODEL --data DIR ...``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netsurgeon import __version__
from netsurgeon.argtypes import comma_list
from netsurgeon.distill import (
    DEFAULT_ALPHA,
    DEFAULT_FEATURE_WEIGHT,
    DEFAULT_TEMPERATURE,
    DistillationLoss,
)
from netsurgeon.distributed import broadcast_from_rank0, gather_objects, own_entry
from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.fileio import check_file_target, describe_torch_file, sha256_file
from netsurgeon.provenance import VERSION_KEY, warn_if_other_version
from netsurgeon.pruning import Pruner, PruneResult, prune
from netsurgeon.pruning.criteria import Random, get_criterion
from netsurgeon.pruning.pruner import SCOPES, Footprint
from netsurgeon.pruning.stats import (
    check_input_size,
    check_reiterable,
    count_macs,
    count_params,
    move_inputs,
)
from netsurgeon.recalibrate import recalibrate_bn as _recalibrate
from netsurgeon.reconstruction import reconstruct as _reconstruct
from netsurgeon.training import (
    _RESUMABLE_CHANGES as _FIT_RESUMABLE_CHANGES,
)
from netsurgeon.training import (
    CHECKPOINT_FORMAT,
    History,
    TrainConfig,
    _changed_settings,
    _describe_changes,
    _flatten_settings,
    _rng_state,
    _set_epoch,
    _set_rng_state,
    check_slice_lr,
    evaluate,
    fit,
    init_distributed,
    is_main_process,
    resolve_device,
    seed_everything,
    seed_process,
)
from netsurgeon.training import (
    finetune_steps as train_steps,
)
from netsurgeon.vision.arguments import (
    add_finetune_arguments,
    add_iterative_arguments,
    add_training_arguments,
)

__all__ = [
    "FinetuneResult",
    "IterativeResult",
    "IterativeStep",
    "LimitedBatches",
    "add_finetune_arguments",
    "add_iterative_arguments",
    "add_training_arguments",
    "default_checkpoint_path",
    "default_progress_dir",
    "finetune",
    "format_iterative",
    "prune_and_finetune",
    "run_finetune_from_args",
    "run_iterative_from_args",
    "train_config_from_args",
]

logger = logging.getLogger(__name__)

#: Format marker of the iterative-pruning progress file in ``checkpoint_dir``.
ITERATIVE_STATE = "netsurgeon.vision.iterative/1"
_STATE_FILE = "iterative_state.pt"
_FINAL_FIT_FILE = "final_finetune.ckpt"
# Settings that change how a run computes, not what it does: a resume may change them. Every
# other setting must match for a resumed run to continue the same procedure.
_RESUMABLE_CHANGES = frozenset(f"train_config.{k}" for k in _FIT_RESUMABLE_CHANGES)
# Settings added after progress files were first written, with the value that gives what
# earlier versions did (other keys a file lacks are not compared).
_ADDED_SETTINGS: dict[str, Any] = {"slice_lr": "schedule", "amounts": None}


# --------------------------------------------------------------------------- helpers


def _ignore_text(model: nn.Module, ignore: Any) -> str | None:
    """``ignore`` as recorded with a run: its names (a module object by its name), sorted."""
    if ignore is None:
        return None
    names = {id(m): n for n, m in model.named_modules()}
    items = [ignore] if isinstance(ignore, str | nn.Module) else list(ignore)
    return ",".join(
        sorted(
            names.get(id(i), type(i).__name__) if isinstance(i, nn.Module) else str(i)
            for i in items
        )
    )


def _amounts_text(amounts: Any) -> str | None:
    """Per-layer amounts as recorded with a run, in order; bad ones as given (the pruner
    refuses them before any work)."""
    if not isinstance(amounts, Mapping):
        return None if amounts is None else repr(amounts)
    return ",".join(
        f"{k}={v:.12g}" if isinstance(v, float | int) and not isinstance(v, bool) else f"{k}={v!r}"
        for k, v in amounts.items()
    )


class LimitedBatches:
    """Re-iterable view of the first ``max_batches`` batches of a loader (``None``: all)."""

    def __init__(self, loader: Iterable[Any], max_batches: int | None) -> None:
        if max_batches is not None and (
            isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
        ):
            raise ConfigError(
                f"criterion_batches={max_batches!r} is not allowed; use a positive integer or None"
            )
        self.loader = loader
        self.max_batches = max_batches

    def __iter__(self) -> Iterator[Any]:
        if self.max_batches is None:
            return iter(self.loader)
        return itertools.islice(iter(self.loader), self.max_batches)

    def __len__(self) -> int:
        length = len(self.loader)  # type: ignore[arg-type]
        return length if self.max_batches is None else min(length, self.max_batches)


def _check_int(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} is not allowed; use an integer >= {low}")
    return value


def _accuracy(model: nn.Module, loader: Iterable[Any], config: TrainConfig, loss_fn: Any) -> float:
    return float(
        evaluate(
            model,
            loader,
            device=config.device,
            loss_fn=loss_fn,
            amp=config.amp,
            channels_last=config.channels_last,
        )["accuracy"]
    )


# --------------------------------------------------------------------------- iterative pruning


@dataclass
class IterativeStep:
    """One slice of iterative pruning and the fine-tuning after it.

    Attributes:
        step: Zero-based slice index (over the whole run, resumed or not).
        params: Parameters after the slice.
        macs: MACs per example after the slice.
        macs_ratio: ``macs`` over the unpruned model's MACs.
        params_ratio: ``params`` over the unpruned model's parameters.
        layers_pruned: Layers that lost filters in this slice.
        prune_time_s: Wall time of scoring and surgery (and BatchNorm recalibration).
        finetune_steps: Optimizer steps after the slice (0: none).
        finetune_loss: Mean training loss of those steps (``None`` without any).
        finetune_accuracy: Training accuracy of those steps (``None`` without any).
        finetune_time_s: Wall time of those steps.
        val_accuracy: Validation accuracy after the slice's fine-tuning, when ``eval_steps``.
    """

    step: int
    params: int
    macs: int
    macs_ratio: float
    params_ratio: float
    layers_pruned: int
    prune_time_s: float
    finetune_steps: int
    finetune_loss: float | None
    finetune_accuracy: float | None
    finetune_time_s: float
    val_accuracy: float | None = None


@dataclass
class IterativeResult:
    """What :func:`prune_and_finetune` did. Accuracies are fractions in [0, 1].

    Attributes:
        model: The pruned, fine-tuned model (the one passed in, unless the run was resumed
            from ``checkpoint_dir``, which rebuilds it).
        before: Parameters and MACs of the unpruned model.
        after: Parameters and MACs of the pruned model.
        accuracy_before: Validation accuracy before pruning.
        accuracy_pruned: Validation accuracy right after pruning, without fine-tuning: a deep
            copy of the unpruned model pruned in one shot to the same target with the same
            criterion (``None`` when ``oneshot_baseline=False``).
        accuracy_recalibrated: The same one-shot copy after BatchNorm recalibration (``None``
            without ``recalibrate_bn`` or ``oneshot_baseline``); after reconstruction too
            when both are on.
        accuracy_reconstructed: The same one-shot copy after least-squares reconstruction
            (``None`` without ``reconstruct`` or ``oneshot_baseline``).
        accuracy_after_slices: The iterative model after the last slice and its K fine-tuning
            steps, before the final ``finetune_epochs``.
        accuracy_after: After the final fine-tuning.
        steps: One record per slice.
        history: The final fine-tuning's epochs (``None`` when ``finetune_epochs=0``).
        channels: Output channels (unpruned, pruned) of every layer that lost filters.
        skipped: Why some filters had to be kept.
        settings: The procedure's settings, plain values only.
        oneshot_macs_ratio: MACs ratio reached by the one-shot copy.
        total_time_s: Wall time of the whole call.
    """

    model: nn.Module = field(repr=False)  # its module tree would bury the figures
    before: Footprint
    after: Footprint
    accuracy_before: float
    accuracy_pruned: float | None
    accuracy_after_slices: float
    accuracy_after: float
    steps: list[IterativeStep] = field(default_factory=list)
    history: History | None = None
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    oneshot_macs_ratio: float | None = None
    total_time_s: float = 0.0
    accuracy_recalibrated: float | None = None
    accuracy_reconstructed: float | None = None

    @property
    def macs_ratio(self) -> float:
        """MACs after over MACs before."""
        return self.after.macs / self.before.macs if self.before.macs else 1.0

    @property
    def params_ratio(self) -> float:
        """Parameters after over parameters before."""
        return self.after.params / self.before.params if self.before.params else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-able, and storable in a netsurgeon checkpoint's ``extra``)."""
        return {
            "before": asdict(self.before),
            "after": asdict(self.after),
            "macs_ratio": self.macs_ratio,
            "params_ratio": self.params_ratio,
            "accuracy_before": self.accuracy_before,
            "accuracy_pruned": self.accuracy_pruned,
            "accuracy_recalibrated": self.accuracy_recalibrated,
            "accuracy_reconstructed": self.accuracy_reconstructed,
            "accuracy_after_slices": self.accuracy_after_slices,
            "accuracy_after": self.accuracy_after,
            "oneshot_macs_ratio": self.oneshot_macs_ratio,
            "steps": [asdict(s) for s in self.steps],
            "history": self.history.to_dict() if self.history is not None else None,
            "channels": {k: list(v) for k, v in self.channels.items()},
            "skipped": list(self.skipped),
            "settings": dict(self.settings),
            "total_time_s": self.total_time_s,
        }


def _save_state(path: Path, model: nn.Module, state: dict[str, Any]) -> None:
    from netsurgeon.pruning.io import save

    record = {**state, "format": ITERATIVE_STATE, VERSION_KEY: __version__}
    save(model, path, extra={"iterative": record})


def _load_state(path: Path, settings: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    from netsurgeon.pruning.io import model_from_checkpoint, read_checkpoint
    from netsurgeon.vision.models import UnreadableFileError

    try:
        payload = read_checkpoint(path)
    except UnreadableFileError as exc:  # only --resume reads it: say how to get past it
        raise CheckpointError(
            f"{path}: the progress file is not readable: {describe_torch_file(path)}; delete "
            "it to start the run over (or run without resuming: resume=False, no --resume)"
        ) from exc
    state = payload["extra"].get("iterative")
    if not isinstance(state, dict) or state.get("format") != ITERATIVE_STATE:
        raise CheckpointError(f"{path}: not an iterative-pruning progress file")
    saved = {**_ADDED_SETTINGS, **_flatten_settings(state.get("settings", {}))}
    now = _flatten_settings(settings)
    free = set(_RESUMABLE_CHANGES)
    if now.get("train_config.schedule") != "cosine":
        # As fit allows: max_steps only bounds the final fine-tuning, which continues inside
        # a cut epoch; only the cosine schedule is laid out over the run's length.
        free.add("train_config.max_steps")
    differ = _describe_changes(_changed_settings(saved, now, free=frozenset(free)))
    if differ:
        listed = "; ".join(differ)
        raise CheckpointError(
            f"{path} belongs to another iterative run ({listed}); resume with the same settings "
            f"or use another checkpoint folder"
        )
    return model_from_checkpoint(payload, source=path).train(), state


def _draws(loader: Iterable[Any], criterion: Any) -> dict[str, Any]:
    """What the next slice will draw from: random streams, loader epoch, random criterion."""
    sampler = getattr(loader, "sampler", None)
    epoch = getattr(sampler, "epoch", None)
    return {
        "rng": _rng_state(),
        "sampler_epoch": epoch if isinstance(epoch, int) else None,
        "criterion": criterion.generator.get_state() if isinstance(criterion, Random) else None,
    }


def _restore_draws(draws: dict[str, Any] | None, loader: Iterable[Any], criterion: Any) -> None:
    if not draws:  # a progress file written before they were kept
        return
    # Each process goes on with its own streams (files before "rng_ranks": rank 0's).
    _set_rng_state(own_entry(draws.get("rng_ranks"), draws["rng"]))
    if draws["sampler_epoch"] is not None:
        _set_epoch(loader, int(draws["sampler_epoch"]))
    if draws["criterion"] is not None and isinstance(criterion, Random):
        criterion.generator.set_state(draws["criterion"])


# --------------------------------------------------------------------------- unfinished runs
# A rerun without resume would overwrite a stopped run's progress after its first epoch or
# slice; these tell such progress from a finished run's, which may be overwritten.


def _peek(path: Path) -> Any:
    """The content of the torch file at ``path``, ``None`` when it is missing or unreadable.

    Memory-mapped, so the tensors are not read: cheap for a large model's checkpoint.
    """
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many types for corrupt or foreign files
        return None


def _saved_after(out: Path, progress: Sequence[Path]) -> bool:
    """Whether the model file ``out`` was written after every existing ``progress`` file."""
    if not out.is_file():
        return False
    newest = max((p.stat().st_mtime_ns for p in progress if p.is_file()), default=0)
    return out.stat().st_mtime_ns >= newest


def _fit_checkpoint(path: Path) -> dict[str, Any] | None:
    """The training checkpoint at ``path``; ``None`` when missing, unreadable or foreign."""
    data = _peek(path)
    return data if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT else None


def _fit_left(data: Mapping[str, Any]) -> str | None:
    """How far a training checkpoint's run got when it has epochs left; ``None`` when it
    trained to its end (all its epochs, its ``max_steps``, or a stop request)."""
    try:
        epochs, epoch = int(data["config"]["epochs"]), int(data["epoch"])
        max_steps = data["config"].get("max_steps")
        if data.get("stop_requested") or epoch >= epochs:
            return None
        if max_steps is not None and int(data["global_step"]) >= int(max_steps):
            return None
    except (KeyError, TypeError, ValueError, AttributeError):  # not ours to judge: no refusal
        return None
    return f"{epoch} of {epochs} epochs done"


def _unfinished_finetune(path: Path, out: Path | None) -> str | None:
    """Why the training checkpoint at ``path`` holds a run still to finish, else ``None``.

    Unfinished: epochs left, or (with ``out``) trained to the end but its model not saved
    to ``out`` after it (stopped between the two, or the model deleted since). ``None`` also
    when the file is missing or not a readable training checkpoint: nothing that a resume
    could continue (and what the unreadable checkpoint's message advises to do).
    """
    data = _fit_checkpoint(path)
    if data is None:
        return None
    left = _fit_left(data)
    saved = out is not None and (
        _saved_after(out, [path]) or _saves_run(out, "finetune", "history", data.get("history"))
    )
    if left is None and out is not None and not saved:
        left = f"trained to the end, but not saved to {out} after it"
    return left


def _saves_run(out: Path, kind: str, field: str, record: Any) -> bool:
    """Whether the model saved at ``out`` records exactly ``record`` as ``extra[kind][field]``
    (a run's epochs or slices, with their times, so no other run's match): the run was saved,
    though a copy left the files' times out of order."""
    payload = _peek(out)
    extra = payload.get("extra") if isinstance(payload, dict) else None
    saved = extra.get(kind) if isinstance(extra, dict) else None
    return isinstance(saved, dict) and bool(record) and saved.get(field) == record


def _unfinished_iterative(ckpt_dir: Path, out: Path | None) -> str | None:
    """Why the progress folder ``ckpt_dir`` holds an iterative run still to finish, else ``None``.

    Unfinished: slices left, the final fine-tuning not begun or with epochs left, or (with
    ``out``) finished but not saved to ``out``: ``out`` is missing, or older than the last
    progress file and not recording the run's slices. ``None`` also when there is no readable
    progress file: nothing that a resume could continue.
    """
    state_path, final = ckpt_dir / _STATE_FILE, ckpt_dir / _FINAL_FIT_FILE
    payload = _peek(state_path)
    extra = payload.get("extra") if isinstance(payload, dict) else None
    state = extra.get("iterative") if isinstance(extra, dict) else None
    if not isinstance(state, dict) or state.get("format") != ITERATIVE_STATE:
        return None
    left = _work_left(state, final)
    if left is not None:
        return left[0]
    if (
        out is not None
        and not _saved_after(out, [state_path, final])
        and not _saves_run(out, "iterative", "steps", state.get("steps"))
    ):
        return f"finished, but not saved to {out} after it"
    return None


def _work_left(state: Mapping[str, Any], final: Path) -> tuple[str, bool] | None:
    """What an iterative run's progress ``state`` has left to do, and whether the final
    fine-tuning's checkpoint at ``final`` holds it (begun, with epochs left); None when
    nothing is left (or ``state`` cannot be read)."""
    try:
        steps, done = int(state["settings"]["prune_steps"]), int(state["done"])
        epochs = int(state["settings"]["finetune_epochs"])
    except (KeyError, TypeError, ValueError):
        return None
    if done < steps:
        return f"{done} of {steps} slices done", False
    if state.get("accuracy_after_slices") is None:
        return f"all {steps} slices done, not yet evaluated", False
    if epochs > 0:
        fitted = _fit_checkpoint(final)
        if fitted is None:
            return f"all {steps} slices done, the final fine-tuning not begun", False
        left = _fit_left(fitted)
        if left is not None:
            return f"all {steps} slices done, the final fine-tuning {left}", True
    return None


def _refuse_unfinished(path: Path, why: str | None, *, named_by_out: bool) -> None:
    """Refuse to start over on ``path``, the progress of a run still to finish (``why``)."""
    if why is not None:
        other = " (or choose another out file, --out)" if named_by_out else ""
        raise ConfigError(
            f"{path} holds an unfinished run ({why}); pass resume=True (--resume) to continue "
            f"it, or delete it{other} to start over"
        )


def prune_and_finetune(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    *,
    example_inputs: Any,
    config: TrainConfig,
    criterion: str = "taylor",
    target_macs: float | None = None,
    amount: float | None = None,
    prune_steps: int = 5,
    finetune_steps: int = 100,
    finetune_epochs: int = 1,
    scope: str = "global",
    criterion_batches: int | None = 8,
    ignore: Iterable[str | nn.Module] | None = None,
    min_channels: int = 1,
    round_to: int = 1,
    amounts: Mapping[str, float] | None = None,
    oneshot_baseline: bool = True,
    eval_steps: bool = False,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    on_step: Callable[[IterativeStep], None] | None = None,
    distill: bool = False,
    distill_temperature: float = DEFAULT_TEMPERATURE,
    distill_alpha: float = DEFAULT_ALPHA,
    recalibrate_bn: int = 0,
    teacher: nn.Module | None = None,
    reconstruct: int = 0,
    distill_features: Sequence[str] = (),
    distill_feature_weight: float = DEFAULT_FEATURE_WEIGHT,
    slice_lr: str = "constant",
    run_settings: Mapping[str, Any] | None = None,
    prune_layer_norms: bool = False,
) -> IterativeResult:
    """Prune a slice, fine-tune K steps, repeat until the target; then fine-tune E epochs.

    Molchanov et al. 2017's procedure on top of :class:`netsurgeon.pruning.Pruner` (with
    ``steps=prune_steps``: each slice removes a geometric share so that the last one lands on
    the target), :func:`netsurgeon.training.finetune_steps` between slices (a fresh optimizer
    each time, since pruning replaces the parameters) and :func:`netsurgeon.training.fit` at
    the end. Data-driven criteria score filters on the first ``criterion_batches`` batches of
    ``train_loader``, seen afresh before every slice.

    Args:
        model: The network, pruned and trained in place (and moved to ``config.device``).
        train_loader: ``(inputs, targets)`` batches for fine-tuning and criterion statistics.
        val_loader: Validation batches; every reported accuracy is measured on them.
        example_inputs: Inputs the model accepts (batch 1 is enough); MACs are counted on them.
        config: Optimizer, learning rate, schedule, seed, device and AMP of all fine-tuning;
            ``config.epochs`` is replaced by ``finetune_epochs`` for the final fine-tuning.
            ``config.compile`` applies to the final fine-tuning only: the steps between slices
            run eagerly, since every slice changes the shapes and would compile anew.
        criterion: A name from :data:`netsurgeon.pruning.criteria.CRITERIA`.
        target_macs: Fraction of MACs to keep, in (0, 1); give this or ``amount``.
        amount: Fraction of filters to remove, in (0, 1).
        prune_steps: Number of slices.
        finetune_steps: Optimizer steps after every slice; 0 prunes the slices back to back.
        finetune_epochs: Epochs of the final fine-tuning; 0 skips it.
        scope: ``"global"`` (one ranking over layers), ``"global_macs"`` (the same, each score
            divided by what its channel costs in MACs) or ``"layer"``.
        criterion_batches: Batches the criterion sees per slice; ``None`` uses the whole loader.
        ignore, min_channels, round_to, prune_layer_norms: As in :func:`netsurgeon.prune`.
        amounts: Per-layer fractions that replace ``amount`` with ``scope="layer"``, as in
            :class:`netsurgeon.Pruner` (each layer's own share, slice by slice).
        oneshot_baseline: Measure ``accuracy_pruned`` on a one-shot-pruned deep copy. It
            costs one extra prune and one validation pass, and memory for the copy.
        eval_steps: Measure validation accuracy after every slice's fine-tuning.
        checkpoint_dir: Folder for progress files: the model after every slice (saved with
            :func:`netsurgeon.save`, so the model must come from
            :func:`netsurgeon.vision.build_model` or carry ``netsurgeon_arch``) and the final
            fine-tuning's per-epoch checkpoint. ``None`` writes nothing.
        resume: Continue from ``checkpoint_dir``: after the last finished slice (the schedule
            goes on toward the same overall target) or inside the final fine-tuning. Without
            a progress file it warns (naming the path) and starts from scratch. Without
            ``resume``, a folder holding an unfinished run (slices or final epochs left) is
            refused rather than overwritten; a finished run's files are deleted and the run
            starts over.
        loss_fn: Defaults to cross-entropy. The criterion always scores with it; with
            ``distill`` it is the hard-label part of the fine-tuning loss.
        on_step: Called with every finished slice's record (e.g. to print progress).
        distill: Fine-tune (between slices and at the end) with
            :class:`netsurgeon.distill.DistillationLoss`, the teacher being a frozen copy of
            ``model`` as passed in, before any pruning (on ``resume``, pass the unpruned model
            again: it is the teacher).
        distill_temperature: The distillation temperature ``T`` (> 0).
        distill_alpha: Weight of the distillation term, in [0, 1].
        recalibrate_bn: Re-estimate BatchNorm running statistics on this many training
            batches after every slice, before its fine-tuning steps (and on the one-shot
            copy, reported as ``accuracy_recalibrated``); 0 does not.
        teacher: With ``distill``, distil from this model instead of the unpruned copy (e.g.
            the unpruned model after its own fine-tuning); it is frozen in eval mode.
        reconstruct: After every slice, refit the layers that lost input channels by least
            squares to reproduce the model as it was before the slice
            (:func:`netsurgeon.reconstruct`), on this many training batches per layer
            (and on the one-shot copy, reported as ``accuracy_reconstructed``); 0 does not.
            It runs before ``recalibrate_bn``.
        distill_features: With ``distill``, also match the teacher's outputs of these modules
            (names or ``fnmatch`` patterns, e.g. ``"layer?.?"`` for a CIFAR ResNet's blocks;
            their channels must not be pruned, so pass their producers' norms in ``ignore``).
        distill_feature_weight: Weight of that feature term (> 0).
        slice_lr: The learning rate of the steps after every slice: ``"constant"`` holds
            ``config.lr`` (Molchanov et al. 2017), ``"schedule"`` restarts
            ``config.schedule`` over each slice's ``finetune_steps`` (the two tied on
            cifar_resnet32, see ``benchmarks/README.md``). The final fine-tuning always
            follows ``config.schedule``.
        run_settings: Settings of the run outside these arguments (model name, weights,
            data folder and its :meth:`~netsurgeon.vision.data.ImageData.fingerprint`, batch
            size...), plain values kept in the progress file; a ``resume`` must give the same
            ones (a progress file without some of them is not checked on those).

    Returns:
        The :class:`IterativeResult`; its ``model`` is the pruned model.

    Raises:
        ConfigError: A bad argument value (the model is unchanged), ``checkpoint_dir`` is a
            file, or it holds an unfinished run and ``resume`` is false (checked before
            anything slow; the message names the folder and says how to continue or start
            over).
        CheckpointError: ``resume`` found progress files of another run, or an unreadable
            one (the message says how to start over).
    """
    start_time = time.perf_counter()
    check_reiterable("train_loader", train_loader)
    check_reiterable("val_loader", val_loader)
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config={config!r} is not allowed; pass a TrainConfig")
    prune_steps = _check_int("prune_steps", prune_steps, low=1)
    finetune_steps_k = _check_int("finetune_steps", finetune_steps, low=0)
    finetune_epochs = _check_int("finetune_epochs", finetune_epochs, low=0)
    recal_batches = _check_int("recalibrate_bn", recalibrate_bn, low=0)
    recon_batches = _check_int("reconstruct", reconstruct, low=0)
    slice_lr = check_slice_lr("slice_lr", slice_lr)
    if not isinstance(distill, bool):
        raise ConfigError(f"distill={distill!r} is not allowed; use True or False")
    if teacher is not None and (not distill or not isinstance(teacher, nn.Module)):
        raise ConfigError(
            f"teacher={type(teacher).__name__} is not allowed here; pass an nn.Module, "
            f"together with distill=True"
        )
    criterion_data = LimitedBatches(train_loader, criterion_batches)
    if checkpoint_dir is None and resume:
        raise ConfigError("resume=True needs checkpoint_dir, the folder of the run to continue")
    loss = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    if on_step is not None and not callable(on_step):
        raise ConfigError(f"on_step={on_step!r} is not callable; pass f(step_record) or None")
    # Validates temperature and alpha before anything slow; the teacher is set below.
    train_loss: Callable[..., torch.Tensor] = (
        DistillationLoss(
            nn.Identity(),
            temperature=distill_temperature,
            alpha=distill_alpha,
            loss_fn=loss,
            features=distill_features,
            feature_weight=distill_feature_weight,
        )
        if distill
        else loss
    )
    if distill_features and not distill:
        raise ConfigError(f"distill_features={list(distill_features)!r} need distill=True")
    info = init_distributed()
    settings: dict[str, Any] = {
        "criterion": criterion,
        "amount": amount,
        "target_macs": target_macs,
        "prune_steps": prune_steps,
        "finetune_steps": finetune_steps_k,
        "finetune_epochs": finetune_epochs,
        "scope": scope,
        "criterion_batches": criterion_batches,
        "min_channels": min_channels,
        "round_to": round_to,
        "ignore": _ignore_text(model, ignore),
        # As text, in order (the first entry that covers a layer wins).
        "amounts": _amounts_text(amounts),
        "distill": distill,
        "distill_temperature": distill_temperature if distill else None,
        "distill_alpha": distill_alpha if distill else None,
        "distill_teacher": None if not distill else "given" if teacher is not None else "unpruned",
        "distill_features": list(distill_features) if distill else None,
        "distill_feature_weight": distill_feature_weight if distill_features else None,
        "recalibrate_bn": recal_batches,
        "reconstruct": recon_batches,
        "slice_lr": slice_lr,
        # Only when set: the settings of runs before the option existed stay the same.
        **({"prune_layer_norms": True} if prune_layer_norms else {}),
        "train_config": config.to_dict(),
        "run": dict(run_settings) if run_settings else {},
        # Under torchrun the number of processes sets the shards and the batches per step.
        "processes": info.world_size,
    }
    if checkpoint_dir is not None and not isinstance(getattr(model, "netsurgeon_arch", None), dict):
        raise ConfigError(
            "checkpoint_dir needs a model that netsurgeon.save can rebuild: build it with "
            "netsurgeon.vision.build_model (or set model.netsurgeon_arch)"
        )
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state_path = ckpt_dir / _STATE_FILE if ckpt_dir is not None else None
    if ckpt_dir is not None and ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise ConfigError(f"checkpoint_dir {str(ckpt_dir)!r} is a file; give a folder")
    if ckpt_dir is not None and not resume:
        _refuse_unfinished(ckpt_dir, _unfinished_iterative(ckpt_dir, None), named_by_out=False)
    if resume and state_path is not None and not state_path.is_file():
        _warn_no_checkpoint(state_path)
    device = resolve_device(config.device, local_rank=info.local_rank)
    example_inputs = move_inputs(example_inputs, device)
    # DDP shares rank 0's weights only when training starts, but the criteria score and the
    # accuracies are measured before: every process must hold one model from the start.
    model.to(device)
    broadcast_from_rank0([*model.parameters(), *model.buffers()])
    if isinstance(train_loss, DistillationLoss):
        # The unpruned model as passed in, frozen; taken before a resume replaces the model.
        source = teacher if teacher is not None else copy.deepcopy(model)
        train_loss.teacher = source.to(device).eval().requires_grad_(False)
        train_loss.attach(model)  # checks the feature names before anything slow

    def repair(net: nn.Module, reference: nn.Module | None, result: PruneResult) -> None:
        if reference is not None:
            _reconstruct(net, reference, train_loader, kept=result.kept, batches=recon_batches)
        if recal_batches:
            _recalibrate(net, train_loader, batches=recal_batches)

    # Criterion and bounds shared by the iterative pruner, its one-shot twin and a resumed run.
    shared: dict[str, Any] = {
        # One instance for all of them: "random" draws from the run's seed and goes on drawing.
        "criterion": get_criterion(criterion, seed=config.seed),
        "scope": scope,
        "ignore": ignore,
        "data": criterion_data,
        "loss_fn": loss,
        "min_channels": min_channels,
        "round_to": round_to,
        "amounts": amounts,
        "prune_layer_norms": prune_layer_norms,
    }
    state: dict[str, Any]
    pruner: Pruner | None = None
    if resume and state_path is not None and state_path.is_file():
        model, state = _load_state(state_path, settings)
        model.to(device)
        if isinstance(train_loss, DistillationLoss):
            train_loss.attach(model)  # the resumed model replaces the one passed in
        if is_main_process():
            logger.info("resumed iterative pruning after slice %d", state["done"])
            left = _work_left(state, state_path.parent / _FINAL_FIT_FILE)
            if left is not None and not left[1]:  # else the final checkpoint's resume says it
                warn_if_other_version(state, f"progress file {state_path}")
    else:
        if ckpt_dir is not None and is_main_process():
            # Starting over (the folder holds no unfinished run, checked above): clear a
            # finished run's files, so that a stop before this run's first slice leaves no
            # mix of the two, and a final fine-tuning checkpoint is never another run's.
            (ckpt_dir / _STATE_FILE).unlink(missing_ok=True)
            (ckpt_dir / _FINAL_FIT_FILE).unlink(missing_ok=True)
        seed_process(config.seed)
        model.to(device)
        prune_kwargs = {"amount": amount, "target_macs": target_macs, **shared}
        # Validate every argument (and trace the model) before anything slow happens.
        pruner = Pruner(model, example_inputs, steps=prune_steps, **prune_kwargs)
        start = asdict(pruner.start)
        accuracy_before = _accuracy(model, val_loader, config, loss)
        accuracy_pruned = accuracy_recalibrated = accuracy_reconstructed = oneshot_ratio = None
        if oneshot_baseline:
            twin = copy.deepcopy(model)
            once = prune(twin, example_inputs, **prune_kwargs)
            accuracy_pruned = _accuracy(twin, val_loader, config, loss)
            if recon_batches:
                _reconstruct(twin, model, train_loader, kept=once.kept, batches=recon_batches)
                accuracy_reconstructed = _accuracy(twin, val_loader, config, loss)
            if recal_batches:
                _recalibrate(twin, train_loader, batches=recal_batches)
                accuracy_recalibrated = _accuracy(twin, val_loader, config, loss)
            oneshot_ratio = once.macs_ratio
            del twin
        state = {
            "settings": settings,
            "done": 0,
            "start": start,
            "accuracy_before": accuracy_before,
            "accuracy_pruned": accuracy_pruned,
            "accuracy_recalibrated": accuracy_recalibrated,
            "accuracy_reconstructed": accuracy_reconstructed,
            "oneshot_macs_ratio": oneshot_ratio,
            "steps": [],
            "channels": {},
            "skipped": [],
        }
    # Counts absent from the checkpoints of older versions; the Pruner then infers them.
    filters, groups = state["start"].get("filters"), state["start"].get("groups")
    start_fp = Footprint(
        int(state["start"]["params"]),
        int(state["start"]["macs"]),
        None if filters is None else int(filters),
        None if groups is None else tuple((str(key), int(size)) for key, size in groups),
    )
    steps = [IterativeStep(**s) for s in state["steps"]]
    channels = {k: (int(v[0]), int(v[1])) for k, v in state["channels"].items()}
    skipped = list(state["skipped"])

    done = int(state["done"])
    if done < prune_steps and pruner is None:  # resumed: a fresh Pruner continues the schedule
        pruner = Pruner(
            model, example_inputs, steps=prune_steps, amount=amount, target_macs=target_macs,
            start=start_fp, completed=done, **shared,
        )  # fmt: skip
        # Continue where the interrupted process was: its random streams, the loader's epoch
        # (the criterion scores the loader's next batches) and the random criterion's draws.
        _restore_draws(state.get("draws"), train_loader, shared["criterion"])
    if pruner is not None:
        while not pruner.done:
            tick = time.perf_counter()
            reference = copy.deepcopy(model) if recon_batches else None
            result: PruneResult = pruner.step()
            repair(model, reference, result)
            del reference
            prune_time = time.perf_counter() - tick
            tuned = None
            if finetune_steps_k > 0:
                tuned = train_steps(
                    model,
                    train_loader,
                    steps=finetune_steps_k,
                    # Every slice changes the shapes, so compiling K steps would cost far more
                    # than it saves (and torch.compile stops after 8 recompilations).
                    config=dataclasses.replace(config, compile=False),
                    epoch_offset=len(steps) * 1000,
                    loss_fn=train_loss,
                    lr=slice_lr,
                )
            record = IterativeStep(
                step=len(steps),
                params=result.after.params,
                macs=result.after.macs,
                macs_ratio=result.after.macs / max(start_fp.macs, 1),
                params_ratio=result.after.params / max(start_fp.params, 1),
                layers_pruned=len(result.channels),
                prune_time_s=prune_time,
                finetune_steps=tuned.steps if tuned else 0,
                finetune_loss=tuned.loss if tuned else None,
                finetune_accuracy=tuned.accuracy if tuned else None,
                finetune_time_s=tuned.time_s if tuned else 0.0,
                val_accuracy=_accuracy(model, val_loader, config, loss) if eval_steps else None,
            )
            steps.append(record)
            for name, (old, new) in result.channels.items():
                channels[name] = (channels.get(name, (old, new))[0], new)
            skipped = list(dict.fromkeys([*skipped, *result.skipped]))
            # Every process's, collected on all of them: each draws from its own streams.
            draws = gather_objects(_draws(train_loader, shared["criterion"]))
            if state_path is not None and is_main_process():
                state.update(
                    done=done + len(pruner.history),
                    steps=[asdict(s) for s in steps],
                    channels={k: list(v) for k, v in channels.items()},
                    skipped=skipped,
                    draws={**draws[0], "rng_ranks": [d["rng"] for d in draws]},
                )
                _save_state(state_path, model, state)
            if is_main_process():
                logger.info(
                    "slice %d/%d: %.3f of the MACs left, %d layers pruned",
                    record.step + 1,
                    prune_steps,
                    record.macs_ratio,
                    record.layers_pruned,
                )
            if on_step is not None:
                on_step(record)

    if state.get("accuracy_after_slices") is None:
        state["accuracy_after_slices"] = _accuracy(model, val_loader, config, loss)
        if state_path is not None and is_main_process():
            _save_state(state_path, model, state)
    accuracy_after_slices = float(state["accuracy_after_slices"])
    history = None
    if finetune_epochs > 0:
        history = fit(
            model,
            train_loader,
            val_loader,
            config=dataclasses.replace(config, epochs=finetune_epochs),
            checkpoint_path=ckpt_dir / _FINAL_FIT_FILE if ckpt_dir is not None else None,
            resume=resume,
            loss_fn=train_loss,
        )
        last = history.last
        assert last is not None and last.val_accuracy is not None
        accuracy_after = float(last.val_accuracy)
    else:
        accuracy_after = accuracy_after_slices
    if isinstance(train_loss, DistillationLoss):
        train_loss.detach()
    after = Footprint(count_params(model), count_macs(model, example_inputs))
    return IterativeResult(
        model=model,
        before=dataclasses.replace(start_fp, groups=None),  # the sizes only serve a resume
        after=after,
        accuracy_before=float(state["accuracy_before"]),
        accuracy_pruned=state["accuracy_pruned"],
        accuracy_after_slices=accuracy_after_slices,
        accuracy_after=accuracy_after,
        steps=steps,
        history=history,
        channels=channels,
        skipped=skipped,
        settings=settings,
        oneshot_macs_ratio=state["oneshot_macs_ratio"],
        total_time_s=time.perf_counter() - start_time,
        accuracy_recalibrated=state.get("accuracy_recalibrated"),
        accuracy_reconstructed=state.get("accuracy_reconstructed"),
    )


# --------------------------------------------------------------------------- transfer learning


@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes:
        model: The fine-tuned model (on the training device).
        history: One record per epoch, including epochs restored by ``resume``.
        classes: Class names; a label is its class's position here.
        val_accuracy: Validation accuracy after the last epoch, in [0, 1].
        out: Where the model was saved (``None``: not saved).
        checkpoint: The per-epoch training checkpoint (``None``: none written).
        num_skipped: Unreadable images skipped so far.
    """

    model: nn.Module = field(repr=False)  # its module tree would bury the figures
    history: History
    classes: tuple[str, ...]
    val_accuracy: float
    out: Path | None
    checkpoint: Path | None
    num_skipped: int = 0


def default_checkpoint_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`finetune` keeps its per-epoch checkpoint for the model saved at ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".train.ckpt")


def default_progress_dir(out: str | os.PathLike[str]) -> Path:
    """Where ``netsurgeon prune --data`` keeps its progress files for the model saved at
    ``out`` (the ``checkpoint_dir`` of :func:`prune_and_finetune`)."""
    out = Path(out)
    return out.with_name(out.name + ".iterative")


def _warn_no_checkpoint(path: Path) -> None:
    """``resume`` found nothing to continue from: say so, then start from scratch."""
    if is_main_process():
        warnings.warn(
            f"resume was asked for, but there is no checkpoint at {path}; starting from scratch",
            UserWarning,
            stacklevel=3,
        )


def _is_weights_file(weights: str | os.PathLike[str] | None) -> bool:
    return weights is not None and str(weights).lower() != "none" and Path(weights).is_file()


def recorded_weights(weights: str | os.PathLike[str] | None) -> dict[str, str | None]:
    """How a run records its ``--weights``, to compare on resume.

    A file by where it is and what it holds (``weights``, ``weights_sha256``): a resume may
    spell the path another way, but a file rewritten since holds another model. A name such
    as ``DEFAULT`` or ``none`` is kept as given, with no digest.
    """
    if not _is_weights_file(weights):
        return {"weights": "none" if weights is None else str(weights), "weights_sha256": None}
    return {"weights": str(Path(weights).resolve()), "weights_sha256": sha256_file(weights)}


def finetune(
    model_name: str,
    data_dir: str | os.PathLike[str],
    *,
    config: TrainConfig,
    out: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = "none",
    num_classes: int | None = None,
    input_size: int | None = None,
    batch_size: int = 32,
    val_fraction: float | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    num_workers: int | None = None,
    cache_data: bool = False,
    small: bool | None = None,
    teacher: nn.Module | str | os.PathLike[str] | None = None,
    distill_temperature: float = DEFAULT_TEMPERATURE,
    distill_alpha: float = DEFAULT_ALPHA,
    recalibrate_bn: int = 0,
    distill_features: Sequence[str] = (),
    distill_feature_weight: float = DEFAULT_FEATURE_WEIGHT,
) -> FinetuneResult:
    """Fine-tune a classification model on an image folder (transfer learning).

    The model comes from :func:`netsurgeon.vision.build_model` with its classifier head sized
    to the data's classes; the data from :func:`netsurgeon.vision.data.load_image_data`
    (``train/`` and ``val/`` folders, or a seeded split with ``val_fraction``); training from
    :func:`netsurgeon.training.fit`, with an atomic checkpoint after every epoch.

    Args:
        model_name: A name from :func:`netsurgeon.vision.list_models`.
        data_dir: The data folder.
        config: Optimizer, schedule, epochs, seed, AMP and device.
        out: Save the fine-tuned model here with :func:`netsurgeon.save` (the class names,
            settings and history go into its ``extra``); ``None`` does not save.
        weights: ``"none"``, ``"DEFAULT"`` (or a torchvision weights name) or a local file,
            e.g. a pruned model saved by netsurgeon.
        num_classes: When given, must equal the number of class folders.
        input_size: Side of the square model input; ``None`` takes the size the model is built
            for (:func:`netsurgeon.vision.models.default_input_size`: 32 for the CIFAR ResNets).
        batch_size: Training and validation batch size (per process under torchrun).
        val_fraction: Split the training folder with this share for validation.
        checkpoint: The per-epoch training checkpoint; defaults to
            :func:`default_checkpoint_path` of ``out`` (none without ``out``). It is kept
            after the run.
        resume: Continue from ``checkpoint`` after its last finished epoch; without a
            checkpoint file it warns (naming the path) and starts from scratch. Without
            ``resume``, a checkpoint of an unfinished run is refused rather than overwritten:
            one with epochs left, or (with ``out``) one that ``out`` was not saved after. A
            finished run's checkpoint is overwritten by the new run.
        num_workers: Loader processes; ``None`` picks a default.
        cache_data: Keep the decoded images on the training device
            (``make_loader(..., cache=True)``).
        small: CIFAR-style transforms; ``None`` decides from ``input_size``.
        teacher: Fine-tune by knowledge distillation
            (:class:`netsurgeon.distill.DistillationLoss`) from this model, or from the model
            saved by :func:`netsurgeon.save` at this path, e.g. the unpruned model when
            ``weights`` is a pruned one. It must score the data's classes.
        distill_temperature: The distillation temperature (> 0), with ``teacher``.
        distill_alpha: Weight of the distillation term, in [0, 1], with ``teacher``.
        recalibrate_bn: Re-estimate the BatchNorm running statistics on this many training
            batches before fine-tuning (useful for a model pruned without data); 0 does not.
        distill_features: With ``teacher``, also match the teacher's outputs of these modules
            (names or ``fnmatch`` patterns); they must have the same shapes in both models.
        distill_feature_weight: Weight of that feature term (> 0).

    Raises:
        ConfigError: Bad data folder, ``num_classes`` contradicting the data, bad values,
            a checkpoint path that is a folder, or without ``resume`` a checkpoint of an
            unfinished run (these two checked before any weights or data are read).
        CheckpointError: ``resume`` with a checkpoint of another model or run (its settings,
            the data folder's files among them, differ), or an unreadable ``teacher`` file.
        NetsurgeonError: Pretrained weights could not be downloaded.
    """
    from netsurgeon.pruning.io import save
    from netsurgeon.vision.data import load_image_data, make_loader
    from netsurgeon.vision.models import build_model, default_input_size, input_normalization

    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config={config!r} is not allowed; pass a TrainConfig")
    info = init_distributed()  # before any message, so that under torchrun only rank 0 prints
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is None and out is not None:
        ckpt = default_checkpoint_path(out)
    if resume and ckpt is None:
        raise ConfigError("resume=True needs out or checkpoint, where the run to continue is")
    if ckpt is not None:  # before a whole epoch trains, not when its checkpoint is written
        flag = "checkpoint" if checkpoint is None else "checkpoint (--checkpoint)"
        check_file_target(ckpt, flag)
        if out is not None and ckpt.resolve() == Path(out).resolve():
            raise ConfigError(
                f"{flag} {str(ckpt)!r} is the out file (--out) too; give the checkpoint "
                "another path"
            )
        if ckpt.is_file() and _fit_checkpoint(ckpt) is None:  # never overwrite other files
            raise ConfigError(
                f"{flag} {str(ckpt)!r} exists and is not a training checkpoint; give another "
                "path, or delete the file if it may go"
            )
        if resume and not ckpt.is_file():
            _warn_no_checkpoint(ckpt)
        if not resume:
            why = _unfinished_finetune(ckpt, Path(out) if out is not None else None)
            _refuse_unfinished(ckpt, why, named_by_out=checkpoint is None)
    if input_size is None:
        input_size = default_input_size(model_name)
    recal_batches = _check_int("recalibrate_bn", recalibrate_bn, low=0)
    loss_fn: DistillationLoss | None = None
    if teacher is not None:
        from netsurgeon.pruning.io import load

        if not isinstance(teacher, nn.Module) and not Path(teacher).is_file():
            what = "is a folder" if Path(teacher).is_dir() else "does not exist"
            raise ConfigError(
                f"teacher (--teacher) {str(teacher)!r} {what}; give a model file saved by "
                "netsurgeon (finetune's or prune's --out)"
            )
        teacher_model = teacher if isinstance(teacher, nn.Module) else load(teacher)
        loss_fn = DistillationLoss(
            teacher_model,
            temperature=distill_temperature,
            alpha=distill_alpha,
            features=distill_features,
            feature_weight=distill_feature_weight,
        )
    elif distill_features:
        raise ConfigError(f"distill_features={list(distill_features)!r} need a teacher")
    mean, std = input_normalization(model_name)
    data = load_image_data(
        data_dir,
        input_size=input_size,
        val_fraction=val_fraction,
        seed=config.seed,
        num_classes=num_classes,
        small=small,
        mean=mean,
        std=std,
    )
    if loss_fn is not None:
        scores = loss_fn.teacher_logits(
            torch.zeros(1, 3, input_size, input_size), torch.device("cpu")
        )
        if scores.dim() != 2 or scores.shape[1] != data.num_classes:
            raise ConfigError(
                f"teacher scores {tuple(scores.shape[1:])} classes but the data have "
                f"{data.num_classes}; pass a teacher trained on the same classes"
            )
    # A resumed run overwrites every weight from the checkpoint: skip a download.
    resuming = resume and ckpt is not None and ckpt.is_file()
    build_weights = weights if (not resuming or _is_weights_file(weights)) else "none"
    seed_everything(config.seed)  # the new head's (or a random model's) initialisation
    model = build_model(
        model_name, weights=build_weights, num_classes=data.num_classes, progress=is_main_process()
    )
    check_input_size(model, input_size, name=model_name)
    train_loader = make_loader(
        data.train,
        batch_size=batch_size,
        train=True,
        seed=config.seed,
        num_workers=num_workers,
        device=config.device,
        cache=cache_data,
    )
    val_loader = make_loader(
        data.val,
        batch_size=batch_size,
        train=False,
        num_workers=num_workers,
        device=config.device,
        cache=cache_data,
    )
    if loss_fn is not None:
        loss_fn.attach(model)
    if recal_batches and not resuming:  # a resumed run restores the statistics it had
        model.to(resolve_device(config.device, local_rank=info.local_rank))
        _recalibrate(model, train_loader, batches=recal_batches)
    # What the checkpoint's run trained on beyond its TrainConfig; a resume must match it.
    run_settings = {
        "model": model_name,
        # A resume replaces the weights, but a run started from others is another run.
        **recorded_weights(weights),
        "data": str(Path(data_dir).resolve()),
        "classes": ",".join(data.classes),
        # The folder's files may change under the same path between the run and its resume.
        **data.fingerprint(),
        "val_fraction": val_fraction,
        "batch_size": batch_size,
        "input_size": input_size,
        "small": small,
        "teacher": None if teacher is None else "model" if isinstance(teacher, nn.Module)
        else str(Path(teacher).resolve()),
        # A teacher file may be overwritten between the run and its resume.
        "teacher_sha256": sha256_file(teacher)
        if teacher is not None and not isinstance(teacher, nn.Module) else None,
        "distill_temperature": distill_temperature if teacher is not None else None,
        "distill_alpha": distill_alpha if teacher is not None else None,
        "distill_features": ",".join(distill_features) if teacher is not None else None,
        "distill_feature_weight": distill_feature_weight if distill_features else None,
        "recalibrate_bn": recal_batches,
    }  # fmt: skip
    history = fit(
        model,
        train_loader,
        val_loader,
        config=config,
        checkpoint_path=ckpt,
        resume=resume,
        loss_fn=loss_fn,
        run_settings=run_settings,
    )
    if loss_fn is not None:
        loss_fn.detach()
    last = history.last
    val_accuracy = float(last.val_accuracy) if last and last.val_accuracy is not None else math.nan
    data.merge_processes()  # each process loaded its own shard: count every skipped file
    saved = None
    if out is not None and is_main_process():
        extra = {
            "finetune": {
                "model": model_name,
                "weights": str(weights),
                "classes": list(data.classes),
                "input_size": input_size,
                "batch_size": batch_size,
                "val_fraction": val_fraction,
                "data": str(data_dir),
                "val_accuracy": val_accuracy,
                "config": config.to_dict(),
                "history": history.to_dict(),
                "distill": None
                if loss_fn is None
                else {
                    "teacher": str(teacher)
                    if not isinstance(teacher, nn.Module)
                    else type(teacher).__name__,
                    "temperature": loss_fn.temperature,
                    "alpha": loss_fn.alpha,
                    "features": list(loss_fn.features),
                    "feature_weight": loss_fn.feature_weight if loss_fn.features else None,
                },
                "recalibrate_bn": recal_batches,
            }
        }
        saved = save(model, out, extra=extra)
    return FinetuneResult(
        model=model,
        history=history,
        classes=data.classes,
        val_accuracy=val_accuracy,
        out=saved if saved is not None else (Path(out) if out is not None else None),
        checkpoint=ckpt,
        num_skipped=data.num_skipped,
    )


# --------------------------------------------------------------------------- command line


def train_config_from_args(args: argparse.Namespace, *, epochs: int) -> TrainConfig:
    """The :class:`TrainConfig` that :func:`add_training_arguments`' options describe."""
    return TrainConfig(
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        grad_clip=getattr(args, "grad_clip", None),
        schedule=args.schedule,
        step_size=args.step_size,
        gamma=args.gamma,
        epochs=epochs,
        seed=args.seed,
        amp=args.amp,
        device=args.device,
        max_steps=getattr(args, "max_steps", None),
        channels_last=getattr(args, "channels_last", False),
        compile=getattr(args, "compile", False),
    )


def _check_flag(flag: str, value: Any, *, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < low:
        raise ConfigError(f"{flag} {value} is not allowed; use an integer >= {low}")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def _say(message: str) -> None:
    if is_main_process():
        print(message, file=sys.stderr, flush=True)


def _default_input_size(args: argparse.Namespace) -> None:
    """Without ``--input-size``, use the size ``args.model`` is built for."""
    from netsurgeon.vision.models import default_input_size

    if args.input_size is None:
        args.input_size = default_input_size(args.model)


def run_finetune_from_args(args: argparse.Namespace) -> int:
    """Carry out ``netsurgeon finetune``; returns the exit status."""
    _check_flag("--epochs", args.epochs, low=1)
    _check_flag("--batch-size", args.batch_size, low=1)
    _default_input_size(args)
    _check_flag("--input-size", args.input_size, low=8)
    _check_flag("--num-classes", args.num_classes, low=1, optional=True)
    _check_flag("--workers", args.workers, low=0, optional=True)
    out = check_file_target(args.out, "--out")
    teacher = getattr(args, "teacher", None)
    recovery = _recovery_from_args(args, distill=teacher is not None, switch="--teacher FILE")
    config = train_config_from_args(args, epochs=args.epochs)
    result = finetune(
        args.model,
        args.data,
        config=config,
        out=out,
        weights=args.weights,
        num_classes=args.num_classes,
        input_size=args.input_size,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        checkpoint=args.checkpoint,
        resume=args.resume,
        num_workers=args.workers,
        cache_data=args.cache_data,
        teacher=teacher,
        **recovery,
    )
    if not is_main_process():
        return 0
    if args.json:
        report = {
            "model": args.model,
            "out": str(result.out),
            "checkpoint": str(result.checkpoint),
            "classes": list(result.classes),
            "val_accuracy": result.val_accuracy,
            "num_skipped": result.num_skipped,
            "history": result.history.to_dict(),
        }
        print(json.dumps(report, indent=2))
        return 0
    rows = [
        (
            r.epoch + 1,
            f"{r.train_loss:.4f}",
            _pct(r.train_accuracy),
            "-" if r.val_loss is None else f"{r.val_loss:.4f}",
            _pct(r.val_accuracy),
            f"{r.epoch_time_s:.1f}",
            f"{100 * r.data_wait_share:.0f}%",
        )
        for r in result.history.epochs
    ]
    print(f"fine-tuned {args.model} on {len(result.classes)} classes ({', '.join(result.classes)})")
    print(
        _table(
            ("epoch", "train loss", "train acc", "val loss", "val acc", "time s", "data wait"), rows
        )
    )
    if result.num_skipped:
        print(f"skipped {result.num_skipped} unreadable image(s)")
    print(f"validation accuracy: {_pct(result.val_accuracy)}")
    print(f"saved to {result.out}")
    return 0


def _recovery_from_args(
    args: argparse.Namespace, *, distill: bool, switch: str = "--distill"
) -> dict[str, Any]:
    """Validated temperature, alpha, feature and recalibration keywords from
    :func:`_add_recovery_arguments`' flags (``distill`` says whether distillation is on)."""
    temperature = getattr(args, "distill_temperature", None)
    alpha = getattr(args, "distill_alpha", None)
    features_flag = getattr(args, "distill_features", None)
    weight = getattr(args, "distill_feature_weight", None)
    given = [
        flag
        for flag, value in (
            ("--distill-temperature", temperature),
            ("--distill-alpha", alpha),
            ("--distill-features", features_flag),
            ("--distill-feature-weight", weight),
        )
        if value is not None
    ]
    if not distill and given:
        raise ConfigError(f"{given[0]} has no effect without {switch}; add {switch}")
    features = comma_list(features_flag or "", name="distill_features", flag="--distill-features")
    if features_flag is not None and not features:
        raise ConfigError(
            f"--distill-features {features_flag!r} names no module; give comma-separated names"
        )
    if weight is not None and not features:
        raise ConfigError("--distill-feature-weight has no effect without --distill-features")
    weight = DEFAULT_FEATURE_WEIGHT if weight is None else weight
    if not math.isfinite(weight) or weight <= 0:
        raise ConfigError(
            f"--distill-feature-weight {weight} is not allowed; use a finite number > 0"
        )
    temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    alpha = DEFAULT_ALPHA if alpha is None else alpha
    if not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(
            f"--distill-temperature {temperature} is not allowed; use a finite number > 0"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--distill-alpha {alpha} is not allowed; use a number in [0, 1]")
    recalibrate = getattr(args, "recalibrate_bn", 0)
    _check_flag("--recalibrate-bn", recalibrate, low=0)
    return {
        "distill_temperature": temperature,
        "distill_alpha": alpha,
        "distill_features": features,
        "distill_feature_weight": weight,
        "recalibrate_bn": recalibrate,
    }


def run_iterative_from_args(args: argparse.Namespace) -> int:
    """Carry out ``netsurgeon prune MODEL --data DIR ...``; returns the exit status.

    It prints validation accuracy before pruning, right after pruning (the one-shot-pruned
    copy; see :func:`prune_and_finetune`), after the slices and after fine-tuning, the
    parameters and MACs before and after, and one line per slice; it saves the pruned model
    to ``--out`` with the settings and results in its ``extra["iterative"]``.
    """
    from netsurgeon.pruning.io import save
    from netsurgeon.vision.data import load_image_data, make_loader
    from netsurgeon.vision.models import build_model, input_normalization

    if getattr(args, "data", None) is None:
        raise ConfigError("iterative pruning needs --data DIR, an ImageFolder data folder")
    _check_flag("--prune-steps", args.prune_steps, low=1)
    _check_flag("--finetune-steps", args.finetune_steps, low=0)
    _check_flag("--finetune-epochs", args.finetune_epochs, low=0)
    _check_flag("--criterion-batches", args.criterion_batches, low=1)
    _check_flag("--train-batch-size", args.train_batch_size, low=1)
    _default_input_size(args)
    _check_flag("--input-size", args.input_size, low=8)
    _check_flag("--num-classes", args.num_classes, low=1, optional=True)
    _check_flag("--workers", args.workers, low=0, optional=True)
    out = check_file_target(args.out, "--out") if args.out is not None else None
    if args.scope not in SCOPES:
        raise ConfigError(f"--scope {args.scope!r} is not allowed; use one of {', '.join(SCOPES)}")
    distill = bool(getattr(args, "distill", False))
    recovery = _recovery_from_args(args, distill=distill)
    reconstruct = getattr(args, "reconstruct", 0)
    _check_flag("--reconstruct", reconstruct, low=0)
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None and out is not None:
        checkpoint_dir = default_progress_dir(out)
    if checkpoint_dir is not None and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        flag = "--checkpoint-dir" if args.checkpoint_dir is not None else "the progress folder"
        raise ConfigError(f"{flag} {str(checkpoint_dir)!r} is a file; give a folder")
    if checkpoint_dir is not None and not args.resume:  # before the weights and data load
        why = _unfinished_iterative(checkpoint_dir, out)
        _refuse_unfinished(checkpoint_dir, why, named_by_out=args.checkpoint_dir is None)
    config = train_config_from_args(args, epochs=max(1, args.finetune_epochs))
    mean, std = input_normalization(args.model)
    data = load_image_data(
        args.data,
        input_size=args.input_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        num_classes=args.num_classes,
        mean=mean,
        std=std,
    )
    resuming = (
        args.resume and checkpoint_dir is not None and (checkpoint_dir / _STATE_FILE).is_file()
    )
    # A resumed run replaces the weights from its progress file, but with --distill the model
    # passed in is also the teacher, so it needs its real (unpruned) weights.
    weights_file = _is_weights_file(args.weights)
    keep = not resuming or distill or weights_file
    weights = args.weights if keep else "none"
    torch.manual_seed(args.seed)
    init_distributed()  # so that only rank 0 shows the download progress
    model = build_model(
        args.model, weights=weights, num_classes=data.num_classes, progress=is_main_process()
    )
    check_input_size(model, args.input_size, name=args.model)
    train_loader = make_loader(
        data.train,
        batch_size=args.train_batch_size,
        train=True,
        seed=args.seed,
        num_workers=args.workers,
        device=config.device,
        cache=args.cache_data,
    )
    val_loader = make_loader(
        data.val,
        batch_size=args.train_batch_size,
        train=False,
        num_workers=args.workers,
        device=config.device,
        cache=args.cache_data,
    )
    example = torch.zeros(1, 3, args.input_size, args.input_size)

    def report(step: IterativeStep) -> None:
        tuned = (
            ""
            if step.finetune_loss is None
            else (f", fine-tuned {step.finetune_steps} steps (loss {step.finetune_loss:.4f})")
        )
        _say(
            f"netsurgeon: slice {step.step + 1}/{args.prune_steps}: "
            f"{step.macs_ratio:.3f} of the MACs left{tuned}"
        )

    # What the progress files' run trained beyond prune_and_finetune's own settings; with
    # --distill the weights are also the teacher, so their content must not change either.
    run_settings = {
        "model": args.model,
        **recorded_weights(args.weights),
        "data": str(Path(args.data).resolve()),
        "classes": ",".join(data.classes),
        # The folder's files may change under the same path between the run and its resume.
        **data.fingerprint(),
        "val_fraction": args.val_fraction,
        "batch_size": args.train_batch_size,
        "input_size": args.input_size,
    }
    result = prune_and_finetune(
        model,
        train_loader,
        val_loader,
        example_inputs=example,
        run_settings=run_settings,
        config=config,
        criterion=args.criterion,
        target_macs=args.target_macs,
        amount=args.amount,
        prune_steps=args.prune_steps,
        finetune_steps=args.finetune_steps,
        finetune_epochs=args.finetune_epochs,
        scope=args.scope,
        ignore=getattr(args, "ignore", None),
        min_channels=getattr(args, "min_channels", 1),
        round_to=getattr(args, "round_to", 1),
        amounts=getattr(args, "amounts", None),
        criterion_batches=args.criterion_batches,
        oneshot_baseline=not args.no_oneshot,
        checkpoint_dir=checkpoint_dir,
        resume=args.resume,
        on_step=report,
        distill=distill,
        reconstruct=reconstruct,
        slice_lr=getattr(args, "slice_lr", "constant"),
        prune_layer_norms=getattr(args, "prune_layer_norms", False),
        **recovery,
    )
    if not is_main_process():
        return 0
    summary = result.to_dict()
    summary.update(
        model=args.model,
        weights=str(args.weights),
        data=str(args.data),
        classes=list(data.classes),
        input_size=args.input_size,
    )
    if out is not None:
        save(result.model, out, extra={"iterative": summary})
    if getattr(args, "json", False):
        print(json.dumps({**summary, "out": str(out) if out else None}, indent=2))
        return 0
    print(format_iterative(result, title=f"{args.model}, {args.criterion}"))
    if out is not None:
        print(f"saved to {out}")
    return 0


def format_iterative(result: IterativeResult, *, title: str = "") -> str:
    """Accuracy before / right after pruning / after fine-tuning, costs, and every slice."""
    acc = _table(
        ("validation accuracy", "value"),
        [
            ("before pruning", _pct(result.accuracy_before)),
            ("right after pruning (one-shot copy, no fine-tuning)", _pct(result.accuracy_pruned)),
            *(
                [("  and after least-squares reconstruction", _pct(result.accuracy_reconstructed))]
                if result.accuracy_reconstructed is not None
                else []
            ),
            *(
                [("  and after BatchNorm recalibration", _pct(result.accuracy_recalibrated))]
                if result.accuracy_recalibrated is not None
                else []
            ),
            ("after the slices and their fine-tuning steps", _pct(result.accuracy_after_slices)),
            ("after fine-tuning", _pct(result.accuracy_after)),
        ],
    )
    cost = _table(
        ("", "before", "after", "after/before"),
        [
            (
                "params",
                f"{result.before.params:,}",
                f"{result.after.params:,}",
                f"{result.params_ratio:.3f}",
            ),
            (
                "MACs",
                f"{result.before.macs:,}",
                f"{result.after.macs:,}",
                f"{result.macs_ratio:.3f}",
            ),
        ],
    )
    steps = _table(
        (
            "slice",
            "MACs ratio",
            "params ratio",
            "layers",
            "prune s",
            "ft steps",
            "ft loss",
            "ft acc",
            "ft s",
            "val acc",
        ),
        [
            (
                s.step + 1,
                f"{s.macs_ratio:.3f}",
                f"{s.params_ratio:.3f}",
                s.layers_pruned,
                f"{s.prune_time_s:.2f}",
                s.finetune_steps,
                "-" if s.finetune_loss is None else f"{s.finetune_loss:.4f}",
                _pct(s.finetune_accuracy),
                f"{s.finetune_time_s:.1f}",
                _pct(s.val_accuracy),
            )
            for s in result.steps
        ],
    )
    head = f"iterative pruning{f' ({title})' if title else ''}"
    return f"{head}\n{acc}\n\n{cost}\n\n{steps}"
