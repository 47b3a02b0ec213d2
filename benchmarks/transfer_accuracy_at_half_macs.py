"""Accuracy at half the MACs: fine-tuned unpruned vs pruned, with the same fine-tuning budget.

Issue 3's target: on ``../shared/data/cifar10-small``, the pretrained ``cifar_resnet32``
(``../shared/data/resnet_cifar10/resnet32-d509ac18.th``) fine-tuned ``--epochs`` (3) epochs
unpruned, and pruned to ``--target-macs`` (0.5) of its MACs with each of ``--criteria`` and
then fine-tuned with exactly the same configuration and number of epochs. The best criterion's
validation accuracy must be within 2 points of the unpruned model's.

Pruning goes through :func:`netsurgeon.vision.iterative.prune_and_finetune`: with the defaults
(``--prune-steps 1 --finetune-steps 0``) it is a one-shot prune followed by the same
``--epochs`` of fine-tuning as the unpruned model; ``--prune-steps S --finetune-steps K`` adds
Molchanov's iterative slices (then the pruned model gets ``S*K`` extra steps, stated in the
output), unless ``--same-budget`` takes those steps off the final fine-tuning (it then stops
``S*K`` steps before the end of its ``--epochs``, its cosine schedule ending there). Every
epoch's training time and data-wait share are reported too. ``--start finetuned`` prunes the
unpruned model after its ``--epochs`` of fine-tuning instead of the pretrained one: the
transfer-learning pipeline fine-tune, prune, fine-tune (Molchanov et al. 2017), which the
README's recipe follows; the pruned model then has the same fine-tuning budget after pruning,
on top of the unpruned model's.

Recovery aids for the pruned model, with the same number of epochs: ``--distill`` fine-tunes it
with :class:`netsurgeon.distill.DistillationLoss` (teacher: the unpruned model as it was before
pruning, i.e. the pretrained one; ``--distill-temperature``, ``--distill-alpha``; with
``--distill-features 'layer?.?'`` the student also matches the teacher's block outputs, weighted
by ``--distill-feature-weight``; use it with ``--keep-streams``, which keeps their shapes),
``--recalibrate-bn N`` re-estimates its BatchNorm statistics on N training batches right after
pruning (accuracy right after pruning is then reported without and with it),
``--reconstruct N`` refits every layer that lost input channels by least squares on N training
batches per layer (:func:`netsurgeon.reconstruct`; reported the same way), and
``--keep-streams`` prunes only the inner convolutions of the CIFAR ResNet blocks: the batch
norms that follow every residual-stream producer (the stem's ``bn1`` and every block's ``bn2``)
are passed to the pruner as ``ignore``, so the streams keep their width. ``--ignore NAMES``
passes other module names.

Run from the repository root (all of it takes about 20 min on one CPU thread; a GPU makes it
seconds)::

    python benchmarks/transfer_accuracy_at_half_macs.py --json-out /tmp/half_macs.json

A quicker, reduced run on stratified subsets (not the issue's protocol; say so when quoting)::

    python benchmarks/transfer_accuracy_at_half_macs.py --train-subset 2000 --val-subset 1000 \\
        --criteria taylor --threads 1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from netsurgeon.distill import DEFAULT_ALPHA, DEFAULT_FEATURE_WEIGHT, DEFAULT_TEMPERATURE
from netsurgeon.training import SLICE_LRS, History, TrainConfig, atomic_save, evaluate, fit
from netsurgeon.vision import build_model
from netsurgeon.vision.data import load_image_data, make_loader
from netsurgeon.vision.iterative import prune_and_finetune

# The script's own folder is on sys.path when it runs as `python benchmarks/<script>.py`.
from transfer_common import (
    accuracy_right_after_pruning,
    environment,
    log,
    markdown_table,
    pct,
    require,
    shared_root,
    stratified_subset,
    stream_norms,
    write_json,
)

MAX_GAP = 0.02  # the pruned model may be at most 2 accuracy points below the unpruned one


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    data = shared_root() / "data"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=data / "cifar10-small")
    p.add_argument("--weights", default=str(data / "resnet_cifar10" / "resnet32-d509ac18.th"))
    p.add_argument("--model", default="cifar_resnet32")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--criteria", default="taylor,l1,bn_scale", help="comma-separated")
    p.add_argument("--target-macs", type=float, default=0.5)
    p.add_argument("--scope", default="global")
    p.add_argument(
        "--min-channels",
        type=int,
        default=1,
        help="filters every pruned layer keeps at least (the pruner's min_channels)",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--prune-steps", type=int, default=1)
    p.add_argument("--finetune-steps", type=int, default=0)
    p.add_argument("--criterion-batches", type=int, default=8)
    p.add_argument(
        "--slice-lr",
        default="schedule",
        choices=SLICE_LRS,
        help="learning rate of the steps between slices: restart --schedule over each slice's "
        "steps (the default here, so that earlier runs reproduce; the library's default is "
        "constant), or hold --lr",
    )
    p.add_argument(
        "--same-budget",
        action="store_true",
        help="take the S*K steps between slices off the final fine-tuning",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument(
        "--pruned-lr",
        type=float,
        default=None,
        metavar="LR",
        help="learning rate of the pruned model's fine-tuning (default: --lr; the same steps)",
    )
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--train-subset", type=int, default=None, help="stratified subset size")
    p.add_argument("--val-subset", type=int, default=None, help="stratified subset size")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--cache-data", action="store_true",
        help="decode the images once and keep them on the training device (make_loader's cache)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--distill", action="store_true", help="fine-tune the pruned model by distillation"
    )
    p.add_argument("--distill-temperature", type=float, default=DEFAULT_TEMPERATURE)
    p.add_argument("--distill-alpha", type=float, default=DEFAULT_ALPHA)
    p.add_argument(
        "--distill-features",
        default="",
        metavar="NAMES",
        help="with --distill, also match the teacher's outputs of these modules (comma-separated "
        "names or patterns, e.g. 'layer?.?' for every block; needs --keep-streams)",
    )
    p.add_argument("--distill-feature-weight", type=float, default=DEFAULT_FEATURE_WEIGHT)
    p.add_argument(
        "--recalibrate-bn",
        type=int,
        default=0,
        metavar="N",
        help="re-estimate BatchNorm statistics on N training batches after pruning (0: no)",
    )
    p.add_argument(
        "--reconstruct",
        type=int,
        default=0,
        metavar="N",
        help="refit the layers that lost inputs by least squares on N batches per layer (0: no)",
    )
    p.add_argument(
        "--keep-streams",
        action="store_true",
        help="prune only the inner convolutions of the residual blocks (CIFAR ResNets)",
    )
    p.add_argument("--ignore", default="", help="comma-separated module names the pruner keeps")
    p.add_argument(
        "--teacher",
        choices=("pretrained", "finetuned"),
        default="pretrained",
        help="--distill's teacher: the unpruned model before pruning (pretrained, the issue's "
        "protocol) or after its own fine-tuning (finetuned; needs this run's unpruned model "
        "or --unpruned-weights)",
    )
    p.add_argument(
        "--start",
        choices=("pretrained", "finetuned"),
        default="pretrained",
        help="what the pruned model starts from: the pretrained model (the default), or the "
        "unpruned model after its --epochs of fine-tuning, as in the transfer-learning pipeline "
        "fine-tune, prune, fine-tune (Molchanov et al. 2017; the README's recipe); needs this "
        "run's unpruned model or --unpruned-weights",
    )
    p.add_argument(
        "--save-unpruned",
        type=Path,
        default=None,
        metavar="FILE",
        help="save the fine-tuned unpruned model's state_dict here",
    )
    p.add_argument(
        "--unpruned-weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="the state_dict written by --save-unpruned of an earlier run with the same "
        "settings (used with --unpruned-from and --teacher finetuned)",
    )
    p.add_argument(
        "--unpruned-from",
        type=Path,
        default=None,
        metavar="JSON",
        help="reuse the unpruned row of an earlier --json-out with the same data and training "
        "settings instead of fine-tuning the unpruned model again",
    )
    p.add_argument("--json-out", type=Path, default=None)
    return p.parse_args(argv)


def variant(args: argparse.Namespace, criterion: str) -> str:
    """A row label: criterion, scope, schedule and recovery aids."""
    parts = [criterion, args.scope]
    if args.start != "pretrained":
        parts.append(f"pruned from the {args.start} model")
    if args.min_channels > 1:
        parts.append(f"at least {args.min_channels} filters per layer")
    if args.prune_steps > 1:
        parts.append(f"{args.prune_steps} slices x {args.finetune_steps} steps")
        if args.finetune_steps and args.slice_lr != "schedule":
            parts.append(f"slice lr {args.slice_lr}")
        if args.same_budget:
            parts.append("same budget")
    if args.pruned_lr is not None:
        parts.append(f"lr {args.pruned_lr:g}")
    if args.keep_streams:
        parts.append("inner convs")
    if args.reconstruct:
        parts.append(f"reconstructed on {args.reconstruct} batches")
    if args.recalibrate_bn:
        parts.append(f"BN recal {args.recalibrate_bn}")
    if args.distill:
        parts.append(
            f"distill T={args.distill_temperature:g} a={args.distill_alpha:g} from {args.teacher}"
        )
        if args.distill_features:
            parts.append(f"features {args.distill_features} x {args.distill_feature_weight:g}")
    return ", ".join(parts)


def epoch_summary(history: History) -> dict[str, Any]:
    """Mean training time per epoch and the share of it spent waiting for data."""
    times = [r.epoch_time_s for r in history.epochs]
    waits = [r.data_wait_s for r in history.epochs]
    return {
        "epoch_time_s": statistics.mean(times),
        "data_wait_share": sum(waits) / sum(times) if sum(times) else 0.0,
        "epochs": [vars(r) for r in history.epochs],
    }


# Settings that must agree for an earlier run's unpruned row to be comparable.
_SAME_SETTINGS = (
    "data", "weights", "model", "input_size", "epochs", "batch_size", "optimizer", "lr",
    "weight_decay", "schedule", "train_subset", "val_subset", "seed",
)  # fmt: skip


def reuse_unpruned(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The unpruned row of an earlier run, if its settings match this run's."""
    earlier = json.loads(path.read_text(encoding="utf-8"))
    differ = [k for k in _SAME_SETTINGS if str(earlier["settings"].get(k)) != str(getattr(args, k))]
    if differ:
        sys.exit(f"{path} was run with other settings ({', '.join(differ)}); cannot reuse it")
    row = earlier["rows"][0]
    if row["criterion"] != "(unpruned)":
        sys.exit(f"{path} has no unpruned row")
    return {**row, "reused_from": str(path)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # fit() logs every epoch (loss, accuracy, time) at INFO: show it beside our progress lines.
    logging.basicConfig(
        level=logging.WARNING, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("netsurgeon").setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    require(args.data, "the CIFAR-10 subset")
    if args.weights.lower() != "none":
        require(Path(args.weights), "the pretrained checkpoint")
    start = time.perf_counter()
    env_start = environment()
    data = load_image_data(args.data, input_size=args.input_size, seed=args.seed)
    train = stratified_subset(data.train, args.train_subset, seed=args.seed)
    val = stratified_subset(data.val, args.val_subset, seed=args.seed)
    # On a GPU, images travel as uint8 and are normalised there (make_loader's device path).
    train_loader = make_loader(
        train, batch_size=args.batch_size, train=True, seed=args.seed, num_workers=args.workers,
        device=args.device, cache=args.cache_data,
    )  # fmt: skip
    val_loader = make_loader(
        val, batch_size=256, train=False, num_workers=args.workers, device=args.device,
        cache=args.cache_data,
    )  # fmt: skip
    config = TrainConfig(
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
    )
    log(f"{len(train)} training and {len(val)} validation images, {data.num_classes} classes")
    torch.manual_seed(args.seed)  # a new head or random model: the same in every run
    base = build_model(args.model, weights=args.weights, num_classes=data.num_classes)
    pretrained = evaluate(base, val_loader, device=args.device)["accuracy"]
    log(f"pretrained {args.model}: {pct(pretrained)} % before any fine-tuning")

    unpruned = None
    if args.unpruned_from is not None:
        unpruned_row = reuse_unpruned(args.unpruned_from, args)
        if args.unpruned_weights is not None:
            unpruned = copy.deepcopy(base)
            state = torch.load(require(args.unpruned_weights, "--unpruned-weights"),
                               map_location="cpu", weights_only=True)  # fmt: skip
            unpruned.load_state_dict(state)
            acc = evaluate(unpruned, val_loader, device=args.device)["accuracy"]
            if abs(acc - unpruned_row["accuracy_after"]) > 1e-9:
                sys.exit(f"{args.unpruned_weights} scores {pct(acc)} %, not the reused row's")
    else:
        unpruned = copy.deepcopy(base)
        history = fit(unpruned, train_loader, val_loader, config=config)
        if args.save_unpruned is not None:
            atomic_save(unpruned.state_dict(), args.save_unpruned)
        unpruned_row = {
            "criterion": "(unpruned)",
            "macs_ratio": 1.0,
            "params_ratio": 1.0,
            "accuracy_pruned": pretrained,
            "accuracy_after": history.last.val_accuracy if history.last else None,
            **epoch_summary(history),
        }
    acc_unpruned = unpruned_row["accuracy_after"]
    log(f"unpruned, {args.epochs} epochs: {pct(acc_unpruned)} %")
    example = torch.zeros(1, 3, args.input_size, args.input_size)
    ignore = [n.strip() for n in args.ignore.split(",") if n.strip()]
    if args.keep_streams:
        ignore += stream_norms(base)
    if unpruned is None and "finetuned" in (args.start, args.distill and args.teacher):
        sys.exit(
            "--start finetuned and --teacher finetuned need the unpruned model: run it or pass "
            "--unpruned-weights"
        )
    teacher = unpruned if args.distill and args.teacher == "finetuned" else None
    # The model the pruned rows start from, after the unpruned row has used its budget.
    source = unpruned if args.start == "finetuned" else base
    rows = [unpruned_row]
    slice_steps = args.prune_steps * args.finetune_steps
    pruned_config = config
    if args.pruned_lr is not None:
        pruned_config = dataclasses.replace(config, lr=args.pruned_lr)
    if args.same_budget and slice_steps:
        final_steps = args.epochs * len(train_loader) - slice_steps
        if final_steps < 1:
            sys.exit(f"--same-budget: {slice_steps} slice steps leave no final fine-tuning")
        pruned_config = dataclasses.replace(pruned_config, max_steps=final_steps)
    for criterion in [c.strip() for c in args.criteria.split(",") if c.strip()]:
        model = copy.deepcopy(source)
        # The criterion scores the loader's first batches: show it epoch 0's, as a run that
        # reuses the unpruned row does, not those of the unpruned fit's last epoch.
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(0)
        result = prune_and_finetune(
            model,
            train_loader,
            val_loader,
            example_inputs=example,
            config=pruned_config,
            criterion=criterion,
            target_macs=args.target_macs,
            prune_steps=args.prune_steps,
            finetune_steps=args.finetune_steps,
            finetune_epochs=args.epochs,
            scope=args.scope,
            min_channels=args.min_channels,
            criterion_batches=args.criterion_batches,
            ignore=ignore or None,
            # The one-shot copy measures accuracy right after pruning without (and with)
            # repairs; a one-shot run without repairs is that copy itself.
            oneshot_baseline=args.prune_steps > 1 or bool(args.recalibrate_bn or args.reconstruct),
            distill=args.distill,
            distill_temperature=args.distill_temperature,
            distill_alpha=args.distill_alpha,
            distill_features=[f.strip() for f in args.distill_features.split(",") if f.strip()],
            distill_feature_weight=args.distill_feature_weight,
            recalibrate_bn=args.recalibrate_bn,
            reconstruct=args.reconstruct,
            teacher=teacher,
            slice_lr=args.slice_lr,
        )
        assert result.history is not None
        rows.append(
            {
                "criterion": criterion,
                "variant": variant(args, criterion),
                "macs_ratio": result.macs_ratio,
                "params_ratio": result.params_ratio,
                "accuracy_pruned": accuracy_right_after_pruning(result),
                "accuracy_reconstructed": result.accuracy_reconstructed,
                "accuracy_recalibrated": result.accuracy_recalibrated,
                "accuracy_after": result.accuracy_after,
                "extra_steps": 0 if args.same_budget else slice_steps,
                # Filters per pruned layer: where the MACs were taken from.
                "channels": {k: list(v) for k, v in result.channels.items()},
                **epoch_summary(result.history),
            }
        )
        log(
            f"{variant(args, criterion)}: {result.macs_ratio:.3f} of the MACs, "
            f"{pct(result.accuracy_after)} %"
        )

    pruned_rows = rows[1:]
    best = max(pruned_rows, key=lambda r: r["accuracy_after"]) if pruned_rows else None
    gap = (acc_unpruned - best["accuracy_after"]) if best and acc_unpruned is not None else None
    table = markdown_table(
        (
            "model",
            "MACs ratio",
            "params ratio",
            "val acc before fine-tuning (%)",
            "after reconstruction (%)",
            "after BN recal (%)",
            "val acc per epoch (%)",
            f"val acc after {args.epochs} epochs"
            + ("' steps (%)" if args.same_budget and slice_steps else " (%)"),
            "gap to unpruned (points)",
            "s / epoch",
            "data wait",
        ),
        [
            (
                r.get("variant", r["criterion"]),
                f"{r['macs_ratio']:.3f}",
                f"{r['params_ratio']:.3f}",
                pct(r["accuracy_pruned"]),
                pct(r.get("accuracy_reconstructed")),
                pct(r.get("accuracy_recalibrated")),
                ", ".join(pct(e["val_accuracy"]) for e in r["epochs"]),
                pct(r["accuracy_after"]),
                "-" if r is unpruned_row else f"{100 * (acc_unpruned - r['accuracy_after']):.2f}",
                f"{r['epoch_time_s']:.1f}",
                f"{100 * r['data_wait_share']:.1f} %",
            )
            for r in rows
        ],
    )
    print(table)
    if best is not None and gap is not None:
        # Accuracies are image counts over the validation size: 0.933 - 0.913 is 2 points
        # exactly, though not in binary floating point.
        verdict = "MET" if gap <= MAX_GAP + 1e-9 else "MISSED"
        print(
            f"\nbest criterion: {best['criterion']}; gap {100 * gap:.2f} points "
            f"(target <= {100 * MAX_GAP:.0f}): {verdict}"
        )
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    write_json(
        args.json_out,
        {
            "settings": vars(args),
            "environment_start": env_start,
            "environment_end": environment(),
            "train_images": len(train),
            "val_images": len(val),
            "pretrained_accuracy": pretrained,
            "rows": rows,
            "best": best["criterion"] if best else None,
            "gap": gap,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
