"""Evaluate a run on a column file: metrics, OOV rates, unseen tags and attention statistics."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netsurgeon.oov.embedders import ATTENTION_PARTS
from netsurgeon.oov.metrics import tagging_metrics
from netsurgeon.oov.run import (
    Prediction,
    TrainedRun,
    load_run,
    read_run_config,
    run_tag_scheme,
)
from netsurgeon.oov.train import TaggedData, check_tags_fit_task, read_tagged
from netsurgeon.oov.vectors import normaliser
from netsurgeon.oov.vocab import oov_stats

__all__ = [
    "Evaluation",
    "attention_by_tag",
    "evaluate_data",
    "evaluate_run",
    "load_run_and_data",
    "pick_examples",
]

# Words of context shown per side in examples.
_SHOWN_CONTEXT = 5


@dataclass
class Evaluation:
    """Everything measured on one data file.

    Attributes:
        data: The file evaluated.
        task: The run's task (``"ner"`` or ``"pos"``), which sets the metrics.
        metrics: Output of :func:`~netsurgeon.oov.metrics.tagging_metrics`.
        oov: OOV rates of the file.
        unseen_tags: Gold tags that the run never saw in training, with counts.
        attention_by_tag: Mean attention per gold tag label (None without attention).
        examples: Sample OOV occurrences with contexts, weights and tags.
    """

    data: str
    task: str
    metrics: dict[str, Any]
    oov: dict[str, Any]
    unseen_tags: dict[str, int]
    attention_by_tag: dict[str, dict[str, float]] | None
    examples: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def _label(task: str, tag: str) -> str:
    # NER tags are grouped by entity type (B-PER and I-PER are both PER).
    if task == "ner" and len(tag) > 2 and tag[1] == "-":
        return tag[2:]
    return tag


def attention_by_tag(
    task: str, data: TaggedData, prediction: Prediction
) -> dict[str, dict[str, float]] | None:
    """Mean attention weights (word, left, right) and the OOV count per gold tag label."""
    if prediction.attention is None:
        return None
    sums: dict[str, np.ndarray] = {}
    counts: Counter[str] = Counter()
    for (i, j), weights in zip(prediction.occurrences, prediction.attention, strict=True):
        label = _label(task, data.tags[i][j])
        sums[label] = sums.get(label, np.zeros(len(ATTENTION_PARTS))) + weights
        counts[label] += 1
    table: dict[str, dict[str, float]] = {}
    for label, count in counts.most_common():
        mean = sums[label] / count
        table[label] = {part: float(w) for part, w in zip(ATTENTION_PARTS, mean, strict=True)}
        table[label]["count"] = count
    return table


def pick_examples(
    task: str, data: TaggedData, prediction: Prediction, *, per_label: int = 3, limit: int = 30
) -> list[dict[str, Any]]:
    """Up to ``per_label`` OOV occurrences of each gold label, most frequent labels first."""
    by_label: dict[str, list[int]] = {}
    for k, (i, j) in enumerate(prediction.occurrences):
        by_label.setdefault(_label(task, data.tags[i][j]), []).append(k)
    chosen: list[int] = []
    for _, ks in sorted(by_label.items(), key=lambda item: (-len(item[1]), item[0])):
        chosen.extend(ks[:per_label])
    examples = []
    for k in sorted(chosen[:limit]):
        i, j = prediction.occurrences[k]
        tokens = data.tokens[i]
        example: dict[str, Any] = {
            "word": tokens[j],
            "left": tokens[max(0, j - _SHOWN_CONTEXT) : j],
            "right": tokens[j + 1 : j + 1 + _SHOWN_CONTEXT],
            "gold": data.tags[i][j],
            "pred": prediction.tags[i][j],
            "sentence": i,
            "position": j,
        }
        if prediction.attention is not None:
            weights = prediction.attention[k]
            example["attention"] = {
                part: float(w) for part, w in zip(ATTENTION_PARTS, weights, strict=True)
            }
        examples.append(example)
    return examples


def evaluate_data(run: TrainedRun, data: TaggedData) -> Evaluation:
    """Evaluate a loaded run on tagged data (the run must hold vectors for its words)."""
    prediction = run.predict(data.tokens)
    metrics = tagging_metrics(run.config.task, data.tags, prediction.tags, prediction.oov_mask)
    unseen = Counter(t for tags in data.tags for t in tags if t not in run.tags)
    stats = oov_stats(data.tokens, run.embeddings, normaliser(run.config.normalise)).to_json()
    return Evaluation(
        data=data.path,
        task=run.config.task,
        metrics=metrics,
        oov=stats,
        unseen_tags=dict(unseen),
        attention_by_tag=attention_by_tag(run.config.task, data, prediction),
        examples=pick_examples(run.config.task, data, prediction),
    )


def evaluate_run(
    run_dir: str | os.PathLike[str],
    data_file: str | os.PathLike[str],
    *,
    embeddings: str | None = None,
    encoding: str | None = None,
    embeddings_encoding: str | None = None,
    device: str | torch.device = "auto",
) -> Evaluation:
    """Load a run folder and evaluate it on a column file.

    Args:
        run_dir: The run folder.
        data_file: Column file with gold tags in the run's tag column.
        embeddings: Embeddings file to use instead of the run's own.
        encoding: Encoding of ``data_file`` (default: the run's).
        embeddings_encoding: Encoding of the embeddings file (default: the run's).
        device: Where to predict (see :func:`~netsurgeon.oov.run.load_run`).

    Raises:
        ConfigError: bad data, an unknown device, or CUDA asked for but not available;
            CheckpointError: bad run or mismatching embeddings.
    """
    run, data = load_run_and_data(
        run_dir,
        data_file,
        embeddings=embeddings,
        encoding=encoding,
        embeddings_encoding=embeddings_encoding,
        device=device,
    )
    return evaluate_data(run, data)


def load_run_and_data(
    run_dir: str | os.PathLike[str],
    data_file: str | os.PathLike[str],
    *,
    embeddings: str | None = None,
    encoding: str | None = None,
    embeddings_encoding: str | None = None,
    device: str | torch.device = "auto",
) -> tuple[TrainedRun, TaggedData]:
    """A run folder and a column file read with the run's settings (tag column, scheme).

    The run holds vectors for every token of the file. Arguments and errors are those of
    :func:`evaluate_run`.
    """
    config = read_run_config(run_dir)
    data = read_tagged(
        data_file,
        column=config.column,
        encoding=encoding or config.encoding,
        scheme=run_tag_scheme(run_dir, config),
    )
    check_tags_fit_task(
        data,
        config.task,
        config.column,
        remedy=f"the run was trained for NER on tag column {config.column}: give a file with "
        "its entity tags there",
    )
    run = load_run(
        run_dir,
        keep={t for s in data.tokens for t in s},
        embeddings=embeddings,
        embeddings_encoding=embeddings_encoding,
        device=device,
    )
    return run, data
