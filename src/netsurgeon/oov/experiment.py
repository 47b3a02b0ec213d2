"""Compare OOV methods over seeds on one task and write the poster-style report."""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from netsurgeon.errors import ConfigError
from netsurgeon.fileio import check_folder_target
from netsurgeon.oov.embedders import ATTENTION_PARTS, METHODS
from netsurgeon.oov.evaluate import Evaluation, evaluate_data
from netsurgeon.oov.metrics import check_scorer
from netsurgeon.oov.report import SECTIONS, write_report
from netsurgeon.oov.run import TrainConfig, load_run
from netsurgeon.oov.train import (
    absolute_embeddings,
    check_run_folder,
    check_tags_fit_task,
    read_tagged,
    reading_scheme,
    train,
)
from netsurgeon.oov.vectors import check_embeddings_source
from netsurgeon.pruning.stats import resolve_device

__all__ = ["check_methods", "run_experiment", "summarise"]

log = logging.getLogger(__name__)


def _metric_key(task: str) -> str:
    return "f1" if task == "ner" else "accuracy"


def summarise(
    task: str, evaluations: dict[str, list[Evaluation]], methods: Sequence[str], baseline: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean ± std per section and method, and relative gains over ``baseline`` (in percent)."""
    key = _metric_key(task)
    summary: dict[str, Any] = {}
    gains: dict[str, Any] = {}
    for section in SECTIONS:
        summary[section] = {}
        for method in methods:
            values = [e.metrics[section][key] for e in evaluations[method]]
            summary[section][method] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
        base = summary[section][baseline]["mean"]
        gains[section] = {
            m: (100.0 * (summary[section][m]["mean"] - base) / base if base else None)
            for m in methods
            if m != baseline
        }
    return summary, gains


def _mean_attention(evaluations: list[Evaluation]) -> dict[str, dict[str, float]] | None:
    """Attention per tag pooled over seeds (weighted by each seed's OOV counts)."""
    tables = [e.attention_by_tag for e in evaluations if e.attention_by_tag is not None]
    if not tables:
        return None
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, float] = {}
    for table in tables:
        for tag, row in table.items():
            weights = np.array([row[p] for p in ATTENTION_PARTS]) * row["count"]
            sums[tag] = sums.get(tag, np.zeros(len(ATTENTION_PARTS))) + weights
            counts[tag] = counts.get(tag, 0) + row["count"]
    merged: dict[str, dict[str, float]] = {}
    for tag in sorted(counts, key=lambda t: (-counts[t], t)):
        mean = sums[tag] / counts[tag]
        merged[tag] = {p: float(w) for p, w in zip(ATTENTION_PARTS, mean, strict=True)}
        merged[tag]["count"] = counts[tag] / len(tables)
    return merged


def check_methods(methods: Sequence[str], *, flag: str = "methods") -> list[str]:
    """The distinct methods of ``methods``, in order, all known.

    Args:
        methods: Method names.
        flag: What named them, for the message (``--methods`` on the command line).

    Raises:
        ConfigError: no method, or an unknown one; the message lists the allowed ones.
    """
    allowed = ", ".join(METHODS)
    if isinstance(methods, str):  # would read as one method per letter
        raise ConfigError(f"{flag} must be a list of method names, got the string {methods!r}; "
                          f"pass [{methods!r}]")  # fmt: skip
    chosen = list(dict.fromkeys(methods))
    if not chosen:
        raise ConfigError(f"{flag} is empty; give a comma-separated list of: {allowed}")
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise ConfigError(
            f"{flag}: unknown method(s) {', '.join(map(repr, unknown))}; "
            f"give a comma-separated list of: {allowed}"
        )
    return chosen


def training_seconds(metrics: dict[str, Any]) -> float:
    """Seconds a run spent pre-training and training (each epoch with its dev evaluation),
    summed over every call that trained it (resumes included), from its ``metrics.json``."""
    pretrain = sum(float(e.get("time_s", 0.0)) for e in metrics.get("pretrain_history", ()))
    epochs = sum(
        float(e.get("train_s", 0.0)) + float(e.get("eval_s", 0.0))
        for e in metrics.get("history", ())
    )
    return round(pretrain + epochs, 3)


def run_experiment(
    base: TrainConfig,
    *,
    train_file: str | os.PathLike[str],
    dev_file: str | os.PathLike[str],
    test_file: str | os.PathLike[str] | None = None,
    methods: Sequence[str] = ("random", "mimick", "comick"),
    seeds: int = 3,
    out: str | os.PathLike[str],
    resume: bool = False,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Train every method with every seed, evaluate, and write the report into ``out``.

    Args:
        base: Configuration shared by all runs (method and seed are replaced per run).
        train_file: Training column file.
        dev_file: Development file (model selection, and the reported dev scores).
        test_file: Optional held-out file, evaluated with the best dev model.
        methods: OOV methods to compare; ``random`` (if present) is the baseline.
        seeds: Number of seeds (0, 1, ...).
        out: Experiment folder; runs go to ``out/runs/<method>-seed<k>``.
        resume: Continue interrupted runs instead of refusing an existing folder.
        device: Where to train and evaluate: ``auto`` (CUDA when available, else CPU),
            ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The results written to ``results.json``. Each of its ``runs`` has ``seconds``, the
        time the run spent training (from its own records, over every call that trained it,
        so also for a run finished before a resume), and ``wall_seconds``, this call's time
        on it (loading included; only the reloading for a run finished earlier).

    Raises:
        ConfigError: bad methods or seeds, an ``out`` that is a file, an existing experiment
            or run folder without ``resume`` (or one of another configuration with it), a
            missing or unreadable train, dev or test file, a missing embeddings file, an
            unknown device, or CUDA asked for but not available. All of these are checked
            before the first run starts.
    """
    methods = check_methods(methods)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive integer, got {seeds!r}")
    out = check_folder_target(out, "out (--out)")
    device = resolve_device(device)
    if (out / "results.json").exists() and not resume:
        raise ConfigError(
            f"{out} already holds an experiment; pass resume=True (--resume) or choose "
            "another out folder (--out)"
        )
    # Everything a run could fail on is checked here, before the first run starts or any
    # folder is written, so that a typo costs no training and leaves nothing to --resume.
    train_data = read_tagged(
        train_file,
        column=base.column,
        encoding=base.encoding,
        limit=base.train_limit,
        scheme=base.tag_scheme,
    )
    check_tags_fit_task(train_data, base.task, base.column)
    scheme = reading_scheme(base, train_data)  # every run's, as train() finds it
    dev_data = read_tagged(dev_file, column=base.column, encoding=base.encoding, scheme=scheme)
    test_data = None
    if test_file is not None:
        test_data = read_tagged(
            test_file, column=base.column, encoding=base.encoding, scheme=scheme
        )
    for data in (dev_data, test_data):
        if data is not None:
            check_tags_fit_task(data, base.task, base.column)
    check_embeddings_source(
        base.embeddings, format=base.embeddings_format, encoding=base.embeddings_encoding
    )
    check_scorer(base.task)
    plan = [
        (dataclasses.replace(base, method=method, seed=seed), out / "runs" / f"{method}-seed{seed}")
        for method in methods
        for seed in range(seeds)
    ]
    for config, run_dir in plan:
        check_run_folder(run_dir, absolute_embeddings(config), resume)
    baseline = "random" if "random" in methods else methods[0]
    evaluations: dict[str, dict[str, list[Evaluation]]] = {"dev": {}, "test": {}}
    runs: list[dict[str, Any]] = []
    oov: dict[str, Any] = {}
    for config, run_dir in plan:
        method, seed = config.method, config.seed
        log.info("training %s", run_dir)
        start = time.perf_counter()
        result = train(
            config,
            train_file=train_file,
            dev_file=dev_file,
            out=run_dir,
            resume=resume,
            device=device,
        )
        wall_seconds = time.perf_counter() - start
        dev = evaluate_data(result.run, dev_data)
        evaluations["dev"].setdefault(method, []).append(dev)
        entry = {
            "method": method,
            "seed": seed,
            "dir": str(run_dir),
            # From the run's own records: a run finished before a resume only reloads here,
            # and the time this call took would say nothing about its training.
            "seconds": training_seconds(result.metrics),
            "wall_seconds": wall_seconds,
            "best_epoch": result.metrics["best_epoch"],
            "dev": dev.metrics,
        }
        oov = {"train": result.metrics["oov"]["train"], "dev": dev.oov}
        if test_data is not None:
            test_run = load_run(
                run_dir, keep={t for s in test_data.tokens for t in s}, device=device
            )
            test = evaluate_data(test_run, test_data)
            evaluations["test"].setdefault(method, []).append(test)
            entry["test"] = test.metrics
            oov["test"] = test.oov
        runs.append(entry)
    metric = "F1" if base.task == "ner" else "accuracy"
    summary: dict[str, Any] = {}
    gains: dict[str, Any] = {}
    for split, per_method in evaluations.items():
        if per_method:
            summary[split], gains[split] = summarise(base.task, per_method, methods, baseline)
    attention = {}
    examples = {}
    for method in methods:
        merged = _mean_attention(evaluations["dev"][method])
        if merged is not None:
            attention[method] = merged
            examples[method] = evaluations["dev"][method][0].examples
    results = {
        "task": base.task,
        "metric": metric,
        "methods": methods,
        "baseline": baseline,
        "seeds": list(range(seeds)),
        "config": base.to_json(),
        "device": str(device),
        "files": {
            "train": str(train_file),
            "dev": str(dev_file),
            "test": test_file and str(test_file),
        },
        "summary": summary,
        "gains": gains,
        "oov": oov,
        "unseen_dev_tags": evaluations["dev"][methods[0]][0].unseen_tags,
        "attention_by_tag": attention,
        "examples": examples,
        "runs": runs,
    }
    write_report(results, out)
    return results
