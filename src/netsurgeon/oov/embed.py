"""Write a trained OOV module's predictions as a GloVe text file for other tools."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from netsurgeon.errors import ConfigError
from netsurgeon.fileio import check_file_target
from netsurgeon.oov.conll import decode_lines, read_conll
from netsurgeon.oov.run import load_run, read_run_config
from netsurgeon.oov.vectors import write_glove_text

__all__ = ["embed_corpus", "embed_words"]

# OOV occurrences whose contexts embed_corpus holds at once.
_CONTEXT_CHUNK = 4096


def _warn_if_one_vector(run_dir: str | os.PathLike[str], method: str) -> None:
    if method in ("unk", "zero"):
        warnings.warn(
            f"{run_dir} was trained with method {method!r}, which gives every OOV word the same "
            "vector; a run of mimick, context or comick predicts one per word",
            UserWarning,
            stacklevel=3,
        )


def embed_words(
    run_dir: str | os.PathLike[str],
    words_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    embeddings: str | None = None,
    encoding: str | None = None,
    embeddings_encoding: str | None = None,
    device: str | torch.device = "auto",
) -> int:
    """Predict a vector for each word of a file (one per line, no context).

    Every word gets the vector the run's OOV module predicts for it, including a word that has
    a pretrained vector in the embeddings (its pretrained vector is not copied). The words
    file may be gzip-compressed. ``encoding`` is the words file's and ``embeddings_encoding``
    the embeddings file's (default: the run's, for both). ``device`` is where to predict (see
    :func:`~netsurgeon.oov.run.load_run`).

    Returns:
        Number of vectors written.

    Raises:
        ConfigError: an ``out`` that is a folder (checked before any work), an empty or
            undecodable words file, a line with more than one word (the message names its
            line), an unknown device, or CUDA asked for but not available.
    """
    check_file_target(out, "out (--out)")
    encoding = encoding or read_run_config(run_dir).encoding
    path = Path(words_file)
    found: dict[str, None] = {}  # the distinct words, in first-seen order
    for line_no, line in enumerate(decode_lines(path, encoding, what="a words file"), start=1):
        word = line.strip()
        if any(ch.isspace() for ch in word):
            raise ConfigError(f"{path}:{line_no}: expected one word per line, got {word!r}")
        if word:
            found.setdefault(word)
    words = list(found)
    if not words:
        raise ConfigError(f"{path}: file is empty (expected one word per line)")
    run = load_run(
        run_dir,
        keep=words,
        embeddings=embeddings,
        embeddings_encoding=embeddings_encoding,
        device=device,
    )
    _warn_if_one_vector(run_dir, run.config.method)
    vectors, _ = run.embedder.embed(words, [[] for _ in words], [[] for _ in words])
    write_glove_text(out, words, vectors)
    return len(words)


def embed_corpus(
    run_dir: str | os.PathLike[str],
    corpus: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    embeddings: str | None = None,
    encoding: str | None = None,
    embeddings_encoding: str | None = None,
    per_occurrence: bool = False,
    device: str | torch.device = "auto",
) -> int:
    """Predict vectors for every OOV occurrence of a column file (tokens in column 0).

    By default the occurrences of a word form are averaged into one line per form; with
    ``per_occurrence`` each occurrence gets its own line (the word repeats). ``encoding`` is
    the column file's and ``embeddings_encoding`` the embeddings file's (default: the run's,
    for both).
    ``device`` is where to predict (see :func:`~netsurgeon.oov.run.load_run`).

    Returns:
        Number of vectors written.

    Raises:
        ConfigError: an ``out`` that is a folder (checked before any work), a bad column
            file, an OOV token holding whitespace such as U+00A0 (the message names its line;
            checked before predicting), an unknown device, or CUDA asked for but not
            available.
    """
    check_file_target(out, "out (--out)")
    encoding = encoding or read_run_config(run_dir).encoding
    read = read_conll(corpus, encoding=encoding, min_columns=1)
    sentences = [list(s.tokens) for s in read]
    run = load_run(
        run_dir,
        keep={t for s in sentences for t in s},
        embeddings=embeddings,
        embeddings_encoding=embeddings_encoding,
        device=device,
    )
    _warn_if_one_vector(run_dir, run.config.method)
    words: list[str] = []
    where: list[tuple[int, int]] = []  # (sentence, position) of each OOV occurrence
    for i, (sentence, tokens) in enumerate(zip(read, sentences, strict=True)):
        for j, token in enumerate(tokens):
            if token not in run.embeddings:
                if any(ch.isspace() for ch in token):  # such as U+00A0, kept in a token
                    raise ConfigError(
                        f"{corpus}:{sentence.line + j}: token {token!r} holds whitespace, "
                        "which a GloVe text file cannot hold"
                    )
                words.append(token)
                where.append((i, j))
    if not words:
        write_glove_text(out, [], np.zeros((0, run.tagger.dim), np.float32))
        return 0
    # One more word than the context size, so that the encoder still sees the context as cut
    # (no sentence-boundary marker); and contexts are built a chunk at a time: a long
    # sentence would otherwise be copied whole for every OOV occurrence it holds.
    size = run.embedder.encoder.context_size
    reach = len(max(sentences, key=len)) if size is None else size + 1
    chunks = []
    for start in range(0, len(words), _CONTEXT_CHUNK):
        part = where[start : start + _CONTEXT_CHUNK]
        lefts = [sentences[i][max(j - reach, 0) : j] for i, j in part]
        rights = [sentences[i][j + 1 : j + 1 + reach] for i, j in part]
        chunks.append(run.embedder.embed(words[start : start + _CONTEXT_CHUNK], lefts, rights)[0])
    vectors = np.concatenate(chunks)
    if per_occurrence:
        write_glove_text(out, words, vectors)
        return len(words)
    forms: dict[str, list[int]] = {}
    for i, word in enumerate(words):
        forms.setdefault(word, []).append(i)
    means = np.stack([vectors[rows].mean(axis=0) for rows in forms.values()])
    write_glove_text(out, list(forms), means)
    return len(forms)
