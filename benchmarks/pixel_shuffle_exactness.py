"""Sub-pixel upsampling (PixelShuffle), netsurgeon next to Torch-Pruning: what can each engine
prune in a super-resolution network, and do filters that output zero go without changing the
outputs?

Two networks, random weights:

* ``espcn``: ESPCN (Shi et al. 2016) for x3 upscaling of one channel: convolutions 5x5 to 64,
  3x3 to 32, 3x3 to 32 x 3 x 3, ``PixelShuffle(3)``, and a 3x3 convolution to the output
  (the paper's last layer is the shuffle; one more convolution after it makes the shuffled
  channels prunable: its 32 input channels are the blocks of 9 filters before it);
* ``edsr``: an EDSR-baseline-like x4 network (Lim et al. 2017): a head convolution to 64
  channels, 4 residual blocks, a long skip, an upsampler of two ``conv 64 -> 256,
  PixelShuffle(2)`` stages, and a tail convolution to 3 channels.

Half of every prunable channel group netsurgeon finds is zeroed (the filters and their biases;
for a PixelShuffle, whole blocks of r x r filters), so those channels output exactly zero. Each
engine then prunes half the filters of every layer with a magnitude criterion, which picks the
zeroed filters:

* netsurgeon: ``prune(model, x, amount=0.5, criterion="l1")``;
* Torch-Pruning 1.6.1: ``tp.pruner.BasePruner`` with ``GroupMagnitudeImportance(p=1)``,
  ``pruning_ratio=0.5`` and the output convolution in ``ignored_layers``.

The script prints each engine's parameter and MACs ratios and the largest change of the
outputs against the output scale, or the engine's error.

Run from the repository root (needs the ``bench`` extra)::

    python benchmarks/pixel_shuffle_exactness.py [--models espcn,edsr] [--input-size 24]
        [--seed 0] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from exactness_common import zero_half
from netsurgeon import prune
from netsurgeon.fileio import atomic_write_text
from netsurgeon.pruning import count_macs, count_params, trace_graph


class ESPCN(nn.Module):
    """ESPCN for x``scale`` upscaling, with one convolution after the shuffle."""

    def __init__(self, scale: int = 3, channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 5, padding=2)
        self.conv2 = nn.Conv2d(64, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.out = nn.Conv2d(32, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return self.out(torch.tanh(self.shuffle(self.conv3(x))))


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.conv2(F.relu(self.conv1(x)))


class EDSR(nn.Module):
    """An EDSR-baseline-like x4 network (fewer blocks)."""

    def __init__(self, width: int = 64, blocks: int = 4) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(width) for _ in range(blocks)))
        self.body_out = nn.Conv2d(width, width, 3, padding=1)
        self.up1 = nn.Conv2d(width, 4 * width, 3, padding=1)
        self.up2 = nn.Conv2d(width, 4 * width, 3, padding=1)
        self.tail = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        x = x + self.body_out(self.body(x))
        x = F.pixel_shuffle(self.up2(F.pixel_shuffle(self.up1(x), 2)), 2)
        return self.tail(x)


MODELS: dict[str, tuple[Callable[[], nn.Module], int, str]] = {
    "espcn": (ESPCN, 1, "out"),
    "edsr": (EDSR, 3, "tail"),
}


def run(name: str, size: int, seed: int) -> dict[str, Any]:
    build, channels, output = MODELS[name]
    torch.manual_seed(seed)
    model = build().eval()
    x = torch.randn(2, channels, size, size)
    zeroed = zero_half(model, trace_graph(model, x))
    with torch.no_grad():
        reference = model(x)
    params, macs = count_params(model), count_macs(model, x)
    row: dict[str, Any] = {"zeroed": zeroed, "output_scale": float(reference.abs().max())}
    ours = copy.deepcopy(model)
    result = prune(ours, x, amount=0.5, criterion="l1")
    theirs = copy.deepcopy(model)
    engines: dict[str, Any] = {"netsurgeon": ours}
    try:
        tp.pruner.BasePruner(
            theirs,
            x,
            importance=tp.importance.GroupMagnitudeImportance(p=1),
            pruning_ratio=0.5,
            ignored_layers=[theirs.get_submodule(output)],
        ).step()
        with torch.no_grad():
            theirs(x)
        engines["torch-pruning"] = theirs
    except Exception as exc:  # the peer's failure is the result
        row["torch-pruning"] = {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    with torch.no_grad():
        for engine, pruned in engines.items():
            row[engine] = {
                "params_ratio": count_params(pruned) / params,
                "macs_ratio": count_macs(pruned, x) / macs,
                "max_output_change": float((pruned(x) - reference).abs().max()),
            }
    row["netsurgeon"]["kept"] = result.skipped
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--input-size", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    rows = {name: run(name, args.input_size, args.seed) for name in names}
    print(
        "| model | channels zeroed | engine | params after / before | MACs after / before "
        "| max output change (output scale) |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        for engine in ("netsurgeon", "torch-pruning"):
            r = row[engine]
            if "error" in r:
                print(f"| {name} | {row['zeroed']} | {engine} | fails: {r['error']} | | |")
                continue
            print(
                f"| {name} | {row['zeroed']} | {engine} | {r['params_ratio']:.3f} | "
                f"{r['macs_ratio']:.3f} | {r['max_output_change']:.2e} "
                f"({row['output_scale']:.3g}) |"
            )
    if args.json_out:
        payload = {"args": {**vars(args), "json_out": str(args.json_out)}, "rows": rows}
        atomic_write_text(args.json_out, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
