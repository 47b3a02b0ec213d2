"""Fine-tuning time per epoch against MACs, and the share of it spent waiting for data.

Issue 3's targets: fine-tuning time per epoch falls at least in proportion to 0.8x the MACs
reduction (speed-up = time unpruned / time pruned >= 0.8 x MACs unpruned / MACs pruned), and
data loading is never the bottleneck (the share of training time spent waiting for the next
batch is printed).

For each level in ``--levels`` (fractions of MACs kept; 1.0 is the unpruned model) a copy of
the model is pruned with ``--criterion`` (data-free by default, so the timing is not about the
criterion) and trained with :func:`netsurgeon.training.fit` for ``--max-steps`` optimizer
steps (``0``: a whole epoch) after ``--warmup`` untimed steps. Every level is timed once per
round, for ``--rounds`` rounds, and the median per level is kept, so that a change in machine
load hits all levels alike. Times are per training sample and scaled to one epoch of the
training set.

``--scope global_macs`` ranks filters per MAC saved (it prunes the high-resolution layers,
whose activations dominate memory traffic, more), and ``--round-to 8`` keeps channel counts
that CPU kernels vectorise well; both make the measured speed-up track the MACs more closely.
``--memory-format channels_last`` trains in channels-last order
(``TrainConfig(channels_last=True)``); ``both`` times every level in both orders, in turn, and
also reports each order's speed over the contiguous one. A level's speed-up is always against
the unpruned model in the same order. ``--compile`` trains through :func:`torch.compile`
(``TrainConfig(compile=True)``); the warm-up steps then include the compilation, whose time is
logged and recorded, and the timed steps run the compiled code. ``--amp`` trains in float16
mixed precision (``TrainConfig(amp=True)``, CUDA only). On a GPU the loader sends uint8
images that are normalised on the GPU (``make_loader(device=...)``); ``--cpu-normalize`` keeps
the float pipeline of the loader processes, for comparison. ``--cache-data`` decodes the
images once and keeps them on the training device, where batches are cut and augmented
(``make_loader(cache=True)``): no loader process feeds the timed steps.

Run from the repository root, on a quiet machine::

    python benchmarks/transfer_training_time.py --json-out /tmp/training_time.json
    python benchmarks/transfer_training_time.py --model resnet18 --input-size 224 \\
        --data ../shared/data/hymenoptera --weights none --batch-size 32
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from netsurgeon.pruning import prune
from netsurgeon.pruning.stats import count_macs
from netsurgeon.training import TrainConfig, finetune_steps, fit
from netsurgeon.vision import build_model
from netsurgeon.vision.data import load_image_data, make_loader

# The script's own folder is on sys.path when it runs as `python benchmarks/<script>.py`.
from transfer_common import (
    environment,
    log,
    markdown_table,
    require,
    shared_root,
    stratified_subset,
    write_json,
)

MIN_SPEEDUP_PER_MACS = 0.8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    data = shared_root() / "data"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=data / "cifar10-small")
    p.add_argument("--model", default="cifar_resnet32")
    p.add_argument("--weights", default="none", help="weights do not change the timings")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--levels", default="1.0,0.75,0.5,0.25", help="fractions of MACs kept")
    p.add_argument("--criterion", default="l1")
    p.add_argument("--scope", default="global", help="layer, global or global_macs")
    p.add_argument("--round-to", type=int, default=1,
                   help="kept channel counts are multiples of this (CPU kernels vectorise "
                   "over channels)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-steps", type=int, default=20, help="timed steps per level; 0: epoch")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--memory-format", choices=("contiguous", "channels_last", "both"), default="contiguous"
    )
    p.add_argument(
        "--compile", action="store_true", help="train through torch.compile (warm-up compiles)"
    )
    p.add_argument(
        "--amp", action="store_true", help="float16 mixed precision (CUDA only; TrainConfig.amp)"
    )
    p.add_argument(
        "--cpu-normalize", action="store_true",
        help="on a GPU, still convert and normalise images in the loader processes (the "
        "float pipeline) instead of sending uint8 images to the GPU",
    )  # fmt: skip
    p.add_argument(
        "--cache-data", action="store_true",
        help="decode the images once and keep them on the training device (make_loader's cache)",
    )  # fmt: skip
    p.add_argument(
        "--cudnn-benchmark", action="store_true",
        help="let cuDNN time its algorithms for each new shape (torch.backends.cudnn.benchmark)",
    )  # fmt: skip
    p.add_argument("--json-out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    require(args.data, "the data folder")
    if args.cpu_normalize and args.cache_data:
        sys.exit("--cpu-normalize and --cache-data exclude each other: the cache normalises on "
                 "the training device; pass one of them")  # fmt: skip
    levels = [float(v) for v in args.levels.split(",")]
    env_start = environment()
    data = load_image_data(args.data, input_size=args.input_size, seed=args.seed)
    train = stratified_subset(data.train, args.train_subset, seed=args.seed)
    loader = make_loader(
        train, batch_size=args.batch_size, train=True, seed=args.seed, num_workers=args.workers,
        device=None if args.cpu_normalize else args.device, cache=args.cache_data,
    )  # fmt: skip
    steps_per_epoch = len(loader)
    max_steps = args.max_steps or None
    both = ["contiguous", "channels_last"]
    formats = both if args.memory_format == "both" else [args.memory_format]
    configs = {
        fmt: TrainConfig(
            lr=0.01,
            epochs=1,
            max_steps=max_steps,
            seed=args.seed,
            device=args.device,
            progress=False,
            channels_last=fmt == "channels_last",
            compile=args.compile,
            amp=args.amp,
        )
        for fmt in formats
    }
    example = torch.zeros(1, 3, args.input_size, args.input_size)
    torch.manual_seed(args.seed)  # a new head or random model: the same in every run
    base = build_model(args.model, weights=args.weights, num_classes=data.num_classes)
    base_macs = count_macs(base, example)
    models: dict[tuple[float, str], torch.nn.Module] = {}
    macs_of: dict[float, int] = {}
    for level in levels:
        model = copy.deepcopy(base)
        if level < 1.0:
            prune(
                model, example, target_macs=level, criterion=args.criterion, scope=args.scope,
                round_to=args.round_to,
            )  # fmt: skip
        macs_of[level] = count_macs(model, example)  # the same in either memory order
        for fmt in formats:
            models[level, fmt] = copy.deepcopy(model)
    samples: dict[tuple[float, str], list[dict[str, Any]]] = {key: [] for key in models}
    for round_index in range(args.rounds):
        for (level, fmt), model in models.items():
            config = configs[fmt]
            warmup_s = None
            if args.warmup:
                warmup_s = finetune_steps(model, loader, steps=args.warmup, config=config).time_s
            history = fit(model, loader, None, config=config)
            record = history.epochs[-1]
            samples[level, fmt].append(
                {
                    "time_per_sample_s": record.epoch_time_s / record.samples,
                    "data_wait_share": record.data_wait_share,
                    "steps": record.steps,
                    "samples": record.samples,
                    "warmup_s": warmup_s,
                }
            )
            log(
                f"round {round_index + 1}, level {level} ({fmt}): {record.steps} steps in "
                f"{record.epoch_time_s:.1f} s ({100 * record.data_wait_share:.1f} % waiting)"
                + (f"; warm-up {warmup_s:.1f} s" if warmup_s is not None else "")
            )
    rows = []
    results = []
    per_sample_of = {
        key: statistics.median(s["time_per_sample_s"] for s in runs)
        for key, runs in samples.items()
    }
    for level, fmt in models:
        macs = macs_of[level]
        per_sample = per_sample_of[level, fmt]
        wait = statistics.median(s["data_wait_share"] for s in samples[level, fmt])
        # Against the first level (the unpruned model) in the same memory order.
        speedup = per_sample_of[levels[0], fmt] / per_sample
        vs_contiguous = (
            per_sample_of[level, "contiguous"] / per_sample if len(formats) > 1 else None
        )
        reduction = base_macs / macs
        ok = speedup >= MIN_SPEEDUP_PER_MACS * reduction if level < 1.0 else None
        epoch_s = per_sample * len(train)
        results.append(
            {
                "level": level,
                "memory_format": fmt,
                "speedup_vs_contiguous": vs_contiguous,
                "macs": macs,
                "macs_ratio": macs / base_macs,
                "time_per_sample_s": per_sample,
                "epoch_time_s": epoch_s,
                "speedup": speedup,
                "macs_reduction": reduction,
                "data_wait_share": wait,
                "target_met": ok,
                "rounds": samples[level, fmt],
            }
        )
        rows.append(
            (
                level,
                *([fmt, f"{vs_contiguous:.2f}x"] if vs_contiguous is not None else []),
                f"{macs / 1e6:.1f} M",
                f"{macs / base_macs:.3f}",
                f"{epoch_s:.1f}",
                f"{speedup:.2f}x",
                f"{reduction:.2f}x",
                "-" if ok is None else f"{speedup / reduction:.2f} ({'ok' if ok else 'MISSED'})",
                f"{100 * wait:.1f} %",
            )
        )
    print(
        markdown_table(
            (
                "level",
                *(["memory order", "vs contiguous"] if len(formats) > 1 else []),
                "MACs / image",
                "MACs ratio",
                f"s / epoch ({len(train)} images)",
                "speed-up",
                "MACs reduction",
                "speed-up / MACs red. (>= 0.8)",
                "data wait",
            ),
            rows,
        )
    )
    print(
        f"\n{args.model} at {args.input_size} px, batch {args.batch_size}, "
        f"{max_steps or steps_per_epoch} timed steps per level and round, {args.rounds} rounds, "
        f"memory order: {args.memory_format}"
        + (", torch.compile" if args.compile else "")
        + (", float16 mixed precision" if args.amp else "")
    )
    write_json(
        args.json_out,
        {
            "settings": vars(args),
            # What fed the timed steps: CachedImageLoader with --cache-data, else DataLoader
            # (DeviceNormalizedLoader where a GPU normalises the images).
            "loader": type(loader).__name__,
            "environment_start": env_start,
            "environment_end": environment(),
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    status = main()
    log(f"done in {time.perf_counter() - start:.0f} s")
    sys.exit(status)
