"""How much any OOV method could gain: a trained run scored with its OOV tokens tagged by an oracle.

An OOV method only changes the vectors of out-of-vocabulary tokens, so most of a tagger's
errors are out of its reach. This script loads trained runs (``netsurgeon oov train``
folders), tags a column file, and scores the predictions three times: as they are; with the
prediction at every OOV token replaced by the gold tag ("token oracle"); and with every
sentence that holds an OOV token tagged entirely by the gold tags ("sentence oracle"). The
tagger reads one sentence at a time, so an OOV vector can only change the tags of its own
sentence: the sentence oracle's relative gain over a ``random`` run bounds what any OOV method
could gain with the tagger's weights unchanged (joint training also changes those weights, so
this is a ceiling for the OOV vectors' own effect, not a proof). The token oracle is what
perfect tags at the OOV tokens alone would give.

Usage::

    python benchmarks/oov_gain_ceiling.py RUN [RUN ...] --data ../shared/data/conll2003/valid.txt
        [--target 3.9] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from netsurgeon.errors import NetsurgeonError
from netsurgeon.fileio import atomic_write_text
from netsurgeon.oov.evaluate import load_run_and_data
from netsurgeon.oov.metrics import headline, tagging_metrics


def oracle_tags(
    gold: list[list[str]], pred: list[list[str]], oov_mask: list[list[bool]]
) -> list[list[str]]:
    """``pred`` with the gold tag at every OOV token."""
    return [
        [g if oov else p for g, p, oov in zip(gs, ps, ms, strict=True)]
        for gs, ps, ms in zip(gold, pred, oov_mask, strict=True)
    ]


def sentence_oracle_tags(
    gold: list[list[str]], pred: list[list[str]], oov_mask: list[list[bool]]
) -> list[list[str]]:
    """``pred`` with the gold tags of every sentence that holds an OOV token."""
    return [
        list(gs) if any(ms) else list(ps) for gs, ps, ms in zip(gold, pred, oov_mask, strict=True)
    ]


def score_run(run_dir: Path, data_file: Path) -> dict[str, Any]:
    """The run's headline metric on ``data_file``, as predicted and with the OOV oracle."""
    run, data = load_run_and_data(run_dir, data_file, device="cpu")
    config = run.config
    prediction = run.predict(data.tokens)
    oracle = oracle_tags(data.tags, prediction.tags, prediction.oov_mask)
    sentences = sentence_oracle_tags(data.tags, prediction.tags, prediction.oov_mask)
    tokens = sum(len(s) for s in data.tokens)
    oov = sum(sum(m) for m in prediction.oov_mask)
    metrics = tagging_metrics(config.task, data.tags, prediction.tags, prediction.oov_mask)
    perfect = tagging_metrics(config.task, data.tags, oracle, prediction.oov_mask)
    whole = tagging_metrics(config.task, data.tags, sentences, prediction.oov_mask)
    return {
        "run": str(run_dir),
        "task": config.task,
        "method": config.method,
        "seed": config.seed,
        "oov_token_rate": oov / max(tokens, 1),
        "metric": headline(config.task, metrics),
        "metric_oov_tokens": headline(config.task, metrics, "oov_tokens"),
        "token_oracle": headline(config.task, perfect),
        "sentence_oracle": headline(config.task, whole),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of netsurgeon oov train")
    parser.add_argument("--data", type=Path, required=True, help="column file with gold tags")
    parser.add_argument(
        "--target", type=float, default=None, metavar="PCT", help="relative gain to compare with"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        rows = [score_run(run, args.data) for run in args.runs]
    except NetsurgeonError as exc:
        sys.exit(f"oov_gain_ceiling: {exc}")
    print(
        "| run | method | seed | OOV tokens | metric | on OOV tokens | token oracle (gain) "
        "| sentence oracle (gain) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        gains = {}
        for kind in ("token", "sentence"):
            # A relative gain over a score of 0 (a tiny or untrained run) is undefined.
            gain = 100.0 * (row[f"{kind}_oracle"] / row["metric"] - 1) if row["metric"] else None
            row[f"{kind}_oracle_gain_pct"] = gain
            gains[kind] = "n/a" if gain is None else f"+{gain:.2f} %"
        print(
            f"| {Path(row['run']).name} | {row['method']} | {row['seed']} "
            f"| {100 * row['oov_token_rate']:.2f} % | {row['metric']:.2f} "
            f"| {row['metric_oov_tokens']:.2f} "
            f"| {row['token_oracle']:.2f} ({gains['token']}) "
            f"| {row['sentence_oracle']:.2f} ({gains['sentence']}) |"
        )
    random_rows = [r for r in rows if r["method"] == "random" and r["metric"]]
    summary: dict[str, Any] = {"rows": rows, "target_pct": args.target}
    for kind in ("token", "sentence") if random_rows else ():
        gain = statistics.fmean(r[f"{kind}_oracle_gain_pct"] for r in random_rows)
        summary[f"random_{kind}_oracle_gain_pct_mean"] = gain
        line = f"{kind} oracle over random ({len(random_rows)} run(s)): +{gain:.2f} % on average"
        if args.target is not None:
            line += (
                f"; target +{args.target:g} % {'within' if gain >= args.target else 'out of'} reach"
            )
        print(line)
    if args.json_out is not None:
        atomic_write_text(args.json_out, json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
