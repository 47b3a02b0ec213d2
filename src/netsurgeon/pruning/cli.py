"""The pruning subcommands: ``netsurgeon prune``, ``netsurgeon stats`` and ``netsurgeon models``.

Each command is a thin layer over library calls: :func:`netsurgeon.vision.models.build_model`
builds the network, :func:`netsurgeon.pruning.prune` prunes it, :class:`ModelStats` measures
it and :mod:`netsurgeon.pruning.io` saves and loads it. User errors are raised as
:class:`~netsurgeon.errors.NetsurgeonError`; the dispatcher prints them as one line.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from netsurgeon.argtypes import comma_list
from netsurgeon.choices import SCOPES
from netsurgeon.commands import COMMANDS
from netsurgeon.errors import CheckpointError, ConfigError, NetsurgeonError

if TYPE_CHECKING:  # the command line's parsers are built without importing PyTorch
    import torch
    from torch import nn

    from netsurgeon.pruning.stats import ModelStats

__all__ = ["DATA_CRITERIA", "DATA_FREE_CRITERIA", "add_commands"]

# Criteria that score filters from the weights alone, so the CLI can run them without data.
DATA_FREE_CRITERIA = ("random", "l1", "l2", "bn_scale", "fpgm")
# Criteria that need a data loader and a loss; the CLI gets --data in the experiments issue.
DATA_CRITERIA = ("activation", "apoz", "taylor")
DEVICES = ("auto", "cpu", "cuda")
# Suffixes that mark MODEL_OR_FILE as a file even when it does not exist (for a clear error).
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``prune``, ``stats`` and ``models`` on the top-level parser's subparsers."""
    _add_prune(subparsers)
    _add_stats(subparsers)
    _add_models(subparsers)


# --------------------------------------------------------------------------- prune


def _add_prune(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune",
        help=COMMANDS["prune"].help,
        description=(
            "Build MODEL, prune its convolution filters, print the model's cost before and "
            "after, and save the pruned model (state_dict and shapes, no pickled code) to "
            "--out. Give exactly one of --amount and --target-macs. Without --data the "
            "filters are scored from the weights alone (data-free criteria) and the cost "
            "includes CPU latency; with --data DIR (training images) the model is pruned "
            "iteratively, with fine-tuning between slices (Molchanov et al. 2017), by any "
            "criterion, and the report gives accuracy, parameters and MACs."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a builder name (`netsurgeon models`), or timm:NAME for a timm model",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="where to save")
    parser.add_argument(
        "--weights",
        default="DEFAULT",
        metavar="DEFAULT|none|PATH",
        help="DEFAULT downloads the pretrained weights (torchvision's, or timm's); none keeps "
        "the random initialisation; PATH loads a local weights file (default: %(default)s)",
    )
    target = parser.add_argument_group("target (exactly one)")
    target.add_argument(
        "--amount", type=float, help="fraction of filters to remove, in (0, 1)", metavar="F"
    )
    target.add_argument(
        "--target-macs", type=float, help="fraction of MACs to keep, in (0, 1)", metavar="F"
    )
    parser.add_argument(
        "--criterion",
        default="l1",
        help=f"importance criterion: {', '.join(DATA_FREE_CRITERIA)}; with --data also "
        f"{', '.join(DATA_CRITERIA)} (default: %(default)s)",
    )
    parser.add_argument(
        "--scope", default="layer", help=f"{', '.join(SCOPES)} (default: %(default)s)"
    )
    parser.add_argument(
        "--num-classes", type=int, metavar="N", help="replace the classifier to output N classes"
    )
    parser.add_argument(
        "--ignore",
        type=_names,
        default=None,
        metavar="NAMES",
        help="comma-separated module names or patterns whose channels must not change (a "
        "container keeps everything inside it), e.g. 'bn1,layer?.?.bn2' for the batch norms of "
        "a CIFAR ResNet's residual streams",
    )
    parser.add_argument(
        "--amounts",
        type=_amounts,
        default=None,
        metavar="NAME=F,...",
        help="per-layer shares of filters to remove that replace --amount (with --scope "
        "layer; with --data every slice takes each layer's own share), e.g. "
        "'layer4=0.7,layer1.?.conv1=0': module names or patterns, the first that covers a "
        "layer wins",
    )
    parser.add_argument(
        "--min-channels",
        type=int,
        default=1,
        metavar="N",
        help="fewest filters any pruned layer keeps (default: %(default)s)",
    )
    parser.add_argument(
        "--round-to",
        type=int,
        default=1,
        metavar="N",
        help="kept filter counts are multiples of N where the layer is big enough, e.g. 8 for "
        "channel counts that hardware kernels vectorise well (default: %(default)s)",
    )
    parser.add_argument(
        "--prune-layer-norms",
        action="store_true",
        help="LayerNorms over the channels (ConvNeXt's) lose the pruned channels too, instead "
        "of keeping them; they then normalise over the remaining ones, which changes the "
        "outputs: fine-tune afterwards",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    _add_measure_arguments(parser, saved_files=False)
    parser.set_defaults(
        latency_only={
            action.dest: (action.option_strings[0], action.default)
            for action in parser._actions
            if action.dest in _LATENCY_ONLY
        }
    )
    # --data turns the data-free prune into Molchanov's iterative prune + fine-tune.
    from netsurgeon.vision.arguments import add_iterative_arguments

    own = {action.dest for action in parser._actions}
    add_iterative_arguments(parser)
    # Options only the iterative prune reads, with their flag and default: without --data
    # they would be silently ignored, so run_prune refuses them.
    parser.set_defaults(
        iterative_only={
            action.dest: (action.option_strings[0], action.default)
            for action in parser._actions
            if action.dest not in own and action.dest != "data" and action.option_strings
        }
    )
    parser.set_defaults(func=with_threads(run_prune))


def _names(text: str) -> list[str]:
    """``--ignore``'s comma-separated module names (an empty entry is a name left out)."""
    try:
        names = comma_list(text, name="ignore", flag="--ignore")
    except ConfigError:
        names = None
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated module names, got {text!r}; separate them with single commas"
        )
    return names


def _amounts(text: str) -> dict[str, float]:
    """``--amounts``' ``name=fraction`` entries, in order."""
    out: dict[str, float] = {}
    for entry in text.split(","):
        name, sep, value = entry.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = None
        if not sep or not name.strip() or share is None:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated NAME=FRACTION entries, got {entry!r} in {text!r}"
            )
        out[name.strip()] = share
    return out


def run_prune(args: argparse.Namespace) -> int:
    """Carry out ``netsurgeon prune``; returns the exit status."""
    if getattr(args, "data", None) is not None:
        _import_vision_models()  # the iterative prune builds a model and reads images
        from netsurgeon.vision.iterative import run_iterative_from_args

        _refuse_latency_options(args)
        _check_positive("--min-channels", args.min_channels)
        _check_positive("--round-to", args.round_to)
        return run_iterative_from_args(args)
    for dest, (flag, default) in getattr(args, "iterative_only", {}).items():
        if getattr(args, dest, default) != default:
            raise ConfigError(
                f"{flag} needs --data DIR (training images to prune and fine-tune on); "
                f"add --data or drop {flag}"
            )
    amount, target_macs = _check_target(args.amount, args.target_macs)
    criterion = _check_criterion(args.criterion)
    if args.scope not in SCOPES:
        raise ConfigError(f"--scope {args.scope!r} is not allowed; use one of {', '.join(SCOPES)}")
    _check_positive("--num-classes", args.num_classes, optional=True)
    _check_positive("--min-channels", args.min_channels)
    _check_positive("--round-to", args.round_to)
    _check_measure_arguments(args)
    import torch

    from netsurgeon.fileio import check_file_target
    from netsurgeon.pruning.stats import check_input_size, format_comparison, resolve_device

    out = check_file_target(args.out, "--out")  # a missing folder is created on saving
    device = resolve_device(args.device)

    models = _import_vision_models()
    from netsurgeon.pruning import io as checkpoint_io
    from netsurgeon.pruning import prune
    from netsurgeon.pruning.criteria import get_criterion

    torch.manual_seed(args.seed)
    _progress(f"building {args.model} (weights={args.weights})")
    model = models.build_model(args.model, weights=args.weights, num_classes=args.num_classes)
    model.to(device).eval()
    if args.input_size is None:
        args.input_size = models.default_input_size(args.model)

    _progress("measuring the unpruned model")
    check_input_size(model, args.input_size, name=args.model)
    before = _measure(model, args, device)
    example = torch.randn(1, 3, args.input_size, args.input_size, device=device)
    _progress(f"pruning with {criterion} ({args.scope} scope)")
    start = time.perf_counter()
    result = prune(
        model,
        example,
        amount=amount,
        target_macs=target_macs,
        criterion=get_criterion(criterion, seed=args.seed),  # "random" draws from --seed
        scope=args.scope,
        ignore=args.ignore,
        min_channels=args.min_channels,
        round_to=args.round_to,
        amounts=args.amounts,
        prune_layer_norms=args.prune_layer_norms,
    )
    prune_seconds = time.perf_counter() - start
    _progress("measuring the pruned model")
    after = _measure(model, args, device)

    settings = {
        "model": args.model,
        "weights": str(args.weights),
        "criterion": criterion,
        "scope": args.scope,
        "amount": amount,
        "target_macs": target_macs,
        "num_classes": args.num_classes,
        "input_size": args.input_size,
        "ignore": args.ignore,
        "amounts": args.amounts,
        "min_channels": args.min_channels,
        "round_to": args.round_to,
        "prune_layer_norms": args.prune_layer_norms,
        "seed": args.seed,
    }
    arch_kwargs = None if args.num_classes is None else {"num_classes": args.num_classes}
    saved = checkpoint_io.save(
        model, out, arch=args.model, arch_kwargs=arch_kwargs, extra={"prune": settings}
    )

    if args.json:
        report = {
            **settings,
            "out": str(saved),
            "prune_seconds": prune_seconds,
            "before": before.as_dict(),
            "after": after.as_dict(),
            "ratios": _ratios(before, after),
            "skipped": list(result.skipped),
            "channels": {name: list(pair) for name, pair in result.channels.items()},
        }
        print(json.dumps(report, indent=2))
        return 0
    target_text = f"amount {amount}" if amount is not None else f"target MACs {target_macs}"
    print(
        f"pruned {args.model} with {criterion} ({args.scope} scope, {target_text}) "
        f"in {prune_seconds:.2f} s: {len(result.channels)} layers pruned"
    )
    print(format_comparison(before, after))
    if result.skipped:
        print(f"kept unpruned ({len(result.skipped)}):")
        # Channel groups with the same description (the two zero pads of one stream) once.
        for reason, count in Counter(result.skipped).items():
            print(f"  - {reason}" + (f" ({count} groups)" if count > 1 else ""))
    else:
        print("kept unpruned: nothing")
    print(f"saved to {saved}")
    return 0


# The latency measurement's options: the iterative prune (--data) measures no latency, so
# they would be silently ignored there.
_LATENCY_ONLY = ("batch_size", "warmup", "repeats")


def _refuse_latency_options(args: argparse.Namespace) -> None:
    """With --data, refuse the latency options given other values than their defaults."""
    for dest, (flag, default) in getattr(args, "latency_only", {}).items():
        if getattr(args, dest, default) != default:
            hint = " (for the fine-tuning batch size use --train-batch-size)"
            raise ConfigError(
                f"{flag} has no effect with --data: iterative pruning reports accuracy, "
                f"parameters and MACs, not latency{hint if dest == 'batch_size' else ''}; "
                f"drop {flag}, or measure the saved model with `netsurgeon stats FILE {flag} ...`"
            )


def _check_target(
    amount: float | None, target_macs: float | None
) -> tuple[float | None, float | None]:
    """Exactly one of the two targets, each a fraction strictly inside (0, 1)."""
    if (amount is None) == (target_macs is None):
        given = "both" if amount is not None else "neither"
        raise ConfigError(
            f"give exactly one of --amount (fraction of filters to remove) and --target-macs "
            f"(fraction of MACs to keep); got {given}"
        )
    for flag, value in (("--amount", amount), ("--target-macs", target_macs)):
        if value is not None and not (math.isfinite(value) and 0.0 < value < 1.0):
            raise ConfigError(f"{flag} {value} is not allowed; it must be in (0, 1)")
    return amount, target_macs


def _check_criterion(name: str) -> str:
    if name in DATA_FREE_CRITERIA:
        return name
    if name in DATA_CRITERIA:
        raise ConfigError(
            f"--criterion {name!r} scores filters from activations, so it needs training data "
            f"and a loss: pass --data DIR (an ImageFolder), or use a data-free criterion: "
            f"{', '.join(DATA_FREE_CRITERIA)}"
        )
    raise ConfigError(
        f"--criterion {name!r} is unknown; use one of {', '.join(DATA_FREE_CRITERIA)} "
        f"({', '.join(DATA_CRITERIA)} need data)"
    )


def _ratios(before: ModelStats, after: ModelStats) -> dict[str, float | None]:
    """``after / before`` of each figure, ``None`` where it is undefined."""
    ratios: dict[str, float | None] = {}
    for name in ("params", "macs", "size_bytes", "latency_ms"):
        old, new = getattr(before, name), getattr(after, name)
        ratios[name] = None if old in (None, 0) or new is None else new / old
    return ratios


# --------------------------------------------------------------------------- stats


def _add_stats(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats",
        help=COMMANDS["stats"].help,
        description=(
            "Measure a saved netsurgeon model (an existing file) or a freshly built, randomly "
            "initialised torchvision model (a builder name)."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL_OR_FILE",
        help="a file written by netsurgeon prune or netsurgeon.pruning.io.save, or a builder name",
    )
    parser.add_argument(
        "--num-classes", type=int, metavar="N", help="classes of a built model (builder only)"
    )
    _add_measure_arguments(parser, saved_files=True)
    parser.set_defaults(func=with_threads(run_stats))


def run_stats(args: argparse.Namespace) -> int:
    """Carry out ``netsurgeon stats``; returns the exit status."""
    _check_positive("--num-classes", args.num_classes, optional=True)
    _check_measure_arguments(args)
    from netsurgeon.pruning.stats import check_input_size, format_stats, resolve_device

    device = resolve_device(args.device)
    model, source, input_size = _load_or_build(args.model, num_classes=args.num_classes)
    model.to(device).eval()
    if args.input_size is None:
        args.input_size = input_size
    check_input_size(model, args.input_size, name=args.model)
    stats = _measure(model, args, device)
    if args.json:
        print(json.dumps({"model": args.model, "source": source, **stats.as_dict()}, indent=2))
    else:
        print(format_stats(stats, title=args.model))
    return 0


def _load_or_build(name: str, *, num_classes: int | None) -> tuple[nn.Module, str, int]:
    """An existing file is loaded; anything else is treated as a builder name.

    Returns the model, ``"file"`` or ``"builder"``, and the input size the model is meant for.
    """
    path = Path(name)
    if path.is_file():
        if num_classes is not None:
            raise ConfigError(
                "--num-classes applies to builder names only; a saved model keeps its classes"
            )
        from netsurgeon.pruning import io as checkpoint_io

        payload = checkpoint_io.read_checkpoint(path)
        model = checkpoint_io.model_from_checkpoint(payload, source=path)
        return model, "file", _import_vision_models().checkpoint_input_size(payload)
    if path.is_dir():
        raise ConfigError(f"{name!r} is a directory, not a model file or a builder name")
    if os.sep in name or path.suffix in _CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{name!r}: no such file")
    models = _import_vision_models()
    model = models.build_model(name, weights="none", num_classes=num_classes)
    return model, "builder", models.default_input_size(name)


# --------------------------------------------------------------------------- models


def _add_models(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help=COMMANDS["models"].help,
        description="List the names that prune and stats accept as MODEL, one per line; "
        "they also accept timm:NAME for any name of timm.list_models() (pip install timm).",
    )
    parser.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    """Carry out ``netsurgeon models``; returns the exit status."""
    del args  # no options
    list_models = _import_vision_models().list_models
    try:
        for name in list_models():
            print(name)
        sys.stdout.flush()
    except BrokenPipeError:
        # `netsurgeon models | head` closed the pipe early; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# --------------------------------------------------------------------------- shared


def _add_measure_arguments(parser: argparse.ArgumentParser, *, saved_files: bool) -> None:
    group = parser.add_argument_group("measurement")
    saved = "; for a saved file, the size it was trained or pruned at" if saved_files else ""
    group.add_argument(
        "--input-size",
        type=int,
        metavar="S",
        help="height and width of the random input images (default: the size the model is "
        f"built for: 32 for the CIFAR ResNets, 224 for most others{saved})",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="N",
        help="batch size of the latency measurement; MACs are per image (default: %(default)s)",
    )
    group.add_argument(
        "--device",
        default="auto",
        help=f"{', '.join(DEVICES)} or cuda:N; auto picks CUDA when available "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--warmup", type=int, default=3, metavar="K", help="untimed runs (default: %(default)s)"
    )
    group.add_argument(
        "--repeats",
        type=int,
        default=10,
        metavar="K",
        help="timed runs; the median is reported (default: %(default)s)",
    )
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for torch (default: torch's choice, usually one per core)",
    )
    group.add_argument("--json", action="store_true", help="print JSON on stdout instead")


def _check_measure_arguments(args: argparse.Namespace) -> None:
    # Checked before any model is built or downloaded, so a typo fails at once.
    _check_positive("--input-size", args.input_size, optional=True)
    _check_positive("--batch-size", args.batch_size)
    _check_positive("--repeats", args.repeats)
    _check_positive("--threads", args.threads, optional=True)
    if args.warmup < 0:
        raise ConfigError(f"--warmup {args.warmup} is not allowed; it must be >= 0")


def _check_positive(flag: str, value: int | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < 1:
        raise ConfigError(f"{flag} {value} is not allowed; it must be an integer >= 1")


def with_threads(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run ``command`` with ``--threads`` torch threads, then restore the previous setting.

    Restoring keeps in-process callers (tests, notebooks) unaffected by one command.
    """

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        import torch

        previous = torch.get_num_threads()
        if args.threads is not None:
            _check_positive("--threads", args.threads)
            torch.set_num_threads(args.threads)
        try:
            return command(args)
        finally:
            torch.set_num_threads(previous)

    return run


def _measure(model: nn.Module, args: argparse.Namespace, device: torch.device) -> ModelStats:
    from netsurgeon.pruning.stats import ModelStats

    return ModelStats.measure(
        model,
        input_size=args.input_size,
        batch_size=args.batch_size,
        warmup=args.warmup,
        repeats=args.repeats,
        device=device,
    )


def _import_vision_models() -> ModuleType:
    try:
        import torchvision  # noqa: F401  # netsurgeon.vision.models imports it only when used

        from netsurgeon.vision import models
    except ModuleNotFoundError as exc:
        if exc.name == "torchvision":
            raise NetsurgeonError(
                "building models needs torchvision: pip install 'netsurgeon[vision]'"
            ) from exc
        raise
    return models


def _progress(message: str) -> None:
    """Tell a person at a terminal what the slow steps are doing; stay quiet otherwise."""
    if sys.stderr.isatty() and not os.environ.get("CI"):
        print(f"netsurgeon: {message} ...", file=sys.stderr, flush=True)
