"""GroupNorm pruning, netsurgeon next to Torch-Pruning: do filters that output zero go without
changing the model's outputs?

A torchvision resnet18 built with GroupNorm layers (``norm_layer=GroupNorm(--groups, C)``,
random weights, the norms' scales and shifts drawn at random too) gets half the groups of every
prunable channel group zeroed: the filters, their biases and the norms' scales and shifts, so
those channels output exactly zero. Each engine then prunes half the filters of every layer
with a magnitude criterion, which picks the zeroed filters:

* netsurgeon: ``prune(model, x, amount=0.5, criterion="l1")``;
* Torch-Pruning 1.6.1: ``tp.pruner.BasePruner`` with ``GroupMagnitudeImportance(p=1)``,
  ``pruning_ratio=0.5`` and the classifier in ``ignored_layers``.

Removing channels that are exactly zero should leave the outputs as they were. It does only if
the GroupNorms lose whole groups: removing part of a group changes that group's mean and
variance. The script prints each engine's parameter ratio, its GroupNorm sizes, and the largest
change of the outputs against the output scale.

Run from the repository root (needs the ``bench`` and ``vision`` extras)::

    python benchmarks/group_norm_exactness.py [--groups 32] [--input-size 64] [--seed 0]
        [--json-out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
import torchvision
from torch import nn

from exactness_common import randomise_norms, zero_half
from netsurgeon import prune
from netsurgeon.fileio import atomic_write_text
from netsurgeon.pruning import count_params, trace_graph


def build(groups: int, seed: int) -> nn.Module:
    """A GroupNorm resnet18 with random norm scales and shifts."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(
        norm_layer=lambda channels: nn.GroupNorm(groups, channels), num_classes=10
    ).eval()
    randomise_norms(model)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=32, help="GroupNorm groups (default 32)")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    model = build(args.groups, args.seed)
    x = torch.randn(4, 3, args.input_size, args.input_size)
    zeroed = zero_half(model, trace_graph(model, x))
    with torch.no_grad():
        reference = model(x)
    ours = copy.deepcopy(model)
    prune(ours, x, amount=0.5, criterion="l1")
    theirs = copy.deepcopy(model)
    tp.pruner.BasePruner(
        theirs,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[theirs.fc],
    ).step()
    rows: dict[str, Any] = {}
    with torch.no_grad():
        for engine, pruned in (("netsurgeon", ours), ("torch-pruning", theirs)):
            norm = pruned.layer1[0].bn1
            rows[engine] = {
                "params_ratio": count_params(pruned) / count_params(model),
                "layer1.0.bn1": f"GroupNorm({norm.num_groups}, {norm.num_channels})",
                "max_output_change": float((pruned(x) - reference).abs().max()),
            }
    scale = float(reference.abs().max())
    print(
        f"resnet18 with GroupNorm({args.groups}, C), {zeroed} channels zeroed in whole groups, "
        f"input {args.input_size} px; output scale (max |output|) {scale:.3g}\n"
    )
    print("| engine | params after / before | layer1.0.bn1 after | max output change |")
    print("|---|---|---|---|")
    for engine, row in rows.items():
        print(
            f"| {engine} | {row['params_ratio']:.3f} | {row['layer1.0.bn1']} | "
            f"{row['max_output_change']:.2e} |"
        )
    if args.json_out:
        payload = {"args": {**vars(args), "json_out": str(args.json_out)}, "zeroed": zeroed,
                   "output_scale": scale, "engines": rows}  # fmt: skip
        atomic_write_text(args.json_out, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
