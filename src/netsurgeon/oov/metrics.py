"""Tagging metrics: entity-level P/R/F1 (conlleval semantics, via seqeval) and accuracy,
also restricted to OOV tokens and to sentences that contain an OOV word."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from netsurgeon.errors import ConfigError

__all__ = ["TASKS", "accuracy", "check_scorer", "entity_scores", "headline", "tagging_metrics"]

TASKS = ("ner", "pos")


def _check_lengths(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred, strict=True)):
        raise ConfigError("gold and predicted tag sequences differ in number or length")


# BILOU's last and unit tags are IOBES's end and single ones, which seqeval knows.
_BILOU_TO_IOBES = {"L": "E", "U": "S"}


def _chunk_tags(tags: Sequence[str]) -> list[str]:
    """``tags`` with BILOU's ``L-``/``U-`` written as IOBES's ``E-``/``S-``."""
    return [
        f"{_BILOU_TO_IOBES[tag[0]]}{tag[1:]}" if tag[:2] in ("L-", "U-") else tag for tag in tags
    ]


def _entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return [(label, start, end) for label, start, end in get_entities(_chunk_tags(tags))]


def entity_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    oov_mask: Sequence[Sequence[bool]] | None = None,
) -> dict[str, float | int]:
    """Entity precision, recall and F1 in percent (conlleval chunking via seqeval; IOB1,
    IOB2, IOBES and BILOU tags).

    With ``oov_mask``, only entities covering at least one OOV token count: precision over such
    predicted entities, recall over such gold entities.
    """
    _check_lengths(gold, pred)
    n_gold = n_pred = correct_pred = correct_gold = 0
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        gold_set = set(_entities(g))
        pred_set = set(_entities(p))
        if oov_mask is not None:
            mask = oov_mask[i]
            gold_set = {e for e in gold_set if any(mask[e[1] : e[2] + 1])}
            pred_set = {e for e in pred_set if any(mask[e[1] : e[2] + 1])}
        n_gold += len(gold_set)
        n_pred += len(pred_set)
        # An exact match covers the same tokens, so it is in both restricted sets.
        correct_pred += len(pred_set & gold_set)
        correct_gold += len(gold_set & pred_set)
    precision = 100.0 * correct_pred / n_pred if n_pred else 0.0
    recall = 100.0 * correct_gold / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold": n_gold, "pred": n_pred}


def accuracy(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    mask: Sequence[Sequence[bool]] | None = None,
) -> dict[str, float | int]:
    """Token accuracy in percent, over the tokens where ``mask`` is true (all by default)."""
    _check_lengths(gold, pred)
    total = correct = 0
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        for j, (gt, pt) in enumerate(zip(g, p, strict=True)):
            if mask is None or mask[i][j]:
                total += 1
                correct += gt == pt
    return {"accuracy": 100.0 * correct / total if total else 0.0, "tokens": total}


def check_scorer(task: str) -> None:
    """Check, before long work starts, that ``task`` can be scored here.

    Raises:
        ConfigError: NER, whose entity scores come from seqeval (the ``nlp`` extra), without
            seqeval installed.
    """
    if task == "ner" and importlib.util.find_spec("seqeval") is None:
        raise ConfigError(
            "NER is scored with seqeval, which is not installed: pip install 'netsurgeon[nlp]'"
        )


def tagging_metrics(
    task: str,
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    oov_mask: Sequence[Sequence[bool]],
) -> dict[str, Any]:
    """All metrics of a task: ``all``, ``oov_tokens`` and ``oov_sentences`` sections.

    NER sections hold entity precision/recall/F1 (plus token accuracy); POS sections hold
    accuracy. ``oov_sentences`` is computed on the sentences with at least one OOV token.

    Raises:
        ConfigError: unknown task or mismatched sequences.
    """
    if task not in TASKS:
        raise ConfigError(f"task {task!r} is not one of {list(TASKS)}")
    _check_lengths(gold, pred)
    keep = [i for i, mask in enumerate(oov_mask) if any(mask)]
    sub_gold = [gold[i] for i in keep]
    sub_pred = [pred[i] for i in keep]
    result: dict[str, Any] = {}
    if task == "ner":
        check_scorer(task)
        from seqeval.metrics import f1_score, precision_score, recall_score

        overall = entity_scores(gold, pred)
        gold_lists, pred_lists = [_chunk_tags(g) for g in gold], [_chunk_tags(p) for p in pred]
        # seqeval's own scores are the reference; ours must agree (same chunking).
        for name, score in (
            ("f1", f1_score),
            ("precision", precision_score),
            ("recall", recall_score),
        ):
            overall[name] = 100.0 * float(score(gold_lists, pred_lists, zero_division=0))
        result["all"] = {**overall, **accuracy(gold, pred)}
        result["oov_tokens"] = {
            **entity_scores(gold, pred, oov_mask),
            **accuracy(gold, pred, oov_mask),
        }
        result["oov_sentences"] = {
            **entity_scores(sub_gold, sub_pred),
            **accuracy(sub_gold, sub_pred),
        }
    else:
        result["all"] = accuracy(gold, pred)
        result["oov_tokens"] = accuracy(gold, pred, oov_mask)
        result["oov_sentences"] = accuracy(sub_gold, sub_pred)
    result["oov_sentences"]["sentences"] = len(keep)
    return result


def headline(task: str, metrics: dict[str, Any], section: str = "all") -> float:
    """The task's main number: entity F1 for NER, accuracy for POS."""
    return float(metrics[section]["f1" if task == "ner" else "accuracy"])
