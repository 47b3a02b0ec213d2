"""Taylor pruning (netsurgeon) vs Torch-Pruning's magnitude pruner, same MACs, same fine-tuning.

Issue 3's target: Taylor is at least as accurate as Torch-Pruning's magnitude pruner at the same
MACs with the same fine-tuning. Both start from one model (``--model`` resnet18, fine-tuned
first for ``--pretrain-epochs`` on the data when its weights are not already adapted to it):

* netsurgeon: :func:`netsurgeon.vision.iterative.prune_and_finetune` with ``criterion="taylor"``
  (``--scope``: global, or global_macs to rank per MAC saved) to ``--target-macs``;
  ``--prune-steps 1 --finetune-steps 0`` (the defaults) make it one-shot, then ``--epochs`` of
  fine-tuning;
* Torch-Pruning 1.6.1: ``tp.pruner.BasePruner`` with
  ``tp.importance.GroupMagnitudeImportance(p=--tp-norm)``, the classifier in
  ``ignored_layers`` and the ``pruning_ratio`` found by bisection so that its MACs (counted by
  netsurgeon) are as close as possible to, and not above, the MACs the Taylor model reached;
  then the same ``--epochs`` with the same :class:`~netsurgeon.training.TrainConfig`.

It prints validation accuracy right after pruning and after fine-tuning for both. The CIFAR
ResNets' zero-padding shortcuts break Torch-Pruning, hence resnet18 on hymenoptera.

Run from the repository root (needs the ``bench`` extra)::

    python benchmarks/transfer_taylor_vs_torch_pruning.py --weights DEFAULT --json-out /tmp/tvt.json

Offline, ``--weights none --pretrain-epochs 5`` trains the unpruned model from scratch first.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netsurgeon.pruning.stats import count_macs, count_params
from netsurgeon.training import TrainConfig, evaluate, fit
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
    stream_convs,
    stream_norms,
    write_json,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=shared_root() / "data" / "hymenoptera")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--weights", default="DEFAULT", help="DEFAULT (download), none or a path")
    p.add_argument("--pretrain-epochs", type=int, default=0)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--target-macs", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--prune-steps", type=int, default=1)
    p.add_argument("--finetune-steps", type=int, default=0)
    p.add_argument("--criterion-batches", type=int, default=8)
    p.add_argument("--scope", default="global", help="netsurgeon's ranking: global or global_macs")
    p.add_argument("--tp-norm", type=int, default=2, help="p of GroupMagnitudeImportance")
    p.add_argument("--tp-global", action="store_true", help="Torch-Pruning global_pruning=True")
    p.add_argument(
        "--keep-streams",
        action="store_true",
        help="CIFAR ResNets: both pruners keep the residual streams and prune only each "
        "block's inner channels (Torch-Pruning cannot prune the zero-padded streams)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path, default=None)
    return p.parse_args(argv)


def torch_pruning_to_macs(
    base: nn.Module,
    example: torch.Tensor,
    max_macs: int,
    *,
    norm: int,
    global_pruning: bool,
    keep: Sequence[str] = (),
) -> tuple[nn.Module, float]:
    """A copy of ``base`` pruned by Torch-Pruning to the most MACs not above ``max_macs``.

    ``keep`` names layers whose output channels Torch-Pruning must not prune.
    """
    import torch_pruning as tp

    def pruned(ratio: float) -> nn.Module:
        model = copy.deepcopy(base).eval()
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        kept = [m for n, m in model.named_modules() if n in set(keep)]
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=norm),
            pruning_ratio=ratio,
            ignored_layers=[head, *kept],
            global_pruning=global_pruning,
        )
        pruner.step()
        return model

    lo, hi = 0.0, 0.95
    best = pruned(hi)
    if count_macs(best, example) > max_macs:
        return best, hi
    best_ratio = hi
    for _ in range(12):
        mid = (lo + hi) / 2
        model = pruned(mid)
        if count_macs(model, example) <= max_macs:
            hi, best, best_ratio = mid, model, mid
        else:
            lo = mid
    return best, best_ratio


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    require(args.data, "the hymenoptera data")
    start = time.perf_counter()
    env_start = environment()
    data = load_image_data(args.data, input_size=args.input_size, seed=args.seed)
    # On a GPU, images travel as uint8 and are normalised there (make_loader's device path).
    loader_args = {
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "device": args.device,
    }
    train_loader = make_loader(data.train, train=True, seed=args.seed, **loader_args)
    val_loader = make_loader(data.val, train=False, **loader_args)
    config = TrainConfig(
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
    )
    torch.manual_seed(args.seed)
    base = build_model(args.model, weights=args.weights, num_classes=data.num_classes)
    if args.pretrain_epochs:
        log(f"training the unpruned {args.model} for {args.pretrain_epochs} epochs first")
        fit(base, train_loader, val_loader, config=_with_epochs(config, args.pretrain_epochs))
    base = base.cpu()
    example = torch.zeros(1, 3, args.input_size, args.input_size)
    base_macs, base_params = count_macs(base, example), count_params(base)
    acc_base = evaluate(base, val_loader, device=args.device)["accuracy"]
    log(f"unpruned: {pct(acc_base)} %")

    taylor = prune_and_finetune(
        copy.deepcopy(base),
        train_loader,
        val_loader,
        example_inputs=example,
        config=config,
        criterion="taylor",
        scope=args.scope,
        target_macs=args.target_macs,
        prune_steps=args.prune_steps,
        finetune_steps=args.finetune_steps,
        finetune_epochs=args.epochs,
        criterion_batches=args.criterion_batches,
        oneshot_baseline=args.prune_steps > 1,
        ignore=stream_norms(base) if args.keep_streams else None,
    )
    log(f"taylor: {taylor.macs_ratio:.3f} of the MACs, {pct(taylor.accuracy_after)} %")

    tp_model, ratio = torch_pruning_to_macs(
        base,
        example,
        taylor.after.macs,
        norm=args.tp_norm,
        global_pruning=args.tp_global,
        keep=stream_convs(base) if args.keep_streams else (),
    )
    tp_macs, tp_params = count_macs(tp_model, example), count_params(tp_model)
    tp_before = evaluate(tp_model, val_loader, device=args.device)["accuracy"]
    history = fit(tp_model, train_loader, val_loader, config=config)
    tp_after = history.last.val_accuracy if history.last else None
    log(f"torch-pruning (ratio {ratio:.3f}): {tp_macs / base_macs:.3f} of the MACs")

    rows: list[dict[str, Any]] = [
        {
            "method": f"netsurgeon taylor ({args.scope}"
            + (", inner convs)" if args.keep_streams else ")"),
            "macs_ratio": taylor.macs_ratio,
            "params_ratio": taylor.params_ratio,
            "accuracy_pruned": accuracy_right_after_pruning(taylor),
            "accuracy_after": taylor.accuracy_after,
        },
        {
            "method": f"torch-pruning GroupMagnitudeImportance(p={args.tp_norm}), "
            f"{'global' if args.tp_global else 'uniform'} ratio {ratio:.3f}",
            "macs_ratio": tp_macs / base_macs,
            "params_ratio": tp_params / base_params,
            "accuracy_pruned": tp_before,
            "accuracy_after": tp_after,
        },
    ]
    print(
        markdown_table(
            (
                "method",
                "MACs ratio",
                "params ratio",
                "val acc right after pruning (%)",
                f"val acc after {args.epochs} epochs (%)",
            ),
            [
                (
                    r["method"],
                    f"{r['macs_ratio']:.3f}",
                    f"{r['params_ratio']:.3f}",
                    pct(r["accuracy_pruned"]),
                    pct(r["accuracy_after"]),
                )
                for r in rows
            ],
        )
    )
    met = tp_after is not None and taylor.accuracy_after >= tp_after
    print(
        f"\nunpruned {args.model}: {pct(acc_base)} %; Taylor at least as accurate as "
        f"Torch-Pruning: {'MET' if met else 'MISSED'}"
    )
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    write_json(
        args.json_out,
        {
            "settings": vars(args),
            "environment_start": env_start,
            "environment_end": environment(),
            "unpruned_accuracy": acc_base,
            "rows": rows,
            "target_met": met,
            "taylor": taylor.to_dict(),
            "torch_pruning_history": history.to_dict(),
        },
    )
    return 0


def _with_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(config, epochs=epochs)


if __name__ == "__main__":
    sys.exit(main())
