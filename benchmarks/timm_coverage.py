"""Pruning timm's CNNs, netsurgeon next to Torch-Pruning: how much of each model can go, and do
filters that output zero go without changing the outputs?

Each model is built by ``timm.create_model(name, num_classes=10)`` with random weights, and its
norms' scales, shifts and statistics are drawn at random. Half the channels of every channel
group netsurgeon finds prunable are zeroed (the filters, their biases and the norms' scales and
shifts: those channels output exactly zero; equal shares of a grouped layer's parts, whole
GroupNorm groups). Then each engine prunes half the filters of every layer it can with a
magnitude criterion, which picks the zeroed filters first:

* netsurgeon: ``prune(model, x, amount=0.5, criterion="l1")``;
* Torch-Pruning 1.6.1: ``tp.pruner.BasePruner`` with
  ``GroupMagnitudeImportance(p=1, group_reduction="first")`` (each group ranked by the filters
  of the layer that leads it: its default sum over the whole group also counts the next
  layers' weights on the zeroed channels, which are not zero, and picks other channels),
  ``pruning_ratio=0.5`` and the classifier in ``ignored_layers``.

The script prints, per model and engine, the parameters left, the largest change of the outputs
relative to the output scale, and the pruning time, the best of ``--repeats`` prunes of fresh
copies (or the error). netsurgeon removes only the
zeroed channels, so its change must be rounding (about 1e-6). Torch-Pruning also prunes
channels netsurgeon keeps (a layer netsurgeon cannot follow exactly), so its change mixes those
real removals with any inexact cut. Random-weight models whose outputs explode amplify rounding
(an output scale far above 1e3 is flagged).

With ``--prune-layer-norms`` netsurgeon also cuts the LayerNorms over the channels (ConvNeXt's
residual streams), as Torch-Pruning does: such a cut is not exact (the LayerNorm then
normalises the kept channels over themselves), so the change is no longer rounding for either.

Run from the repository root (needs the ``bench`` extra and ``pip install timm``)::

    python benchmarks/timm_coverage.py [--models resnet18,mobilenetv2_100,...]
        [--input-size 64] [--threads 1] [--repeats 3] [--prune-layer-norms] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exactness_common import randomise_norms, zero_half
from netsurgeon import prune
from netsurgeon.fileio import atomic_write_text
from netsurgeon.pruning import count_params, trace_graph

MODELS = (
    "resnet18", "resnext26ts", "seresnet18", "efficientnet_b0", "mobilenetv2_100",
    "mobilenetv3_small_100", "regnetx_002", "regnety_002", "densenet121", "cspresnet50",
    "dla34", "vovnet39a", "repvgg_a0", "ghostnet_100", "convnext_atto", "tf_efficientnet_b0",
    "lambda_resnet26t",
)  # fmt: skip


def _netsurgeon(model: nn.Module, x: torch.Tensor, *, prune_layer_norms: bool = False) -> None:
    prune(model, x, amount=0.5, criterion="l1", prune_layer_norms=prune_layer_norms)


def _torch_pruning(model: nn.Module, x: torch.Tensor) -> None:
    import torch_pruning as tp

    classifier = model.get_classifier()
    tp.pruner.BasePruner(
        model,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=1, group_reduction="first"),
        pruning_ratio=0.5,
        ignored_layers=[classifier] if isinstance(classifier, nn.Module) else [],
    ).step()


def measure(
    name: str, size: int, seed: int, repeats: int, prune_layer_norms: bool = False
) -> dict[str, Any]:
    """Both engines on one model; errors are recorded, not raised."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    randomise_norms(model)
    x = torch.randn(2, 3, size, size)
    graph = trace_graph(model, x, prune_layer_norms=prune_layer_norms)
    row: dict[str, Any] = {"model": name, "zeroed": zero_half(model, graph)}
    with torch.no_grad():
        reference = model(x)
    row["output_scale"] = float(reference.abs().max())
    ours = functools.partial(_netsurgeon, prune_layer_norms=prune_layer_norms)
    for engine, run in (("netsurgeon", ours), ("torch-pruning", _torch_pruning)):
        try:
            seconds = float("inf")
            for _ in range(repeats):  # the best of a few fresh copies
                pruned = copy.deepcopy(model)
                start = time.perf_counter()
                run(pruned, x)
                seconds = min(seconds, time.perf_counter() - start)
            with torch.no_grad():
                change = float((pruned(x) - reference).abs().max()) / row["output_scale"]
            row[engine] = {
                "params_ratio": count_params(pruned) / count_params(model),
                "relative_output_change": change,
                "seconds": seconds,
            }
        except Exception as exc:  # the engine's failure is the result
            first = (str(exc).splitlines() or [""])[0]  # some errors have no message
            row[engine] = {"error": f"{type(exc).__name__}: {first[:120]}"}
    return row


def _cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"fails ({result['error']}) | - | -"
    return (
        f"{result['params_ratio']:.3f} | {result['relative_output_change']:.1e} | "
        f"{result['seconds']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="prunes timed; the best counts")
    parser.add_argument(
        "--prune-layer-norms", action="store_true", help="netsurgeon cuts LayerNorms too"
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        import timm  # noqa: F401
    except ImportError:
        parser.error("this benchmark needs timm: pip install timm")
    torch.set_num_threads(args.threads)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    models = [m for m in args.models.split(",") if m]
    rows = [
        measure(m, args.input_size, args.seed, args.repeats, args.prune_layer_norms) for m in models
    ]
    print(
        f"random weights, input {args.input_size} px, half of every prunable channel group "
        "zeroed, amount 0.5 with a magnitude criterion\n"
    )
    print(
        "| model | output scale | netsurgeon: params left | change | s | "
        "Torch-Pruning: params left | change | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        flag = " (explodes)" if row["output_scale"] > 1e3 else ""
        print(
            f"| {row['model']} | {row['output_scale']:.3g}{flag} | {_cell(row['netsurgeon'])} | "
            f"{_cell(row['torch-pruning'])} |"
        )
    if args.json_out:
        payload = {"args": {**vars(args), "json_out": str(args.json_out)}, "rows": rows}
        atomic_write_text(args.json_out, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
