from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from netsurgeon.errors import ConfigError
from netsurgeon.oov.batching import BOS, EOS, N_SPECIAL_ROWS, UNK, OccurrenceBatch, TextEncoder
from netsurgeon.oov.embedders import (
    ATTENTION_PARTS,
    HEADS,
    METHODS,
    ComickEmbedder,
    MimickEmbedder,
    build_embedder,
)
from netsurgeon.oov.run import TrainConfig, build_tagger
from netsurgeon.oov.vectors import Embeddings
from netsurgeon.oov.vocab import Vocabulary

DIM = 6


def _encoder(context_size: int | None = None) -> TextEncoder:
    words = ["the", "cat", "sat", "on", "mat"]
    rng = np.random.default_rng(0)
    embeddings = Embeddings(
        words=words,
        vectors=rng.standard_normal((len(words), DIM)).astype(np.float32),
        vocab_size=len(words),
        fingerprint="x",
        source="test",
    )
    chars = TextEncoder.build_chars(["the", "cat", "sat", "on", "mat", "zorp", "blick"])
    return TextEncoder(embeddings=embeddings, chars=chars, context_size=context_size)


def _table(n_words: int = 5) -> torch.Tensor:
    torch.manual_seed(0)
    table = torch.randn(N_SPECIAL_ROWS + n_words, DIM)
    table[:2] = 0
    return table


def _batch(encoder: TextEncoder) -> OccurrenceBatch:
    sentences = [["the", "zorp", "sat", "on", "the", "mat"], ["blick"], ["cat", "zorp", "blick"]]
    occurrences = [o for s in sentences for o in encoder.encode(s).occurrences]
    return OccurrenceBatch.collate(occurrences)


def test_contexts_are_cut_and_marked() -> None:
    encoder = _encoder(context_size=2)
    encoded = encoder.encode(["the", "cat", "zorp", "sat", "on", "mat"])
    assert encoded.oov_positions == (2,)
    occurrence = encoded.occurrences[0]
    the, cat, sat, on = (encoder.word_id(w) for w in ["the", "cat", "sat", "on"])
    assert occurrence.left == (BOS, the, cat)  # reaches the sentence start
    assert occurrence.right == (sat, on)  # does not reach the end
    whole = _encoder(context_size=None).encode(["zorp", "cat", "zorp"]).occurrences
    assert whole[0].left == (BOS,) and whole[0].right == (cat, UNK, EOS)
    assert whole[1].left == (BOS, UNK, cat) and whole[1].right == (EOS,)
    with pytest.raises(ConfigError, match="context_size"):
        _encoder(context_size=0)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("method", ["comick", "context"])
def test_attention_sums_to_one_with_right_shape(method: str, head: str) -> None:
    encoder = _encoder(context_size=3)
    batch = _batch(encoder)
    embedder = build_embedder(method, dim=DIM, n_chars=len(encoder.chars), hidden=8, head=head)
    vectors, attention = embedder(batch, _table())
    assert vectors.shape == (len(batch), DIM)
    assert embedder.has_attention
    assert attention is not None
    assert attention.shape == (len(batch), len(ATTENTION_PARTS))
    torch.testing.assert_close(attention.sum(-1), torch.ones(len(batch)))
    assert bool((attention >= 0).all())
    if method == "context":  # never reads the characters
        assert bool((attention[:, ATTENTION_PARTS.index("word")] == 0).all())


@pytest.mark.parametrize("method", METHODS)
def test_output_dimension_matches_embeddings(method: str) -> None:
    encoder = _encoder()
    batch = _batch(encoder)
    embedder = build_embedder(method, dim=DIM, n_chars=len(encoder.chars), hidden=8)
    vectors, attention = embedder(batch, _table())
    assert vectors.shape == (len(batch), DIM)
    assert (attention is not None) == embedder.has_attention
    empty = OccurrenceBatch.collate([])
    assert embedder(empty, _table())[0].shape == (0, DIM)


def test_random_vectors_are_fixed_per_word_and_seed() -> None:
    encoder = _encoder()
    batch = _batch(encoder)  # zorp, blick, zorp, blick
    first = build_embedder("random", dim=DIM, seed=3, scale=0.5)(batch, _table())[0]
    again = build_embedder("random", dim=DIM, seed=3, scale=0.5)(batch, _table())[0]
    other = build_embedder("random", dim=DIM, seed=4, scale=0.5)(batch, _table())[0]
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first[0], first[2])  # same word, same vector
    assert not torch.allclose(first[0], first[1])
    assert not torch.allclose(first, other)


def test_attention_depends_on_the_input() -> None:
    encoder = _encoder(context_size=2)
    embedder = build_embedder("comick", dim=DIM, n_chars=len(encoder.chars), hidden=8)
    _, attention = embedder(_batch(encoder), _table())
    assert attention is not None
    assert not torch.allclose(attention[0], attention[1])


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="'fasttext'"):
        build_embedder("fasttext", dim=DIM)
    with pytest.raises(ConfigError, match="dimension must be positive"):
        build_embedder("zero", dim=0)
    with pytest.raises(ConfigError, match="character vocabulary"):
        build_embedder("comick", dim=DIM, n_chars=1)
    with pytest.raises(ConfigError, match="scale"):
        build_embedder("random", dim=DIM, scale=0.0)


def test_vocabulary_specials() -> None:
    vocab = Vocabulary(["a", "b", "a"])
    assert vocab.items == ["<pad>", "<unk>", "a", "b"]
    assert vocab.encode("b") == 3 and vocab.encode("zz") == 1
    assert Vocabulary.from_json(vocab.to_json()).items == vocab.items


def test_output_heads() -> None:
    encoder = _encoder()
    n_chars = len(encoder.chars)
    linear = build_embedder("comick", dim=DIM, n_chars=n_chars, hidden=8)
    mlp = build_embedder("comick", dim=DIM, n_chars=n_chars, hidden=8, head="mlp")
    assert isinstance(linear.output, nn.Linear) and linear.output.in_features == 3 * 2 * 8
    layers = [type(layer) for layer in mlp.output]
    assert layers == [nn.Linear, nn.Tanh, nn.Linear]
    assert (mlp.output[0].in_features, mlp.output[0].out_features) == (3 * 2 * 8, 8)
    assert mlp.output[2].out_features == DIM
    # Methods without an attention head accept and ignore it.
    mimick = build_embedder("mimick", dim=DIM, n_chars=n_chars, head="mlp")
    assert isinstance(mimick, MimickEmbedder)
    with pytest.raises(ConfigError, match="'deep'"):
        build_embedder("comick", dim=DIM, n_chars=n_chars, head="deep")
    with pytest.raises(ConfigError, match="'deep'"):
        ComickEmbedder(dim=DIM, n_chars=n_chars, head="deep")


@pytest.mark.parametrize(("normalise", "same"), [("lower", True), ("none", False)])
def test_random_vectors_follow_the_normalisation(normalise: str, same: bool) -> None:
    embeddings = Embeddings(
        words=["the"], vectors=np.ones((1, DIM), np.float32), vocab_size=1, fingerprint="x",
        source="test", normalise=normalise,
    )  # fmt: skip
    chars = TextEncoder.build_chars(["Paris", "paris"])
    encoder = TextEncoder(embeddings=embeddings, chars=chars, context_size=None)
    occurrences = [o for s in (["Paris"], ["paris"]) for o in encoder.encode(s).occurrences]
    batch = OccurrenceBatch.collate(occurrences)
    embedder = build_embedder("random", dim=DIM, seed=1, normalise=normalise)
    vectors = embedder(batch, _table(1))[0]
    assert torch.equal(vectors[0], vectors[1]) == same
    # A run's tagger takes the normalisation from its configuration.
    config = TrainConfig(method="random", normalise=normalise, seed=1)
    tagger = build_tagger(config, dim=DIM, n_chars=len(chars), n_tags=3, scale=1.0)
    torch.testing.assert_close(tagger.oov(batch, _table(1))[0], vectors, rtol=0, atol=0)
    # "lower" keeps the vectors that runs trained before the option had.
    lower = build_embedder("random", dim=DIM, seed=1)(batch, _table(1))[0]
    torch.testing.assert_close(lower[1], vectors[1], rtol=0, atol=0)
