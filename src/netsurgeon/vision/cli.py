"""The transfer-learning subcommands: ``netsurgeon finetune`` and ``netsurgeon export``.

Thin layers over :func:`netsurgeon.vision.iterative.finetune` and
:func:`netsurgeon.vision.export.export_checkpoint`; user errors are raised as
:class:`~netsurgeon.errors.NetsurgeonError` and printed as one line by the dispatcher.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from netsurgeon.choices import EXPORT_FORMATS, EXPORTERS
from netsurgeon.commands import COMMANDS
from netsurgeon.errors import ConfigError
from netsurgeon.vision.arguments import add_finetune_arguments

__all__ = ["add_commands", "run_export", "run_finetune"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finetune`` and ``export`` on the top-level parser's subparsers."""
    finetune = subparsers.add_parser(
        "finetune",
        help=COMMANDS["finetune"].help,
        description=(
            "Build MODEL with its classifier head sized to the data's classes, fine-tune it on "
            "an ImageFolder data set with a checkpoint after every epoch (--resume continues "
            "after the last finished one), and save it to --out in netsurgeon's format "
            "(`netsurgeon stats FILE` and `netsurgeon export FILE` read it)."
        ),
    )
    add_finetune_arguments(finetune)
    finetune.set_defaults(func=run_finetune)

    export = subparsers.add_parser(
        "export",
        help=COMMANDS["export"].help,
        description=(
            "Load a netsurgeon model file (pruned or not) and export it with a dynamic batch "
            "dimension. ONNX needs the export extra: pip install 'netsurgeon[export]'."
        ),
    )
    export.add_argument("file", metavar="FILE", type=Path, help="a netsurgeon model file")
    export.add_argument(
        "--format", required=True, choices=EXPORT_FORMATS, help="onnx or torchscript"
    )
    export.add_argument(
        "--out", type=Path, metavar="PATH", help="default: FILE with .onnx or .torchscript.pt"
    )
    export.add_argument(
        "--input-size",
        type=int,
        metavar="S",
        help="side of the example input (default: the size recorded in FILE, else the size its "
        "architecture is built for: 32 for the CIFAR ResNets, 299 for inception_v3, else 224)",
    )
    export.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default=None,
        help="ONNX exporter: torch.export-based dynamo or the deprecated TorchScript-based "
        "legacy one (default: dynamo)",
    )
    export.add_argument(
        "--opset",
        type=int,
        metavar="N",
        help="ONNX opset: 18 to the newest this torch writes (23 with torch 2.14) with the dynamo "
        "exporter, 7-20 with the legacy one; a model may need more than the lowest "
        "(default: the exporter's)",
    )
    export.add_argument(
        "--verify",
        choices=("auto", "yes", "no"),
        default="auto",
        help="compare the export's outputs with PyTorch's; auto does so for ONNX when "
        "onnxruntime is installed and always for TorchScript (default: auto)",
    )
    export.add_argument(
        "--atol", type=float, default=1e-4, help="allowed absolute difference (default: 1e-4)"
    )
    export.add_argument(
        "--rtol",
        type=float,
        default=1e-5,
        help="plus this share of the largest output, as in torch.allclose (default: 1e-5)",
    )
    export.add_argument("--json", action="store_true", help="print the result as JSON")
    export.set_defaults(func=run_export)


def run_finetune(args: argparse.Namespace) -> int:
    """Carry out ``netsurgeon finetune``; returns the exit status."""
    # Imported here: the parser is built without PyTorch (see netsurgeon.vision.arguments).
    from netsurgeon.vision.iterative import run_finetune_from_args

    return run_finetune_from_args(args)


def run_export(args: argparse.Namespace) -> int:
    """Carry out ``netsurgeon export``; returns the exit status."""
    from netsurgeon.fileio import check_file_target
    from netsurgeon.vision.export import export_checkpoint

    if args.input_size is not None and args.input_size < 1:
        raise ConfigError(f"--input-size {args.input_size} is not allowed; use an integer >= 1")
    for flag, value in (("--opset", args.opset), ("--exporter", args.exporter)):
        if value is not None and args.format != "onnx":
            raise ConfigError(f"{flag} applies to --format onnx only, not {args.format}")
    if args.out is not None:
        check_file_target(args.out, "--out")  # not a folder, nor under a file
    verify = args.verify == "yes" or (
        args.verify == "auto"
        and (args.format == "torchscript" or importlib.util.find_spec("onnxruntime") is not None)
    )
    result = export_checkpoint(
        args.file,
        format=args.format,
        out=args.out,
        input_size=args.input_size,
        exporter=args.exporter or "dynamo",
        opset=args.opset,
        verify=verify,
        atol=args.atol,
        rtol=args.rtol,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(result.path),
                    "format": result.format,
                    # null: the batch size is free in the file (2 is only the traced one)
                    "input_shape": [None, *result.input_shape[1:]],
                    "max_abs_diff": result.max_abs_diff,
                },
                indent=2,
            )
        )
        return 0
    shape = "x".join(str(s) for s in result.input_shape[1:])
    print(f"exported {args.file} to {result.path} ({result.format}, input batch x {shape})")
    if result.max_abs_diff is not None:
        print(f"verified: largest difference from PyTorch {result.max_abs_diff:.3g}")
    elif args.verify == "no":
        print("not verified (--verify no)")
    else:  # auto, for ONNX without onnxruntime
        print("not verified: onnxruntime is not installed (pip install 'netsurgeon[export]')")
    return 0
