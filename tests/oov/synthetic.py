"""Helpers for the oov tests: a synthetic NER task whose OOV words are predictable only
from their context, with a matching GloVe-style embeddings file."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 8
FILLERS = ["the", "a", "of", "in", "and", "said", "was", "on", "to", "for", "by", "at"]
PERSON_CUES = ["mr", "mrs", "dr"]
PLACE_CUES = ["city", "town", "near"]


@dataclass
class SyntheticTask:
    """Files of the synthetic task."""

    root: Path
    embeddings: Path
    train: Path
    dev: Path
    in_vocab_names: list[str]
    oov_names: list[str]


def _random_name(rng: random.Random) -> str:
    # Names carry no character cue about their class: only the context tells.
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(3))


def _sentence(rng: random.Random, people: list[str], places: list[str]) -> list[tuple[str, str]]:
    rows = [(rng.choice(FILLERS), "O") for _ in range(rng.randint(3, 6))]
    at = rng.randrange(len(rows) + 1)
    if rng.random() < 0.5:
        rows[at:at] = [(rng.choice(PERSON_CUES), "O"), (rng.choice(people), "B-PER")]
    else:
        rows[at:at] = [(rng.choice(PLACE_CUES), "O"), (rng.choice(places), "B-LOC")]
    return rows


def write_rows(path: Path, sentences: list[list[tuple[str, ...]]], docstart: bool = True) -> None:
    """Write sentences of column tuples as a column file."""
    lines = []
    if docstart:
        width = len(sentences[0][0])
        lines += [" ".join(["-DOCSTART-"] + ["-X-"] * (width - 2) + ["O"]), ""]
    for sentence in sentences:
        lines += [" ".join(row) for row in sentence] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_synthetic_task(
    root: Path, *, n_train: int = 200, n_dev: int = 80, seed: int = 0
) -> SyntheticTask:
    """A 2-column NER task: persons follow ``mr/mrs/dr``, places follow ``city/town/near``.

    In-vocabulary names have vectors clustered by class; dev names are all OOV and random
    strings, so the only evidence of their class is the context.
    """
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    names = list(dict.fromkeys(_random_name(rng) for _ in range(200)))
    people, places = names[:20], names[20:40]
    oov_people, oov_places = names[40:50], names[50:60]
    person, place = nprng.standard_normal(DIM), nprng.standard_normal(DIM)
    lines = []
    for word in FILLERS + PERSON_CUES + PLACE_CUES + people + places:
        centre = (
            person
            if word in people
            else place
            if word in places
            else 2 * nprng.standard_normal(DIM)
        )
        vector = centre + 0.2 * nprng.standard_normal(DIM)
        lines.append(word + " " + " ".join(f"{x:.5f}" for x in vector))
    root.mkdir(parents=True, exist_ok=True)
    embeddings = root / "emb.txt"
    embeddings.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train = root / "train.txt"
    dev = root / "dev.txt"
    write_rows(train, [_sentence(rng, people, places) for _ in range(n_train)])
    write_rows(dev, [_sentence(rng, oov_people, oov_places) for _ in range(n_dev)])
    return SyntheticTask(root, embeddings, train, dev, people + places, oov_people + oov_places)
