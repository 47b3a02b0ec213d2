"""Real CoNLL-2003 runs: OOV methods compared on NER or POS with the packaged GloVe 50d.

Trains on ``../shared/data/conll2003/train.txt``, selects and reports on ``valid.txt`` (the test
split is kept back), and writes the experiment folder (results.json, results.md, report.html,
one run folder per method and seed) plus the wall time of every run.

Usage::

    python benchmarks/oov_conll.py --task ner --out /tmp/oov-ner [--methods random,mimick,comick]
        [--seeds 1] [--epochs 30] [--patience 3] [--pretrain-epochs 5] [--max-vocab N]
        [--train-limit N] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from netsurgeon.oov.experiment import run_experiment
from netsurgeon.oov.report import results_rows
from netsurgeon.oov.run import TrainConfig

SHARED = Path(
    os.environ.get("NETSURGEON_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["ner", "pos"], default="ner")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default="random,mimick,comick")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--max-vocab", type=int, default=None)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args()
    data = SHARED / "data" / "conll2003"
    if not (data / "train.txt").exists():
        raise SystemExit(f"{data} is absent: this benchmark needs ../shared/data/conll2003")
    torch.set_num_threads(args.threads)
    base = TrainConfig(
        task=args.task,
        epochs=args.epochs,
        patience=args.patience,
        pretrain_epochs=args.pretrain_epochs,
        max_vocab=args.max_vocab,
        train_limit=args.train_limit,
    )
    start = time.perf_counter()
    results = run_experiment(
        base,
        train_file=data / "train.txt",
        dev_file=data / "valid.txt",
        methods=args.methods.split(","),
        seeds=args.seeds,
        out=args.out,
        resume=args.resume,
        device=args.device,
    )
    total = time.perf_counter() - start
    header, rows = results_rows(results)
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(row))
    for run in results["runs"]:
        print(
            f"{run['method']} seed {run['seed']}: {run['seconds']:.0f} s, "
            f"best epoch {run['best_epoch']}"
        )
    print(f"total {total:.0f} s, threads {args.threads}")
    (args.out / "timing.json").write_text(
        json.dumps({"total_s": total, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2)
    )


if __name__ == "__main__":
    main()
