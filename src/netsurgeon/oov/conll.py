"""Column-file reading and writing (CoNLL-2003 and generic ``token ... tag`` files).

A file holds one token per line with whitespace-separated columns, a blank line between
sentences and optional ``-DOCSTART-`` lines between documents. Every row of a file must have
the same number of columns; bad input raises :class:`~netsurgeon.errors.ConfigError` naming the
file and the line, so nothing is silently dropped.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from netsurgeon.errors import ConfigError

__all__ = [
    "DOCSTART",
    "TASK_COLUMNS",
    "Sentence",
    "convert_scheme",
    "convert_tags",
    "decode_lines",
    "detect_scheme",
    "iob1_to_iob2",
    "iob2_to_iob1",
    "read_conll",
    "resolve_tag_column",
    "scheme_evidence",
    "scheme_of",
    "write_conll",
]

DOCSTART = "-DOCSTART-"

# Column of each task's tag in CoNLL-2003's "token POS chunk NER" layout.
TASK_COLUMNS: dict[str, int] = {"pos": 1, "chunk": 2, "ner": -1}

_SCHEMES = ("iob1", "iob2")

# What bytes.split() splits at: ASCII space, tab, newline, carriage return, vertical tab, form feed.
_ASCII_SPACES = " \t\n\r\x0b\x0c"
_ASCII_WHITESPACE = re.compile(f"[{re.escape(_ASCII_SPACES)}]+")
# The ASCII characters that str.split() also splits at.
_INFO_SEPARATORS = frozenset("\x1c\x1d\x1e\x1f")
# The first bytes of a gzip file (no text file in a usual encoding starts with them).
_GZIP_MAGIC = b"\x1f\x8b"


def _gzip_error(path: Path, exc: Exception) -> ConfigError:
    """The error for a gzip-compressed file that cannot be decompressed."""
    return ConfigError(
        f"{path}: gzip-compressed, but it cannot be decompressed ({exc}); is it truncated or "
        "damaged?"
    )


@dataclass(frozen=True)
class Sentence:
    """One sentence of a column file.

    Attributes:
        rows: One tuple of column values per token; column 0 is the token.
        starts_document: Whether a ``-DOCSTART-`` line came right before this sentence.
        line: 1-based line number of the sentence's first token in its file (0 if built in code).
    """

    rows: tuple[tuple[str, ...], ...]
    starts_document: bool = False
    line: int = 0

    @property
    def tokens(self) -> tuple[str, ...]:
        """The tokens (column 0)."""
        return tuple(row[0] for row in self.rows)

    def column(self, index: int) -> tuple[str, ...]:
        """The values of one column (negative indices count from the last column)."""
        return tuple(row[index] for row in self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def resolve_tag_column(task_or_column: str | int) -> int:
    """Turn a task name (``ner``, ``pos``, ``chunk``) or a column number into a column index.

    Raises:
        ConfigError: the value is neither a known task nor an integer.
    """
    if isinstance(task_or_column, int):
        return task_or_column
    if task_or_column in TASK_COLUMNS:
        return TASK_COLUMNS[task_or_column]
    try:
        return int(task_or_column)
    except ValueError:
        raise ConfigError(
            f"tag column {task_or_column!r} is not a column number or one of {sorted(TASK_COLUMNS)}"
        ) from None


def decode_lines(path: Path, encoding: str, *, what: str = "a column file") -> list[str]:
    """Read and decode ``path`` line by line so a decoding error can name its line.

    Lines end at ``\\n`` only (a ``\\r`` before it is dropped), as in the embeddings loader:
    ``str.splitlines`` would also break at characters such as U+0085, which is what a
    cp1252 ellipsis becomes when a file is read as latin-1. A file without any ``\\n`` ends
    its lines at ``\\r`` (classic Mac OS). A byte-order mark (U+FEFF) at
    the very start of the file is dropped too. A gzip-compressed file (recognised by its
    first bytes, whatever its name) is decompressed first. ``what`` names the kind of file
    expected, for the error about a folder.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected {what}") from None
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _gzip_error(path, exc) from None
    # Classic Mac OS files end lines in CR alone.
    newline = b"\r" if b"\n" not in data and b"\r" in data else b"\n"
    try:
        text = data.decode(encoding)
    except LookupError:
        raise ConfigError(f"unknown encoding={encoding!r} (--encoding)") from None
    except UnicodeDecodeError as exc:
        line_no = data.count(newline, 0, exc.start) + 1
        line_start = data.rfind(newline, 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise ConfigError(
            f"{path}:{line_no}: not valid {encoding} text (byte 0x{bad} at column "
            f"{exc.start - line_start + 1}); pass the file's encoding, for example "
            f"encoding='latin-1' (--encoding latin-1)"
        ) from None
    text = text.removeprefix("\ufeff")
    if newline == b"\r":
        text = text.replace("\r", "\n")
    lines = text.split("\n")
    if not lines[-1]:  # the piece after the final newline is not a line
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _fields(line: str) -> list[str]:
    """The whitespace-separated columns of a line.

    Only ASCII whitespace separates columns (as in the embeddings loader): ``str.split``
    would also split at characters such as U+0085, U+00A0 or U+001C inside a token.
    """
    if line.isascii() and _INFO_SEPARATORS.isdisjoint(line):
        return line.split()  # the same columns, faster
    stripped = line.strip(_ASCII_SPACES)
    return _ASCII_WHITESPACE.split(stripped) if stripped else []


def read_conll(
    path: str | os.PathLike[str],
    *,
    encoding: str = "utf-8",
    min_columns: int = 2,
) -> list[Sentence]:
    """Read a column file into sentences.

    Args:
        path: The file; gzip-compressed files are read too.
        encoding: Text encoding of the file.
        min_columns: Fewest columns a row may have (token plus at least one tag by default).

    Returns:
        The sentences in file order; ``-DOCSTART-`` lines become ``starts_document`` flags.

    Raises:
        ConfigError: missing or empty file, undecodable text, a gzip file that cannot be
            decompressed, or a row whose column count differs from the file's first row (the
            message names the file and line).
    """
    path = Path(path)
    lines = decode_lines(path, encoding)
    sentences: list[Sentence] = []
    rows: list[tuple[str, ...]] = []
    first_line = 0
    n_columns: int | None = None
    columns_line = 0
    doc_pending = False
    doc_for_current = False

    def flush() -> None:
        nonlocal rows, doc_for_current
        if rows:
            sentences.append(Sentence(tuple(rows), doc_for_current, first_line))
            rows = []
            doc_for_current = False

    for line_no, raw in enumerate(lines, start=1):
        fields = _fields(raw)
        if not fields:
            flush()
            continue
        if fields[0] == DOCSTART:
            flush()
            doc_pending = True
            continue
        if n_columns is None:
            if len(fields) < min_columns:
                raise ConfigError(
                    f"{path}:{line_no}: found {len(fields)} column(s), expected at least "
                    f"{min_columns} (token and tag): {raw.strip()!r}"
                )
            n_columns, columns_line = len(fields), line_no
        elif len(fields) != n_columns:
            raise ConfigError(
                f"{path}:{line_no}: found {len(fields)} column(s), expected {n_columns} "
                f"like line {columns_line}: {raw.strip()!r}"
            )
        if not rows:
            first_line = line_no
            doc_for_current, doc_pending = doc_pending, False
        rows.append(tuple(fields))
    flush()
    if not sentences:
        raise ConfigError(f"{path}: file is empty (no sentences found)")
    return sentences


def write_conll(
    path: str | os.PathLike[str],
    sentences: Iterable[Sentence],
    *,
    encoding: str = "utf-8",
    docstart_columns: int | None = None,
) -> None:
    """Write sentences in the column format that :func:`read_conll` reads.

    Everything is checked before the file is written, so that :func:`read_conll` reads back
    the same sentences.

    Args:
        path: Output file; written atomically.
        sentences: The sentences; each has at least one token, and every row has the same
            number of columns. A value must be non-empty and hold no ASCII whitespace (which
            separates columns and lines), and no token may be ``-DOCSTART-``.
        encoding: Text encoding.
        docstart_columns: Columns of ``-DOCSTART-`` lines (default: the sentences' own width,
            filled with ``-X-`` and a final ``O`` like CoNLL-2003).

    Raises:
        ConfigError: an empty sentence, a row whose number of columns differs from the first
            row's, or a value that could not be read back; the message names the sentence
            (counted from 0) and the token.
    """
    from netsurgeon.oov.io import atomic_write_text

    parts: list[str] = []
    n_columns: int | None = None
    for index, sentence in enumerate(sentences):
        if not sentence.rows:
            raise ConfigError(
                f"sentence {index} has no tokens, which a column file cannot hold; drop it "
                "(and set starts_document on the next sentence to start a document there)"
            )
        if n_columns is None:
            n_columns = len(sentence.rows[0])
        if sentence.starts_document:
            width = docstart_columns or len(sentence.rows[0])
            parts.append(" ".join([DOCSTART] + ["-X-"] * (width - 2) + ["O"] * (width > 1)))
            parts.append("")
        for row in sentence.rows:
            parts.append(_row_line(row, index, n_columns))
        parts.append("")
    text = "\n".join(parts) + "\n"
    if text.startswith("\ufeff"):
        # read_conll drops one byte-order mark at the start of the file; writing one keeps a
        # first token that starts with U+FEFF whole.
        text = "\ufeff" + text
    atomic_write_text(Path(path), text, encoding=encoding)


def _row_line(row: tuple[str, ...], index: int, n_columns: int) -> str:
    """The line of one row, checked to read back as the same row.

    Raises:
        ConfigError: the row cannot be written so that :func:`read_conll` gives it back.
    """
    if not row:
        raise ConfigError(f"sentence {index}: a row has no columns (not even a token)")
    token = row[0]
    where = f"sentence {index}, token {token!r}"
    if len(row) != n_columns:
        raise ConfigError(
            f"{where}: the row has {len(row)} column(s), but the first row written has "
            f"{n_columns}; every row of a column file has the same number"
        )
    bad = [value for value in row if not isinstance(value, str)]
    if bad:
        raise ConfigError(f"{where}: value {bad[0]!r} is not a string")
    line = " ".join(row)
    if _fields(line) != list(row):
        value = next(v for v in row if not v or _ASCII_WHITESPACE.search(v))
        raise ConfigError(
            f"{where}: cannot write {value!r} in a column file; a value must be non-empty and "
            "hold no ASCII whitespace (space, tab, newline), which separates the columns"
        )
    if token == DOCSTART:
        raise ConfigError(
            f"{where}: it would be read back as a document marker; mark the start of a "
            "document with starts_document=True"
        )
    return line


def _split(tag: str) -> tuple[str, str]:
    if tag == "O" or "-" not in tag:
        return tag, ""
    prefix, _, label = tag.partition("-")
    return prefix, label


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Convert IOB1 tags (``I-`` starts a chunk unless it continues one) to IOB2.

    ``B-`` tags are kept; an ``I-X`` that does not follow an ``X`` chunk becomes ``B-X``.
    """
    out: list[str] = []
    previous = ""
    for tag in tags:
        prefix, label = _split(tag)
        if prefix == "I" and previous != label:
            out.append(f"B-{label}")
        else:
            out.append(tag)
        previous = label if prefix in ("B", "I") else ""
    return out


def iob2_to_iob1(tags: Sequence[str]) -> list[str]:
    """Convert IOB2 tags to IOB1: ``B-X`` stays only where it follows another ``X`` chunk."""
    out: list[str] = []
    previous = ""
    for tag in tags:
        prefix, label = _split(tag)
        if prefix == "B" and previous != label:
            out.append(f"I-{label}")
        else:
            out.append(tag)
        previous = label if prefix in ("B", "I") else ""
    return out


def scheme_evidence(tag_sequences: Iterable[Sequence[str]]) -> dict[str, int]:
    """How many chunks start the IOB1 way (``I-X`` not after an ``X`` chunk) and how many
    the IOB2 way (``B-X`` not after an ``X`` chunk: IOB1 writes ``B-`` only there)."""
    counts = {"iob1": 0, "iob2": 0}
    for tags in tag_sequences:
        previous = ""
        for tag in tags:
            prefix, label = _split(tag)
            if prefix in ("B", "I") and previous != label:
                counts["iob1" if prefix == "I" else "iob2"] += 1
            previous = label if prefix in ("B", "I") else ""
    return counts


def scheme_of(evidence: Mapping[str, int]) -> str:
    """The scheme most chunks of :func:`scheme_evidence` start in; ``iob2`` on a tie."""
    return "iob1" if evidence["iob1"] > evidence["iob2"] else "iob2"


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """Guess ``iob1`` or ``iob2`` from how most chunks start (:func:`scheme_evidence`), so
    that a stray ``I-X`` in an IOB2 file does not make it IOB1; ``iob2`` on a tie."""
    return scheme_of(scheme_evidence(tag_sequences))


def convert_tags(tags: Sequence[str], *, to: str) -> list[str]:
    """One tag sequence converted to ``iob1`` or ``iob2``.

    Raises:
        ConfigError: ``to`` is not ``iob1`` or ``iob2``.
    """
    if to not in _SCHEMES:
        raise ConfigError(f"tag scheme {to!r} is not one of {list(_SCHEMES)}")
    return iob1_to_iob2(tags) if to == "iob2" else iob2_to_iob1(tags)


def convert_scheme(sentences: Sequence[Sentence], *, column: int, to: str) -> list[Sentence]:
    """Return the sentences with one tag column converted to IOB1 or IOB2.

    Raises:
        ConfigError: ``to`` is not ``iob1`` or ``iob2``.
    """
    if to not in _SCHEMES:  # before the loop: also for no sentence
        raise ConfigError(f"tag scheme {to!r} is not one of {list(_SCHEMES)}")
    out: list[Sentence] = []
    for sentence in sentences:
        new_tags = convert_tags(sentence.column(column), to=to)
        index = column % len(sentence.rows[0])
        rows = tuple(
            (*row[:index], tag, *row[index + 1 :])
            for row, tag in zip(sentence.rows, new_tags, strict=True)
        )
        out.append(Sentence(rows, sentence.starts_document, sentence.line))
    return out
