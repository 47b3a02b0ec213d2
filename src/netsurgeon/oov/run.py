"""A run folder: configuration, vocabularies, weights and metrics, and loading it back.

Layout::

    RUN/config.json      TrainConfig, as written by ``train``
    RUN/vocab.json       characters, tags, and the embedding vocabulary's size and fingerprint
    RUN/model.pt         best weights (a state_dict of tensors only)
    RUN/checkpoint.pt    last epoch's weights and optimiser state, for --resume
    RUN/metrics.json     history, best dev scores, OOV rates

Weights are loaded with ``torch.load(..., weights_only=True)``; the pretrained vectors are not
stored but reloaded from the embeddings file, whose fingerprint must match. Weight files hold CPU
tensors whatever device trained the run, and the device is not part of the configuration, so a
run trained on a GPU loads and predicts on a CPU-only machine.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.fileio import describe_torch_file
from netsurgeon.modes import kept_modes
from netsurgeon.oov.batching import SentenceBatch, TextEncoder
from netsurgeon.oov.conll import resolve_tag_column
from netsurgeon.oov.embedders import ATTENTION_PARTS, HEADS, METHODS, build_embedder
from netsurgeon.oov.metrics import TASKS
from netsurgeon.oov.tagger import Tagger
from netsurgeon.oov.vectors import (
    FORMATS,
    NORMALISERS,
    PACKAGED_GLOVE,
    Embeddings,
    load_embeddings,
    word_list,
)
from netsurgeon.oov.vocab import TagVocabulary, Vocabulary
from netsurgeon.pruning.stats import resolve_device

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "PRETRAINED_METHODS",
    "VOCAB_FILE",
    "Embedder",
    "Prediction",
    "TrainConfig",
    "TrainedRun",
    "build_tagger",
    "load_run",
    "read_run_config",
    "run_tag_scheme",
]

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"

# The methods with weights to pre-train; --pretrain-epochs defaults to 5 for them, 0 otherwise.
PRETRAINED_METHODS = ("mimick", "context", "comick")

# What each annotation of a TrainConfig field accepts (bool is an int subclass, but True as a
# batch size is a bug at the call site), and how a message names it.
_FIELD_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
}


def _check_field_types(config: TrainConfig) -> None:
    """Raise ConfigError for a field whose value is not of its annotated type.

    Raises:
        ConfigError: a value of the wrong type, naming the field.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kinds = str(field.type).split(" | ")
        if value is None and "None" in kinds:
            continue
        checks = [_FIELD_KINDS[kind] for kind in kinds if kind in _FIELD_KINDS]
        if checks and not any(accepts(value) for _, accepts in checks):
            wanted = " or ".join([what for what, _ in checks] + ["None"] * ("None" in kinds))
            raise ConfigError(f"{field.name} must be {wanted}, got {value!r}")


@dataclass
class TrainConfig:
    """Everything that defines a training run (written to ``config.json``).

    Attributes mirror the ``netsurgeon oov train`` options; see ``--help`` for each.
    ``encoding`` is the data files' text encoding, ``embeddings_encoding`` the embeddings
    file's. :func:`~netsurgeon.oov.train.train` stores ``embeddings`` as an absolute path.
    """

    task: str = "ner"
    method: str = "comick"
    tag_column: int | None = None
    tag_scheme: str | None = None
    embeddings: str | None = None
    embeddings_format: str = "auto"
    normalise: str = "lower"
    max_vocab: int | None = None
    encoding: str = "utf-8"
    embeddings_encoding: str = "utf-8"
    context_size: int | None = None
    char_dim: int = 20
    oov_hidden: int = 128
    oov_head: str = "linear"
    tagger_hidden: int = 128
    dropout: float = 0.0
    oov_dropout: float = 0.0
    epochs: int = 30
    patience: int = 3
    batch_size: int = 8
    lr_tagger: float = 0.01
    lr_oov: float = 0.001
    momentum: float = 0.9
    clip: float = 5.0
    pretrain_epochs: int | None = None
    pretrain_loss: str = "mse"
    pretrain_lr: float = 0.001
    pretrain_words: int = 20_000
    train_limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.embeddings, os.PathLike):
            self.embeddings = os.fspath(self.embeddings)
        _check_field_types(self)
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} is not one of {list(TASKS)}")
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is not one of {list(METHODS)}")
        if self.tag_scheme not in (None, "iob1", "iob2"):
            raise ConfigError(f"tag scheme {self.tag_scheme!r} is not 'iob1' or 'iob2'")
        if self.oov_head not in HEADS:
            raise ConfigError(f"OOV head {self.oov_head!r} is not one of {list(HEADS)}")
        if self.pretrain_loss not in ("mse", "cosine"):
            raise ConfigError(f"pretrain loss {self.pretrain_loss!r} is not 'mse' or 'cosine'")
        if self.normalise not in NORMALISERS:
            raise ConfigError(
                f"normalisation {self.normalise!r} is not one of {sorted(NORMALISERS)}"
            )
        if self.embeddings_format not in FORMATS:
            raise ConfigError(
                f"embedding format {self.embeddings_format!r} is not one of {list(FORMATS)}"
            )
        for name in ("encoding", "embeddings_encoding"):
            try:
                codecs.lookup(getattr(self, name))
            except LookupError:
                option = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"unknown {name}={getattr(self, name)!r} ({option}); use a Python codec "
                    "name such as utf-8 or latin-1"
                ) from None
        positive = {
            "epochs": self.epochs,
            "patience": self.patience,
            "batch_size": self.batch_size,
            "char_dim": self.char_dim,
            "oov_hidden": self.oov_hidden,
            "tagger_hidden": self.tagger_hidden,
            "pretrain_words": self.pretrain_words,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value}")
        for name in ("lr_tagger", "lr_oov", "pretrain_lr", "clip"):
            # Written so that nan fails too; inf would give nan weights after one step.
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.oov_dropout < 1.0:
            raise ConfigError(f"oov_dropout must be in [0, 1), got {self.oov_dropout}")
        if self.context_size is not None and self.context_size < 1:
            raise ConfigError(
                f"context size must be a positive number of words (or the whole sentence), "
                f"got {self.context_size}"
            )
        if self.pretrain_epochs is not None and self.pretrain_epochs < 0:
            raise ConfigError(f"pretrain epochs must be >= 0, got {self.pretrain_epochs}")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise ConfigError(f"max vocab must be a positive integer, got {self.max_vocab}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ConfigError(f"train limit must be positive, got {self.train_limit}")
        if not 0 <= self.seed < 2**63:  # numpy takes no negative seed, torch none past int64
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed}")

    @property
    def column(self) -> int:
        """Column of the tag in the data files."""
        return self.tag_column if self.tag_column is not None else resolve_tag_column(self.task)

    @property
    def effective_pretrain_epochs(self) -> int:
        """Pre-training epochs of the learned predictors (:data:`PRETRAINED_METHODS`):
        ``pretrain_epochs``, 5 by default; 0 for the other methods, whatever it says."""
        if self.method not in PRETRAINED_METHODS:
            return 0
        return 5 if self.pretrain_epochs is None else self.pretrain_epochs

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, *, source: str | os.PathLike[str] = CONFIG_FILE) -> TrainConfig:
        """Rebuild from :meth:`to_json` output; ``source`` names the file in errors.

        Fields added since a run was written take their defaults, except
        ``embeddings_encoding``: runs from before it existed read their embeddings with
        ``encoding``, so that is what it becomes.

        Raises:
            CheckpointError: unknown or missing fields.
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"{source} does not hold an object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(
                f"{source} has unknown fields {unknown}; was it written by `netsurgeon oov train`?"
            )
        if "embeddings_encoding" not in data and "encoding" in data:
            data = {**data, "embeddings_encoding": data["encoding"]}
        try:
            return cls(**data)
        except ConfigError as exc:
            raise CheckpointError(f"{source} is invalid: {exc}") from None


def build_tagger(
    config: TrainConfig, *, dim: int, n_chars: int, n_tags: int, scale: float
) -> Tagger:
    """The tagger (with its OOV embedder) that ``config`` describes."""
    embedder = build_embedder(
        config.method,
        dim=dim,
        n_chars=n_chars,
        char_dim=config.char_dim,
        hidden=config.oov_hidden,
        seed=config.seed,
        scale=scale,
        head=config.oov_head,
        normalise=config.normalise,
    )
    return Tagger(
        embedder=embedder,
        n_tags=n_tags,
        hidden=config.tagger_hidden,
        dropout=config.dropout,
        seed=config.seed,
        scale=scale,
    )


@dataclass
class Prediction:
    """Predicted tags of some sentences, with each OOV occurrence's attention.

    Attributes:
        tags: Predicted tags per sentence.
        oov_mask: Whether each token is OOV.
        occurrences: ``(sentence, position)`` of every OOV occurrence, in order.
        attention: ``(n_occurrences, 3)`` weights over ``ATTENTION_PARTS`` (``(0, 3)`` when
            there is no OOV occurrence), or None for methods without attention.
    """

    tags: list[list[str]]
    oov_mask: list[list[bool]]
    occurrences: list[tuple[int, int]]
    attention: np.ndarray | None


class Embedder:
    """Predict vectors for words from their contexts with a trained OOV module.

    Use :meth:`TrainedRun.embedder`; ``embed`` takes one word or lists of words.
    """

    def __init__(self, tagger: Tagger, encoder: TextEncoder) -> None:
        self.tagger = tagger
        self.encoder = encoder

    def __repr__(self) -> str:
        return (
            f"Embedder(method={self.tagger.oov.method!r}, dim={self.tagger.dim}, "
            f"context_size={self.encoder.context_size})"
        )

    @torch.inference_mode()
    def embed(
        self,
        word: str | Sequence[str],
        left_context: Sequence[str] | Sequence[Sequence[str]] = (),
        right_context: Sequence[str] | Sequence[Sequence[str]] = (),
        *,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted vector(s) and attention for words in context.

        The tagger runs in eval mode; every module's own mode is restored afterwards.

        Args:
            word: A word, or a sequence of words. A word is a non-empty string without
                whitespace (a token, as :func:`~netsurgeon.oov.embed.embed_words` requires).
            left_context: The words before it, as a sequence of words (not one string); for a
                sequence of words, one such sequence per word.
            right_context: The words after it (likewise).
            batch_size: Occurrences per forward pass.

        Returns:
            ``(vector, attention)``: shapes ``(dim,)`` and ``(3,)`` for one word, ``(n, dim)`` and
            ``(n, 3)`` for a sequence of ``n`` words (``n`` may be 0); attention is None for
            methods without attention. The attention columns follow ``ATTENTION_PARTS`` (word,
            left, right).

        Raises:
            ConfigError: a word that is not a non-empty string without whitespace, a context
                given as a string or holding something other than strings, contexts that do
                not match the words, or a batch size that is not an integer >= 1.
        """
        _check_batch_size(batch_size)
        single = isinstance(word, str)
        if single:
            words = [word]
            lefts = [_words(left_context, "left_context")]
            rights = [_words(right_context, "right_context")]
        elif not isinstance(word, Iterable):
            raise ConfigError(f"word must be a string or a sequence of words, got {word!r}")
        else:
            words = list(word)
            lefts = _contexts(left_context, "left_context", len(words))
            rights = _contexts(right_context, "right_context", len(words))
        for i, token in enumerate(words):
            if not isinstance(token, str) or not token or any(ch.isspace() for ch in token):
                name = "word" if single else f"word[{i}]"
                raise ConfigError(
                    f"{name} must be a non-empty string without whitespace (one token), "
                    f"got {token!r}"
                )
        if len(lefts) != len(words) or len(rights) != len(words):
            raise ConfigError(
                f"got {len(words)} words but {len(lefts)} left and {len(rights)} right contexts"
            )
        for name, contexts in (("left_context", lefts), ("right_context", rights)):
            for i, context in enumerate(contexts):
                _check_tokens(context, name if single else f"{name}[{i}]", "word")
        vectors: list[np.ndarray] = []
        attentions: list[np.ndarray] = []
        with kept_modes(self.tagger):
            self.tagger.eval()
            table = self.tagger.word_table()
            for start in range(0, len(words), batch_size):
                stop = start + batch_size
                batch = self.encoder.batch_from_contexts(
                    words[start:stop], lefts[start:stop], rights[start:stop]
                ).to(table.device)
                vec, att = self.tagger.embed_oov(batch, table)
                vectors.append(vec.cpu().numpy())
                if att is not None:
                    attentions.append(att.cpu().numpy())
        dim = self.tagger.dim
        vector_array = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        attention = _attention(attentions, self.tagger)
        if single:
            return vector_array[0], None if attention is None else attention[0]
        return vector_array, attention


def _check_batch_size(batch_size: Any) -> None:
    """Raise ConfigError unless ``batch_size`` is an integer >= 1 (a bool is not)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def _words(value: Any, name: str) -> list[Any]:
    """``value`` as a list of words (see :func:`~netsurgeon.oov.vectors.word_list`)."""
    return word_list(value, name, kind="sequence", hint="split it, e.g. {s}.split()")


def _check_tokens(tokens: Iterable[Any], name: str, what: str) -> None:
    """Raise ConfigError naming the first element of ``tokens`` that is not a string."""
    for j, token in enumerate(tokens):
        if not isinstance(token, str):
            raise ConfigError(f"{name}[{j}] must be a string (a {what}), got {token!r}")


def _contexts(value: Any, name: str, n_words: int) -> list[list[Any]]:
    """One context (a list of words) per word; empty ones when ``value`` is empty.

    Raises:
        ConfigError: ``value`` or one of its elements is a string or not a sequence.
    """
    contexts = _words(value, name) or [[] for _ in range(n_words)]
    for i, context in enumerate(contexts):
        if isinstance(context, str):
            raise ConfigError(
                f"{name}[{i}] is the string {context!r}, but for a sequence of words {name} "
                f"must hold one sequence of words per word, e.g. [[{context!r}], ...]"
            )
        if not isinstance(context, Iterable):
            raise ConfigError(f"{name}[{i}] must be a sequence of words, got {context!r}")
    return contexts


def _attention(chunks: list[np.ndarray], tagger: Tagger) -> np.ndarray | None:
    """The concatenated attention rows: ``(0, 3)`` when there are none but the method has
    attention, None for methods without attention."""
    if chunks:
        return np.concatenate(chunks)
    if tagger.oov.has_attention:
        return np.zeros((0, len(ATTENTION_PARTS)), np.float32)
    return None


class TrainedRun:
    """A trained tagger with its vocabularies, ready to predict.

    Attributes:
        config: The run's configuration.
        tagger: The network, in eval mode.
        encoder: Token-to-tensor encoder bound to the loaded embeddings.
        tags: Tag vocabulary.
        embeddings: The loaded (needed) vectors.
    """

    def __init__(
        self,
        *,
        config: TrainConfig,
        tagger: Tagger,
        encoder: TextEncoder,
        tags: TagVocabulary,
    ) -> None:
        self.config = config
        self.tagger = tagger
        self.encoder = encoder
        self.tags = tags
        self.embeddings = encoder.embeddings

    def __repr__(self) -> str:
        return (
            f"TrainedRun(task={self.config.task!r}, method={self.config.method!r}, "
            f"tags={len(self.tags)}, words={len(self.embeddings)}, dim={self.tagger.dim}, "
            f"device={str(self.device)!r})"
        )

    @property
    def embedder(self) -> Embedder:
        """The OOV module behind :meth:`Embedder.embed`."""
        return Embedder(self.tagger, self.encoder)

    @property
    def device(self) -> torch.device:
        """Where the tagger's weights and vectors are; predictions run there."""
        return self.tagger.boundary.device

    def to(self, device: str | torch.device) -> TrainedRun:
        """Move the tagger to ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``); returns self.

        Raises:
            ConfigError: an unknown device, or CUDA asked for but not available.
        """
        self.tagger.to(resolve_device(device))
        return self

    @torch.inference_mode()
    def predict(self, sentences: Sequence[Sequence[str]], *, batch_size: int = 64) -> Prediction:
        """Tag token sequences.

        The tagger runs in eval mode; every module's own mode is restored afterwards.

        Raises:
            ConfigError: a sentence given as one string instead of a sequence of tokens, a
                token that is not a string, or a batch size that is not an integer >= 1.
        """
        _check_batch_size(batch_size)
        if isinstance(sentences, str):
            raise ConfigError(
                f"sentences must be a sequence of sentences (each a sequence of tokens), not "
                f"the string {sentences!r}; e.g. [{sentences!r}.split()]"
            )
        for i, tokens in enumerate(sentences):
            if isinstance(tokens, str):
                raise ConfigError(
                    f"sentences[{i}] is the string {tokens!r}; each sentence must be a "
                    f"sequence of tokens, e.g. {tokens!r}.split()"
                )
            _check_tokens(tokens, f"sentences[{i}]", "token")
        tags: list[list[str]] = []
        masks: list[list[bool]] = []
        occurrences: list[tuple[int, int]] = []
        attention: list[np.ndarray] = []
        with kept_modes(self.tagger):
            self.tagger.eval()
            for start in range(0, len(sentences), batch_size):
                chunk = sentences[start : start + batch_size]
                encoded = [self.encoder.encode(tokens) for tokens in chunk]
                output = self.tagger(SentenceBatch.collate(encoded).to(self.device))
                best = output.logits.argmax(-1).cpu()
                for i, (tokens, enc) in enumerate(zip(chunk, encoded, strict=True)):
                    tags.append([self.tags.decode(int(t)) for t in best[i, : len(tokens)]])
                    oov = set(enc.oov_positions)
                    masks.append([j in oov for j in range(len(tokens))])
                    occurrences.extend((start + i, p) for p in enc.oov_positions)
                if output.attention is not None:
                    attention.append(output.attention.cpu().numpy())
        att = _attention(attention, self.tagger)
        if att is not None and len(att) != len(occurrences):  # pragma: no cover - invariant
            raise RuntimeError("attention rows do not match OOV occurrences")
        return Prediction(tags, masks, occurrences, att)


def read_json(path: Path, what: str) -> Any:
    """Load a JSON file of a run folder.

    Raises:
        CheckpointError: missing or unreadable file.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing {what}; is this a run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt {what} ({exc})") from None


def load_state(path: Path) -> dict[str, Any]:
    """``torch.load`` a weights file safely.

    Raises:
        CheckpointError: missing, corrupt or not a dict.
    """
    advice = (
        "a run stopped before its first epoch ended has none: continue it with "
        "`netsurgeon oov train ... --resume`, or train it again"
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing weights file; {advice}") from None
    except Exception:  # torch raises many types for corrupt or foreign files
        # Its own message is a paragraph, with advice (weights_only=False) not to follow.
        raise CheckpointError(
            f"{path}: not a readable weights file: {describe_torch_file(path)}; train the run "
            "again or restore the file"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return state


def check_embeddings(embeddings: Embeddings, expected: dict[str, Any], run: Path) -> None:
    """Raise CheckpointError when the embeddings are not the ones the run was trained with."""
    if embeddings.dim != expected.get("dim"):
        raise CheckpointError(
            f"{run}: the checkpoint expects {expected.get('dim')}-dimensional embeddings, but "
            f"{embeddings.source} has dimension {embeddings.dim}"
        )
    if embeddings.vocab_size != expected.get(
        "vocab_size"
    ) or embeddings.fingerprint != expected.get("fingerprint"):
        raise CheckpointError(
            f"{run}: the embedding vocabulary of {embeddings.source} ({embeddings.vocab_size} "
            f"words, fingerprint {embeddings.fingerprint[:12]}) does not match the one the run "
            f"was trained with ({expected.get('vocab_size')} words, fingerprint "
            f"{str(expected.get('fingerprint'))[:12]}, from {expected.get('source')}); pass "
            f"the same embeddings and max_vocab (--embeddings, --max-vocab)"
        )


def read_run_config(run: str | os.PathLike[str]) -> TrainConfig:
    """The training configuration saved in a run folder.

    Raises:
        CheckpointError: the folder or its configuration file is missing or malformed.
    """
    folder = Path(run)
    if folder.is_file():
        raise CheckpointError(f"{run}: is a file, expected a run folder")
    if not folder.is_dir():
        raise CheckpointError(f"{run}: run folder not found")
    path = folder / CONFIG_FILE
    if not path.exists():  # read_json says it is missing; first, is it an experiment's folder?
        runs = sorted((folder / "runs").glob(f"*/{CONFIG_FILE}"))
        if runs:
            shown = ", ".join(str(p.parent) for p in runs[:3]) + (", ..." if len(runs) > 3 else "")
            raise CheckpointError(
                f"{run}: an experiment folder, not a run folder; give one of its runs ({shown})"
            )
    return TrainConfig.from_json(read_json(path, "configuration"), source=path)


def run_tag_scheme(run: str | os.PathLike[str], config: TrainConfig) -> str | None:
    """The IOB scheme a run reads evaluated files in: its ``tag_scheme``, else the training
    file's own (recorded in ``vocab.json``; runs written before it was recorded, and POS
    runs, read files as written).

    Raises:
        CheckpointError: the recorded scheme is neither ``iob1`` nor ``iob2``.
    """
    if config.tag_scheme is not None:
        return config.tag_scheme
    path = Path(run) / VOCAB_FILE
    vocab = read_json(path, "vocabularies")
    scheme = vocab.get("tag_scheme") if isinstance(vocab, dict) else None
    if scheme not in (None, "iob1", "iob2"):
        raise CheckpointError(f"{path}: tag_scheme {scheme!r} is not 'iob1' or 'iob2'")
    return scheme


def load_run(
    run: str | os.PathLike[str],
    *,
    keep: Iterable[str] | None = None,
    embeddings: str | None = None,
    embeddings_encoding: str | None = None,
    weights: str = MODEL_FILE,
    device: str | torch.device = "auto",
) -> TrainedRun:
    """Load a run folder, with vectors for the ``keep`` tokens.

    Args:
        run: The run folder written by training.
        keep: Tokens that will be tagged or used as context (their vectors are loaded; any
            other token is OOV, and its vector predicted). ``None`` (the default) loads
            every word of the embeddings' vocabulary, right for any input but costly: the
            whole file is parsed, the run holds ``vocab_size x dim`` float32 values (80 MB
            for the packaged GloVe 6B 50d, 480 MB for 6B 300d, 2.6 GB for the 2.2 million
            words of 840B 300d), and each forward pass builds a word table of that size.
            Pass the tokens to be tagged (and their contexts) when they are known.
        embeddings: Embeddings file to use instead of the one recorded in the run.
        embeddings_encoding: Text encoding of the embeddings file (default: the run's).
        weights: Weights file inside the run folder.
        device: Where to predict: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``
            or ``cuda:N``; any device trained the run.

    Raises:
        CheckpointError: missing/corrupt files, or embeddings whose dimension or vocabulary
            differ from the training ones.
        ConfigError: an unknown device, CUDA asked for but not available, or an embeddings
            file that cannot be read.
    """
    target = resolve_device(device)
    run = Path(run)
    config = read_run_config(run)
    vocab = read_json(run / VOCAB_FILE, "vocabularies")
    if not isinstance(vocab, dict) or not isinstance(vocab.get("embeddings"), dict):
        raise CheckpointError(f"{run / VOCAB_FILE}: malformed vocabularies")
    chars = Vocabulary.from_json(vocab.get("chars"), what="character vocabulary")
    tags = TagVocabulary.from_json(vocab.get("tags"))
    expected = vocab["embeddings"]
    source = embeddings if embeddings is not None else config.embeddings
    if embeddings is None and source not in (None, PACKAGED_GLOVE) and not Path(source).exists():
        raise ConfigError(
            f"{source}: the run's embeddings file is not found (moved or deleted?); pass its "
            "new location with embeddings=FILE (--embeddings FILE)"
        )
    loaded = load_embeddings(
        source,
        keep=keep,
        normalise=config.normalise,
        max_vocab=config.max_vocab,
        format=config.embeddings_format,
        encoding=embeddings_encoding or config.embeddings_encoding,
    )
    check_embeddings(loaded, expected, run)
    # The layers' first values, drawn from torch's global generator, are overwritten by the
    # saved weights: draw them from a fork, so that loading leaves the caller's stream alone.
    with torch.random.fork_rng(devices=[]):
        tagger = build_tagger(
            config,
            dim=loaded.dim,
            n_chars=len(chars),
            n_tags=len(tags),
            scale=float(expected["scale"]),
        )
    state = load_state(run / weights)
    state = state.get("model", state) if weights != MODEL_FILE else state
    try:
        tagger.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{run / weights}: weights do not fit the model ({exc})") from None
    tagger.set_vectors(loaded.vectors)
    tagger.to(target)
    tagger.eval()
    encoder = TextEncoder(embeddings=loaded, chars=chars, context_size=config.context_size)
    return TrainedRun(config=config, tagger=tagger, encoder=encoder, tags=tags)
