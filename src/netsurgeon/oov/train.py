"""Pre-training (mimic in-vocabulary vectors) and joint training of the tagger and OOV module.

Joint training uses two SGD optimisers: the labelling net at ``lr_tagger`` (0.01) and the OOV
module at ``lr_oov`` (0.001), as in the poster. Each epoch ends with a dev evaluation; the best
weights go to ``model.pt`` and the full state to ``checkpoint.pt`` (both atomic), so a killed
run continues with ``resume=True``. Early stopping ends training after ``patience`` epochs
without a better dev score.

Training runs on the ``device`` given to :func:`train` (CUDA when available by default); the
device is not part of the run's configuration, and the saved files hold CPU tensors, so a run
continues or loads on another device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from netsurgeon import __version__
from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.fileio import check_folder_target, sha256_file
from netsurgeon.oov.batching import (
    N_SPECIAL_ROWS,
    UNK,
    EncodedSentence,
    Occurrence,
    OccurrenceBatch,
    SentenceBatch,
    TextEncoder,
)
from netsurgeon.oov.conll import (
    Sentence,
    convert_scheme,
    convert_tags,
    read_conll,
    scheme_evidence,
    scheme_of,
)
from netsurgeon.oov.io import atomic_save_torch, atomic_write_json
from netsurgeon.oov.metrics import check_scorer, headline, tagging_metrics
from netsurgeon.oov.run import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    VOCAB_FILE,
    TrainConfig,
    TrainedRun,
    build_tagger,
    load_state,
    read_json,
)
from netsurgeon.oov.tagger import Tagger
from netsurgeon.oov.vectors import PACKAGED_GLOVE, Embeddings, load_embeddings, normaliser
from netsurgeon.oov.vocab import TagVocabulary, oov_stats
from netsurgeon.provenance import VERSION_KEY, warn_if_other_version
from netsurgeon.pruning.stats import resolve_device
from netsurgeon.training import _describe_changes

__all__ = [
    "TaggedData",
    "TrainResult",
    "absolute_embeddings",
    "check_run_folder",
    "check_tags_fit_task",
    "progress_disabled",
    "read_tagged",
    "reading_scheme",
    "train",
]

log = logging.getLogger(__name__)


@dataclass
class TaggedData:
    """Token and tag sequences read from one column file, with the line each sentence starts
    at (empty for data built in code)."""

    path: str
    tokens: list[list[str]]
    tags: list[list[str]]
    lines: list[int] = dataclasses.field(default_factory=list)


def read_tagged(
    path: str | os.PathLike[str],
    *,
    column: int,
    encoding: str = "utf-8",
    limit: int | None = None,
    scheme: str | None = None,
) -> TaggedData:
    """Read tokens and one tag column from a column file.

    Args:
        path: The file.
        column: Tag column.
        encoding: Text encoding.
        limit: Keep only the first ``limit`` sentences.
        scheme: Convert the tags to ``iob1`` or ``iob2`` (None keeps them as written).

    Raises:
        ConfigError: bad file, or a tag column the file does not have.
    """
    sentences: list[Sentence] = read_conll(path, encoding=encoding)
    width = len(sentences[0].rows[0])
    if not -width <= column < width or column % width == 0:
        raise ConfigError(
            f"{path}: tag column {column} does not exist (the file has {width} columns; "
            "column 0 is the token)"
        )
    if limit is not None:
        sentences = sentences[:limit]
    if scheme is not None:
        sentences = convert_scheme(sentences, column=column, to=scheme)
    return TaggedData(
        str(path),
        [list(s.tokens) for s in sentences],
        [list(s.column(column)) for s in sentences],
        [s.line for s in sentences],
    )


def reading_scheme(config: TrainConfig, train: TaggedData) -> str | None:
    """The IOB scheme other files are read in for a run trained on ``train``.

    ``config.tag_scheme`` when set; for NER otherwise the training file's own scheme (that of
    most of its chunks, with a warning where some start the other way), so that a development
    or evaluated file written in the other one (CoNLL-2003 circulates in both) is converted
    to the tags the tagger learns, rather than scored against them as written. ``None``
    (POS): tags are read as written.
    """
    if config.tag_scheme is not None or config.task != "ner":
        return config.tag_scheme
    counts = scheme_evidence(train.tags)
    scheme = scheme_of(counts)
    other = "iob2" if scheme == "iob1" else "iob1"
    if counts[other]:
        log.warning(
            "%s mixes IOB schemes: %d chunks start as in %s and %d as in %s; reading it and "
            "the other files as %s (--tag-scheme chooses)",
            train.path,
            counts[scheme],
            scheme.upper(),
            counts[other],
            other.upper(),
            scheme,
        )
    return scheme


_NER_TAG = re.compile(r"O|[BIESLU]-\S+")


def check_tags_fit_task(
    data: TaggedData, task: str, column: int, *, remedy: str | None = None
) -> None:
    """For ``ner``, refuse a tag column that is not chunk tags (``O``, ``B-X``, ``I-X``...).

    A POS column under ``--task ner`` would otherwise train, and score entities that are not
    there, with one seqeval warning per tag. ``remedy`` replaces the message's advice (which
    names the task and tag column options).

    Raises:
        ConfigError: naming the file, the first foreign tag and where it is.
    """
    if task != "ner":
        return
    for number, tags in enumerate(data.tags, start=1):
        for offset, tag in enumerate(tags):
            if not _NER_TAG.fullmatch(tag):
                where = (
                    f"{data.path}:{data.lines[number - 1] + offset}"
                    if data.lines and data.lines[number - 1]
                    else f"{data.path} (sentence {number})"
                )
                raise ConfigError(
                    f"{where}: task='ner' (--task ner) needs entity tags (O, B-X, I-X), "
                    f"but tag column {column} holds {tag!r}; "
                    + (
                        remedy
                        or "use task='pos' (--task pos), or tag_column=N (--tag-column N) for "
                        "the column that holds the entity tags"
                    )
                )


def progress_disabled() -> bool:
    """Progress bars are hidden in CI and when stderr is not a terminal."""
    return bool(os.environ.get("CI")) or not os.isatty(2)


@dataclass
class TrainResult:
    """What :func:`train` returns: the best model and its metrics.

    ``run`` holds pretrained vectors for the training and development tokens only, as
    ``load_run(out, keep=those tokens)`` would: any other word counts as OOV there, even one
    the embeddings have. To tag or embed other text, load the run folder with
    :func:`~netsurgeon.oov.run.load_run` (all words, or ``keep=`` the tokens to be read).
    """

    run: TrainedRun
    metrics: dict[str, Any]


def _vector_scale(embeddings: Embeddings, sentences: Sequence[Sequence[str]]) -> float:
    """The spread of the training words' vectors (the dev file's must not shape the model):
    random OOV vectors and the sentence-boundary vectors are drawn at this scale."""
    rows = sorted({i for s in sentences for t in s if (i := embeddings.index(t)) is not None})
    return float(embeddings.vectors[rows].std() if rows else embeddings.vectors.std())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Batches are cut from pools of this many batches sorted by length: LSTM time grows with the
# longest item of a batch, so grouping similar lengths saves most of the padding steps.
_BUCKET_POOL = 32


def _batches(
    items: Sequence[Any],
    size: int,
    rng: np.random.Generator,
    length: Callable[[Any], int] | None = None,
) -> list[list[Any]]:
    """Shuffled batches; with ``length``, items of similar length share a batch.

    The items are shuffled, cut into pools of ``_BUCKET_POOL`` batches, each pool is sorted by
    length and cut into batches, and the batches are shuffled, so the order stays random
    while padding stays small.
    """
    order = rng.permutation(len(items)).tolist()
    if length is None:
        groups = [order[s : s + size] for s in range(0, len(order), size)]
    else:
        groups = []
        pool = size * _BUCKET_POOL
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda i: length(items[i]))
            groups.extend(chunk[s : s + size] for s in range(0, len(chunk), size))
        groups = [groups[i] for i in rng.permutation(len(groups)).tolist()]
    return [[items[i] for i in group] for group in groups]


def _with_pseudo_oov(
    sentence: EncodedSentence,
    tokens: Sequence[str],
    encoder: TextEncoder,
    probability: float,
    rng: np.random.Generator,
) -> EncodedSentence:
    """``sentence`` with each in-vocabulary token made an OOV occurrence with ``probability``.

    The tagger then reads the OOV module's prediction at those positions instead of the
    pretrained vector (word dropout into the module): the module learns from the task on many
    more occurrences than the few real OOV tokens, and the tagger learns to read predictions.
    """
    draws = rng.random(len(sentence.word_ids))  # one draw per token: batches stay reproducible
    chosen = [i for i, row in enumerate(sentence.word_ids) if row != UNK and draws[i] < probability]
    if not chosen:
        return sentence
    extra = tuple(encoder.occurrence(tokens, i, sentence.word_ids) for i in chosen)
    return dataclasses.replace(
        sentence,
        oov_positions=sentence.oov_positions + tuple(chosen),
        occurrences=sentence.occurrences + extra,
    )


def _context_length(item: tuple[Occurrence, int]) -> int:
    occurrence = item[0]
    return max(len(occurrence.left), len(occurrence.right))


def _pretrain_pool(
    tokens: list[list[str]], encoder: TextEncoder
) -> dict[int, list[tuple[int, int]]]:
    """Occurrences (sentence, position) of every in-vocabulary word type, by table row."""
    pool: dict[int, list[tuple[int, int]]] = {}
    for i, sentence in enumerate(tokens):
        for j, token in enumerate(sentence):
            row = encoder.word_id(token)
            if row != UNK:
                pool.setdefault(row, []).append((i, j))
    return pool


def _pretrain_epoch(
    tagger: Tagger,
    encoder: TextEncoder,
    tokens: list[list[str]],
    pool: dict[int, list[tuple[int, int]]],
    optimiser: torch.optim.Optimizer,
    config: TrainConfig,
    rng: np.random.Generator,
    desc: str,
) -> float:
    # Types are drawn uniformly (so frequent words do not dominate), each with one of its
    # contexts; small corpora repeat types with other contexts to fill the epoch.
    rows = sorted(pool)
    n_draws = min(config.pretrain_words, sum(len(v) for v in pool.values()))
    drawn = rng.choice(rows, size=n_draws, replace=n_draws > len(rows))
    occurrences: list[tuple[Occurrence, int]] = []
    word_ids: dict[int, list[int]] = {}
    for row in drawn.tolist():
        i, j = pool[row][int(rng.integers(len(pool[row])))]
        if i not in word_ids:
            word_ids[i] = [encoder.word_id(t) for t in tokens[i]]
        occurrences.append((encoder.occurrence(tokens[i], j, word_ids[i]), row))
    tagger.train()
    total, count = 0.0, 0
    for batch in tqdm(
        _batches(occurrences, 64, rng, _context_length),
        desc=desc,
        leave=False,
        disable=progress_disabled(),
    ):
        table = tagger.word_table()
        occurrence_batch = OccurrenceBatch.collate([o for o, _ in batch]).to(table.device)
        vectors, _ = tagger.embed_oov(occurrence_batch, table)
        target = table[torch.tensor([row for _, row in batch], device=table.device)]
        if config.pretrain_loss == "mse":
            loss = ((vectors - target) ** 2).sum(-1).mean()
        else:
            loss = (1 - nn.functional.cosine_similarity(vectors, target, dim=-1)).mean()
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(tagger.oov.parameters(), config.clip)
        optimiser.step()
        total += float(loss.detach()) * len(batch)
        count += len(batch)
    return total / max(count, 1)


def _evaluate(
    tagger: Tagger,
    encoder: TextEncoder,
    tags: TagVocabulary,
    data: TaggedData,
    config: TrainConfig,
) -> dict[str, Any]:
    run = TrainedRun(config=config, tagger=tagger, encoder=encoder, tags=tags)
    prediction = run.predict(data.tokens)
    return tagging_metrics(config.task, data.tags, prediction.tags, prediction.oov_mask)


def absolute_embeddings(config: TrainConfig) -> TrainConfig:
    """``config`` with its embeddings file as an absolute path, so the run loads from anywhere.

    Always a new config, checked again: a field changed after ``config`` was made fails here,
    before anything is written.

    Raises:
        ConfigError: a field of ``config`` is invalid.
    """
    embeddings = config.embeddings
    if embeddings is not None and embeddings != PACKAGED_GLOVE:
        embeddings = str(Path(embeddings).resolve())
    return dataclasses.replace(config, embeddings=embeddings)


def _same_file(saved: Any, now: Any) -> bool:
    """Whether two recorded embeddings sources name the same file.

    Runs written before paths were made absolute recorded them as typed; such a relative path
    is taken from the current folder, where a resumed run is normally started again.
    """
    if saved == now:
        return True
    if not isinstance(saved, str) or not isinstance(now, str) or PACKAGED_GLOVE in (saved, now):
        return False
    return Path(saved).resolve() == Path(now).resolve()


# Settings a resume may change: each epoch's batches and draws depend on the seed and the
# epoch's number only, and the learning rates are constant, so a run resumed with more epochs
# or more patience ends as one started with them.
RESUMABLE_CHANGES = ("epochs", "patience")


def check_run_folder(out: Path, config: TrainConfig, resume: bool) -> bool:
    """Whether to resume from ``out``; refuses to overwrite another run.

    ``config`` must hold its embeddings as :func:`train` stores them (an absolute path).
    ``epochs`` and ``patience`` may differ from the run's (:data:`RESUMABLE_CHANGES`).

    Raises:
        ConfigError: ``out`` holds a run and ``resume`` is false, or it holds a run of
            another configuration.
    """
    checkpoint = out / CHECKPOINT_FILE
    if not resume:
        if (out / CONFIG_FILE).exists() or checkpoint.exists():
            raise ConfigError(
                f"{out} already holds a run; pass resume=True (--resume) to continue it or "
                "choose another out folder (--out)"
            )
        return False
    if not checkpoint.exists():
        return False
    # Through TrainConfig, so that fields added since the run was written get their defaults.
    path = out / CONFIG_FILE
    saved = TrainConfig.from_json(read_json(path, "configuration"), source=path).to_json()
    now = config.to_json()
    if _same_file(saved["embeddings"], now["embeddings"]):
        saved["embeddings"] = now["embeddings"]
    for key in RESUMABLE_CHANGES:
        saved[key] = now[key]
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        listed = "; ".join(_describe_changes([(k, saved.get(k), now.get(k)) for k in changed]))
        raise ConfigError(
            f"{out}: cannot resume, the configuration differs ({listed}); use the same options"
        )
    return True


def _check_same_data(out: Path, vocab: dict[str, Any]) -> None:
    """Refuse to resume ``out`` on other data than it was trained on.

    The checkpoint's tagger only fits the run's own vocabularies, and the files named now would
    be recorded next to a model trained on others. (Runs written before the data digests were
    kept are compared on their vocabularies only.)
    """
    saved = read_json(out / VOCAB_FILE, "vocabularies")
    now = json.loads(json.dumps(vocab))  # tuples become lists, as in the saved file
    saved_embeddings = saved.get("embeddings")
    if isinstance(saved_embeddings, dict) and _same_file(
        saved_embeddings.get("source"), now["embeddings"]["source"]
    ):
        saved["embeddings"] = {**saved_embeddings, "source": now["embeddings"]["source"]}
    differ = sorted(k for k in now if k in saved and saved[k] != now[k])
    if differ:
        raise ConfigError(
            f"{out}: cannot resume, the run was trained on other data (its {', '.join(differ)} "
            f"differ from those of the files given now); use the same training, development "
            f"and embeddings files (--train, --dev, --embeddings), or another out folder (--out)"
        )


def train(
    config: TrainConfig,
    *,
    train_file: str | os.PathLike[str],
    dev_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    resume: bool = False,
    device: str | torch.device = "auto",
) -> TrainResult:
    """Train a tagger with an OOV embedder and write the run folder.

    Training seeds the random generators of Python, numpy and torch from ``config.seed``;
    the caller's random states are put back afterwards.

    Args:
        config: The run's configuration; a relative ``embeddings`` path is stored absolute.
        train_file: Training column file.
        dev_file: Development column file (early stopping and model selection).
        out: Run folder to create (or continue with ``resume``).
        resume: Continue from ``out/checkpoint.pt`` when it exists (written on any device).
        device: Where to train: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or
            ``cuda:N``. Not saved with the configuration; the returned run stays there.

    Returns:
        The best model and its metrics.

    Raises:
        ConfigError: bad data or options, an ``out`` that is a file (checked before any
            work), an unknown device, or CUDA asked for but not available;
            CheckpointError: unusable checkpoint.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            return _train(
                config,
                train_file=train_file,
                dev_file=dev_file,
                out=out,
                resume=resume,
                device=device,
            )
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _train(
    config: TrainConfig,
    *,
    train_file: str | os.PathLike[str],
    dev_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    resume: bool,
    device: str | torch.device,
) -> TrainResult:
    out = check_folder_target(out, "out (--out)")
    device = resolve_device(device)
    check_scorer(config.task)  # every epoch is scored on dev: fail before the first one
    config = absolute_embeddings(config)
    resuming = check_run_folder(out, config, resume)
    _seed_everything(config.seed)
    train_data = read_tagged(
        train_file,
        column=config.column,
        encoding=config.encoding,
        limit=config.train_limit,
        scheme=config.tag_scheme,
    )
    scheme = reading_scheme(config, train_data)
    if scheme is not None and config.tag_scheme is None:  # the chunks that start the other way
        train_data.tags = [convert_tags(tags, to=scheme) for tags in train_data.tags]
    dev_data = read_tagged(dev_file, column=config.column, encoding=config.encoding, scheme=scheme)
    for data in (train_data, dev_data):
        check_tags_fit_task(data, config.task, config.column)
    keep = {t for data in (train_data, dev_data) for s in data.tokens for t in s}
    embeddings = load_embeddings(
        config.embeddings,
        keep=keep,
        normalise=config.normalise,
        max_vocab=config.max_vocab,
        format=config.embeddings_format,
        encoding=config.embeddings_encoding,
    )
    if len(embeddings) == 0:
        raise ConfigError(
            f"no word of {train_file} or {dev_file} has a vector in {embeddings.source}; check the "
            "embeddings and normalise settings (--embeddings, --normalise)"
        )
    scale = _vector_scale(embeddings, train_data.tokens)
    if resuming:  # a run goes on at its own scale (runs before 27 Nov 2026 counted dev words)
        saved = read_json(out / VOCAB_FILE, "vocabularies").get("embeddings")
        if isinstance(saved, dict) and isinstance(saved.get("scale"), float):
            scale = saved["scale"]
    tags = TagVocabulary.from_sequences(train_data.tags)
    # Dev tags stay as written for scoring (they never enter the loss).
    unseen = dict(Counter(t for sentence in dev_data.tags for t in sentence if t not in tags))
    if unseen:
        log.warning(
            "tags in %s that never occur in %s: the tagger cannot predict them, so they count "
            "as errors in the dev metrics: %s",
            dev_file,
            train_file,
            unseen,
        )
    chars = TextEncoder.build_chars(t for s in train_data.tokens for t in s)
    encoder = TextEncoder(embeddings=embeddings, chars=chars, context_size=config.context_size)
    norm = normaliser(config.normalise)
    stats = {
        "train": oov_stats(train_data.tokens, embeddings, norm).to_json(),
        "dev": oov_stats(dev_data.tokens, embeddings, norm).to_json(),
    }
    tagger = build_tagger(
        config, dim=embeddings.dim, n_chars=len(chars), n_tags=len(tags), scale=scale
    )
    tagger.set_vectors(embeddings.vectors)
    tagger.to(device)  # before the optimisers are built, so their state lands there too

    vocab = {
        "chars": chars.to_json(),
        "tags": tags.to_json(),
        "embeddings": {
            "dim": embeddings.dim,
            "vocab_size": embeddings.vocab_size,
            "fingerprint": embeddings.fingerprint,
            "source": embeddings.source,
            "scale": scale,
            "special_rows": N_SPECIAL_ROWS,
        },
        "data": {"train_sha256": sha256_file(train_file), "dev_sha256": sha256_file(dev_file)},
        # The scheme evaluated files are converted to (runs without it read them as written).
        "tag_scheme": scheme,
    }
    if resuming:
        _check_same_data(out, vocab)
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CONFIG_FILE, config.to_json())
        atomic_write_json(out / VOCAB_FILE, vocab)

    train_encoded = [
        encoder.encode(tokens, [tags.encode(t) for t in tag_seq])
        for tokens, tag_seq in zip(train_data.tokens, train_data.tags, strict=True)
    ]
    tagger_params = [p for n, p in tagger.named_parameters() if not n.startswith("oov.")]
    oov_params = list(tagger.oov.parameters())
    optimisers = [torch.optim.SGD(tagger_params, lr=config.lr_tagger, momentum=config.momentum)]
    if oov_params:
        optimisers.append(torch.optim.SGD(oov_params, lr=config.lr_oov, momentum=config.momentum))
    pre_optimiser = torch.optim.Adam(oov_params, lr=config.pretrain_lr) if oov_params else None

    state: dict[str, Any] = {
        "pretrain_epoch": 0,
        "epoch": 0,
        "best": -math.inf,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "pretrain_history": [],
        "done": False,
    }
    if resuming:
        checkpoint = load_state(out / CHECKPOINT_FILE)
        try:
            tagger.load_state_dict(checkpoint["model"])
            for optimiser, saved in zip(optimisers, checkpoint["optimisers"], strict=True):
                optimiser.load_state_dict(saved)
            if pre_optimiser is not None and "pre_optimiser" in checkpoint:
                pre_optimiser.load_state_dict(checkpoint["pre_optimiser"])
            torch.set_rng_state(checkpoint["torch_rng"])
            if device.type == "cuda" and "cuda_rng" in checkpoint:
                torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
            state.update(checkpoint["state"])
            # A run stopped early continues when resumed with more patience.
            state["done"] = state["bad_epochs"] >= config.patience
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"{out / CHECKPOINT_FILE}: cannot resume from it ({exc})"
            ) from None
        if config.epochs < state["epoch"]:
            raise ConfigError(
                f"{out}: cannot resume with epochs={config.epochs} (--epochs), the run has "
                f"already trained {state['epoch']}; pass at least that many"
            )
        # Record a grown epochs or patience; the rest stays as the run wrote it.
        saved = read_json(out / CONFIG_FILE, "configuration")
        grown = {
            k: getattr(config, k) for k in RESUMABLE_CHANGES if saved.get(k) != getattr(config, k)
        }
        if grown:
            atomic_write_json(out / CONFIG_FILE, {**saved, **grown})
        if state["done"] or state["epoch"] >= config.epochs:
            stop = "early stopping" if state["done"] else f"epochs={config.epochs}"
            log.info(
                "%s finished after epoch %d (%s); nothing left to train", out, state["epoch"], stop
            )
        else:
            log.info("resuming %s at epoch %d", out, state["epoch"] + 1)
            warn_if_other_version(checkpoint, out)

    def save_checkpoint() -> None:
        checkpoint = {
            VERSION_KEY: __version__,
            "model": tagger.state_dict(),
            "optimisers": [o.state_dict() for o in optimisers],
            "torch_rng": torch.get_rng_state(),
            "state": state,
        }
        if device.type == "cuda":  # dropout draws from the GPU's generator there
            checkpoint["cuda_rng"] = torch.cuda.get_rng_state(device)
        if pre_optimiser is not None:
            checkpoint["pre_optimiser"] = pre_optimiser.state_dict()
        atomic_save_torch(out / CHECKPOINT_FILE, checkpoint)

    def write_metrics(best_dev: dict[str, Any] | None) -> dict[str, Any]:
        metrics = {
            "task": config.task,
            "method": config.method,
            "seed": config.seed,
            "device": str(device),
            "oov": stats,
            "unseen_dev_tags": unseen,
            "pretrain_history": state["pretrain_history"],
            "history": state["history"],
            "best_epoch": state["best_epoch"],
            "best_dev": best_dev,
        }
        atomic_write_json(out / METRICS_FILE, metrics)
        return metrics

    # Pre-training: the OOV module learns to mimic in-vocabulary vectors.
    pool = _pretrain_pool(train_data.tokens, encoder)
    while pre_optimiser is not None and state["pretrain_epoch"] < config.effective_pretrain_epochs:
        epoch = state["pretrain_epoch"] + 1
        rng = np.random.default_rng([config.seed, 1, epoch])
        started = time.perf_counter()
        loss = _pretrain_epoch(
            tagger,
            encoder,
            train_data.tokens,
            pool,
            pre_optimiser,
            config,
            rng,
            f"pretrain {epoch}/{config.effective_pretrain_epochs}",
        )
        state["pretrain_history"].append(
            {"epoch": epoch, "loss": loss, "time_s": round(time.perf_counter() - started, 3)}
        )
        state["pretrain_epoch"] = epoch
        save_checkpoint()

    # Joint training with early stopping on dev.
    best_dev: dict[str, Any] | None = None
    if (out / MODEL_FILE).exists() and state["best_epoch"]:
        best_dev = state["history"][state["best_epoch"] - 1]["dev"]
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100, reduction="sum")
    while not state["done"] and state["epoch"] < config.epochs:
        epoch = state["epoch"] + 1
        rng = np.random.default_rng([config.seed, 2, epoch])
        tagger.train()
        total, sentences = 0.0, 0
        started = time.perf_counter()
        pseudo_rng = np.random.default_rng([config.seed, 3, epoch])
        bar = tqdm(
            # Indices, not sentences, so --oov-dropout can find each sentence's tokens; the
            # batches are the same either way.
            _batches(
                range(len(train_encoded)),
                config.batch_size,
                rng,
                lambda i: len(train_encoded[i].word_ids),
            ),
            desc=f"epoch {epoch}/{config.epochs}",
            leave=False,
            disable=progress_disabled(),
        )
        for batch_indices in bar:
            batch_sentences = [
                _with_pseudo_oov(
                    train_encoded[i], train_data.tokens[i], encoder, config.oov_dropout, pseudo_rng
                )
                if config.oov_dropout
                else train_encoded[i]
                for i in batch_indices
            ]
            batch = SentenceBatch.collate(batch_sentences).to(device)
            output = tagger(batch)
            assert batch.tags is not None
            loss = loss_fn(
                output.logits.reshape(-1, output.logits.shape[-1]), batch.tags.reshape(-1)
            )
            loss = loss / len(batch_sentences)  # per-sentence loss, as in per-sentence SGD
            for optimiser in optimisers:
                optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(tagger.parameters(), config.clip)
            for optimiser in optimisers:
                optimiser.step()
            total += float(loss.detach()) * len(batch_sentences)
            sentences += len(batch_sentences)
        train_s = time.perf_counter() - started
        dev = _evaluate(tagger, encoder, tags, dev_data, config)
        score = headline(config.task, dev)
        state["history"].append(
            {
                "epoch": epoch,
                "loss": total / max(sentences, 1),
                "dev": dev,
                "train_s": round(train_s, 3),
                "eval_s": round(time.perf_counter() - started - train_s, 3),
            }
        )
        state["epoch"] = epoch
        if score > state["best"]:
            state.update(best=score, best_epoch=epoch, bad_epochs=0)
            best_dev = dev
            atomic_save_torch(out / MODEL_FILE, tagger.state_dict())
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= config.patience:
                state["done"] = True
        log.info(
            "epoch %d: loss %.4f, dev %.2f (best %.2f)",
            epoch,
            total / max(sentences, 1),
            score,
            state["best"],
        )
        save_checkpoint()
        write_metrics(best_dev)
    metrics = write_metrics(best_dev)
    tagger.load_state_dict(load_state(out / MODEL_FILE))
    tagger.eval()
    return TrainResult(
        TrainedRun(config=config, tagger=tagger, encoder=encoder, tags=tags), metrics
    )
