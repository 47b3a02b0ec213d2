"""Turn tokens into tensors: word rows, characters, and the contexts of each OOV occurrence.

The word table that the tagger and the OOV module share has four special rows before the
embedding words: padding, unknown (an OOV word seen in a context), and sentence start/end
markers, which give every context at least one element.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netsurgeon.errors import ConfigError
from netsurgeon.oov.vectors import Embeddings, normaliser
from netsurgeon.oov.vocab import Vocabulary

__all__ = [
    "BOS",
    "EOS",
    "N_SPECIAL_ROWS",
    "PAD",
    "UNK",
    "EncodedSentence",
    "Occurrence",
    "OccurrenceBatch",
    "SentenceBatch",
    "TextEncoder",
]

PAD, UNK, BOS, EOS = 0, 1, 2, 3
N_SPECIAL_ROWS = 4


@dataclass(frozen=True)
class Occurrence:
    """One word occurrence as the OOV module sees it.

    Attributes:
        word: The token as written.
        chars: Character indices of the token.
        left: Word-table rows of the left context, nearest word last, starting with ``BOS``
            when the context reaches the sentence start.
        right: Rows of the right context, nearest word first, ending with ``EOS`` when it
            reaches the sentence end.
    """

    word: str
    chars: tuple[int, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]


@dataclass
class OccurrenceBatch:
    """Padded tensors for a batch of occurrences (all lengths are at least 1)."""

    words: list[str]
    chars: torch.Tensor
    char_lengths: torch.Tensor
    left: torch.Tensor
    left_lengths: torch.Tensor
    right: torch.Tensor
    right_lengths: torch.Tensor

    def __len__(self) -> int:
        return len(self.words)

    def to(self, device: torch.device | str) -> OccurrenceBatch:
        """The same batch with its tensors on ``device`` (tensors already there are reused)."""
        return OccurrenceBatch(
            self.words,
            self.chars.to(device),
            self.char_lengths.to(device),
            self.left.to(device),
            self.left_lengths.to(device),
            self.right.to(device),
            self.right_lengths.to(device),
        )

    @staticmethod
    def collate(occurrences: Sequence[Occurrence]) -> OccurrenceBatch:
        """Pad a list of occurrences into one batch."""
        chars, char_lengths = _pad([o.chars for o in occurrences])
        left, left_lengths = _pad([o.left for o in occurrences])
        right, right_lengths = _pad([o.right for o in occurrences])
        return OccurrenceBatch(
            [o.word for o in occurrences],
            chars,
            char_lengths,
            left,
            left_lengths,
            right,
            right_lengths,
        )


def _pad(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    # One numpy scatter instead of a tensor per sequence: padding is on the inference hot path.
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    width = max(int(lengths.max()) if len(sequences) else 1, 1)
    out = np.zeros((len(sequences), width), dtype=np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = flat
    return torch.from_numpy(out), torch.from_numpy(lengths)


_MEMO_LIMIT = 1 << 18  # entries; a memo this large is dropped and refilled


class _Memo(dict[str, Any]):
    """A dict that computes a missing value on first look-up and keeps it."""

    def __init__(self, compute: Callable[[str], Any]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, key: str) -> Any:
        value = self[key] = self.compute(key)
        return value


def _cut_contexts(
    contexts: Sequence[Sequence[str]],
    rows: Mapping[str, int],
    size: int | None,
    marker: int,
    *,
    left: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded word rows of contexts cut to ``size`` words (None: whole), as
    :meth:`TextEncoder.occurrence` cuts them: the words nearest the occurrence are kept, and
    ``marker`` (``BOS`` before a left context, ``EOS`` after a right one) is added where the
    context is not cut."""
    n = len(contexts)
    lengths = np.fromiter(map(len, contexts), dtype=np.int64, count=n)
    flat = np.fromiter(
        map(rows.__getitem__, itertools.chain.from_iterable(contexts)),
        dtype=np.int64,
        count=int(lengths.sum()),
    )
    starts = np.cumsum(lengths) - lengths
    kept = lengths if size is None else np.minimum(lengths, size)
    marked = kept == lengths  # the context reaches the sentence boundary
    if left:
        starts += lengths - kept  # a cut left context keeps its last words
    total = kept + marked
    width = max(int(total.max()) if n else 1, 1)
    columns = np.arange(width)
    # Column of each word: a left context's words come after its marker.
    word_column = columns - (marked[:, None] if left else 0)
    is_word = (word_column >= 0) & (word_column < kept[:, None])
    out = np.zeros((n, width), dtype=np.int64)
    out[is_word] = flat[(starts[:, None] + word_column)[is_word]]
    if left:
        out[marked, 0] = marker
    else:
        out[np.flatnonzero(marked), kept[marked]] = marker
    return torch.from_numpy(out), torch.from_numpy(total)


@dataclass(frozen=True)
class EncodedSentence:
    """A sentence as rows of the word table, with its OOV occurrences.

    Attributes:
        word_ids: Word-table row of each token (``UNK`` where the token is OOV).
        oov_positions: Token positions that are OOV.
        occurrences: The OOV module's input for each OOV position.
        tags: Tag indices (empty when the sentence has no tags).
    """

    word_ids: tuple[int, ...]
    oov_positions: tuple[int, ...]
    occurrences: tuple[Occurrence, ...]
    tags: tuple[int, ...] = ()


@dataclass
class SentenceBatch:
    """Padded word rows plus the OOV occurrences of a batch of sentences."""

    word_ids: torch.Tensor
    lengths: torch.Tensor
    oov_index: torch.Tensor
    occurrences: OccurrenceBatch
    tags: torch.Tensor | None

    def to(self, device: torch.device | str) -> SentenceBatch:
        """The same batch with its tensors on ``device`` (tensors already there are reused)."""
        return SentenceBatch(
            self.word_ids.to(device),
            self.lengths.to(device),
            self.oov_index.to(device),
            self.occurrences.to(device),
            None if self.tags is None else self.tags.to(device),
        )

    @staticmethod
    def collate(sentences: Sequence[EncodedSentence]) -> SentenceBatch:
        """Pad sentences; ``oov_index`` holds (sentence, position) of each occurrence."""
        word_ids, lengths = _pad([s.word_ids for s in sentences])
        positions = [(i, p) for i, s in enumerate(sentences) for p in s.oov_positions]
        oov_index = torch.tensor(positions, dtype=torch.long).reshape(-1, 2)
        occurrences = OccurrenceBatch.collate([o for s in sentences for o in s.occurrences])
        tags = None
        if all(s.tags for s in sentences):
            tags, _ = _pad([s.tags for s in sentences])
            tags[word_ids == PAD] = -100  # ignored by the loss
        return SentenceBatch(word_ids, lengths, oov_index, occurrences, tags)


class TextEncoder:
    """Maps tokens to word-table rows and characters, and cuts contexts.

    Args:
        embeddings: The word vectors; row ``i`` of ``embeddings`` is table row ``i + 4``.
        chars: Character vocabulary.
        context_size: Words of context on each side; ``None`` for the whole sentence.
    """

    def __init__(
        self, *, embeddings: Embeddings, chars: Vocabulary, context_size: int | None
    ) -> None:
        if context_size is not None and context_size < 1:
            raise ConfigError(
                f"context_size must be a positive number of words or None (whole sentence), "
                f"got {context_size}"
            )
        self.embeddings = embeddings
        self.chars = chars
        self.context_size = context_size
        self.normalise = normaliser(embeddings.normalise)
        # Lookups of batch_from_contexts, kept between calls: contexts repeat tokens a lot.
        self._rows = _Memo(self.word_id)
        self._spellings = _Memo(self._spell)

    def _spell(self, word: str) -> tuple[int, ...]:
        return tuple(map(self.chars.encode, word)) or (UNK,)

    @staticmethod
    def build_chars(tokens: Iterable[str]) -> Vocabulary:
        """Character vocabulary of some tokens, in first-seen order."""
        return Vocabulary(ch for token in tokens for ch in token)

    def word_id(self, token: str) -> int:
        """Table row of a token (``UNK`` when out of vocabulary)."""
        row = self.embeddings.index(token)
        return UNK if row is None else row + N_SPECIAL_ROWS

    def occurrence(
        self, tokens: Sequence[str], position: int, word_ids: Sequence[int]
    ) -> Occurrence:
        """The OOV module's input for ``tokens[position]``."""
        k = self.context_size
        start = 0 if k is None else max(0, position - k)
        stop = len(tokens) if k is None else min(len(tokens), position + 1 + k)
        left = ((BOS,) if start == 0 else ()) + tuple(word_ids[start:position])
        right = tuple(word_ids[position + 1 : stop]) + ((EOS,) if stop == len(tokens) else ())
        chars = tuple(self.chars.encode(ch) for ch in tokens[position]) or (UNK,)
        return Occurrence(tokens[position], chars, left, right)

    def occurrence_from_context(
        self, word: str, left_context: Sequence[str], right_context: Sequence[str]
    ) -> Occurrence:
        """The OOV module's input for a word given its contexts (as full as known)."""
        tokens = [*left_context, word, *right_context]
        word_ids = [self.word_id(token) for token in tokens]
        return self.occurrence(tokens, len(left_context), word_ids)

    def batch_from_contexts(
        self,
        words: Sequence[str],
        left_contexts: Sequence[Sequence[str]],
        right_contexts: Sequence[Sequence[str]],
    ) -> OccurrenceBatch:
        """The batch of :meth:`occurrence_from_context` for many words at once.

        Gives the same tensors as collating those occurrences, but looks each distinct token
        and word up once and cuts and pads the contexts with array operations: long contexts
        repeat the same tokens many times.

        Raises:
            ConfigError: the three sequences differ in length.
        """
        if not len(words) == len(left_contexts) == len(right_contexts):
            raise ConfigError(
                f"got {len(words)} words but {len(left_contexts)} left and "
                f"{len(right_contexts)} right contexts"
            )
        for memo in (self._rows, self._spellings):
            if len(memo) > _MEMO_LIMIT:
                memo.clear()
        rows = self._rows
        left, left_lengths = _cut_contexts(left_contexts, rows, self.context_size, BOS, left=True)
        right, right_lengths = _cut_contexts(
            right_contexts, rows, self.context_size, EOS, left=False
        )
        chars, char_lengths = _pad(list(map(self._spellings.__getitem__, words)))
        return OccurrenceBatch(
            list(words), chars, char_lengths, left, left_lengths, right, right_lengths
        )

    def encode(
        self, tokens: Sequence[str], tags: Sequence[int] = (), *, all_positions: bool = False
    ) -> EncodedSentence:
        """Encode a sentence; ``all_positions`` makes occurrences for every token."""
        word_ids = [self.word_id(token) for token in tokens]
        positions = [i for i, row in enumerate(word_ids) if all_positions or row == UNK]
        occurrences = tuple(self.occurrence(tokens, i, word_ids) for i in positions)
        return EncodedSentence(tuple(word_ids), tuple(positions), occurrences, tuple(tags))
