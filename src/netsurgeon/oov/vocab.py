"""Vocabularies (characters, tags) and out-of-vocabulary statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netsurgeon.errors import CheckpointError

__all__ = ["OOVStats", "TagVocabulary", "Vocabulary", "oov_stats"]


class Vocabulary:
    """A fixed item-to-index map whose first entries are special items.

    Index 0 is padding and index 1 stands for unknown items.
    """

    PAD = "<pad>"
    UNK = "<unk>"

    def __init__(self, items: Iterable[str]) -> None:
        self.items: list[str] = [self.PAD, self.UNK]
        self._index: dict[str, int] = {self.PAD: 0, self.UNK: 1}
        for item in items:
            if item not in self._index:
                self._index[item] = len(self.items)
                self.items.append(item)

    @classmethod
    def from_counts(cls, counts: Counter[str], *, min_count: int = 1) -> Vocabulary:
        """Items seen at least ``min_count`` times, most frequent first."""
        return cls(item for item, count in counts.most_common() if count >= min_count)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def encode(self, item: str) -> int:
        """Index of ``item``; unknown items map to index 1."""
        return self._index.get(item, 1)

    def to_json(self) -> list[str]:
        """The items without the specials, for a JSON file."""
        return self.items[2:]

    @classmethod
    def from_json(cls, data: Any, *, what: str = "vocabulary") -> Vocabulary:
        """Rebuild from :meth:`to_json` output.

        Raises:
            CheckpointError: the data is not a list of strings.
        """
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise CheckpointError(f"{what} in the run folder is not a list of strings")
        return cls(data)


class TagVocabulary:
    """Tags seen in training; tags never seen there map to a fallback tag.

    Args:
        tags: Training tags (most frequent first is best: the first is the default fallback).
        fallback: Tag that unseen tags are mapped to (``O`` for NER when present).
    """

    def __init__(self, tags: Iterable[str], *, fallback: str | None = None) -> None:
        self.tags: list[str] = list(dict.fromkeys(tags))
        if not self.tags:
            raise CheckpointError("tag vocabulary is empty")
        self._index = {tag: i for i, tag in enumerate(self.tags)}
        if fallback is None:
            fallback = "O" if "O" in self._index else self.tags[0]
        if fallback not in self._index:
            raise CheckpointError(f"fallback tag {fallback!r} is not in the tag vocabulary")
        self.fallback = fallback

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[str]]) -> TagVocabulary:
        """Tags of the training data, most frequent first (ties by name, for determinism)."""
        counts = Counter(tag for tags in sequences for tag in tags)
        return cls(sorted(counts, key=lambda tag: (-counts[tag], tag)))

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, tag: object) -> bool:
        return tag in self._index

    def encode(self, tag: str) -> int:
        """Index of ``tag``; an unseen tag gives the fallback's index."""
        index = self._index.get(tag)
        return self._index[self.fallback] if index is None else index

    def decode(self, index: int) -> str:
        """The tag at ``index``."""
        return self.tags[index]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"tags": self.tags, "fallback": self.fallback}

    @classmethod
    def from_json(cls, data: Any) -> TagVocabulary:
        """Rebuild from :meth:`to_json` output.

        Raises:
            CheckpointError: malformed data.
        """
        if not isinstance(data, dict) or not isinstance(data.get("tags"), list):
            raise CheckpointError("tag vocabulary in the run folder is malformed")
        return cls(data["tags"], fallback=data.get("fallback"))


@dataclass(frozen=True)
class OOVStats:
    """Out-of-vocabulary rates of one split.

    Attributes:
        tokens: Number of tokens.
        oov_tokens: Tokens whose normalised form has no vector.
        types: Distinct normalised word forms.
        oov_types: Distinct normalised forms without a vector.
        sentences: Number of sentences.
        oov_sentences: Sentences with at least one OOV token.
    """

    tokens: int
    oov_tokens: int
    types: int
    oov_types: int
    sentences: int
    oov_sentences: int

    @property
    def token_rate(self) -> float:
        """Fraction of OOV tokens."""
        return self.oov_tokens / self.tokens if self.tokens else 0.0

    @property
    def type_rate(self) -> float:
        """Fraction of OOV types."""
        return self.oov_types / self.types if self.types else 0.0

    def to_json(self) -> dict[str, float | int]:
        """JSON-ready form, rates included."""
        return {
            "tokens": self.tokens,
            "oov_tokens": self.oov_tokens,
            "token_rate": self.token_rate,
            "types": self.types,
            "oov_types": self.oov_types,
            "type_rate": self.type_rate,
            "sentences": self.sentences,
            "oov_sentences": self.oov_sentences,
        }


def oov_stats(sentences: Iterable[Sequence[str]], in_vocabulary: Any, normalise: Any) -> OOVStats:
    """Count OOV tokens, types and sentences.

    Args:
        sentences: Token sequences.
        in_vocabulary: Container answering ``token in in_vocabulary`` (e.g. ``Embeddings``).
        normalise: Function giving a token's normalised form (types are counted on it).
    """
    tokens = oov_tokens = n_sentences = oov_sentences = 0
    types: set[str] = set()
    oov_types: set[str] = set()
    for sentence in sentences:
        n_sentences += 1
        has_oov = False
        for token in sentence:
            tokens += 1
            form = normalise(token)
            types.add(form)
            if token not in in_vocabulary:
                oov_tokens += 1
                oov_types.add(form)
                has_oov = True
        oov_sentences += has_oov
    return OOVStats(tokens, oov_tokens, len(types), len(oov_types), n_sentences, oov_sentences)
