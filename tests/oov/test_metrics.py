from __future__ import annotations

import random

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from netsurgeon.errors import ConfigError
from netsurgeon.oov.metrics import accuracy, entity_scores, headline, tagging_metrics

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "O"]]
OOV = [[False, True, False, True], [False, False, False]]


def test_entity_scores_match_seqeval_on_random_sequences() -> None:
    rng = random.Random(0)
    tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]  # IOB1-style starts too
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in gold]
    ours = entity_scores(gold, pred)
    assert ours["f1"] == pytest.approx(100 * f1_score(gold, pred))
    assert ours["precision"] == pytest.approx(100 * precision_score(gold, pred))
    assert ours["recall"] == pytest.approx(100 * recall_score(gold, pred))


def test_oov_restricted_entity_scores_by_hand() -> None:
    # Gold entities with an OOV token: PER(0-1), LOC(3). Predicted: PER(0-1), ORG(3).
    scores = entity_scores(GOLD, PRED, OOV)
    assert scores["gold"] == 2 and scores["pred"] == 2
    assert scores["precision"] == 50.0 and scores["recall"] == 50.0


def test_tagging_metrics_sections() -> None:
    ner = tagging_metrics("ner", GOLD, PRED, OOV)
    # Overall: gold PER, LOC, ORG; predicted PER, ORG(3), ORG(1); one correct.
    assert ner["all"]["precision"] == pytest.approx(100 / 3)
    assert ner["all"]["recall"] == pytest.approx(100 / 3)
    assert ner["oov_tokens"]["accuracy"] == 50.0  # I-PER right, B-LOC wrong
    assert ner["oov_sentences"]["sentences"] == 1
    assert ner["oov_sentences"]["f1"] == 50.0
    assert headline("ner", ner) == ner["all"]["f1"]
    pos = tagging_metrics("pos", [["NN", "CD", "VB"]], [["NN", "NN", "VB"]], [[False, True, False]])
    assert pos["all"]["accuracy"] == pytest.approx(200 / 3)
    assert pos["oov_tokens"] == {"accuracy": 0.0, "tokens": 1}
    assert headline("pos", pos, "oov_tokens") == 0.0


def test_bilou_tags_score_as_their_iobes_equivalents() -> None:
    """Before: U-/L- tags passed to seqeval as written, which merged adjacent unit entities."""
    bilou = (
        [["U-PER", "U-PER", "O", "B-LOC", "I-LOC", "L-LOC"]],
        [["U-PER", "O", "O", "B-LOC", "I-LOC", "L-LOC"]],
    )
    iobes = (
        [["S-PER", "S-PER", "O", "B-LOC", "I-LOC", "E-LOC"]],
        [["S-PER", "O", "O", "B-LOC", "I-LOC", "E-LOC"]],
    )
    mask = [[True] * 6]
    ours = tagging_metrics("ner", *bilou, mask)
    assert ours == tagging_metrics("ner", *iobes, mask)
    assert (ours["all"]["gold"], ours["all"]["pred"]) == (3, 2)
    assert ours["all"]["recall"] == pytest.approx(200 / 3)
    assert ours["all"]["precision"] == 100.0


def test_accuracy_and_errors() -> None:
    assert accuracy([["a", "b"]], [["a", "c"]]) == {"accuracy": 50.0, "tokens": 2}
    with pytest.raises(ConfigError, match="differ"):
        accuracy([["a"]], [["a", "b"]])
    with pytest.raises(ConfigError, match="'chunk'"):
        tagging_metrics("chunk", GOLD, PRED, OOV)
