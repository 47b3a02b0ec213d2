"""The options of ``netsurgeon finetune`` and ``netsurgeon prune --data``.

Free of heavy imports, so that the command line builds its parsers without PyTorch;
:mod:`netsurgeon.vision.iterative` turns the parsed options into runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netsurgeon.choices import (
    DEFAULT_ALPHA,
    DEFAULT_FEATURE_WEIGHT,
    DEFAULT_TEMPERATURE,
    SCOPES,
    SLICE_LRS,
)

__all__ = ["add_finetune_arguments", "add_iterative_arguments", "add_training_arguments"]


def _has_option(parser: argparse.ArgumentParser, flag: str) -> bool:
    return flag in parser._option_string_actions


def _add(parser: argparse.ArgumentParser | Any, flag: str, **kwargs: Any) -> None:
    """Add ``flag`` unless the parser (e.g. ``netsurgeon prune``'s) already defines it."""
    owner = parser if isinstance(parser, argparse.ArgumentParser) else parser._parser
    if not _has_option(owner, flag):
        parser.add_argument(flag, **kwargs)


class _Group:
    """An argument group that remembers its parser, so :func:`_add` can check for clashes."""

    def __init__(self, parser: argparse.ArgumentParser, title: str) -> None:
        self._parser = parser
        self._group = parser.add_argument_group(title)

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        self._group.add_argument(*args, **kwargs)


def add_training_arguments(
    parser: argparse.ArgumentParser, *, batch_flag: str = "--batch-size", epochs: bool = True
) -> None:
    """Options that make a :class:`~netsurgeon.training.TrainConfig`, plus data options.

    Options the parser already has are left alone (``netsurgeon prune`` defines ``--seed``,
    ``--device`` and ``--input-size`` itself).
    """
    group = _Group(parser, "training")
    if epochs:
        _add(group, "--epochs", type=int, default=1, metavar="E", help="epochs (default: 1)")
    _add(
        group,
        batch_flag,
        type=int,
        default=32,
        metavar="B",
        help="training and validation batch size (default: 32)",
    )
    _add(
        group,
        "--optimizer",
        default="sgd",
        choices=("sgd", "adam", "adamw"),
        help="optimizer (default: sgd)",
    )
    _add(group, "--lr", type=float, default=0.01, help="learning rate (default: 0.01)")
    _add(group, "--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    _add(group, "--weight-decay", type=float, default=0.0, help="weight decay (default: 0)")
    _add(
        group,
        "--grad-clip",
        type=float,
        default=None,
        metavar="NORM",
        help="clip the global gradient norm to NORM (default: no clipping)",
    )
    _add(
        group,
        "--schedule",
        default="none",
        choices=("none", "cosine", "step"),
        help="learning-rate schedule (default: none)",
    )
    _add(
        group,
        "--step-size",
        type=int,
        default=1,
        metavar="E",
        help="epochs between decays of the step schedule (default: 1)",
    )
    _add(group, "--gamma", type=float, default=0.1, help="step schedule factor (default: 0.1)")
    _add(
        group,
        "--seed",
        type=int,
        default=0,
        help="random seed: training and the --val-fraction split, so seeds also validate on "
        "different images (default: 0); under torchrun each process adds its rank",
    )
    _add(group, "--amp", action="store_true", help="float16 mixed precision (CUDA only)")
    _add(
        group,
        "--channels-last",
        action="store_true",
        help="channels-last memory order for weights and images (faster convolutions)",
    )
    _add(
        group,
        "--compile",
        action="store_true",
        help="compile the training steps with torch.compile (the first step takes up to about "
        "a minute; iterative pruning compiles its final fine-tuning only; needs a C++ compiler "
        "on CPU)",
    )
    _add(group, "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    _add(
        group,
        "--input-size",
        type=int,
        metavar="S",
        help="side of the square model input (default: the size MODEL is built for: 32 for "
        "the CIFAR ResNets, 224 for most others)",
    )
    _add(
        group,
        "--val-fraction",
        type=float,
        default=None,
        metavar="F",
        help="split DIR (or DIR/train) with this share for validation, when it has no "
        "train/ and val/ folders",
    )
    _add(
        group,
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help="stop the fine-tuning after N optimizer steps in total, even mid-epoch (for quick "
        "checks); with prune --data it limits the fine-tuning after the last slice, while "
        "--finetune-steps sets the steps between slices",
    )
    _add(
        group,
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="data loader processes (default: min(4, cores))",
    )
    _add(
        group,
        "--cache-data",
        action="store_true",
        help="decode the images once and keep them on the training device, augmenting there "
        "(no loader processes while training: for GPUs; the data must fit in half the "
        "device's free memory)",
    )


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """All options of ``netsurgeon finetune``."""
    parser.add_argument("model", metavar="MODEL", help="a name from `netsurgeon models`")
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DIR",
        help="ImageFolder data: DIR/train and DIR/val, or DIR/<class> with --val-fraction",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help="save the fine-tuned model here (netsurgeon format)",
    )
    parser.add_argument(
        "--weights",
        default="DEFAULT",
        metavar="DEFAULT|none|PATH",
        help="DEFAULT: the pretrained weights of torchvision or timm (downloads); none: "
        "random initialisation; PATH: a local file (default: DEFAULT)",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help="expected number of classes; an error if the data disagree",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="per-epoch training checkpoint (default: FILE.train.ckpt)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint after its last finished epoch (without it, a "
        "stopped run's checkpoint is refused, not overwritten)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_recovery_arguments(parser, teacher_flag=True)
    add_training_arguments(parser)


def add_iterative_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of iterative pruning with data to ``netsurgeon prune``'s parser.

    Options the parser already defines are kept as they are: ``netsurgeon prune`` has
    ``--out``, ``--weights``, ``--amount``, ``--target-macs``, ``--criterion``, ``--scope``,
    ``--num-classes``, ``--seed``, ``--input-size``, ``--device`` and ``--json``, and its
    ``--batch-size`` is the latency batch, so training uses ``--train-batch-size``. Missing
    ones are added here, so a bare parser works too (with a ``MODEL`` positional given by
    the caller). With ``--data`` the command runs :func:`run_iterative_from_args`.
    """
    group = _Group(parser, "iterative pruning with data (Molchanov et al. 2017)")
    _add(
        group,
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="ImageFolder data; prune iteratively with fine-tuning between slices",
    )
    _add(
        group, "--prune-steps", type=int, default=5, metavar="S", help="pruning slices (default: 5)"
    )
    _add(
        group,
        "--finetune-steps",
        type=int,
        default=100,
        metavar="K",
        help="optimizer steps after each slice (default: 100)",
    )
    _add(
        group,
        "--slice-lr",
        default="constant",
        choices=SLICE_LRS,
        help="learning rate of the steps after each slice: hold --lr, or restart --schedule "
        "over each slice's steps (default: constant)",
    )
    _add(
        group,
        "--finetune-epochs",
        type=int,
        default=1,
        metavar="E",
        help="epochs of fine-tuning after the last slice (default: 1)",
    )
    _add(
        group,
        "--criterion-batches",
        type=int,
        default=8,
        metavar="N",
        help="training batches the criterion sees before each slice, per process under "
        "torchrun (default: 8)",
    )
    _add(
        group,
        "--checkpoint-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="write progress after every slice and epoch here (default: FILE.iterative/)",
    )
    _add(
        group,
        "--resume",
        action="store_true",
        help="continue from --checkpoint-dir after the last finished slice or epoch (without "
        "it, a stopped run's progress there is refused, not overwritten)",
    )
    _add(
        group,
        "--no-oneshot",
        action="store_true",
        help="skip the one-shot-pruned copy that measures accuracy right after pruning",
    )
    _add(group, "--out", type=Path, default=None, metavar="FILE", help="save the pruned model")
    _add(
        group,
        "--weights",
        default="DEFAULT",
        metavar="DEFAULT|none|PATH",
        help="initial weights (default: DEFAULT)",
    )
    _add(
        group,
        "--amount",
        type=float,
        default=None,
        metavar="F",
        help="fraction of filters to remove",
    )
    _add(
        group,
        "--target-macs",
        type=float,
        default=None,
        metavar="F",
        help="fraction of MACs to keep",
    )
    _add(group, "--criterion", default="taylor", help="importance criterion (default: taylor)")
    _add(group, "--scope", default="global", help=f"{', '.join(SCOPES)} (default: global)")
    _add(
        group,
        "--num-classes",
        type=int,
        default=None,
        metavar="N",
        help="expected number of classes",
    )
    _add(group, "--json", action="store_true", help="print the result as JSON")
    _add_recovery_arguments(parser)
    add_training_arguments(parser, batch_flag="--train-batch-size", epochs=False)


def _add_recovery_arguments(parser: argparse.ArgumentParser, *, teacher_flag: bool = False) -> None:
    """``--distill`` (or ``--teacher FILE``), ``--distill-temperature``, ``--distill-alpha``,
    ``--distill-features``, ``--distill-feature-weight``, ``--recalibrate-bn`` and, without
    ``teacher_flag`` (for ``prune``), ``--reconstruct``."""
    group = _Group(parser, "recovery after pruning")
    if teacher_flag:
        _add(
            group,
            "--teacher",
            type=Path,
            default=None,
            metavar="FILE",
            help="fine-tune by knowledge distillation from this model (saved by netsurgeon)",
        )
    else:
        _add(
            group,
            "--distill",
            action="store_true",
            help="fine-tune by knowledge distillation from the unpruned model (frozen teacher)",
        )
    _add(
        group,
        "--distill-temperature",
        type=float,
        default=None,
        metavar="T",
        help=f"distillation softmax temperature (default: {DEFAULT_TEMPERATURE:g})",
    )
    _add(
        group,
        "--distill-alpha",
        type=float,
        default=None,
        metavar="A",
        help=f"weight of the distillation term, 0..1 (default: {DEFAULT_ALPHA:g})",
    )
    _add(
        group,
        "--distill-features",
        default=None,
        metavar="NAMES",
        help="also match the teacher's outputs of these modules: comma-separated names or "
        "patterns, e.g. 'layer?.?' for every block of a ResNet whose streams are not pruned",
    )
    _add(
        group,
        "--distill-feature-weight",
        type=float,
        default=None,
        metavar="W",
        help=f"weight of that feature term (default: {DEFAULT_FEATURE_WEIGHT:g})",
    )
    _add(
        group,
        "--recalibrate-bn",
        type=int,
        default=0,
        metavar="N",
        help="re-estimate BatchNorm statistics on N training batches (per process under "
        f"torchrun) {'before fine-tuning' if teacher_flag else 'after every pruning slice'} "
        "(default: 0, off)",
    )
    if not teacher_flag:  # pruning: the model before each slice is there to reconstruct
        _add(
            group,
            "--reconstruct",
            type=int,
            default=0,
            metavar="N",
            help="after every slice, refit the layers that lost input channels by least squares "
            "to reproduce the model before the slice, on N training batches per layer (per "
            "process under torchrun; default: 0, off)",
        )
