"""The fast inference path of the OOV embedders against the plain (packed, training) path."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from netsurgeon.errors import ConfigError
from netsurgeon.oov.batching import OccurrenceBatch, TextEncoder
from netsurgeon.oov.embedders import BiLSTMEncoder, _longest_extensions, build_embedder
from netsurgeon.oov.run import Embedder
from netsurgeon.oov.tagger import Tagger
from netsurgeon.oov.vectors import Embeddings

DIM = 6
VOCAB = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
OOV = ["zorp", "blick", "x", "q", "frobnicate", "zz"]
ATOL = 1e-5


def _encoder(context_size: int | None) -> TextEncoder:
    rng = np.random.default_rng(0)
    embeddings = Embeddings(
        words=VOCAB,
        vectors=rng.standard_normal((len(VOCAB), DIM)).astype(np.float32),
        vocab_size=len(VOCAB),
        fingerprint="x",
        source="test",
    )
    chars = TextEncoder.build_chars(VOCAB + OOV[:3])  # some OOV characters stay unknown
    return TextEncoder(embeddings=embeddings, chars=chars, context_size=context_size)


def _occurrences(
    seed: int, n_sentences: int = 12
) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Words with contexts of very different lengths: empty, single-character and repeated
    words, and several occurrences per sentence (contexts that share prefixes)."""
    rng = random.Random(seed)
    words: list[str] = []
    lefts: list[list[str]] = []
    rights: list[list[str]] = []
    for i in range(n_sentences):
        length = rng.choice([1, 2, 3, rng.randint(4, 12), rng.randint(20, 45)])
        sentence = [rng.choice(VOCAB + OOV) for _ in range(length)]
        if i % 4 == 0:
            sentence[rng.randrange(length)] = rng.choice("xyzq")  # single-character word
        for j in rng.sample(range(length), k=min(length, rng.randint(1, 4))):
            words.append(sentence[j])
            lefts.append(sentence[:j])
            rights.append(sentence[j + 1 :])
    words += ["", "zorp", "q"]  # an empty word is spelt as the unknown character
    lefts += [[], [], ["the"] * 30]
    rights += [[], ["cat"], []]
    order = list(range(len(words)))
    rng.shuffle(order)
    return [words[i] for i in order], [lefts[i] for i in order], [rights[i] for i in order]


def _reference(
    encoder: TextEncoder, words: list[str], lefts: list[list[str]], rights: list[list[str]]
) -> OccurrenceBatch:
    """The straightforward encoding: one occurrence at a time, then collate."""
    occurrences = [
        encoder.occurrence_from_context(w, left, right)
        for w, left, right in zip(words, lefts, rights, strict=True)
    ]
    return OccurrenceBatch.collate(occurrences)


def _table(encoder: TextEncoder) -> torch.Tensor:
    tagger = Tagger(embedder=build_embedder("zero", dim=DIM), n_tags=2, seed=1)
    tagger.set_vectors(encoder.embeddings.vectors)
    return tagger.word_table()


@pytest.mark.parametrize("context_size", [None, 1, 3])
def test_batch_from_contexts_matches_one_occurrence_at_a_time(context_size: int | None) -> None:
    encoder = _encoder(context_size)
    words, lefts, rights = _occurrences(seed=1)
    expected = _reference(encoder, words, lefts, rights)
    for _ in range(2):  # the second call reads the encoder's memo
        batch = encoder.batch_from_contexts(words, lefts, rights)
        assert batch.words == expected.words
        for field in ("chars", "char_lengths", "left", "left_lengths", "right", "right_lengths"):
            assert torch.equal(getattr(batch, field), getattr(expected, field)), field
    empty = encoder.batch_from_contexts([], [], [])
    assert len(empty) == 0 and empty.left.shape == (0, 1)
    with pytest.raises(ConfigError, match="2 words but 1 left"):
        encoder.batch_from_contexts(["a", "b"], [[]], [[], []])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summarise_matches_the_packed_lstm(seed: int) -> None:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    encoder = BiLSTMEncoder(5, 7)
    table = torch.randn(30, 5)
    rows = []
    for _ in range(40):
        kind = rng.random()
        if kind < 0.3 and rows:  # a prefix of, or the same as, an earlier sequence
            base = rng.choice(rows)
            rows.append(base[: rng.randint(1, len(base))])
        else:
            rows.append([rng.randrange(1, 30) for _ in range(rng.choice([1, 2, 5, 17, 60]))])
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.zeros((len(rows), int(lengths.max())), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    plain = encoder(table[ids], lengths)  # gradients on: the packed training path
    assert plain.requires_grad
    with torch.no_grad():
        fast = encoder.summarise(ids, lengths, table.__getitem__)
    torch.testing.assert_close(fast, plain.detach(), atol=ATOL, rtol=0)
    # Order is preserved: each row equals that sequence run alone, without padding.
    for i in rng.sample(range(len(rows)), k=8):
        _, (alone, _) = encoder.lstm(table[ids[i, : lengths[i]]].unsqueeze(0))
        torch.testing.assert_close(fast[i], alone[:, 0].reshape(-1).detach(), atol=ATOL, rtol=0)
    with torch.enable_grad():  # with gradients, summarise is the packed forward itself
        assert torch.equal(encoder.summarise(ids, lengths, table.__getitem__), plain)
    with torch.no_grad(), pytest.raises(ValueError, match="at least 1"):
        encoder.summarise(ids, torch.zeros_like(lengths), table.__getitem__)


@pytest.mark.parametrize("method", ["comick", "context", "mimick"])
@pytest.mark.parametrize("context_size", [None, 2])
def test_fast_forward_matches_plain_forward(method: str, context_size: int | None) -> None:
    encoder = _encoder(context_size)
    torch.manual_seed(3)
    embedder = build_embedder(method, dim=DIM, n_chars=len(encoder.chars), hidden=16)
    embedder.eval()
    words, lefts, rights = _occurrences(seed=4)
    batch = _reference(encoder, words, lefts, rights)
    table = _table(encoder)
    plain_vectors, plain_attention = embedder(batch, table)
    assert plain_vectors.requires_grad  # the plain path is the one training uses
    with torch.inference_mode():
        vectors, attention = embedder(batch, table)
    torch.testing.assert_close(vectors, plain_vectors.detach(), atol=ATOL, rtol=0)
    if plain_attention is None:
        assert attention is None
    else:
        assert attention is not None
        torch.testing.assert_close(attention, plain_attention.detach(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 5, 1024])
def test_embedder_embed_matches_plain_forward_in_order(batch_size: int) -> None:
    encoder = _encoder(None)
    torch.manual_seed(5)
    module = build_embedder("comick", dim=DIM, n_chars=len(encoder.chars), hidden=16)
    tagger = Tagger(embedder=module, n_tags=3, seed=1)
    tagger.set_vectors(encoder.embeddings.vectors)
    occurrences = zip(*_occurrences(seed=6, n_sentences=20), strict=True)
    # Embedder.embed refuses the empty word that the encoder alone accepts.
    words, lefts, rights = map(list, zip(*(o for o in occurrences if o[0]), strict=True))
    vectors, attention = Embedder(tagger, encoder).embed(
        words, lefts, rights, batch_size=batch_size
    )
    plain_vectors, plain_attention = tagger.embed_oov(_reference(encoder, words, lefts, rights))
    assert plain_attention is not None and attention is not None
    np.testing.assert_allclose(vectors, plain_vectors.detach().numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(attention, plain_attention.detach().numpy(), atol=ATOL, rtol=0)
    # One word alone gives its row of the batch.
    i = len(words) // 2
    one, one_attention = Embedder(tagger, encoder).embed(words[i], lefts[i], rights[i])
    np.testing.assert_allclose(one, vectors[i], atol=ATOL, rtol=0)
    assert one_attention is not None
    np.testing.assert_allclose(one_attention, attention[i], atol=ATOL, rtol=0)
    with pytest.raises(ConfigError, match="batch_size"):
        Embedder(tagger, encoder).embed(words, lefts, rights, batch_size=0)


def test_only_sequences_that_are_no_prefix_of_another_run() -> None:
    sequences = np.array(
        [[1, 2, 3], [1, 2, -1], [1, 2, 3], [4, -1, -1], [1, 3, -1], [0, -1, -1], [1, -1, -1]]
    )
    runs, run_of = _longest_extensions(sequences)
    as_lists = [[int(v) for v in row if v >= 0] for row in runs]
    assert sorted(as_lists) == [[0], [1, 2, 3], [1, 3], [4]]
    for row, run in zip(sequences, run_of, strict=True):
        real = [int(v) for v in row if v >= 0]
        assert as_lists[run][: len(real)] == real  # each row reads from a run extending it
