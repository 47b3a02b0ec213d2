"""The poster's experiments: pruning sweeps over criteria and levels, and model comparisons.

A sweep starts every trial from the same base model (deep-copied, so no trial sees another's
pruning or fine-tuning), prunes it to a level with a criterion, and records validation accuracy
right after pruning and after fine-tuning, parameters, MACs, CPU latency, size and fine-tuning
time per epoch. The unpruned base model, fine-tuned the same way, is recorded once as the
reference row (criterion ``"none"``, level 0).

Each finished trial is written at once (``results.json`` and ``results.csv``, rewritten
atomically), so a killed sweep resumes where it stopped: a rerun with the same ``out_dir``
skips the finished (criterion, level) pairs, and first rewrites ``results.csv`` from
``results.json``'s rows (a kill between the two writes leaves the CSV a row behind). The full
configuration is written next to the results (``config.json``); reusing an ``out_dir`` with
another configuration is an error.

The runners take a model and data loaders, so they work on any data: the CLI builds
ImageFolder loaders, the offline demo builds in-memory ones.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import RandomSampler
from tqdm.auto import tqdm

from netsurgeon import __version__
from netsurgeon.argtypes import comma_list
from netsurgeon.errors import CheckpointError, ConfigError, NetsurgeonError
from netsurgeon.fileio import describe_torch_file
from netsurgeon.provenance import VERSION_KEY, OtherVersionWarning, other_version_note
from netsurgeon.pruning import CRITERIA, Pruner, PruneResult, prune
from netsurgeon.pruning.criteria import get_criterion, requires_data
from netsurgeon.pruning.pruner import SCOPES
from netsurgeon.pruning.stats import count_macs, count_params, measure_latency, state_size_bytes
from netsurgeon.training import (
    History,
    TrainConfig,
    _describe_changes,
    _flatten_settings,
    _set_epoch,
    atomic_save,
    check_slice_lr,
    evaluate,
    finetune_steps,
    fit,
    resolve_device,
    seed_everything,
)
from netsurgeon.vision import report
from netsurgeon.vision.data import (
    FINGERPRINT_KEYS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RenormalizedLoader,
)

__all__ = [
    "COMPARE_COLUMNS",
    "CONFIG_FORMAT",
    "DEFAULT_CRITERIA",
    "DEFAULT_LEVELS",
    "LEVEL_KINDS",
    "REFERENCE",
    "SWEEP_COLUMNS",
    "LimitedLoader",
    "SweepConfig",
    "SweepResult",
    "check_criteria",
    "check_levels",
    "compare_models",
    "parse_criteria",
    "parse_levels",
    "run_sweep",
    "run_trial",
]

DEFAULT_CRITERIA: tuple[str, ...] = ("random", "l1", "l2", "activation", "apoz", "taylor")
DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# "filters": level = fraction of filters removed (per layer with scope="layer", of all filters
# with scope="global"). "macs": level = fraction of MACs removed (target_macs = 1 - level).
LEVEL_KINDS = ("filters", "macs")
REFERENCE = report.REFERENCE
CONFIG_FORMAT = "netsurgeon.sweep.config/1"
_BASE_FORMAT = "netsurgeon.sweep.base/1"
_BASE_EPOCHS_FILE = "base_model.train.ckpt"  # the base fine-tuning's epoch checkpoint
# Settings of how a run executes, so a resumed run may differ in them (with a warning: the
# threads change latencies, and the data feeding the crops of large images with --cache-data).
# The README promises that device, AMP, compile, channels-last, loader processes and
# --cache-data may change on resume (as a resumed `finetune` allows).
_NOT_COMPARED = frozenset(
    {
        "train.progress",
        "train.device",
        "train.amp",
        "train.compile",
        "train.channels_last",
        "info.workers",
        "info.cache_data",
        "info.threads",
    }
)
# Not written (sweeps replace train.epochs with finetune_epochs / base_epochs), but folders
# from before hold them: never compared, and no warning.
_UNUSED = frozenset({"train.progress", "train.epochs"})
# Settings added after results folders were first written, with the value that gives what
# earlier versions did: a folder without the key resumes when the run keeps that value.
_ADDED_SETTINGS: dict[str, Any] = {
    "train.channels_last": False,
    "train.compile": False,
    "slice_lr": "schedule",  # sweeps before the setting restarted the schedule in every slice
    "prune_layer_norms": False,
}
# Settings added later without a value that stands for what earlier versions did: compared
# only when the folder recorded them (the data folder's fingerprint, ImageData.fingerprint,
# and the --weights file's digest).
_COMPARED_WHEN_RECORDED = frozenset(
    [*(f"info.{key}" for key in FINGERPRINT_KEYS), "info.weights_sha256"]
)
_MAX_LISTED = 8

SWEEP_COLUMNS: tuple[str, ...] = (
    "model",
    "criterion",
    "level",
    "level_kind",
    "scope",
    "params",
    "macs",
    "size_bytes",
    "latency_ms",
    "params_ratio",
    "macs_ratio",
    "acc_before",
    "loss_before",
    "acc_after",
    "loss_after",
    "finetune_epochs",
    "epoch_time_s",
    "epoch_times_s",
    "compile_time_s",
    "prune_time_s",
    "trial_time_s",
    "skipped",
)
COMPARE_COLUMNS: tuple[str, ...] = ("model", "variant", *SWEEP_COLUMNS[1:])

logger = logging.getLogger(__name__)

TrialHook = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- validation


def check_levels(levels: Iterable[Any]) -> tuple[float, ...]:
    """Validate pruning levels: numbers strictly between 0 and 1, no repeats, at least one.

    Raises:
        ConfigError: A level is outside (0, 1) or not a number (the message names it), a level
            repeats, or there is none.
    """
    out: list[float] = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, Real) or not 0.0 < level < 1.0:
            raise ConfigError(
                f"level {level!r} is not allowed; levels must be numbers strictly between 0 and 1"
                " (the fraction pruned)"
            )
        value = round(float(level), 9)
        if value in out:
            raise ConfigError(f"level {level!r} is given twice; list each level once")
        out.append(value)
    if not out:
        raise ConfigError("no pruning levels given; pass levels in (0, 1), e.g. 0.25,0.5,0.75")
    return tuple(out)


def check_criteria(criteria: Iterable[Any]) -> tuple[str, ...]:
    """Validate criterion names against :data:`netsurgeon.pruning.CRITERIA`.

    Raises:
        ConfigError: A name is unknown (the message lists the valid ones), repeats, or there
            is none.
    """
    out: list[str] = []
    for name in criteria:
        if not isinstance(name, str) or name not in CRITERIA:
            raise ConfigError(
                f"unknown criterion {name!r}; valid criteria are: {', '.join(CRITERIA)}"
            )
        if name in out:
            raise ConfigError(f"criterion {name!r} is given twice; list each criterion once")
        out.append(name)
    if not out:
        raise ConfigError(f"no criteria given; choose from: {', '.join(CRITERIA)}")
    return tuple(out)


def parse_criteria(text: str) -> tuple[str, ...]:
    """``"l1,taylor"`` -> ``("l1", "taylor")``, validated with :func:`check_criteria`."""
    return check_criteria(comma_list(text, name="criteria", flag="--criteria"))


def parse_levels(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of levels; ``a,b,...,c`` is the progression a, b, ... c.

    Example:
        >>> parse_levels("0.1,0.2,...,0.5")
        (0.1, 0.2, 0.3, 0.4, 0.5)

    Raises:
        ConfigError: A part is not a number, a level is outside (0, 1), or ``...`` is not
            between two given levels and a last one.
    """
    parts = comma_list(text, name="levels", flag="--levels")
    values: list[float | str] = []
    for part in parts:
        if part in ("...", "…"):
            values.append("...")
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise ConfigError(
                f"level {part!r} is not a number; give levels in (0, 1) like 0.1,0.2,...,0.9"
            ) from None
    expanded: list[float] = []
    for i, value in enumerate(values):
        if value != "...":
            expanded.append(float(value))
            continue
        ok = i >= 2 and i + 1 < len(values) and "..." not in (values[i - 2], values[i - 1])
        if not ok or values[i + 1] == "...":
            raise ConfigError(
                f"levels {text!r}: '...' needs two levels before it and one after, "
                "like 0.1,0.2,...,0.9"
            )
        a, b, end = float(values[i - 2]), float(values[i - 1]), float(values[i + 1])
        step = b - a
        if step <= 0 or end < b:
            raise ConfigError(f"levels {text!r}: '...' needs an increasing progression")
        n = round((end - b) / step)
        expanded += [round(b + k * step, 9) for k in range(1, n)]
    return check_levels(expanded)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed; use an integer >= {minimum}")
    return value


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """What a sweep runs; every field is checked when the config is made.

    Attributes:
        criteria: Criterion names (see :data:`netsurgeon.pruning.CRITERIA`).
        levels: Pruning levels in (0, 1); see ``level_kind``.
        finetune_epochs: Epochs of fine-tuning after pruning (0: record accuracy right
            after pruning only). The reference gets the same budget.
        base_epochs: Epochs of fine-tuning the base model before the sweep (e.g. to train a
            fresh classifier head); the result is saved as ``base_model.pt`` in the output
            folder and reused when the sweep resumes.
        level_kind: ``"filters"``: a level is the fraction of filters removed (per layer
            with ``scope="layer"``, of all prunable filters with ``"global"``); ``"macs"``:
            the fraction of MACs removed.
        scope: ``"layer"``, ``"global"`` or ``"global_macs"`` ranking of filters (see
            :func:`netsurgeon.pruning.prune`).
        prune_steps: Prune in this many slices, re-scoring filters before each
            (:class:`netsurgeon.pruning.Pruner`); 1 prunes at once.
        finetune_steps: Optimizer steps of fine-tuning between slices (``prune_steps > 1``).
        slice_lr: Learning rate of those steps: ``"constant"`` holds ``train.lr`` (Molchanov
            et al. 2017), ``"schedule"`` restarts ``train.schedule`` over each slice's steps;
            the fine-tuning after the last slice always follows the schedule.
        criterion_batches: Training batches the data-driven criteria (activation, apoz,
            taylor) see; taylor uses cross-entropy. The same batches serve every trial.
        prune_layer_norms: LayerNorms over the channels lose them too (ConvNeXt's streams;
            see :func:`netsurgeon.pruning.prune`).
        latency_batch_size: Batch size of the CPU latency measurement.
        latency_repeats: Timed forward passes; the median is reported.
        latency_warmup: Untimed forward passes before timing.
        reference: Record the unpruned reference row.
        train: Optimizer, learning rate, seed, device... of all fine-tuning (``epochs`` is
            replaced by ``finetune_epochs`` / ``base_epochs``).
        info: Descriptive settings written to ``config.json`` and compared on resume (model
            name, weights, data folder, subsets...).
    """

    criteria: tuple[str, ...] = ("l1", "taylor")
    levels: tuple[float, ...] = (0.25, 0.5, 0.75)
    finetune_epochs: int = 1
    base_epochs: int = 0
    level_kind: str = "filters"
    scope: str = "layer"
    prune_steps: int = 1
    finetune_steps: int = 0
    slice_lr: str = "constant"
    criterion_batches: int = 4
    prune_layer_norms: bool = False
    latency_batch_size: int = 1
    latency_repeats: int = 10
    latency_warmup: int = 3
    reference: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.criteria, str):
            object.__setattr__(self, "criteria", parse_criteria(self.criteria))
        else:
            object.__setattr__(self, "criteria", check_criteria(self.criteria))
        object.__setattr__(self, "levels", check_levels(self.levels))
        _check_int("finetune_epochs", self.finetune_epochs, 0)
        _check_int("base_epochs", self.base_epochs, 0)
        if self.level_kind not in LEVEL_KINDS:
            raise ConfigError(
                f"level_kind={self.level_kind!r} is not allowed; "
                f"use one of {', '.join(LEVEL_KINDS)}"
            )
        if self.scope not in SCOPES:
            raise ConfigError(
                f"scope={self.scope!r} is not allowed; use one of {', '.join(SCOPES)}"
            )
        _check_int("prune_steps", self.prune_steps, 1)
        _check_int("finetune_steps", self.finetune_steps, 0)
        check_slice_lr("slice_lr", self.slice_lr)
        _check_int("criterion_batches", self.criterion_batches, 1)
        if not isinstance(self.prune_layer_norms, bool):
            raise ConfigError(
                f"prune_layer_norms={self.prune_layer_norms!r} is not allowed; use True or False"
            )
        _check_int("latency_batch_size", self.latency_batch_size, 1)
        _check_int("latency_repeats", self.latency_repeats, 1)
        _check_int("latency_warmup", self.latency_warmup, 0)
        if not isinstance(self.reference, bool):
            raise ConfigError(f"reference={self.reference!r} is not allowed; use True or False")
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train={self.train!r} is not allowed; pass a TrainConfig")
        if not isinstance(self.info, Mapping):
            raise ConfigError(f"info={self.info!r} is not allowed; pass a mapping")
        try:
            json.dumps(dict(self.info), default=str)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"info must hold JSON-able values ({exc})") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, as written to ``config.json``."""
        return {
            "format": CONFIG_FORMAT,
            "info": json.loads(json.dumps(dict(self.info), default=str)),
            "criteria": list(self.criteria),
            "levels": list(self.levels),
            "finetune_epochs": self.finetune_epochs,
            "base_epochs": self.base_epochs,
            "level_kind": self.level_kind,
            "scope": self.scope,
            "prune_steps": self.prune_steps,
            "finetune_steps": self.finetune_steps,
            "slice_lr": self.slice_lr,
            "criterion_batches": self.criterion_batches,
            "prune_layer_norms": self.prune_layer_norms,
            "latency_batch_size": self.latency_batch_size,
            "latency_repeats": self.latency_repeats,
            "latency_warmup": self.latency_warmup,
            "reference": self.reference,
            # train.epochs would read as the fine-tuning length, which finetune_epochs is.
            "train": {k: v for k, v in self.train.to_dict().items() if k != "epochs"},
        }

    def trials(self) -> list[tuple[str, float]]:
        """Every (criterion, level) pair in run order, the reference first."""
        pairs = [(REFERENCE, 0.0)] if self.reference else []
        return pairs + [(c, lv) for c in self.criteria for lv in self.levels]


@dataclass
class SweepResult:
    """What :func:`run_sweep` or :func:`compare_models` did.

    Attributes:
        out_dir: The results folder.
        rows: Every finished trial, resumed ones included, in run order.
        ran: (criterion, level) pairs run by this call.
        resumed: Pairs found finished in ``results.json`` and skipped.
        files: Written files by name (``results_json``, ``results_csv``, ``config``, plots,
            ``report_md``, ``report_html``).
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    ran: list[tuple[str, float]] = field(default_factory=list)
    resumed: list[tuple[str, float]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def table(self) -> str:
        """The results as an aligned text table."""
        if self.rows and "variant" in self.rows[0]:
            header, cells = report.compare_table(self.rows)
        else:
            header, cells = report.sweep_table(self.rows)
        return report.format_table(header, cells)


# --------------------------------------------------------------------------- loaders


class LimitedLoader:
    """At most ``max_batches`` batches of ``loader`` per pass, for quick runs.

    The wrapped loader's ``sampler`` (and so its per-epoch shuffling) and a length are kept,
    so the training loop treats it like the loader itself.
    """

    def __init__(self, loader: Iterable[Any], max_batches: int) -> None:
        self.loader = loader
        self.max_batches = _check_int("max_batches", max_batches, 1)

    @property
    def sampler(self) -> Any:
        """The wrapped loader's sampler (``None`` when it has none)."""
        return getattr(self.loader, "sampler", None)

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.max_batches)

    def __len__(self) -> int:
        return min(self.max_batches, len(self.loader))  # type: ignore[arg-type]


def _first_batches(loader: Iterable[Any], n: int, *, seed: int) -> list[Any]:
    # Epoch 0's batches under the run's seed, whatever this process drew before: a fresh sweep
    # fine-tunes the base model first (moving the sampler's epoch and the augmentation RNG), a
    # resumed one loads it, and both must score filters on the same batches.
    _set_epoch(loader, 0)
    seed_everything(seed)
    batches = list(itertools.islice(iter(loader), n))
    if not batches:
        raise ConfigError("the training data loader yielded no batches for the criterion")
    return batches


def _warn_history_dependent_order(loader: Iterable[Any]) -> None:
    # A RandomSampler with its own generator continues from the draws of every earlier trial in
    # this process, so a resumed sweep would train on other batches than an uninterrupted one.
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, RandomSampler) and sampler.generator is not None:
        warnings.warn(
            "the training loader shuffles with its own torch.Generator, whose draws carry over "
            "from trial to trial: a resumed sweep will not repeat an uninterrupted one; pass "
            "sampler=netsurgeon.vision.data.SeededRandomSampler(dataset, seed=...) instead of "
            "shuffle=True and generator=..., or build it with make_loader",
            stacklevel=3,
        )


def _example_inputs(loader: Iterable[Any]) -> torch.Tensor:
    batch = next(iter(loader), None)
    if not isinstance(batch, (tuple, list)) or not isinstance(batch[0], torch.Tensor):
        raise ConfigError("the validation loader must yield (inputs, targets) tensor pairs")
    return batch[0][:1].detach().cpu()


# --------------------------------------------------------------------------- output folder


def _recorded_config(out: Path) -> dict[str, Any]:
    """``config.json`` as written by the folder's first run: a resume with other execution
    settings (threads, workers) keeps its values, and so does the report."""
    return json.loads((out / "config.json").read_text(encoding="utf-8"))


def _prepare_out_dir(out: Path, config: Mapping[str, Any]) -> str | None:
    """Write ``config.json``, or check that an existing one matches ``config``.

    Returns:
        ``None``, or a note for the user when the folder's runs used other execution settings
        (allowed): for the caller to give when it runs new trials, which then differ.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={str(out)!r} (--out) exists and is not a folder")
    config_path = out / "config.json"
    current = json.loads(report.dumps_json(config))
    if config_path.exists():
        try:
            saved = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NetsurgeonError(
                f"{config_path} is unreadable ({exc}); use another out folder (--out)"
            ) from exc
        if not isinstance(saved, dict) or saved.get("format") != current.get("format"):
            raise NetsurgeonError(
                f"{config_path} was not written by this kind of netsurgeon run; use another "
                "out folder (--out)"
            )
        version_note = other_version_note(saved, out)
        saved.pop(VERSION_KEY, None)
        old, new = {**_ADDED_SETTINGS, **_flatten_settings(saved)}, _flatten_settings(current)
        differ = sorted(
            k
            for k in set(old) | set(new)
            if k not in _NOT_COMPARED | _UNUSED
            and (k in old or k not in _COMPARED_WHEN_RECORDED)
            and old.get(k) != new.get(k)
        )
        if differ:
            listed = _describe_changes(
                [(k, old.get(k, "<missing>"), new.get(k, "<missing>")) for k in differ]
            )
            shown = "; ".join(listed[:_MAX_LISTED])
            more = f" (and {len(listed) - _MAX_LISTED} more)" if len(listed) > _MAX_LISTED else ""
            # Killed before its first trial finished, a folder holds no results yet.
            holds = (
                "results" if (out / "results.json").exists() else "a stopped run (no results yet)"
            )
            raise NetsurgeonError(
                f"{out} holds {holds} of a different configuration ({shown}{more}); rerun "
                "with the same settings to resume, or choose another out folder (--out)"
            )
        fed = sorted(k for k in _NOT_COMPARED - _UNUSED if k in old and old[k] != new.get(k))
        if fed:
            # Allowed, but the rows then mix two ways of running; config.json keeps the
            # first run's values.
            changes = "; ".join(_describe_changes([(k, old[k], new.get(k)) for k in fed]))
            settings_note = (
                f"resuming {out} with other execution settings ({changes}); its earlier rows "
                "used the values in config.json, the new rows use these"
            )
            return settings_note if version_note is None else f"{settings_note}. {version_note}"
        return version_note
    if (out / "results.json").exists():
        raise NetsurgeonError(
            f"{out} has results.json but no config.json, so it cannot be resumed safely; "
            "choose another out folder (--out)"
        )
    report.atomic_write_text(config_path, report.dumps_json({**config, VERSION_KEY: __version__}))
    return None


def _key(criterion: str, level: float) -> tuple[str, float]:
    return str(criterion), round(float(level), 9)


def _done_keys(rows: Sequence[Mapping[str, Any]], path: Path) -> set[tuple[str, float]]:
    try:
        return {_key(r["criterion"], r["level"]) for r in rows}
    except (KeyError, TypeError, ValueError) as exc:
        raise NetsurgeonError(
            f"{path} has a row without a valid criterion and level ({exc!r}); use another out "
            "folder (--out)"
        ) from exc


# --------------------------------------------------------------------------- trials


def _prune_model(
    model: nn.Module,
    *,
    criterion: str,
    level: float,
    config: SweepConfig,
    example_inputs: torch.Tensor,
    data: list[Any] | None,
    train_loader: Iterable[Any],
) -> PruneResult:
    target: dict[str, float] = (
        {"amount": level} if config.level_kind == "filters" else {"target_macs": 1.0 - level}
    )
    # A fresh criterion per trial: the random one restarts from the sweep's seed every time.
    crit = get_criterion(criterion, seed=config.train.seed)
    loss_fn = nn.functional.cross_entropy
    if config.prune_steps == 1:
        return prune(
            model, example_inputs, criterion=crit, scope=config.scope, data=data,
            loss_fn=loss_fn, prune_layer_norms=config.prune_layer_norms, **target,
        )  # fmt: skip
    pruner = Pruner(
        model, example_inputs, criterion=crit, scope=config.scope, steps=config.prune_steps,
        data=data, loss_fn=loss_fn, prune_layer_norms=config.prune_layer_norms, **target,
    )  # fmt: skip
    if config.finetune_steps == 0:
        return pruner.run()

    def between(m: nn.Module, step: int, _result: PruneResult) -> None:
        if step + 1 < config.prune_steps:  # the last slice is followed by the real fine-tuning
            # Eager: every slice changes the shapes, so compiling K steps would not pay off.
            finetune_steps(
                m, train_loader, steps=config.finetune_steps,
                config=replace(config.train, compile=False), epoch_offset=step,
                lr=config.slice_lr,
            )  # fmt: skip
            m.to(example_inputs.device)

    return pruner.run(between)


def _fit_afresh(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    *,
    config: TrainConfig,
    checkpoint_path: Path | None = None,
) -> History:
    """:func:`fit`, with ``torch.compile`` started afresh for this trial's model.

    With ``checkpoint_path``, every finished epoch is checkpointed there and a run that
    stopped continues from its last finished epoch.
    """
    if config.compile:
        # Every trial trains a model of other shapes through the same forward code: past
        # torch.compile's recompile limit (8) the later trials would silently train eagerly,
        # and their epoch times would not compare with the first ones.
        torch.compiler.reset()
    with warnings.catch_warnings():
        # A checkpoint from another netsurgeon version: the results folder's own note says so
        # once for the whole sweep (its config.json records the version too).
        warnings.simplefilter("ignore", OtherVersionWarning)
        return fit(
            model,
            train_loader,
            val_loader,
            config=config,
            checkpoint_path=checkpoint_path,
            resume=checkpoint_path is not None,
        )


def run_trial(
    base: nn.Module,
    *,
    criterion: str,
    level: float,
    config: SweepConfig,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    example_inputs: torch.Tensor,
    criterion_data: list[Any] | None = None,
    base_footprint: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Prune a copy of ``base`` and measure it before and after fine-tuning.

    ``base`` itself is not changed. With ``criterion == REFERENCE`` ("none") nothing is
    pruned: the unpruned model is measured and fine-tuned the same way.

    Args:
        base: The base model.
        criterion: A criterion name, or ``"none"`` for the reference.
        level: Pruning level in (0, 1) (0 for the reference).
        config: The sweep's settings.
        train_loader: Fine-tuning data.
        val_loader: Validation data.
        example_inputs: One input batch (batch 1 is enough) for tracing and MACs.
        criterion_data: Batches for data-driven criteria.
        base_footprint: ``(params, macs)`` of ``base`` for the ratio columns; measured when
            ``None``.

    Returns:
        One results row with the keys of :data:`SWEEP_COLUMNS` (``model`` is left empty).
    """
    started = time.perf_counter()
    device = resolve_device(config.train.device)
    model = copy.deepcopy(base).to(device)
    example = example_inputs.to(device)
    if base_footprint is None:
        base_footprint = (count_params(base), count_macs(base, example_inputs))
    seed_everything(config.train.seed)
    prune_start = time.perf_counter()
    skipped: list[str] = []
    if criterion != REFERENCE:
        data = criterion_data if requires_data(get_criterion(criterion)) else None
        result = _prune_model(
            model, criterion=criterion, level=level, config=config, example_inputs=example,
            data=data, train_loader=train_loader,
        )  # fmt: skip
        skipped = result.skipped
    prune_time = time.perf_counter() - prune_start if criterion != REFERENCE else 0.0
    before = evaluate(
        model,
        val_loader,
        device=device,
        amp=config.train.amp,
        channels_last=config.train.channels_last,
    )
    model.cpu()
    example_cpu = example_inputs.cpu()
    params, macs = count_params(model), count_macs(model, example_cpu)
    size = state_size_bytes(model)
    latency_input = example_cpu.expand(config.latency_batch_size, *example_cpu.shape[1:])
    latency = measure_latency(
        model, latency_input.contiguous(), warmup=config.latency_warmup,
        repeats=config.latency_repeats, device="cpu",
    )  # fmt: skip
    epoch_times: list[float] = []
    compile_time = 0.0
    acc_after = loss_after = None
    if config.finetune_epochs > 0:
        train = replace(config.train, epochs=config.finetune_epochs)
        history = _fit_afresh(model, train_loader, val_loader, config=train)
        # Training speed: a first epoch that compiles (--compile) would count the compile.
        epoch_times = [r.epoch_time_s - r.compile_time_s for r in history.epochs]
        compile_time = sum(r.compile_time_s for r in history.epochs)
        last = history.last
        assert last is not None
        acc_after, loss_after = last.val_accuracy, last.val_loss
    base_params, base_macs = base_footprint
    return {
        "model": "",
        "criterion": criterion,
        "level": round(float(level), 9),
        "level_kind": config.level_kind,
        "scope": config.scope,
        "params": params,
        "macs": macs,
        "size_bytes": size,
        "latency_ms": latency,
        "params_ratio": params / base_params if base_params else 1.0,
        "macs_ratio": macs / base_macs if base_macs else 1.0,
        "acc_before": before["accuracy"],
        "loss_before": before["loss"],
        "acc_after": acc_after,
        "loss_after": loss_after,
        "finetune_epochs": config.finetune_epochs,
        "epoch_time_s": sum(epoch_times) / len(epoch_times) if epoch_times else None,
        "epoch_times_s": epoch_times,
        "compile_time_s": compile_time,
        "prune_time_s": prune_time,
        "trial_time_s": time.perf_counter() - started,
        "skipped": len(skipped),
    }


def _prepare_base(
    model: nn.Module,
    out: Path,
    config: SweepConfig,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
) -> nn.Module:
    """The base model on the CPU: fine-tuned ``base_epochs`` once, then reloaded on resume.

    The fine-tuning checkpoints every epoch (``base_model.train.ckpt``), so a sweep stopped
    during it continues from its last finished epoch.
    """
    if config.base_epochs == 0:
        return model.cpu()
    path = out / "base_model.pt"
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt or foreign files
            raise CheckpointError(
                f"{path} is not readable: {describe_torch_file(path)}; delete it to fine-tune "
                "the base model again"
            ) from exc
        try:
            if not isinstance(saved, dict) or saved.get("format") != _BASE_FORMAT:
                raise CheckpointError(f"{path} is not a sweep base model")
            model.load_state_dict(saved["model"])
        except CheckpointError:
            raise
        except Exception as exc:  # torch raises many types for corrupt or foreign files
            raise CheckpointError(
                f"{path} is corrupt or does not fit the model ({type(exc).__name__}: {exc}); "
                "delete it to fine-tune the base model again"
            ) from exc
        logger.info("loaded the fine-tuned base model from %s", path)
        return model.cpu()
    train = replace(config.train, epochs=config.base_epochs)
    # Epoch checkpoints: a sweep stopped during the base fine-tuning keeps its finished epochs.
    epochs_path = out / _BASE_EPOCHS_FILE
    _fit_afresh(model, train_loader, val_loader, config=train, checkpoint_path=epochs_path)
    model.cpu()
    atomic_save({"format": _BASE_FORMAT, "model": model.state_dict()}, path)
    epochs_path.unlink(missing_ok=True)
    return model


def _show_progress(config: TrainConfig) -> bool:
    if config.progress is not None:
        return config.progress
    return sys.stderr.isatty() and not os.environ.get("CI")


def run_sweep(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    *,
    config: SweepConfig,
    out_dir: str | os.PathLike[str],
    example_inputs: torch.Tensor | None = None,
    model_name: str | None = None,
    on_trial_end: TrialHook | None = None,
    write_report: bool = True,
    title: str | None = None,
) -> SweepResult:
    """Run (or resume) a pruning sweep and write its results, plots and reports.

    Every (criterion, level) of ``config`` starts from a deep copy of the same base model.
    Each finished trial is appended to ``results.json``/``results.csv`` at once (atomic
    rewrites); a rerun with the same ``out_dir`` and configuration skips finished trials.

    Args:
        model: The base model (pretrained or already fine-tuned); it is moved to the CPU
            and, with ``config.base_epochs``, fine-tuned in place first.
        train_loader: Fine-tuning data (and the batches the data-driven criteria see).
        val_loader: Validation data: accuracy before and after fine-tuning.
        config: What to run.
        out_dir: The results folder; created when missing.
        example_inputs: One input batch for tracing, MACs and latency; ``None`` takes the
            first image of ``val_loader``.
        model_name: The ``model`` column; defaults to ``config.info["model"]``, the model's
            ``netsurgeon_arch`` name or its class name.
        on_trial_end: Called with each new row after it has been written.
        write_report: Draw the plots and write ``report.md``/``report.html`` at the end.
        title: The report's title.

    Returns:
        The rows, what ran and what was resumed, and the written files.

    Raises:
        NetsurgeonError: ``out_dir`` holds results of another configuration, or its files
            are not netsurgeon results.
        ConfigError: A loader yields nothing, or a setting is unusable.
    """
    out = Path(out_dir)
    config_dict = config.to_dict()
    # An unusable device (CUDA asked for, none there) fails before config.json records it.
    resolve_device(config.train.device)
    settings_note = _prepare_out_dir(out, config_dict)
    name = model_name or _model_name(model, config)
    _warn_history_dependent_order(train_loader)
    results_json = out / "results.json"
    rows: list[dict[str, Any]] = []
    if results_json.exists():
        rows = report.read_results(results_json)
        # results.json is written first and is the record: a run stopped between the two
        # writes left results.csv a row behind, which no later trial may be left to mend.
        report.write_results_csv(out, rows, columns=SWEEP_COLUMNS)
    wanted = [_key(c, lv) for c, lv in config.trials()]
    done = _done_keys(rows, results_json)
    todo = [k for k in wanted if k not in done]
    resumed = [k for k in wanted if k in done]
    files = {"config": out / "config.json"}
    if resumed:
        logger.info("resuming %s: %d of %d trials already done", out, len(resumed), len(wanted))
    if todo and settings_note is not None:  # only new rows can differ from the old ones
        warnings.warn(settings_note, UserWarning, stacklevel=2)
    if todo:
        base = _prepare_base(model, out, config, train_loader, val_loader)
        example = example_inputs if example_inputs is not None else _example_inputs(val_loader)
        example = example.detach().cpu()
        footprint = (count_params(base), count_macs(base, example))
        needs_data = any(c != REFERENCE and requires_data(get_criterion(c)) for c, _ in todo)
        batches = (
            _first_batches(train_loader, config.criterion_batches, seed=config.train.seed)
            if needs_data
            else None
        )
        bar = tqdm(todo, desc="sweep", unit="trial", disable=not _show_progress(config.train))
        for criterion, level in bar:
            bar.set_postfix(criterion=criterion, level=f"{level:g}")
            row = run_trial(
                base, criterion=criterion, level=level, config=config,
                train_loader=train_loader, val_loader=val_loader, example_inputs=example,
                criterion_data=batches, base_footprint=footprint,
            )  # fmt: skip
            row["model"] = name
            rows.append(row)
            report.write_results(out, rows, columns=SWEEP_COLUMNS)
            logger.info(
                "%s level %g: acc %.4f pruned, %s fine-tuned", criterion, level,
                row["acc_before"], _fmt(row["acc_after"]),
            )  # fmt: skip
            if on_trial_end is not None:
                on_trial_end(row)
        bar.close()
    elif not results_json.exists():
        report.write_results(out, rows, columns=SWEEP_COLUMNS)
    files["results_json"], files["results_csv"] = results_json, out / "results.csv"
    order = {k: i for i, k in enumerate(wanted)}
    rows.sort(key=lambda r: order.get(_key(r["criterion"], r["level"]), len(order)))
    if write_report:
        files.update(
            report.write_sweep_report(
                out, rows, config=_recorded_config(out), title=title or f"Pruning sweep: {name}"
            )
        )
    return SweepResult(out_dir=out, rows=rows, ran=todo, resumed=resumed, files=files)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _model_name(model: nn.Module, config: SweepConfig) -> str:
    if "model" in config.info:
        return str(config.info["model"])
    arch = getattr(model, "netsurgeon_arch", None)
    if isinstance(arch, Mapping) and "name" in arch:
        return str(arch["name"])
    return type(model).__name__


# --------------------------------------------------------------------------- compare models


def compare_models(
    names: Sequence[str],
    *,
    build: Callable[[str], nn.Module],
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    config: SweepConfig,
    out_dir: str | os.PathLike[str],
    example_inputs: torch.Tensor | None = None,
    on_trial_end: TrialHook | None = None,
    normalizations: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> SweepResult:
    """Per model: accuracy, time per fine-tuning epoch and CPU latency, unpruned and pruned.

    Each model gets a one-criterion, one-level sweep with its reference in
    ``out_dir/<model>/`` (so an interrupted comparison resumes per trial); the rows are
    gathered, with a ``variant`` column (``"unpruned"``/``"pruned"``), into
    ``out_dir/results.json``/``results.csv``, ``comparison.png``, ``report.md`` and
    ``report.html``.

    Args:
        names: Model names, built one at a time by ``build(name)``.
        build: Makes a model from a name (weights and head already set).
        train_loader: Fine-tuning data.
        val_loader: Validation data.
        config: Exactly one criterion and one level; ``reference`` must be on.
        out_dir: The results folder.
        example_inputs: As in :func:`run_sweep`.
        on_trial_end: As in :func:`run_sweep`.
        normalizations: The ``(mean, std)`` that some models expect their images normalised
            with (their pretrained weights'), where it is not the loaders' own: the loaders'
            ``config.info["mean"]`` and ``["std"]``, ImageNet's when absent. Those models get
            the loaders' batches renormalised (:class:`~netsurgeon.vision.data.
            RenormalizedLoader`), and their folders record it.

    Raises:
        ConfigError: No or repeated model names, or a config with more than one criterion or
            level, or without the reference; a normalisation for a model not compared.
        NetsurgeonError: ``out_dir`` holds results of another configuration.
    """
    names = [str(n) for n in names]
    if not names:
        raise ConfigError("no models given; pass model names like alexnet,vgg16,resnet18")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"model {repeated[0]!r} is given twice; list each model once")
    if len(config.criteria) != 1 or len(config.levels) != 1 or not config.reference:
        raise ConfigError(
            "compare_models needs a SweepConfig with one criterion, one level and "
            f"reference=True; got criteria={list(config.criteria)}, levels={list(config.levels)}"
        )
    # The loaders' normalisation, and the models' that differ from it.
    data_norm = {
        "mean": [float(v) for v in config.info.get("mean", IMAGENET_MEAN)],
        "std": [float(v) for v in config.info.get("std", IMAGENET_STD)],
    }
    renormalize = _renormalizations(names, normalizations, data_norm)
    out = Path(out_dir)
    top = {**config.to_dict(), "models": names}
    resolve_device(config.train.device)  # before config.json records it
    settings_note = _prepare_out_dir(out, top)
    rows: list[dict[str, Any]] = []
    files: dict[str, Path] = {"config": out / "config.json"}
    ran: list[tuple[str, float]] = []
    resumed: list[tuple[str, float]] = []
    for name in names:
        sub = replace(config, info={**config.info, "model": name, **renormalize.get(name, {})})
        sub_out = out / _safe_dirname(name)
        train, val = train_loader, val_loader
        if name in renormalize:  # the images as this model's weights expect them
            own = {"to_mean": renormalize[name]["mean"], "to_std": renormalize[name]["std"]}
            train = RenormalizedLoader(train_loader, **data_norm, **own)
            val = RenormalizedLoader(val_loader, **data_norm, **own)
        # Building a big model costs seconds; skip it when its trials are all done.
        finished = _finished(sub_out, sub)
        if not finished and settings_note is not None:
            warnings.warn(settings_note, UserWarning, stacklevel=2)
            settings_note = None  # once for the comparison, not once per model
        with warnings.catch_warnings():
            # Each model's folder has the same execution settings: the note above says it.
            warnings.filterwarnings("ignore", message=r"resuming .* with other execution")
            warnings.filterwarnings("ignore", message=r"resuming .*, written by ")
            if finished:
                result = run_sweep(
                    nn.Identity(), train, val, config=sub, out_dir=sub_out, model_name=name,
                    write_report=False,
                )  # fmt: skip
            else:
                result = run_sweep(
                    build(name), train, val, config=sub, out_dir=sub_out,
                    example_inputs=example_inputs, model_name=name, on_trial_end=on_trial_end,
                    write_report=False,
                )  # fmt: skip
        ran += result.ran
        resumed += result.resumed
        for row in result.rows:
            variant = "unpruned" if row["criterion"] == REFERENCE else "pruned"
            rows.append({"model": name, "variant": variant, **row})
    files["results_json"], files["results_csv"] = report.write_results(
        out, rows, columns=COMPARE_COLUMNS
    )
    files.update(report.write_compare_report(out, rows, config=_recorded_config(out)))
    return SweepResult(out_dir=out, rows=rows, ran=ran, resumed=resumed, files=files)


def _renormalizations(
    names: Sequence[str],
    normalizations: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None,
    data_norm: Mapping[str, list[float]],
) -> dict[str, dict[str, list[float]]]:
    """Per model whose expected normalisation differs from the loaders' (``data_norm``), its
    mean and std."""
    unknown = sorted(set(normalizations or {}) - set(names))
    if unknown:
        raise ConfigError(
            f"normalizations names {unknown[0]!r}, which is not among the models compared "
            f"({', '.join(names)})"
        )
    wanted: dict[str, dict[str, list[float]]] = {}
    for name, (mean, std) in (normalizations or {}).items():
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if [mean, std] != [data_norm["mean"], data_norm["std"]]:
            wanted[name] = {"mean": mean, "std": std}
    return wanted


def _safe_dirname(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "model"


def _finished(out: Path, config: SweepConfig) -> bool:
    path = out / "results.json"
    if not path.exists() or not (out / "config.json").exists():
        return False
    done = _done_keys(report.read_results(path), path)
    return all(_key(c, lv) in done for c, lv in config.trials())
