from __future__ import annotations

import numpy as np
import pytest
import torch

from netsurgeon.errors import ConfigError
from netsurgeon.oov.batching import N_SPECIAL_ROWS, SentenceBatch, TextEncoder
from netsurgeon.oov.embedders import METHODS, build_embedder
from netsurgeon.oov.tagger import Tagger
from netsurgeon.oov.vectors import Embeddings

DIM = 5
WORDS = ["the", "cat", "sat", "on", "mat"]


def _setup(method: str) -> tuple[Tagger, TextEncoder, np.ndarray]:
    vectors = np.random.default_rng(1).standard_normal((len(WORDS), DIM)).astype(np.float32)
    embeddings = Embeddings(
        words=WORDS, vectors=vectors, vocab_size=5, fingerprint="f", source="test"
    )
    chars = TextEncoder.build_chars([*WORDS, "zorp"])
    encoder = TextEncoder(embeddings=embeddings, chars=chars, context_size=2)
    embedder = build_embedder(method, dim=DIM, n_chars=len(chars), hidden=4)
    torch.manual_seed(0)
    tagger = Tagger(embedder=embedder, n_tags=3, hidden=4)
    tagger.set_vectors(vectors)
    return tagger, encoder, vectors


@pytest.mark.parametrize("method", METHODS)
def test_in_vocabulary_words_are_never_replaced(method: str) -> None:
    tagger, encoder, vectors = _setup(method)
    sentences = [["The", "zorp", "sat"], ["cat", "on", "the", "mat", "zorp"]]
    batch = SentenceBatch.collate([encoder.encode(s) for s in sentences])
    # The first dropout call sees the embedded sentence, before packing for the LSTM.
    captured: list[torch.Tensor] = []
    handle = tagger.dropout.register_forward_hook(
        lambda module, args, out: captured.append(args[0].detach().clone())
    )
    output = tagger(batch)
    handle.remove()
    inputs = captured[0]
    for i, sentence in enumerate(sentences):
        for j, token in enumerate(sentence):
            row = encoder.embeddings.index(token)
            if row is not None:
                torch.testing.assert_close(inputs[i, j], torch.from_numpy(vectors[row]))
    oov = [(0, 1), (1, 4)]
    assert batch.oov_index.tolist() == [list(p) for p in oov]
    for k, (i, j) in enumerate(oov):
        torch.testing.assert_close(inputs[i, j], output.oov_vectors[k].detach())
    assert output.logits.shape == (2, 5, 3)


def test_table_layout_and_dimension_check() -> None:
    tagger, _, vectors = _setup("comick")
    table = tagger.word_table()
    assert table.shape == (N_SPECIAL_ROWS + len(WORDS), DIM)
    assert bool((table[:2] == 0).all())
    torch.testing.assert_close(table[N_SPECIAL_ROWS:], torch.from_numpy(vectors))
    with pytest.raises(ConfigError, match="dimension 5"):
        tagger.set_vectors(np.zeros((3, 4), np.float32))
    assert "vectors" not in tagger.state_dict()  # pretrained vectors are not saved
    assert "boundary" in tagger.state_dict()


def test_frozen_vectors_get_no_gradient() -> None:
    tagger, encoder, _ = _setup("comick")
    batch = SentenceBatch.collate([encoder.encode(["the", "zorp"], [0, 1])])
    tagger(batch).logits.sum().backward()
    assert all(p.grad is not None for p in tagger.oov.parameters())
    assert not tagger.vectors.requires_grad and not tagger.boundary.requires_grad


def test_bad_arguments() -> None:
    embedder = build_embedder("zero", dim=DIM)
    with pytest.raises(ConfigError, match="n_tags"):
        Tagger(embedder=embedder, n_tags=0)
    with pytest.raises(ConfigError, match="dropout"):
        Tagger(embedder=embedder, n_tags=2, dropout=1.5)
