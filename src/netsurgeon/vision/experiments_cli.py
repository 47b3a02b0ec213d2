"""The experiment subcommands: ``netsurgeon sweep``, ``compare-models`` and ``demo``.

Thin layers over :mod:`netsurgeon.vision.experiments`: they build the model with
:func:`netsurgeon.vision.models.build_model` and ImageFolder loaders with
:mod:`netsurgeon.vision.data`, run the experiment, print the table and the written files.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netsurgeon.argtypes import comma_list, non_negative_int, positive_int
from netsurgeon.choices import CRITERION_NAMES as CRITERIA
from netsurgeon.choices import SCOPES, SLICE_LRS
from netsurgeon.commands import COMMANDS
from netsurgeon.errors import ConfigError
from netsurgeon.pruning.cli import with_threads

if TYPE_CHECKING:  # the parsers are built without importing PyTorch
    from torch import nn

__all__ = ["add_commands", "stratified_subset"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``sweep``, ``compare-models`` and ``demo`` on the top-level subparsers."""
    _add_sweep(subparsers)
    _add_compare(subparsers)
    _add_demo(subparsers)


# --------------------------------------------------------------------------- shared options


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Data, model, training and quick-run options shared by ``sweep`` and ``compare-models``."""
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR",
        help="ImageFolder data: DIR/train/<class>/ and DIR/val/<class>/, or DIR/<class>/ "
        "with --val-fraction",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="results folder")
    parser.add_argument(
        "--weights", default="DEFAULT", metavar="DEFAULT|none|PATH",
        help="DEFAULT downloads torchvision's pretrained weights; none keeps the random "
        "initialisation; PATH loads a local weights file (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--num-classes", type=positive_int, metavar="N",
        help="classes of the task (default: the number of class folders; must match them)",
    )  # fmt: skip
    parser.add_argument("--input-size", type=positive_int, metavar="S",
                        help="side of the square model input (default: the size the models are "
                        "built for: 32 for the CIFAR ResNets, 224 for most others)")  # fmt: skip
    parser.add_argument("--val-fraction", type=float, metavar="F",
                        help="split DIR/<class>/ with this validation share (seeded)")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="B",
                        help="batch size (default: %(default)s)")  # fmt: skip
    parser.add_argument("--workers", type=non_negative_int, metavar="N",
                        help="data loader processes (default: min(4, CPU cores))")  # fmt: skip
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads for torch, which the CPU latencies depend on "
                        "(default: torch's choice, usually one per core)")  # fmt: skip
    parser.add_argument("--cache-data", action="store_true",
                        help="decode the images once and keep them on the training device, "
                        "augmenting there (no loader processes while training: for GPUs; the "
                        "data must fit in half the device's free memory)")  # fmt: skip
    parser.add_argument("--finetune-epochs", type=non_negative_int, default=1, metavar="E",
                        help="fine-tuning epochs after pruning; 0 only measures accuracy right "
                        "after pruning (default: %(default)s)")  # fmt: skip
    parser.add_argument("--base-epochs", type=non_negative_int, default=0, metavar="E",
                        help="fine-tune the model this many epochs before pruning, e.g. to "
                        "train a new classifier head (default: %(default)s)")  # fmt: skip
    parser.add_argument("--level-kind", choices=("filters", "macs"), default="filters",
                        help="a level is the fraction of filters (per layer with --scope "
                        "layer) or of MACs removed (default: %(default)s)")  # fmt: skip
    parser.add_argument("--scope", choices=SCOPES, default="layer",
                        help="rank filters per layer, over the whole model, or over the whole "
                        "model per MAC each filter costs (default: %(default)s)")  # fmt: skip
    parser.add_argument("--prune-layer-norms", action="store_true",
                        help="LayerNorms over the channels (ConvNeXt's) lose the pruned "
                        "channels too, approximately (see `netsurgeon prune --help`)")  # fmt: skip
    parser.add_argument("--prune-steps", type=positive_int, default=1, metavar="N",
                        help="prune in N slices, re-scoring filters before each "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--finetune-steps", type=non_negative_int, default=0, metavar="K",
                        help="optimizer steps of fine-tuning between slices "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--slice-lr", choices=SLICE_LRS, default="constant",
                        help="learning rate of the steps between slices: hold --lr, or restart "
                        "--schedule over each slice's steps (default: %(default)s)")  # fmt: skip
    parser.add_argument("--criterion-batches", type=positive_int, default=4, metavar="N",
                        help="training batches the data-driven criteria see "
                        "(default: %(default)s)")  # fmt: skip
    train = parser.add_argument_group("fine-tuning")
    train.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw"),
        default="sgd",
        help="optimizer (default: %(default)s)",
    )
    train.add_argument(
        "--lr", type=float, default=0.01, help="learning rate (default: %(default)s)"
    )
    train.add_argument(
        "--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)"
    )
    train.add_argument(
        "--weight-decay", type=float, default=0.0, help="weight decay (default: %(default)s)"
    )
    train.add_argument(
        "--grad-clip",
        type=float,
        default=None,
        metavar="NORM",
        help="clip the global gradient norm to NORM (default: no clipping)",
    )
    train.add_argument(
        "--schedule",
        choices=("none", "cosine", "step"),
        default="none",
        help="learning-rate schedule (default: %(default)s)",
    )
    train.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="random seed: training, data split and subsets (default: %(default)s)",
    )
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    train.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last memory order for weights and images (faster convolutions)",
    )
    train.add_argument(
        "--compile",
        action="store_true",
        help="compile the training steps with torch.compile (the first step of each trial "
        "takes about a minute; needs a C++ compiler on CPU)",
    )
    quick = parser.add_argument_group("quick runs")
    quick.add_argument(
        "--train-subset",
        type=positive_int,
        metavar="N",
        help="use N training images (seeded, every class represented)",
    )
    quick.add_argument(
        "--val-subset",
        type=positive_int,
        metavar="N",
        help="use N validation images (seeded, every class represented)",
    )
    quick.add_argument(
        "--max-train-batches",
        type=positive_int,
        metavar="N",
        help="at most N batches per fine-tuning epoch",
    )
    quick.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check every image while scanning the folders (fast for big folders; "
        "an unreadable image is still skipped, counted and reported when it is loaded)",
    )
    quick.add_argument(
        "--max-val-batches",
        type=positive_int,
        metavar="N",
        help="at most N batches per evaluation",
    )
    parser.add_argument(
        "--latency-batch-size",
        type=positive_int,
        default=1,
        metavar="B",
        help="batch size of the CPU latency measurement (default: %(default)s)",
    )
    parser.add_argument("--latency-repeats", type=positive_int, default=10, metavar="N",
                        help="timed forward passes; the median is reported "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def stratified_subset(targets: list[int], n: int, *, seed: int) -> list[int]:
    """``n`` sample positions chosen with a seed, taking classes in turn so each is represented.

    Returns:
        Sorted positions; all of them when ``n`` is at least the number of samples.
    """
    if n >= len(targets):
        return list(range(len(targets)))
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(targets), generator=generator).tolist()
    by_class: dict[int, list[int]] = {}
    for position in order:
        by_class.setdefault(targets[position], []).append(position)
    queues = [by_class[c] for c in sorted(by_class)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for queue in queues:
            if depth < len(queue) and len(chosen) < n:
                chosen.append(queue[depth])
        depth += 1
    return sorted(chosen)


def _normalization(names: list[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The loaders' input normalisation for the models ``names``: their own where they share
    one, else ImageNet's (compare-models renormalises the batches of the others)."""
    from netsurgeon.vision.data import IMAGENET_MEAN, IMAGENET_STD
    from netsurgeon.vision.models import input_normalization

    wanted = {name: input_normalization(name) for name in names}
    if len(set(wanted.values())) == 1:
        return wanted[names[0]]
    return IMAGENET_MEAN, IMAGENET_STD


def _loaders(args: argparse.Namespace, names: list[str]) -> tuple[Any, Any, int, dict[str, Any]]:
    """Training and validation loaders, the class count and the data settings for config.json.

    The images are normalised as the models ``names`` expect (:func:`_normalization`).
    """
    import torch

    from netsurgeon.vision.data import IMAGENET_MEAN, IMAGENET_STD, load_image_data, make_loader
    from netsurgeon.vision.experiments import LimitedLoader

    mean, std = _normalization(names)
    data = load_image_data(
        args.data, input_size=args.input_size, val_fraction=args.val_fraction, seed=args.seed,
        num_classes=args.num_classes, verify=not args.no_verify, mean=mean, std=std,
    )  # fmt: skip
    train, val = data.train, data.val
    for flag, size in (("--train-subset", args.train_subset), ("--val-subset", args.val_subset)):
        if size and size < data.num_classes:  # the subsets promise every class
            raise ConfigError(
                f"{flag} {size} is smaller than the {data.num_classes} classes; give at least "
                f"{data.num_classes} so that every class is represented"
            )
    for flag, size, part in (
        ("--train-subset", args.train_subset, train),
        ("--val-subset", args.val_subset, val),
    ):
        if size and size > len(part):
            kind = "training" if flag == "--train-subset" else "validation"
            warnings.warn(
                f"{flag} {size} is more than the {len(part)} {kind} images: all of them are used",
                UserWarning,
                stacklevel=2,
            )
    if args.train_subset:
        train = train.subset(
            stratified_subset(train.targets, args.train_subset, seed=args.seed),
            transform=train.transform,
        )
    if args.val_subset:
        val = val.subset(
            stratified_subset(val.targets, args.val_subset, seed=args.seed),
            transform=val.transform,
        )
    train_loader: Any = make_loader(
        train, batch_size=args.batch_size, train=True, num_workers=args.workers, seed=args.seed,
        device=args.device, cache=args.cache_data,
    )  # fmt: skip
    val_loader: Any = make_loader(
        val, batch_size=args.batch_size, train=False, num_workers=args.workers,
        device=args.device, cache=args.cache_data,
    )  # fmt: skip
    if args.max_train_batches:
        train_loader = LimitedLoader(train_loader, args.max_train_batches)
    if args.max_val_batches:
        val_loader = LimitedLoader(val_loader, args.max_val_batches)
    from netsurgeon.vision.iterative import recorded_weights

    info = {
        "data": str(Path(args.data).resolve()),
        # A rewritten weights file would mix two models' rows in one table.
        **recorded_weights(args.weights),
        "num_classes": data.num_classes,
        "classes": list(data.classes),
        "input_size": args.input_size,
        # Recorded where it is not ImageNet's, so that earlier runs' settings stay the same.
        **({} if (mean, std) == (IMAGENET_MEAN, IMAGENET_STD) else {"mean": mean, "std": std}),
        "val_fraction": args.val_fraction,
        "batch_size": args.batch_size,
        "train_images": len(train),
        "val_images": len(val),
        # The whole folder's files (before any subset), which may change under the same path
        # between a run and its resume.
        **data.fingerprint(),
        "train_subset": args.train_subset,
        "val_subset": args.val_subset,
        "max_train_batches": args.max_train_batches,
        "max_val_batches": args.max_val_batches,
        # How the run executes: recorded, but a resume may change them (experiments'
        # _NOT_COMPARED). CPU latencies depend on the threads.
        "workers": args.workers,
        "cache_data": args.cache_data,
        "threads": torch.get_num_threads(),
    }
    return train_loader, val_loader, data.num_classes, info


def _sweep_config(
    args: argparse.Namespace, *, criteria: Any, levels: Any, info: dict[str, Any]
) -> Any:
    from netsurgeon.training import TrainConfig
    from netsurgeon.vision.experiments import SweepConfig

    train = TrainConfig(
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, schedule=args.schedule,
        seed=args.seed,
        device=args.device, amp=args.amp, channels_last=args.channels_last,
        compile=args.compile, progress=False if args.no_progress else None,
    )  # fmt: skip
    return SweepConfig(
        criteria=criteria, levels=levels, finetune_epochs=args.finetune_epochs,
        base_epochs=args.base_epochs, level_kind=args.level_kind, scope=args.scope,
        prune_steps=args.prune_steps, finetune_steps=args.finetune_steps,
        slice_lr=args.slice_lr, criterion_batches=args.criterion_batches,
        prune_layer_norms=args.prune_layer_norms,
        latency_batch_size=args.latency_batch_size, latency_repeats=args.latency_repeats,
        train=train, info=info,
    )  # fmt: skip


def _builder(args: argparse.Namespace, num_classes: int) -> Callable[[str], nn.Module]:
    from netsurgeon.training import seed_everything
    from netsurgeon.vision.models import build_model

    def build(name: str) -> nn.Module:
        # A new head (or a random model) is initialised from the seed, not from whatever the
        # process drew before: a resumed sweep must continue from the same base model.
        seed_everything(args.seed)
        return build_model(
            name, weights=args.weights, num_classes=num_classes,
            progress=not args.no_progress,
        )  # fmt: skip

    return build


def _print_result(result: Any, started: float) -> None:
    print(result.table())
    print()
    done = f"{len(result.ran)} trial(s) run"
    if result.resumed:
        done += f", {len(result.resumed)} resumed from earlier runs"
    print(f"{done} in {time.perf_counter() - started:.1f}s; results in {result.out_dir}:")
    for name, path in result.files.items():
        print(f"  {name:<18} {path}")


# --------------------------------------------------------------------------- sweep


def _add_sweep(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help=COMMANDS["sweep"].help,
        description=(
            "For every (criterion, level), prune a copy of the same base model, record "
            "validation accuracy right after pruning and after fine-tuning, params, MACs, "
            "CPU latency, size and fine-tuning time per epoch; the unpruned model is the "
            "reference. Writes results.csv, results.json, config.json, plots, report.md and "
            "report.html to --out (README.md's 'Transfer-learning experiments' lists the "
            "columns). Rerun the same command to resume an interrupted sweep."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="a model name (see `netsurgeon models`)")
    parser.add_argument(
        "--criteria", default="random,l1,l2,activation,apoz,taylor",
        help=f"comma-separated criteria from: {', '.join(CRITERIA)} (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--levels", default="0.1,0.2,...,0.9",
        help="comma-separated pruning levels in (0, 1); 'a,b,...,c' is a progression "
        "(default: %(default)s)",
    )  # fmt: skip
    _add_common(parser)
    parser.set_defaults(func=with_threads(_run_sweep))


def _run_sweep(args: argparse.Namespace) -> int:
    from netsurgeon.vision.experiments import parse_criteria, parse_levels, run_sweep

    started = time.perf_counter()
    # Check the cheap arguments before reading data or building the model.
    criteria, levels = parse_criteria(args.criteria), parse_levels(args.levels)
    _check_val_fraction(args.val_fraction)
    _check_out(args.out)
    _check_models(args, [args.model])
    train_loader, val_loader, num_classes, info = _loaders(args, [args.model])
    info = {"command": "sweep", "model": args.model, **info}
    config = _sweep_config(args, criteria=criteria, levels=levels, info=info)
    model = _builder(args, num_classes)(args.model)
    result = run_sweep(
        model, train_loader, val_loader, config=config, out_dir=args.out, model_name=args.model
    )
    _print_result(result, started)
    return 0


def _check_models(args: argparse.Namespace, names: list[str]) -> None:
    """Fail on an unknown model name before anything is read, written or trained.

    The names come first, so that a typo is not reported as another input size; then the
    input sizes (:func:`_default_input_size`), and that each model runs at that size.
    """
    import torch

    from netsurgeon.pruning.stats import check_input_size
    from netsurgeon.vision.models import build_model, check_model

    for name in names:
        check_model(name, weights="none")
    _default_input_size(args, names)
    # Random weights are enough to see the input size fit; the RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        for name in names:
            model = build_model(name, weights="none", progress=False)
            check_input_size(model, args.input_size, name=name)


def _check_weights(args: argparse.Namespace, names: list[str], num_classes: int) -> None:
    """Fail on ``--weights`` that some model cannot take before the first one trains."""
    from netsurgeon.vision.iterative import _is_weights_file
    from netsurgeon.vision.models import build_model, check_model

    for name in names:
        check_model(name, weights=args.weights)
    if len(names) > 1 and _is_weights_file(args.weights):
        # One file for several architectures: load it into each now, not after the first
        # model has trained and the results folder records this configuration.
        for name in names:
            build_model(name, weights=args.weights, num_classes=num_classes, progress=False)


def _default_input_size(args: argparse.Namespace, names: list[str]) -> None:
    """Without ``--input-size``, use the size the models are built for; they must agree."""
    from netsurgeon.vision.models import default_input_size

    if args.input_size is not None:
        return
    sizes = {name: default_input_size(name) for name in names}
    if len(set(sizes.values())) > 1:
        built = ", ".join(f"{name} {size}" for name, size in sizes.items())
        raise ConfigError(
            f"the models are built for different input sizes ({built}); "
            f"pass --input-size S to train them all at one size"
        )
    args.input_size = next(iter(sizes.values()))


def _check_val_fraction(value: float | None) -> None:
    if value is not None and not 0.0 < value < 1.0:
        raise ConfigError(f"--val-fraction {value} is not allowed; use a number in (0, 1)")


# --------------------------------------------------------------------------- compare-models


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare-models",
        help=COMMANDS["compare-models"].help,
        description=(
            "For each model: fine-tune it unpruned and pruned to --level with --criterion, "
            "and record time per fine-tuning epoch, CPU latency and accuracy. Writes a table "
            "(results.csv, results.json), comparison.png, report.md and report.html to --out; "
            "each model's trials are in --out/<model>/ and resume like a sweep. The columns "
            "are a sweep's, with the row's variant (unpruned or pruned)."
        ),
    )
    parser.add_argument("models", metavar="MODELS", help="comma-separated model names")
    parser.add_argument(
        "--level", type=float, required=True, metavar="L", help="pruning level in (0, 1)"
    )
    parser.add_argument(
        "--criterion", default="l1", help=f"one of: {', '.join(CRITERIA)} (default: %(default)s)"
    )
    _add_common(parser)
    parser.set_defaults(func=with_threads(_run_compare))


def _run_compare(args: argparse.Namespace) -> int:
    from netsurgeon.vision.experiments import check_criteria, check_levels, compare_models

    started = time.perf_counter()
    names = comma_list(args.models, name="models", flag="MODELS")
    criteria, levels = check_criteria([args.criterion]), check_levels([args.level])
    if not names:
        raise ConfigError("no models given; pass model names like alexnet,vgg16,resnet18")
    _check_val_fraction(args.val_fraction)
    _check_out(args.out)
    # Every name and its weights before any model trains: config.json, written first, would
    # otherwise keep a mistyped list and refuse the corrected command.
    _check_models(args, names)
    train_loader, val_loader, num_classes, info = _loaders(args, names)
    _check_weights(args, names, num_classes)
    info = {"command": "compare-models", **info}
    config = _sweep_config(args, criteria=criteria, levels=levels, info=info)
    from netsurgeon.vision.models import input_normalization

    result = compare_models(
        names, build=_builder(args, num_classes), train_loader=train_loader,
        val_loader=val_loader, config=config, out_dir=args.out,
        # Each model sees its images normalised as its weights expect.
        normalizations={name: input_normalization(name) for name in names},
    )  # fmt: skip
    _print_result(result, started)
    return 0


# --------------------------------------------------------------------------- demo


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=COMMANDS["demo"].help,
        description=(
            "Train a small CNN on the 8x8 digits images that ship with scikit-learn, then "
            "prune it with 3 criteria at 4 levels, fine-tune briefly, and print the table and "
            "the plots' paths. Needs no download; about half a minute on 2 CPU cores."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("netsurgeon-demo"),
        metavar="DIR",
        help="results folder (default: %(default)s)",
    )
    parser.add_argument(
        "--base-epochs",
        type=positive_int,
        default=6,
        metavar="E",
        help="epochs training the base model (default: %(default)s)",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=non_negative_int,
        default=1,
        metavar="E",
        help="fine-tuning epochs after each prune (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from netsurgeon.vision.demo import run_demo

    started = time.perf_counter()
    _check_out(args.out)
    result = run_demo(
        args.out, base_epochs=args.base_epochs, finetune_epochs=args.finetune_epochs,
        seed=args.seed, device=args.device, progress=False if args.no_progress else None,
    )  # fmt: skip
    _print_result(result, started)
    plot = result.files.get("accuracy_vs_level")
    if plot is not None:
        print(f"\nplot: {plot}")
    return 0


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot be a results folder, before any work."""
    from netsurgeon.fileio import check_folder_target

    check_folder_target(out, "--out")
