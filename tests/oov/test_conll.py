from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from netsurgeon.errors import ConfigError
from netsurgeon.oov.conll import (
    DOCSTART,
    Sentence,
    convert_scheme,
    decode_lines,
    detect_scheme,
    iob1_to_iob2,
    iob2_to_iob1,
    read_conll,
    resolve_tag_column,
    scheme_evidence,
    write_conll,
)

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

"""


def test_reads_conll2003_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(CONLL, encoding="utf-8")
    sentences = read_conll(path)
    assert [s.tokens for s in sentences] == [
        ("EU", "rejects", "German", "call"),
        ("Peter", "Blackburn"),
        ("BRUSSELS", "1996-08-22"),
    ]
    assert [s.starts_document for s in sentences] == [True, False, True]
    assert sentences[0].column(resolve_tag_column("ner")) == ("B-ORG", "O", "B-MISC", "O")
    assert sentences[0].column(resolve_tag_column("pos")) == ("NNP", "VBZ", "JJ", "NN")
    assert sentences[1].line == 8


def test_round_trip_is_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(CONLL, encoding="utf-8")
    out = tmp_path / "b.txt"
    write_conll(out, read_conll(path))
    assert out.read_text(encoding="utf-8") == CONLL
    assert read_conll(out) == read_conll(path)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_round_trip_keeps_a_first_token_that_starts_with_u_feff(
    tmp_path: Path, encoding: str
) -> None:
    # The reader drops the byte-order mark at the start of a file, not the token's own U+FEFF.
    rows = (("\ufeffEU", "B-ORG"), ("x", "O"))
    out = tmp_path / "out.txt"
    write_conll(out, [Sentence(rows)], encoding=encoding)
    assert [s.rows for s in read_conll(out, encoding=encoding)] == [rows]


def test_generic_two_column_file_and_tag_column(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("a X\nb Y\n\n\nc Z\n", encoding="utf-8")
    sentences = read_conll(path)
    assert [s.column(-1) for s in sentences] == [("X", "Y"), ("Z",)]
    assert resolve_tag_column("1") == 1
    with pytest.raises(ConfigError, match="'chunky'"):
        resolve_tag_column("chunky")


def test_iob_conversion() -> None:
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]
    assert iob1_to_iob2(iob1) == iob2
    assert iob2_to_iob1(iob2) == iob1
    assert iob1_to_iob2(iob2) == iob2  # already IOB2
    assert detect_scheme([iob1]) == "iob1"
    assert detect_scheme([iob2]) == "iob2"
    # Most chunks decide: one stray I- start in an IOB2 file (and one B- in an IOB1 one).
    assert scheme_evidence([iob2, iob2, ["I-MISC"]]) == {"iob1": 1, "iob2": 6}
    assert detect_scheme([iob2, iob2, ["I-MISC"]]) == "iob2"
    assert detect_scheme([iob1, iob1, ["B-MISC"]]) == "iob1"
    assert detect_scheme([["O"]]) == "iob2"


def test_convert_scheme_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(CONLL, encoding="utf-8")
    sentences = read_conll(path)
    iob1 = convert_scheme(sentences, column=-1, to="iob1")
    assert iob1[1].column(-1) == ("I-PER", "I-PER")
    assert iob1[1].column(1) == ("NNP", "NNP")  # other columns untouched
    assert convert_scheme(iob1, column=-1, to="iob2") == sentences
    with pytest.raises(ConfigError, match="'bilou'"):
        convert_scheme(sentences, column=-1, to="bilou")


def test_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("a NN O\nb NN O\n\nc NN\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.txt:4: found 2 column\(s\), expected 3"):
        read_conll(path)


def test_single_column_is_rejected_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tokens\.txt:1: found 1 column"):
        read_conll(path)
    assert read_conll(path, min_columns=1)[0].tokens == ("a", "b")


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"empty\.txt: file is empty"):
        read_conll(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        read_conll(tmp_path / "nope.txt")


def test_non_utf8_names_line_and_encoding_option(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("a NN O\nZürich NNP B-LOC\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.txt:2: not valid utf-8.*--encoding"):
        read_conll(path)
    sentences = read_conll(path, encoding="latin-1")
    assert sentences[0].tokens == ("a", "Zürich")


def test_write_creates_no_partial_file_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    bad = Sentence((("x", "O"),))
    with pytest.raises(UnicodeEncodeError):
        write_conll(out, [bad, Sentence((("ü", "O"),))], encoding="ascii")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_byte_order_mark_is_not_part_of_the_first_token(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n".encode())
    sentences = read_conll(path)
    assert [s.rows for s in sentences] == [(("EU", "NNP", "B-NP", "B-ORG"),)]
    assert sentences[0].starts_document and sentences[0].line == 3
    path.write_bytes("\ufeffEU B-ORG\n\ufeffx O\n".encode())  # only the file's first BOM goes
    assert read_conll(path)[0].tokens == ("EU", "\ufeffx")
    assert decode_lines(path, "utf-8") == ["EU B-ORG", "\ufeffx O"]


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1e"])
def test_lines_break_only_at_newlines(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "a.txt"
    text = f"EU NNP B-NP B-ORG\r\n\r\ndots{separator} : O O\nx NN I-NP O\ny NN O O\n"
    path.write_bytes(text.encode("utf-8"))
    sentences = read_conll(path)
    # Columns are separated by ASCII whitespace (as in the embeddings loader), so the other
    # characters stay in the token.
    token = "dots" if separator in "\x0b\x0c" else f"dots{separator}"
    assert [s.tokens for s in sentences] == [("EU",), (token, "x", "y")]
    assert [s.line for s in sentences] == [1, 3]
    assert decode_lines(path, "utf-8")[2:] == [f"dots{separator} : O O", "x NN I-NP O", "y NN O O"]
    # Line numbers count newlines only.
    path.write_bytes(text.replace("y NN O O", "y NN").encode("utf-8"))
    with pytest.raises(ConfigError, match=r"a\.txt:5: found 2 column\(s\), expected 4 like line 1"):
        read_conll(path)


def test_cp1252_ellipsis_read_as_latin1_stays_in_its_row(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"EU NNP B-NP B-ORG\n\ndots\x85 : O O\nx NN I-NP O")  # no final newline
    sentences = read_conll(path, encoding="latin-1")
    assert sentences[1].rows == (("dots\x85", ":", "O", "O"), ("x", "NN", "I-NP", "O"))
    assert decode_lines(path, "latin-1") == [
        "EU NNP B-NP B-ORG",
        "",
        "dots\x85 : O O",
        "x NN I-NP O",
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            (("New York", "B-LOC"), ("is", "O")),
            "sentence 1, token 'New York': cannot write 'New York'",
        ),
        ((("", "O"),), "sentence 1, token '': cannot write ''"),
        ((("a\nb", "O"),), "sentence 1, token 'a\\nb': cannot write 'a\\nb'"),
        ((("x", "B\tLOC"),), "sentence 1, token 'x': cannot write 'B\\tLOC'"),
        ((("x", "NN", "O"),), "sentence 1, token 'x': the row has 3 column(s), but the first row"),
        (((DOCSTART, "O"),), "sentence 1, token '-DOCSTART-': it would be read back as a document"),
    ],
)
def test_write_refuses_what_read_cannot_give_back(
    tmp_path: Path, rows: tuple[tuple[str, ...], ...], message: str
) -> None:
    out = tmp_path / "out.txt"
    with pytest.raises(ConfigError, match=re.escape(message)):
        write_conll(out, [Sentence((("EU", "B-ORG"),)), Sentence(rows)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("starts_document", [True, False])
def test_write_refuses_an_empty_sentence(tmp_path: Path, starts_document: bool) -> None:
    # read_conll never gives an empty sentence back, with or without a document marker.
    out = tmp_path / "out.txt"
    sentences = [Sentence((("EU", "B-ORG"),)), Sentence((), starts_document=starts_document)]
    with pytest.raises(ConfigError, match="sentence 1 has no tokens"):
        write_conll(out, sentences)
    assert list(tmp_path.iterdir()) == []


def test_reads_gzip_compressed_files(tmp_path: Path) -> None:
    plain = tmp_path / "a.txt"
    plain.write_text(CONLL, encoding="utf-8")
    for name in ("a.txt.gz", "gzipped-without-suffix.txt"):
        packed = tmp_path / name
        packed.write_bytes(gzip.compress(CONLL.encode("utf-8")))
        assert read_conll(packed) == read_conll(plain)
    truncated = tmp_path / "t.txt.gz"
    truncated.write_bytes(gzip.compress(CONLL.encode("utf-8"))[:-12])
    with pytest.raises(ConfigError, match=r"t\.txt\.gz: gzip-compressed, but it cannot be"):
        read_conll(truncated)


def test_a_file_with_cr_line_endings_only_reads_as_with_newlines(tmp_path: Path) -> None:
    """Classic Mac OS line endings; before, the whole file was one line (one token)."""
    text = "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"
    lf, cr = tmp_path / "lf.txt", tmp_path / "cr.txt"
    lf.write_bytes(text.encode())
    cr.write_bytes(text.replace("\n", "\r").encode())
    assert read_conll(cr) == read_conll(lf)
    assert [s.tokens for s in read_conll(cr)] == [("EU", "rejects"), ("Peter",)]
    # Line numbers count CRs there.
    cr.write_bytes(text.replace("\n", "\r").replace("Peter", "P\xe9ter").encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"cr\.txt:4: not valid utf-8 text \(byte 0xe9 at column 2\)"
    ):
        read_conll(cr)
