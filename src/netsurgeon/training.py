"""The one training loop netsurgeon fine-tunes with: progress, checkpoints, resume, DDP.

:func:`fit` trains for epochs, validates, and writes an atomic checkpoint after every epoch;
``resume=True`` continues where the last run stopped (after its last finished epoch, or at the
next batch of an epoch that ``max_steps`` cut) and ends with the same weights as an
uninterrupted run. :func:`finetune_steps` runs exactly K optimizer steps, the inner step of
iterative pruning. Both run unchanged under ``torchrun --nproc_per_node N``: the process group
is initialised from the environment, the model is wrapped in DistributedDataParallel, metrics
are reduced over processes, and only rank 0 writes files or shows progress.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from netsurgeon import __version__
from netsurgeon.choices import SLICE_LRS
from netsurgeon.distributed import (
    broadcast_from_rank0,
    gather_objects,
    is_distributed,
    own_entry,
    rank_and_size,
)
from netsurgeon.errors import CheckpointError, ConfigError, first_line
from netsurgeon.fileio import atomic_torch_save, describe_torch_file
from netsurgeon.modes import kept_modes
from netsurgeon.provenance import VERSION_KEY, warn_if_other_version
from netsurgeon.pruning.stats import move_inputs
from netsurgeon.pruning.stats import resolve_device as resolve_named_device

__all__ = [
    "CHECKPOINT_FORMAT",
    "SLICE_LRS",
    "BatchInfo",
    "Callback",
    "DataWaitTimer",
    "DistInfo",
    "EpochRecord",
    "History",
    "StepsResult",
    "TrainConfig",
    "TrainState",
    "atomic_save",
    "compile_seconds",
    "evaluate",
    "finetune_steps",
    "fit",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_model_state",
    "resolve_device",
    "seed_everything",
    "seed_process",
]

CHECKPOINT_FORMAT = "netsurgeon.training.checkpoint/1"
_OPTIMIZERS = ("sgd", "adam", "adamw")
_SCHEDULES = ("none", "cosine", "step")
_DEVICES = ("auto", "cpu", "cuda", "cuda:N")
# Running loss and accuracy need a device sync; refresh the progress bar this often.
_PROGRESS_EVERY = 10
_MAX_LISTED = 10

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


def init_distributed(*, backend: str | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's environment when it asks for it.

    With ``WORLD_SIZE > 1`` and no process group yet, one is created from the ``env://``
    variables (``RANK``, ``MASTER_ADDR``...). Otherwise nothing happens, so calling it more
    than once is safe; :func:`fit` and ``make_loader`` call it themselves.

    Args:
        backend: ``None`` picks NCCL when CUDA is available, else gloo; the environment
            variable ``NETSURGEON_DIST_BACKEND`` overrides that choice (e.g. gloo for a CPU
            run on a GPU machine).
    """
    wanted = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if wanted and dist.is_available() and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = backend or os.environ.get("NETSURGEON_DIST_BACKEND")
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    return DistInfo(rank=0, world_size=1, local_rank=0)


def is_main_process() -> bool:
    """True outside distributed jobs and on rank 0 inside them."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


# --------------------------------------------------------------------------- configuration


# The training commands' options for TrainConfig's fields, so that a message names both.
_FLAGS = {
    "lr": "--lr",
    "momentum": "--momentum",
    "weight_decay": "--weight-decay",
    "grad_clip": "--grad-clip",
    "step_size": "--step-size",
    "gamma": "--gamma",
    "epochs": "--epochs",
    "seed": "--seed",
}


def _named(name: str, value: Any) -> str:
    """``lr=-1.0 (--lr)``: the keyword for Python callers, the option for the command line."""
    flag = _FLAGS.get(name)
    return f"{name}={value!r}" + (f" ({flag})" if flag else "")


def _check_number(name: str, value: Any, *, low: float, allow_low: bool, kind: type) -> None:
    ok_type = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if isinstance(value, bool) or not ok_type or (kind is float and not math.isfinite(value)):
        raise ConfigError(f"{_named(name, value)} is not allowed; use a {kind.__name__}")
    if value < low or (value == low and not allow_low):
        bound = ">=" if allow_low else ">"
        raise ConfigError(f"{_named(name, value)} is not allowed; use a value {bound} {low}")


def _check_device(value: Any) -> None:
    ok = isinstance(value, str) and (
        value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
    )
    if not ok:
        raise ConfigError(f"device={value!r} is not allowed; use one of {', '.join(_DEVICES)}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train; every field is checked when the config is made.

    Attributes:
        optimizer: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"``.
        lr: Initial learning rate.
        momentum: SGD momentum; ignored by Adam(W).
        weight_decay: L2 penalty (decoupled for AdamW), on every parameter, biases and
            BatchNorm weights included.
        schedule: ``"none"``, ``"cosine"`` (annealed to 0 over the planned steps) or ``"step"``
            (multiplied by ``gamma`` every ``step_size`` epochs). The learning rate is
            updated after every optimizer step.
        step_size: Epochs between decays of the ``"step"`` schedule.
        gamma: Decay factor of the ``"step"`` schedule.
        epochs: Epochs to train.
        seed: Seeds Python, NumPy and torch at the start of a fresh run (under torchrun,
            ``seed + rank``, so that the processes draw different augmentations).
        amp: Float16 mixed precision with gradient scaling; CUDA only (ignored with a warning
            when the run lands on the CPU).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; a
            ``torch.device`` is kept as its name. Under torchrun, CUDA means this process's
            ``cuda:LOCAL_RANK``.
        grad_clip: Clip the global gradient norm to this value; ``None`` does not clip.
        max_steps: Stop after this many optimizer steps in total, even mid-epoch.
        channels_last: Keep the model's 4-D weights and the image batches in channels-last
            memory order, which convolution kernels run faster on (CPU oneDNN; tensor cores
            with ``amp``); results are the same up to float rounding.
        compile: Run the training steps through :func:`torch.compile` (TorchInductor), which
            fuses the memory-bound layers around the convolutions. The first step compiles
            (up to about a minute for a CIFAR ResNet on a CPU core, and again whenever the
            shapes change, so it pays off for long runs of one model; iterative pruning
            compiles only its final fine-tuning); evaluation stays eager. Needs a C++
            compiler on the CPU and Triton on CUDA. Results are the same up to float rounding.
            In one process, ``torch.compile`` compiles a model class for at most 8 sets of
            shapes and then runs it eagerly; sweeps and model comparisons call
            :func:`torch.compiler.reset` before each model, and so should other loops over
            many pruned models.
        progress: Show a progress bar; ``None`` shows it on rank 0 when stderr is a terminal
            and ``CI`` is not set.
    """

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    step_size: int = 1
    gamma: float = 0.1
    epochs: int = 1
    seed: int = 0
    amp: bool = False
    device: str = "auto"
    grad_clip: float | None = None
    max_steps: int | None = None
    channels_last: bool = False
    compile: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(
                f"optimizer={self.optimizer!r} is not allowed; use one of {', '.join(_OPTIMIZERS)}"
            )
        if self.schedule not in _SCHEDULES:
            raise ConfigError(
                f"schedule={self.schedule!r} is not allowed; use one of {', '.join(_SCHEDULES)}"
            )
        _check_number("lr", self.lr, low=0.0, allow_low=False, kind=float)
        _check_number("momentum", self.momentum, low=0.0, allow_low=True, kind=float)
        if self.momentum >= 1:
            raise ConfigError(
                f"{_named('momentum', self.momentum)} is not allowed; use a value in [0, 1)"
            )
        _check_number("weight_decay", self.weight_decay, low=0.0, allow_low=True, kind=float)
        _check_number("step_size", self.step_size, low=1, allow_low=True, kind=int)
        _check_number("gamma", self.gamma, low=0.0, allow_low=False, kind=float)
        _check_number("epochs", self.epochs, low=1, allow_low=True, kind=int)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"{_named('seed', self.seed)} is not allowed; use an integer >= 0")
        if not isinstance(self.amp, bool):
            raise ConfigError(f"amp={self.amp!r} is not allowed; use True or False")
        if not isinstance(self.channels_last, bool):
            raise ConfigError(
                f"channels_last={self.channels_last!r} is not allowed; use True or False"
            )
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile={self.compile!r} is not allowed; use True or False")
        if isinstance(self.device, torch.device):  # kept as its name: configs are plain data
            object.__setattr__(self, "device", str(self.device))
        _check_device(self.device)
        if self.amp and self.device == "cpu":
            raise ConfigError(
                "amp=True is not allowed with device='cpu'; mixed precision is CUDA only"
            )
        if self.grad_clip is not None:
            _check_number("grad_clip", self.grad_clip, low=0.0, allow_low=False, kind=float)
        if self.max_steps is not None:
            _check_number("max_steps", self.max_steps, low=1, allow_low=True, kind=int)
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ConfigError(f"progress={self.progress!r} is not allowed; use True, False or None")

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (for results files and checkpoints)."""
        return asdict(self)


def resolve_device(device: str | torch.device = "auto", *, local_rank: int = 0) -> torch.device:
    """The device a run uses: ``"auto"``/``"cuda"`` become ``cuda:local_rank`` when possible.

    Raises:
        ConfigError: The name is not a device, or CUDA is asked for but not available.
    """
    if isinstance(device, torch.device):
        return device
    _check_device(device)
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{local_rank}"  # each distributed process takes its own GPU
    # One resolver for the whole library: it also refuses a GPU index that does not exist.
    return resolve_named_device(device)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_process(seed: int) -> None:
    """:func:`seed_everything` with ``seed``, plus this process's rank under torchrun.

    Each process then draws its own augmentations and dropout masks, as one process does
    for every sample of its batch; DDP keeps their weights equal all the same.
    """
    seed_everything(seed + rank_and_size()[0])


# --------------------------------------------------------------------------- results


@dataclass
class EpochRecord:
    """What one epoch did. Accuracies are fractions in [0, 1]; times are wall seconds.

    An epoch that ``max_steps`` (or a stop request) cut before the loader's end is recorded
    as it stands, validation of the cut model included. A resume that continues that epoch
    merges what it trains into the same record: steps, samples and times are summed, the
    training loss and accuracy are averaged weighted by samples (equal to an uninterrupted
    epoch's up to float rounding), and the validation and ``lr`` are those of the epoch's end.

    Attributes:
        epoch: Zero-based epoch index.
        steps: Optimizer steps taken in this epoch.
        samples: Training samples seen in this epoch (all processes together).
        train_loss: Mean training loss over the epoch's samples.
        train_accuracy: Top-1 training accuracy (NaN when outputs are not class scores).
        val_loss: Validation loss, ``None`` without a validation loader.
        val_accuracy: Top-1 validation accuracy, ``None`` without a validation loader.
        epoch_time_s: Wall time of the training part of the epoch, validation excluded (for
            a resumed epoch, that of both parts, with loading the batches it skips).
        val_time_s: Wall time of validation (of both validations for a resumed epoch).
        data_wait_s: Part of ``epoch_time_s`` spent waiting for the next batch.
        lr: Learning rate at the end of the epoch.
        compile_time_s: Part of ``epoch_time_s`` that :func:`torch.compile` spent compiling
            (``TrainConfig(compile=True)``; see :func:`compile_seconds`), 0 otherwise.
    """

    epoch: int
    steps: int
    samples: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    epoch_time_s: float
    val_time_s: float
    data_wait_s: float
    lr: float
    compile_time_s: float = 0.0

    @property
    def data_wait_share(self) -> float:
        """Share of the training time spent waiting for data, in [0, 1]."""
        return self.data_wait_s / self.epoch_time_s if self.epoch_time_s > 0 else 0.0


@dataclass
class History:
    """One :class:`EpochRecord` per epoch, oldest first, with distinct epoch indices.

    The last record may be of an epoch cut before its end (its ``steps`` are fewer than the
    loader's batches); resuming continues that epoch and merges into that record.
    """

    epochs: list[EpochRecord] = field(default_factory=list)

    @property
    def last(self) -> EpochRecord | None:
        """The latest epoch, ``None`` before the first one ends."""
        return self.epochs[-1] if self.epochs else None

    @property
    def total_steps(self) -> int:
        """Optimizer steps over all recorded epochs."""
        return sum(r.steps for r in self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, so checkpoints load with ``weights_only=True``."""
        return {"epochs": [asdict(r) for r in self.epochs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """The inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(EpochRecord)}
        return cls(
            [EpochRecord(**{k: v for k, v in r.items() if k in names}) for r in data["epochs"]]
        )


@dataclass
class TrainState:
    """The live state that callbacks see; only ``request_stop`` is meant to change it.

    Attributes:
        epoch: Index of the epoch under way; between epochs, the number of finished ones.
            An epoch cut by ``max_steps`` keeps its index, so a resume continues inside it.
        global_step: Optimizer steps taken since the run began (resumed ones included).
        stop_requested: Set by :meth:`request_stop`.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    device: torch.device
    history: History
    epoch: int = 0
    global_step: int = 0
    stop_requested: bool = False

    def request_stop(self) -> None:
        """End training after the current step; that epoch is recorded and checkpointed."""
        self.stop_requested = True


@dataclass(frozen=True)
class BatchInfo:
    """One optimizer step, as :meth:`Callback.on_batch_end` sees it.

    ``batch`` is the zero-based index of the batch within its epoch, counting the batches an
    epoch continued by a resume skipped.
    """

    epoch: int
    batch: int
    global_step: int
    loss: torch.Tensor
    batch_size: int


class Callback:
    """Hooks into :func:`fit` and :func:`finetune_steps`; override the ones you need."""

    def on_fit_start(self, state: TrainState) -> None:
        """Before the first epoch (after a resumed checkpoint has been restored)."""

    def on_epoch_start(self, state: TrainState, epoch: int) -> None:
        """Before epoch ``epoch`` (zero-based) begins, or continues after a resume."""

    def on_batch_end(self, state: TrainState, batch: BatchInfo) -> None:
        """After each optimizer step; ``batch.loss`` is detached and still on the device."""

    def on_epoch_end(self, state: TrainState, record: EpochRecord) -> None:
        """After an epoch is validated and its checkpoint written (a stop requested here is
        written to the checkpoint too)."""

    def on_fit_end(self, state: TrainState, history: History) -> None:
        """After the last epoch."""


class DataWaitTimer:
    """Wraps an iterable of batches and counts the time spent blocked on ``iter()`` and ``next()``.

    ``iter()`` counts because a ``DataLoader`` starts its worker processes there, each epoch.
    Whatever the consumer does between batches is not counted, so ``wait_s`` over the whole
    wall time is the share of time a training loop waits for data.
    """

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable
        self.wait_s = 0.0
        self.batches = 0

    def __iter__(self) -> Iterator[Any]:
        start = time.perf_counter()
        iterator = iter(self.iterable)
        self.wait_s += time.perf_counter() - start
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.wait_s += time.perf_counter() - start
                return
            self.wait_s += time.perf_counter() - start
            self.batches += 1
            yield item


# --------------------------------------------------------------------------- checkpoints


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically (see :func:`netsurgeon.fileio.atomic_torch_save`)."""
    atomic_torch_save(obj, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`fit` (``weights_only=True``).

    Raises:
        CheckpointError: The file is missing, unreadable, or not a netsurgeon training
            checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        # Torch's own words ("EOFError", "[Errno 22] Invalid argument") do not say what is
        # wrong with the file or what to do; describe it instead.
        raise CheckpointError(
            f"checkpoint {path} is not readable: {describe_torch_file(path)}; delete it to "
            "start the training afresh (or train without resuming: resume=False, no --resume)"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a netsurgeon training checkpoint "
            f"(expected format {CHECKPOINT_FORMAT!r})"
        )
    return data


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def load_model_state(
    model: nn.Module, state_dict: Mapping[str, Any], *, source: str = "checkpoint"
) -> None:
    """Load ``state_dict`` into ``model`` only if it fits exactly.

    A ``module.`` prefix on every key (DataParallel checkpoints) is stripped first.

    Raises:
        CheckpointError: Keys are missing or unexpected, or shapes differ; the message lists
            them with both shapes.
    """
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} in {source} vs {tuple(expected[k].shape)} in model"
        for k in expected
        if k in state_dict
        and isinstance(state_dict[k], torch.Tensor)
        and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listed(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_listed(shapes)}")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state_dict)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # fewer GPUs than when it was saved
            torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- the loop


def _split_batch(
    batch: Any, device: torch.device, *, channels_last: bool = False
) -> tuple[Any, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ConfigError(
            f"a data loader must yield (inputs, targets) pairs; got {type(batch).__name__}"
        )
    inputs, targets = batch
    non_blocking = device.type == "cuda"
    # Every tensor of the inputs, also in a tuple, list or dict (a model with several).
    inputs = move_inputs(inputs, device, non_blocking=non_blocking, channels_last=channels_last)
    return inputs, targets.to(device, non_blocking=non_blocking)


def _compute_loss(
    loss_fn: Callable[..., torch.Tensor], outputs: Any, targets: torch.Tensor, inputs: Any
) -> torch.Tensor:
    # A loss that declares ``uses_inputs`` (e.g. netsurgeon.distill.DistillationLoss, whose
    # teacher must see the batch) also gets the inputs, as a keyword.
    if getattr(loss_fn, "uses_inputs", False):
        return loss_fn(outputs, targets, inputs=inputs)
    return loss_fn(outputs, targets)


def _correct(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    if not isinstance(outputs, torch.Tensor):  # a tuple or dict: not one tensor of scores
        return torch.full((), float("nan"), device=targets.device)
    if outputs.dim() == 2 and targets.dim() == 1 and not targets.is_floating_point():
        # A row with nan or inf is wrong: argmax of an all-nan row is 0, so a diverged model
        # would score the share of class 0.
        right = (outputs.argmax(dim=1) == targets) & outputs.isfinite().all(dim=1)
        return right.sum()
    return outputs.new_full((), float("nan"))


class _Tally:
    """Loss and accuracy sums kept on the device, so steps never wait for the GPU."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss * n, correct
        self.seen = 0

    def add(self, loss: torch.Tensor, outputs: Any, targets: torch.Tensor) -> int:
        n = int(targets.shape[0])
        self.sums[0] += loss.detach().double() * n
        with torch.no_grad():
            self.sums[1] += _correct(outputs, targets).double()
        self.seen += n
        return n

    def running(self) -> tuple[float, float]:
        """Mean loss and accuracy on this process so far (waits for the device)."""
        loss_sum, correct = self.sums.tolist()
        return loss_sum / max(1, self.seen), correct / max(1, self.seen)

    def reduced(self) -> tuple[float, float, int]:
        """Mean loss, accuracy and sample count over all processes."""
        seen = torch.tensor([float(self.seen)], dtype=torch.float64).to(self.sums.device)
        loss_sum, correct, total = _all_reduce_sum(torch.cat([self.sums, seen])).tolist()
        if total == 0:
            return math.nan, math.nan, 0
        return loss_sum / total, correct / total, int(total)


def _loader_len(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _flatten_settings(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level: ``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(_flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changed_settings(
    saved: Mapping[str, Any], now: Mapping[str, Any], *, free: Collection[str] = ()
) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, value now)`` of the settings a resume may not change.

    Keys ``saved`` lacks are settings added since it was written, and keys in ``free`` may
    change; neither is compared.
    """
    return [
        (k, saved[k], now[k]) for k in now if k in saved and k not in free and saved[k] != now[k]
    ]


#: The keys under which runs record an image folder's fingerprint among their settings
#: (``netsurgeon.vision.data.ImageData.fingerprint``), with the words a message uses for them.
FINGERPRINT_KEYS = ("data_train_images", "data_val_images", "data_sha256")
_FINGERPRINT_WORDS = {"data_train_images": "training", "data_val_images": "validation"}


def _describe_changes(changed: Sequence[tuple[str, Any, Any]]) -> list[str]:
    """One phrase per ``(key, then, now)`` change, for the messages that refuse a resume.

    Every setting reads ``key: A then, B now``. The data folder's fingerprint becomes
    one phrase, since a changed digest says nothing to a reader: "the data folder's image
    files changed (training images: 4 then, 5 now)". Keys may carry a prefix (``run.``,
    ``info.``).
    """
    phrases: list[str] = []
    data: dict[str, tuple[Any, Any]] = {}
    for key, then, now in changed:
        name = key.rsplit(".", 1)[-1]
        if name in FINGERPRINT_KEYS:
            data[name] = (then, now)
        else:
            phrases.append(f"{key}: {then!r} then, {now!r} now")
    if data:
        counts = [
            f"{words} images: {data[name][0]} then, {data[name][1]} now"
            for name, words in _FINGERPRINT_WORDS.items()
            if name in data
        ]
        detail = "; ".join(counts) if counts else "as many images, other names or sizes"
        phrases.append(f"the data folder's image files changed ({detail})")
    return phrases


def _set_epoch(loader: Iterable[Any], epoch: int) -> None:
    # DistributedSampler and netsurgeon's SeededRandomSampler reshuffle by epoch.
    sampler = getattr(loader, "sampler", None)
    if sampler is not None and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def _show_progress(config: TrainConfig, info: DistInfo) -> bool:
    if not info.is_main:
        return False
    if config.progress is not None:
        return config.progress
    return sys.stderr.isatty() and not os.environ.get("CI")


class _Trainer:
    """Model, optimizer, schedule and scaler of one run, and the step that uses them."""

    def __init__(
        self,
        model: nn.Module,
        *,
        config: TrainConfig,
        loss_fn: Callable[..., torch.Tensor] | None,
        callbacks: Sequence[Callback],
        steps_per_epoch: int | None,
        total_steps: int | None,
    ) -> None:
        self.info = init_distributed()
        self.device = resolve_device(config.device, local_rank=self.info.local_rank)
        self.amp = config.amp and self.device.type == "cuda"
        if config.amp and not self.amp and self.info.is_main:
            warnings.warn("amp=True needs CUDA; training on the CPU in float32", stacklevel=3)
        self.config = config
        self.model = model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        self.callbacks = tuple(callbacks)
        if getattr(self.loss_fn, "teacher", None) is model:  # a DistillationLoss(model)
            raise ConfigError(
                "the loss's teacher is the model being trained: DistillationLoss froze it; the "
                "teacher must be a separate copy, e.g. DistillationLoss(copy.deepcopy(model))"
            )
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters (all requires_grad=False)")
        self.optimizer = _make_optimizer(params, config)
        self.scheduler = _make_scheduler(self.optimizer, config, steps_per_epoch, total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.run_settings: dict[str, Any] = {}
        self.state = TrainState(
            model=model,
            optimizer=self.optimizer,
            config=config,
            device=self.device,
            history=History(),
        )
        self.show_progress = _show_progress(config, self.info)
        self.net: nn.Module = model
        # An epoch cut before the loader's end (by max_steps): the steps it took, every RNG
        # state just before its batches were drawn, and every RNG state where it stopped
        # (what the checkpoint keeps as "rng"). A resume replays the draws of the skipped
        # batches from the first and then continues from the second.
        self.epoch_steps = 0
        self.epoch_rng: dict[str, Any] | None = None
        self.cut_rng: dict[str, Any] | None = None
        # Under torchrun: every process's RNG states at the last epoch end, as
        # _rng_record gives them; each process continues from its own on a resume.
        self.rank_rngs: list[dict[str, Any]] | None = None

    def wrap(self) -> None:
        """Wrap in DDP once the weights are final (DDP broadcasts rank 0's at wrap time),
        then in :func:`torch.compile` with ``config.compile``."""
        if self.info.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=device_ids)
        if self.config.compile:
            # Only the training forward is compiled; self.model (saved, evaluated) stays eager.
            self.net = torch.compile(self.net)

    def _sync_buffers(self) -> None:
        # DDP copies rank 0's buffers (BatchNorm statistics) into the others at the start of
        # each forward, so after the last step they differ; copy them once more so every
        # process validates and ends with the same model.
        broadcast_from_rank0(self.model.buffers())

    def train_pass(
        self,
        batches: Iterable[Any],
        *,
        epoch: int,
        limit: int | None,
        length: int | None,
        desc: str,
        first_batch: int = 0,
    ) -> tuple[int, int, float, float, float, float, bool]:
        """Train on ``batches`` (at most ``limit`` steps).

        Args:
            batches: The batches to train on.
            epoch: The epoch, for the callbacks.
            limit: At most this many steps; ``None``: until ``batches`` ends.
            length: Batches of a whole epoch, for the progress bar; ``None`` if unknown.
            desc: The progress bar's label.
            first_batch: Index in the epoch of the first of ``batches``: an epoch continued
                by a resume, whose earlier batches were skipped. Such a pass may find no
                batches left (the cut fell on the end of a loader without a length).

        Returns:
            Steps, samples, mean loss, accuracy, wall seconds, seconds waiting for data, and
            whether ``batches`` ran out (rather than ``limit`` or a stop request ending it).
        """
        self.net.train()
        timer = DataWaitTimer(batches)
        tally = _Tally(self.device)
        steps = 0
        left = None if length is None else max(0, length - first_batch)
        todo = left if limit is None else limit if left is None else min(limit, left)
        bar = tqdm(
            total=None if todo is None else first_batch + todo,
            initial=first_batch,
            desc=desc,
            disable=not self.show_progress,
        )
        start = time.perf_counter()
        exhausted = True
        for batch in timer:
            inputs, targets = _split_batch(
                batch, self.device, channels_last=self.config.channels_last
            )
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                try:
                    outputs = self.net(inputs)
                except ValueError as exc:
                    if "Expected more than 1 value per channel" not in str(exc):
                        raise
                    raise ConfigError(
                        f"a training batch of one sample reached a BatchNorm layer, which "
                        f"cannot train on it ({first_line(exc)}); drop that last batch "
                        "(DataLoader(..., drop_last=True)) or choose another batch size"
                    ) from None
                loss = _compute_loss(self.loss_fn, outputs, targets, inputs)
            self.scaler.scale(loss).backward()
            if self.config.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            steps += 1
            self.state.global_step += 1
            loss = loss.detach()
            n = tally.add(loss, outputs, targets)
            info = BatchInfo(
                epoch=epoch,
                batch=first_batch + steps - 1,
                global_step=self.state.global_step,
                loss=loss,
                batch_size=n,
            )
            for callback in self.callbacks:
                callback.on_batch_end(self.state, info)
            bar.update(1)
            if self.show_progress and (steps % _PROGRESS_EVERY == 0 or steps == 1):
                running_loss, running_acc = tally.running()
                bar.set_postfix(loss=f"{running_loss:.4f}", acc=f"{running_acc:.3f}")
            if self.state.stop_requested or (limit is not None and steps >= limit):
                exhausted = False
                break
        self._sync_buffers()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        bar.close()
        mean_loss, accuracy, seen = tally.reduced()
        if seen == 0 and first_batch == 0:
            raise ConfigError("the training data loader yielded no batches")
        return steps, seen, mean_loss, accuracy, elapsed, timer.wait_s, exhausted


def _make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    steps_per_epoch: int | None,
    total_steps: int | None,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "none":
        return None
    if config.schedule == "cosine":
        if total_steps is None:
            raise ConfigError("schedule='cosine' needs a data loader with a length, or max_steps")
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if steps_per_epoch is None:
        raise ConfigError("schedule='step' needs a data loader with a length")
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.step_size * max(1, steps_per_epoch), gamma=config.gamma
    )


def _planned_steps(epochs: int, steps_per_epoch: int | None, max_steps: int | None) -> int | None:
    planned = epochs * steps_per_epoch if steps_per_epoch is not None else None
    if max_steps is None:
        return planned
    return max_steps if planned is None else min(planned, max_steps)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: str | torch.device = "auto",
    loss_fn: Callable[..., torch.Tensor] | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean loss and top-1 accuracy (a fraction in [0, 1]) of ``model`` over ``loader``.

    The model is moved to ``device`` and put in eval mode for the pass; every module then gets
    back the mode it was in. Under ``torch.distributed`` the sums are reduced over all processes, so
    each process gets the figures of the whole validation set.

    Args:
        model: A classifier returning ``(batch, classes)`` scores.
        loader: Yields ``(inputs, targets)`` pairs.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        loss_fn: Defaults to cross-entropy.
        amp: Float16 autocast on CUDA.
        channels_last: Feed image batches in channels-last memory order (for a model
            trained with ``TrainConfig(channels_last=True)``).

    Returns:
        ``{"loss": ..., "accuracy": ...}``.

    Raises:
        ConfigError: The loader yields nothing, or ``device`` is not usable.
    """
    info = init_distributed()
    device = resolve_device(device, local_rank=info.local_rank)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    tally = _Tally(device)
    with kept_modes(model):
        model.to(device).eval()
        for batch in loader:
            inputs, targets = _split_batch(batch, device, channels_last=channels_last)
            with torch.autocast(
                device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"
            ):
                outputs = model(inputs)
                loss = _compute_loss(loss_fn, outputs, targets, inputs)
            tally.add(loss, outputs, targets)
    mean_loss, accuracy, seen = tally.reduced()
    if seen == 0:
        raise ConfigError("the evaluation data loader yielded no batches")
    return {"loss": mean_loss, "accuracy": accuracy}


def _check_ddp_loader(loader: Iterable[Any], info: DistInfo) -> None:
    sampler = getattr(loader, "sampler", None)
    # make_loader's training samplers wrap the DistributedSampler (vision.data.KeyedSampler).
    wrapped = getattr(sampler, "sampler", None)
    sharded = (sampler, wrapped)
    if info.world_size > 1 and not any(
        isinstance(s, torch.utils.data.DistributedSampler) for s in sharded
    ):
        warnings.warn(
            "distributed training with a loader that has no DistributedSampler: every process "
            "sees the whole data set; build loaders with netsurgeon.vision.data.make_loader",
            stacklevel=3,
        )


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    *,
    config: TrainConfig,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    loss_fn: Callable[..., torch.Tensor] | None = None,
    run_settings: Mapping[str, Any] | None = None,
) -> History:
    """Train ``model`` in place for ``config.epochs`` epochs, validating after each.

    After every epoch rank 0 writes ``checkpoint_path`` atomically: model, optimizer,
    schedule and scaler states, the epoch count, the history and every RNG state (each
    process's, under torchrun, where every process draws from ``seed + rank``), as tensors
    and plain values only (it loads with ``torch.load(weights_only=True)``). With
    ``resume=True`` and an existing checkpoint, training continues from the last finished
    epoch and ends with the same weights an uninterrupted run would have (exactly so on the
    CPU with in-process data loading; loader worker processes draw fresh augmentation seeds).
    Without a checkpoint file, ``resume=True`` starts from scratch; with ``resume=False`` an
    existing file is overwritten after the first epoch.

    When ``config.max_steps`` ends the run inside an epoch, that partial epoch is validated,
    recorded and checkpointed as well, and a resume with a larger or no ``max_steps``
    continues it at its next batch (except under a ``"cosine"`` schedule, whose horizon
    ``max_steps`` set, so a resume must give the same ``max_steps``): ``max_steps=45`` and
    then a resume give the same weights as one run of the full length. The continued pass
    loads and discards the batches already trained (with the RNG states of the original pass,
    so that their random draws repeat), which needs a batch order that depends on the seed
    and the epoch only: an in-order loader, a sampler with ``set_epoch``
    (``DistributedSampler``, netsurgeon's samplers), or ``shuffle=True`` drawing from the
    global RNG. A sampler or loader with a generator of its
    own (``DataLoader(generator=g)``) is not checkpointed and may give another order.

    Args:
        model: Trained in place; it is moved to the configured device.
        train_loader: Yields ``(inputs, targets)``; a sampler with ``set_epoch`` is told the
            epoch before each pass.
        val_loader: Validation data, or ``None`` to skip validation.
        config: Optimizer, schedule, epochs and the rest.
        checkpoint_path: Where to write the checkpoint; ``None`` writes none.
        resume: Continue from ``checkpoint_path`` when it exists.
        callbacks: Hooks called in order.
        loss_fn: ``loss_fn(outputs, targets)``; defaults to cross-entropy. A loss whose
            ``uses_inputs`` attribute is true is called as
            ``loss_fn(outputs, targets, inputs=inputs)`` (e.g.
            :class:`netsurgeon.distill.DistillationLoss`); validation uses it too.
        run_settings: Settings of the run outside ``config`` (data folder, batch size, input
            size...), plain values kept in the checkpoint; a resume must give the same.

    Returns:
        The :class:`History`, including epochs restored from the checkpoint.

    Raises:
        CheckpointError: The checkpoint is corrupt, not a training checkpoint, or for another
            model (the message lists mismatched keys and shapes).
        ConfigError: A loader yields nothing, the device is unusable, or ``resume`` is
            asked for without a ``checkpoint_path``.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config={config!r} is not allowed; pass a TrainConfig")
    if resume and checkpoint_path is None:  # as prune_and_finetune: not a silent fresh start
        raise ConfigError(
            "resume=True needs checkpoint_path, the checkpoint of the run to continue"
        )
    steps_per_epoch = _loader_len(train_loader)
    trainer = _Trainer(
        model,
        config=config,
        loss_fn=loss_fn,
        callbacks=callbacks,
        steps_per_epoch=steps_per_epoch,
        total_steps=_planned_steps(config.epochs, steps_per_epoch, config.max_steps),
    )
    # Under torchrun the number of processes sets the shards and the steps per epoch.
    trainer.run_settings = {**(run_settings or {}), "processes": trainer.info.world_size}
    state = trainer.state
    info = trainer.info
    _check_ddp_loader(train_loader, info)
    checkpoint = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and checkpoint is not None and checkpoint.exists():
        data = load_checkpoint(checkpoint)
        _restore(trainer, data, checkpoint)
        if info.is_main:
            logger.info("resumed from %s %s", checkpoint, _where(trainer))
            if _left_to_train(trainer):
                warn_if_other_version(data, f"checkpoint {checkpoint}")
    else:
        if resume and info.is_main:
            logger.info("no checkpoint at %s; starting from scratch", checkpoint)
        seed_process(config.seed)
    trainer.wrap()
    for callback in callbacks:
        callback.on_fit_start(state)
    diverged = False
    while state.epoch < config.epochs and not state.stop_requested:
        if config.max_steps is not None and state.global_step >= config.max_steps:
            break
        epoch = state.epoch
        skip = trainer.epoch_steps  # batches of this epoch a cut run trained already
        _set_epoch(train_loader, epoch)
        for callback in callbacks:
            callback.on_epoch_start(state, epoch)
        limit = None if config.max_steps is None else config.max_steps - state.global_step
        compiled_before = compile_seconds() if config.compile else 0.0
        if skip:
            batches: Iterable[Any] = _skipping(train_loader, skip, trainer)
            desc = f"epoch {epoch + 1}/{config.epochs} (resumed)"
        else:
            # Where this epoch's draws start, for a resume after a cut (cheap: ~5 kB).
            trainer.epoch_rng = _rng_state()
            batches = train_loader
            desc = f"epoch {epoch + 1}/{config.epochs}"
        steps, samples, train_loss, train_acc, elapsed, wait, exhausted = trainer.train_pass(
            batches,
            epoch=epoch,
            limit=limit,
            length=steps_per_epoch,
            desc=desc,
            first_batch=skip,
        )
        done = skip + steps
        # A pass stopped exactly at the loader's end is a finished epoch; without a length,
        # that shows only on the resume, whose skip then finds no batches left.
        finished = exhausted or (steps_per_epoch is not None and done >= steps_per_epoch)
        trainer.epoch_steps = 0 if finished else done
        # Before validation, whose loader may draw: the continued epoch draws on from here.
        trainer.cut_rng = None if finished else _rng_state()
        compiling = compile_seconds() - compiled_before if config.compile else 0.0
        val_start = time.perf_counter()
        val = (
            evaluate(
                model,
                val_loader,
                device=trainer.device,
                loss_fn=trainer.loss_fn,
                amp=trainer.amp,
                channels_last=config.channels_last,
            )
            if val_loader is not None
            else None
        )
        record = EpochRecord(
            epoch=epoch,
            steps=steps,
            samples=samples,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=val["loss"] if val else None,
            val_accuracy=val["accuracy"] if val else None,
            epoch_time_s=elapsed,
            val_time_s=time.perf_counter() - val_start if val else 0.0,
            data_wait_s=wait,
            lr=float(trainer.optimizer.param_groups[0]["lr"]),
            compile_time_s=min(max(compiling, 0.0), elapsed),
        )
        last = state.history.last
        if skip and last is not None and last.epoch == epoch:
            record = _merged(state.history.epochs.pop(), record)
        state.history.epochs.append(record)
        if finished:
            state.epoch = epoch + 1
        if checkpoint is not None and info.world_size > 1:
            trainer.rank_rngs = gather_objects(_rng_record(trainer))
        if checkpoint is not None and info.is_main:
            atomic_save(_checkpoint_dict(trainer), checkpoint)
        if info.is_main:
            logger.info(_format_record(record, config.epochs, partial=not finished))
        if info.is_main and samples and not math.isfinite(train_loss) and not diverged:
            diverged = True  # once: every later epoch is nan too
            warnings.warn(
                f"epoch {epoch + 1}: the training loss is {train_loss}; training has diverged "
                "and the weights may hold nan or inf: lower the learning rate (--lr) and start "
                "afresh",
                stacklevel=2,
            )
        stopped = state.stop_requested
        for callback in callbacks:
            callback.on_epoch_end(state, record)
        if state.stop_requested and not stopped and checkpoint is not None and info.is_main:
            # A stop requested after the checkpoint was written: keep it, so that a resume
            # ends where this run ended.
            atomic_save(_checkpoint_dict(trainer), checkpoint)
    for callback in callbacks:
        callback.on_fit_end(state, state.history)
    return state.history


def _where(trainer: _Trainer) -> str:
    """Where a restored run stands: ``after epoch 3`` or ``in epoch 4, after 5 of its steps``."""
    if trainer.epoch_steps:
        return f"in epoch {trainer.state.epoch + 1}, after {trainer.epoch_steps} of its steps"
    return f"after epoch {trainer.state.epoch}"


# What next() gives for a loader that runs out while its batches are skipped.
_EXHAUSTED = object()


def _skipping(loader: Iterable[Any], skip: int, trainer: _Trainer) -> Iterator[Any]:
    """The batches of ``loader`` after its first ``skip``, for an epoch a cut run began.

    The skipped batches are drawn under the RNG state the cut epoch began with, so that a
    sampler or augmentation drawing from the global RNG repeats the original pass; then the
    RNG is set to where that pass stopped. Under DDP every process skips the same number.
    """
    if trainer.epoch_rng is not None:
        _set_rng_state(trainer.epoch_rng)
    iterator = iter(loader)
    for _ in range(skip):
        if next(iterator, _EXHAUSTED) is _EXHAUSTED:
            break
    if trainer.cut_rng is not None:
        _set_rng_state(trainer.cut_rng)
    yield from iterator


def _merged(first: EpochRecord, rest: EpochRecord) -> EpochRecord:
    """One record of an epoch trained in two parts (cut, then continued by a resume)."""
    samples = first.samples + rest.samples

    def mean(a: float, b: float) -> float:
        # A continuation may find no batches left: its NaN means must not spoil the sum.
        if not rest.samples:
            return a
        if not first.samples:
            return b
        return (a * first.samples + b * rest.samples) / samples

    return EpochRecord(
        epoch=first.epoch,
        steps=first.steps + rest.steps,
        samples=samples,
        train_loss=mean(first.train_loss, rest.train_loss),
        train_accuracy=mean(first.train_accuracy, rest.train_accuracy),
        val_loss=rest.val_loss,
        val_accuracy=rest.val_accuracy,
        epoch_time_s=first.epoch_time_s + rest.epoch_time_s,
        val_time_s=first.val_time_s + rest.val_time_s,
        data_wait_s=first.data_wait_s + rest.data_wait_s,
        lr=rest.lr,
        compile_time_s=first.compile_time_s + rest.compile_time_s,
    )


def _format_record(record: EpochRecord, epochs: int, *, partial: bool = False) -> str:
    text = (
        f"epoch {record.epoch + 1}/{epochs}"
        + (f" (cut after {record.steps} steps)" if partial else "")
        + f": train loss {record.train_loss:.4f} acc {record.train_accuracy:.3f}"
    )
    if record.val_accuracy is not None:
        text += f", val loss {record.val_loss:.4f} acc {record.val_accuracy:.3f}"
    text += f", {record.epoch_time_s:.1f}s ({record.data_wait_share:.0%} waiting for data"
    if record.compile_time_s:
        text += f", {record.compile_time_s:.1f}s compiling"
    return text + ")"


# TorchDynamo's timers of a forward graph's compilation, and of a backward graph's (compiled
# lazily, in the first backward pass that needs it).
_COMPILE_TIMERS = ("_compile.compile_inner", "backward._backward_impl")


def compile_seconds() -> float:
    """Seconds :func:`torch.compile` has spent compiling in this process so far.

    Read from TorchDynamo's own timers, which are not public API: 0.0 where this version of
    torch does not have them. :func:`torch.compiler.reset` clears them, so compare two
    readings only when no reset came between.
    """
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:  # pragma: no cover - a torch without TorchDynamo
        return 0.0
    try:
        return float(sum(sum(compilation_time_metrics.get(k, ())) for k in _COMPILE_TIMERS))
    except (TypeError, AttributeError):  # pragma: no cover - the timers changed shape
        return 0.0


def _rng_record(trainer: _Trainer) -> dict[str, Any]:
    """The RNG states a checkpoint keeps: where to go on, and where a cut epoch began.

    A cut epoch keeps the state of its last step, not the one after validation: the continued
    epoch draws on from there.
    """
    if trainer.epoch_steps:
        return {"rng": trainer.cut_rng, "epoch_rng": trainer.epoch_rng}
    return {"rng": _rng_state(), "epoch_rng": None}


def _left_to_train(trainer: _Trainer) -> bool:
    """Whether a restored run has steps left (not stopped, not at its epochs or steps)."""
    state, config = trainer.state, trainer.config
    return (
        not state.stop_requested
        and state.epoch < config.epochs
        and (config.max_steps is None or state.global_step < config.max_steps)
    )


def _checkpoint_dict(trainer: _Trainer) -> dict[str, Any]:
    state = trainer.state
    return {
        "format": CHECKPOINT_FORMAT,
        VERSION_KEY: __version__,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "scaler": trainer.scaler.state_dict() if trainer.amp else None,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "stop_requested": state.stop_requested,
        "history": state.history.to_dict(),
        "config": trainer.config.to_dict(),
        "run": trainer.run_settings,
        # For an old reader, epoch_steps says nothing and "epoch" counts the cut epoch as
        # unfinished, so it trains it again.
        **_rng_record(trainer),
        "epoch_steps": trainer.epoch_steps,
        "rng_ranks": trainer.rank_rngs,
    }


# Settings that change how a run computes, not what it trains: a resume may change them.
_RESUMABLE_CHANGES = frozenset({"progress", "device", "amp", "compile", "channels_last"})


def _restore(trainer: _Trainer, data: Mapping[str, Any], path: Path) -> None:
    saved = data.get("config", {})
    now = trainer.config.to_dict()
    # The optimizer and scheduler states come back from the checkpoint, so a new rate, schedule
    # or epoch count would be silently dropped or mixed with the old ones; refuse instead.
    # (Keys a checkpoint lacks are settings added since it was written.)
    free = set(_RESUMABLE_CHANGES)
    if now["schedule"] != "cosine":
        # Only the cosine schedule is laid out over the run's length: otherwise a resume may
        # extend the run (train 1 epoch, then resume with --epochs 2).
        free |= {"epochs", "max_steps"}
    # Checkpoints written before run settings were kept have none to compare.
    run_now = dict(sorted(trainer.run_settings.items()))
    changed = [
        *_changed_settings(saved, now, free=free),
        *_changed_settings(data.get("run") or {}, run_now),
    ]
    differ = _describe_changes(changed)
    if differ:
        raise CheckpointError(
            f"checkpoint {path} was written with other settings ({'; '.join(differ)}); "
            f"resume with the same settings, or delete it to start afresh"
        )
    # A length may grow, not shrink below what was trained: the run would end at once and
    # pass the longer run's weights off as this one's.
    config = trainer.config
    for done, limit, flag in (
        (data.get("epoch"), config.epochs, "--epochs"),
        (data.get("global_step"), config.max_steps, "--max-steps"),
    ):
        if isinstance(done, int) and limit is not None and done > limit:
            unit = "epochs" if flag == "--epochs" else "steps"
            raise CheckpointError(
                f"checkpoint {path} has trained {done} {unit} already, more than {flag} {limit}; "
                f"resume with {flag} {done} or more, or delete it to start afresh"
            )
    try:
        load_model_state(trainer.model, data["model"], source=f"checkpoint {path}")
        trainer.optimizer.load_state_dict(data["optimizer"])
        if trainer.scheduler is not None and data["scheduler"] is not None:
            trainer.scheduler.load_state_dict(data["scheduler"])
        if trainer.amp and data["scaler"] is not None:
            trainer.scaler.load_state_dict(data["scaler"])
        trainer.state.history = History.from_dict(data["history"])
        trainer.state.epoch = int(data["epoch"])
        trainer.state.global_step = int(data["global_step"])
        # A run a callback stopped stays stopped (checkpoints before this key: never stopped).
        trainer.state.stop_requested = bool(data.get("stop_requested", False))
        # Steps of an unfinished epoch (checkpoints before this key: none). fit skips its
        # trained batches under epoch_rng and then sets the RNG to cut_rng, the state where
        # it stopped; the state set here is for the epoch-boundary case.
        trainer.epoch_steps = int(data.get("epoch_steps", 0))
        # Under torchrun each process continues its own streams (checkpoints before this
        # key, or of one process: rank 0's, the only ones kept).
        record = own_entry(
            data.get("rng_ranks"), {"rng": data["rng"], "epoch_rng": data.get("epoch_rng")}
        )
        if trainer.epoch_steps:
            trainer.epoch_rng = record["epoch_rng"]
            trainer.cut_rng = record["rng"]
        if trainer.state.stop_requested and trainer.info.is_main:
            logger.info(
                "checkpoint %s: a callback stopped this run %s, so nothing is left to train; "
                "start a new run from its weights to train further",
                path,
                _where(trainer),
            )
        _set_rng_state(record["rng"])
    except CheckpointError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit this run ({type(exc).__name__}: {exc})"
        ) from exc


def check_slice_lr(name: str, value: Any) -> str:
    """``value`` if it is one of :data:`SLICE_LRS`; otherwise a :class:`ConfigError`."""
    if value not in SLICE_LRS:
        raise ConfigError(f"{name}={value!r} is not allowed; use one of {', '.join(SLICE_LRS)}")
    return str(value)


@dataclass(frozen=True)
class StepsResult:
    """What :func:`finetune_steps` did. Accuracy is a fraction; times are wall seconds."""

    steps: int
    samples: int
    loss: float
    accuracy: float
    time_s: float
    data_wait_s: float


def finetune_steps(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    steps: int,
    config: TrainConfig,
    epoch_offset: int = 0,
    callbacks: Sequence[Callback] = (),
    loss_fn: Callable[..., torch.Tensor] | None = None,
    lr: str = "schedule",
) -> StepsResult:
    """Train ``model`` in place for exactly ``steps`` optimizer steps.

    This is the inner step of iterative pruning: a fresh optimizer is made on every call
    (the model's shapes may have changed since the last one), and the loader is restarted as
    often as needed. ``config.epochs``, ``config.max_steps`` and ``config.seed`` are not used.

    Args:
        model: Trained in place.
        loader: Yields ``(inputs, targets)``.
        steps: Optimizer steps to take.
        config: Optimizer, learning rate, schedule, device, AMP and clipping.
        epoch_offset: The epoch number given to the loader's sampler for the first pass
            (then +1 per restart); pass the pruning round so rounds see different batches.
        callbacks: ``on_fit_start``, ``on_batch_end`` and ``on_fit_end`` are called.
        loss_fn: Defaults to cross-entropy.
        lr: ``"schedule"`` restarts ``config.schedule`` and anneals it over these ``steps``
            (a ``"cosine"`` one reaches 0 after the last step); ``"constant"`` keeps
            ``config.lr`` throughout, as Molchanov et al. 2017 fine-tune between slices.

    Raises:
        ConfigError: ``steps`` is not a positive integer, ``lr`` is not one of
            :data:`SLICE_LRS`, or the loader yields nothing.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps={steps!r} is not allowed; use a positive integer")
    check_slice_lr("lr", lr)
    if lr == "constant":
        config = replace(config, schedule="none")
    trainer = _Trainer(
        model,
        config=config,
        loss_fn=loss_fn,
        callbacks=callbacks,
        steps_per_epoch=_loader_len(loader),
        total_steps=steps,
    )
    trainer.wrap()
    for callback in callbacks:
        callback.on_fit_start(trainer.state)

    def cycle() -> Iterator[Any]:
        epoch = epoch_offset
        while True:
            _set_epoch(loader, epoch)
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                return
            epoch += 1

    done, samples, loss, accuracy, elapsed, wait, _ = trainer.train_pass(
        cycle(), epoch=epoch_offset, limit=steps, length=None, desc="fine-tune"
    )
    for callback in callbacks:
        callback.on_fit_end(trainer.state, trainer.state.history)
    return StepsResult(
        steps=done,
        samples=samples,
        loss=loss,
        accuracy=accuracy,
        time_s=elapsed,
        data_wait_s=wait,
    )
