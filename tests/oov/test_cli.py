from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from netsurgeon.cli import build_parser, main
from netsurgeon.errors import ConfigError
from netsurgeon.oov.conll import read_conll
from netsurgeon.oov.embed import embed_corpus
from netsurgeon.oov.run import load_run
from netsurgeon.oov.vectors import load_embeddings
from tests.oov.synthetic import SyntheticTask

# SMALL pre-trains for one epoch, which the random-like methods of some tests do not read.
pytestmark = pytest.mark.filterwarnings("ignore:--pretrain-epochs 1 has no effect")

SMALL = ["--oov-hidden", "8", "--tagger-hidden", "8", "--epochs", "2", "--pretrain-epochs", "1"]


def _common(task: SyntheticTask) -> list[str]:
    return [
        "--task",
        "ner",
        "--tag-column",
        "1",
        "--train",
        str(task.train),
        "--dev",
        str(task.dev),
        "--embeddings",
        str(task.embeddings),
        *SMALL,
    ]


@pytest.fixture(scope="module")
def cli_train(
    synthetic: SyntheticTask, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The run folder of one ``oov train`` and what it printed."""
    out = tmp_path_factory.mktemp("cli") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["oov", "train", *_common(synthetic), "--method", "comick", "--out", str(out)])
    assert code == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def cli_run(cli_train: tuple[Path, str]) -> Path:
    return cli_train[0]


def test_train_writes_run_and_summary(cli_train: tuple[Path, str]) -> None:
    run, printed = cli_train
    assert (run / "model.pt").exists()
    config = json.loads((run / "config.json").read_text())
    assert (
        config["method"] == "comick" and config["lr_tagger"] == 0.01 and config["lr_oov"] == 0.001
    )
    metrics = json.loads((run / "metrics.json").read_text())
    lines = printed.splitlines()
    assert lines[0] == f"best dev epoch {metrics['best_epoch']} (comick, seed 0)"
    assert lines[1].split() == ["scope", "precision", "recall", "F1", "entities", "token", "acc.",
                                "tokens"]  # fmt: skip
    best = metrics["best_dev"]
    rows = {"all tokens": "all", "entities with an OOV token": "oov_tokens"}
    for label, key in rows.items():
        row = next(line for line in lines[3:6] if line.startswith(label + "  "))
        expected = [f"{best[key][k]:.2f}" for k in ("precision", "recall", "f1")]
        expected += [str(best[key]["gold"]), f"{best[key]['accuracy']:.2f}"]
        assert row[len(label) :].split() == [*expected, str(best[key]["tokens"])]
    assert lines[6].startswith("(entities: gold entities scored")
    for split in ("train", "dev"):
        start = f"{split}: OOV tokens {100 * metrics['oov'][split]['token_rate']:.2f} %"
        assert any(line.startswith(start) for line in lines), split
    assert lines[-1] == f"run folder: {run}"


def test_evaluate(
    synthetic: SyntheticTask, cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    assert (
        main(["oov", "evaluate", str(cli_run), "--data", str(synthetic.dev), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "OOV tokens" in printed and "F1" in printed
    result = json.loads(out.read_text())
    assert set(result["metrics"]) == {"all", "oov_tokens", "oov_sentences"}
    assert result["oov"]["oov_tokens"] > 0
    assert result["attention_by_tag"].keys() == {"PER", "LOC"}


def test_evaluate_shows_scores_over_nothing_as_n_a(
    synthetic: SyntheticTask, cli_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a file without OOV tokens printed 0.00 everywhere on the OOV rows."""
    assert main(["oov", "evaluate", str(cli_run), "--data", str(synthetic.train)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for label in ("entities with an OOV token", "sentences with an OOV word"):
        row = next(line for line in lines if line.startswith(label + "  "))
        assert row[len(label) :].split() == ["n/a", "n/a", "n/a", "0", "n/a", "0"]
    assert next(line for line in lines if line.startswith("all tokens  ")).split()[2] != "n/a"


def test_evaluate_reads_the_task_from_the_loaded_run(
    synthetic: SyntheticTask, cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config.json without a field that has a default ("task": ner) loads; before, the
    command then re-read the raw file and stopped with KeyError after evaluating."""
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    config = json.loads((run / "config.json").read_text())
    del config["task"]
    (run / "config.json").write_text(json.dumps(config))
    assert main(["oov", "evaluate", str(run), "--data", str(synthetic.dev)]) == 0
    printed = capsys.readouterr().out
    assert "F1" in printed and "OOV tokens" in printed


def test_a_run_whose_embeddings_file_moved_says_how_to_point_at_it(
    synthetic: SyntheticTask, cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    config = json.loads((run / "config.json").read_text())
    moved = tmp_path / "moved.txt"
    config["embeddings"] = str(moved)
    (run / "config.json").write_text(json.dumps(config))
    for argv in (
        ["oov", "evaluate", str(run), "--data", str(synthetic.dev)],
        ["oov", "embed", str(run), "--corpus", str(synthetic.dev), "--out", str(tmp_path / "v")],
    ):
        err = _error(argv, capsys)
        assert err == (
            f"netsurgeon: error: {moved}: the run's embeddings file is not found (moved or "
            "deleted?); pass its new location with embeddings=FILE (--embeddings FILE)\n"
        )


def test_evaluate_points_from_an_experiment_folder_to_its_runs(
    synthetic: SyntheticTask, cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: 'EXP/config.json: missing configuration', and 'run folder not found' for a file."""
    experiment = tmp_path / "exp"
    shutil.copytree(cli_run, experiment / "runs" / "comick-seed0")
    (experiment / "results.json").write_text("{}")
    data = ["--data", str(synthetic.dev)]
    err = _error(["oov", "evaluate", str(experiment), *data], capsys)
    assert err == (
        f"netsurgeon: error: {experiment}: an experiment folder, not a run folder; give one of "
        f"its runs ({experiment / 'runs' / 'comick-seed0'})\n"
    )
    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    err = _error(["oov", "evaluate", str(a_file), *data], capsys)
    assert err == f"netsurgeon: error: {a_file}: is a file, expected a run folder\n"
    sweep = tmp_path / "sweep"  # another command's folder; before, the message had no path
    sweep.mkdir()
    (sweep / "config.json").write_text(json.dumps({"criteria": ["l1"], "levels": [0.5]}))
    err = _error(["oov", "evaluate", str(sweep), *data], capsys)
    assert err == (
        f"netsurgeon: error: {sweep / 'config.json'} has unknown fields ['criteria', 'levels']; "
        "was it written by `netsurgeon oov train`?\n"
    )


def test_embed_warns_that_unk_gives_every_word_one_vector(
    synthetic: SyntheticTask, tmp_path: Path
) -> None:
    from netsurgeon.oov.embed import embed_words

    run = tmp_path / "unk"
    args = ["oov", "train", *_common(synthetic), "--method", "unk", "--epochs", "1"]
    assert main([*args, "--out", str(run)]) == 0
    words = tmp_path / "words.txt"
    words.write_text("zorple\nblick\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=(
        f"^{run} was trained with method 'unk', which gives every OOV word the same vector; "
        "a run of mimick, context or comick predicts one per word$"
    )):  # fmt: skip
        assert embed_words(run, words, tmp_path / "v.txt") == 2


def test_embed_words_and_corpus(
    synthetic: SyntheticTask, cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = tmp_path / "words.txt"
    words.write_text("zorple\nblick\n\nzorple\n", encoding="utf-8")
    out = tmp_path / "vectors.txt"
    assert main(["oov", "embed", str(cli_run), "--words", str(words), "--out", str(out)]) == 0
    emb = load_embeddings(out, normalise="none")
    assert emb.words == ["zorple", "blick"] and emb.dim == 8
    assert np.isfinite(emb.vectors).all()
    # --per-occurrence means nothing for a word list: refused, not silently ignored
    refused = tmp_path / "refused.txt"
    argv = ["oov", "embed", str(cli_run), "--words", str(words), "--out", str(refused)]
    assert main([*argv, "--per-occurrence"]) == 2 and not refused.exists()
    assert "--per-occurrence applies to --corpus only" in capsys.readouterr().err

    out = tmp_path / "corpus.txt"
    assert (
        main(["oov", "embed", str(cli_run), "--corpus", str(synthetic.dev), "--out", str(out)]) == 0
    )
    dev_words = {t for s in read_conll(synthetic.dev) for t in s.tokens}
    written = load_embeddings(out, normalise="none").words
    assert set(written) == set(synthetic.oov_names) & dev_words
    per = tmp_path / "per.txt"
    args = ["oov", "embed", str(cli_run), "--corpus", str(synthetic.dev), "--out", str(per)]
    assert main([*args, "--per-occurrence"]) == 0
    assert len(per.read_text().splitlines()) == sum(
        t in synthetic.oov_names for s in read_conll(synthetic.dev) for t in s.tokens
    )


def test_experiment_writes_reports(
    synthetic: SyntheticTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exp"
    args = [*_common(synthetic), "--methods", "random,comick", "--seeds", "1", "--out", str(out)]
    assert main(["oov", "experiment", *args, "--test", str(synthetic.dev), "--epochs", "1"]) == 0
    assert "gain comick vs random" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"dev", "test"}
    assert results["methods"] == ["random", "comick"]
    assert set(results["attention_by_tag"]) == {"comick"}
    assert (out / "results.md").exists() and (out / "report.html").exists()
    assert {p.name for p in (out / "runs").iterdir()} == {"random-seed0", "comick-seed0"}
    # An existing experiment is not overwritten.
    assert main(["oov", "experiment", *args]) == 2
    assert "--resume" in capsys.readouterr().err
    # Resumed, finished runs only reload; their time is still the time they trained.
    assert main(["oov", "experiment", *args, "--test", str(synthetic.dev), "--epochs", "1",
                 "--resume"]) == 0  # fmt: skip
    again = json.loads((out / "results.json").read_text())
    for before, after in zip(results["runs"], again["runs"], strict=True):
        metrics = json.loads((Path(before["dir"]) / "metrics.json").read_text())
        trained = sum(e["time_s"] for e in metrics["pretrain_history"]) + sum(
            e["train_s"] + e["eval_s"] for e in metrics["history"]
        )
        assert after["seconds"] == before["seconds"] == pytest.approx(trained, abs=1e-3)
        assert after["seconds"] > 0 and after["wall_seconds"] > 0


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("netsurgeon: error: ") and err.count("\n") == 1  # one line
    return err


def test_user_errors_are_one_line(
    synthetic: SyntheticTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("a O\nb O extra\n", encoding="utf-8")
    base = ["oov", "train", "--train", str(bad), "--dev", str(synthetic.dev)]
    err = _error(
        [*base, "--embeddings", str(synthetic.embeddings), "--out", str(tmp_path / "r")], capsys
    )
    assert "bad.txt:2: found 3 column(s), expected 2" in err
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 O\n".encode("latin-1"))
    base = ["oov", "train", "--train", str(latin), "--dev", str(synthetic.dev)]
    err = _error(
        [*base, "--embeddings", str(synthetic.embeddings), "--out", str(tmp_path / "r")], capsys
    )
    assert "latin.txt:1" in err and "--encoding" in err
    err = _error(["oov", "evaluate", str(tmp_path / "none"), "--data", str(synthetic.dev)], capsys)
    assert "run folder not found" in err
    _error(["oov"], capsys)
    # Before: "encoding 'foo' is not a known text encoding", without the option.
    base = ["oov", "train", *_common(synthetic), "--out", str(tmp_path / "r")]
    for option in ("--encoding", "--embeddings-encoding"):
        err = _error([*base, option, "foo"], capsys)
        name = option[2:].replace("-", "_")
        assert err == (
            f"netsurgeon: error: unknown {name}='foo' ({option}); use a Python codec name such "
            "as utf-8 or latin-1\n"
        )


def test_train_oov_head_option(synthetic: SyntheticTask, tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    args = ["oov", "train", *_common(synthetic), "--method", "context", "--oov-head", "mlp"]
    assert main([*args, "--epochs", "1", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["oov_head"] == "mlp"


def test_embed_words_errors_name_the_file_line(
    cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = tmp_path / "words.txt"
    words.write_text("foo\n\nfoo\nbar\nbad word\n", encoding="utf-8")
    out = tmp_path / "w.txt"
    err = _error(["oov", "embed", str(cli_run), "--words", str(words), "--out", str(out)], capsys)
    assert "words.txt:5: expected one word per line, got 'bad word'" in err
    assert not out.exists()
    # Before: "is a folder, expected a column file".
    err = _error(
        ["oov", "embed", str(cli_run), "--words", str(tmp_path), "--out", str(out)], capsys
    )
    assert err == f"netsurgeon: error: {tmp_path}: is a folder, expected a words file\n"


def test_embed_corpus_names_the_line_of_a_token_with_whitespace(
    cli_run: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("He O\nvisited O\nnew\xa0york B-LOC\n\n", encoding="utf-8")
    out = tmp_path / "vectors.txt"
    with pytest.raises(ConfigError, match=r"corpus\.txt:3: token 'new\\xa0york' holds whitespace"):
        embed_corpus(cli_run, corpus, out, device="cpu")
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_ner_without_seqeval_is_refused_before_training(
    synthetic: SyntheticTask,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """NER is scored with seqeval (the nlp extra). Before: a traceback after the first epoch."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "seqeval" else real(name, *a)
    )
    out = tmp_path / "out"
    pick = ["--method", "random"] if command == "train" else ["--methods", "random"]
    assert main(["oov", command, *_common(synthetic), *pick, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "netsurgeon: error: NER is scored with seqeval, which is not installed: "
        "pip install 'netsurgeon[nlp]'\n"
    )
    assert not out.exists()


def test_run_and_embedder_reprs_say_what_they_hold(cli_run: Path) -> None:
    run = load_run(cli_run, device="cpu")
    assert repr(run) == (
        f"TrainedRun(task='ner', method='comick', tags={len(run.tags)}, "
        f"words={len(run.embeddings)}, dim=8, device='cpu')"
    )
    assert repr(run.embedder) == "Embedder(method='comick', dim=8, context_size=None)"


@pytest.mark.parametrize("context_size", [None, 2])
def test_embed_corpus_gives_the_vectors_of_whole_contexts(
    cli_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context_size: int | None
) -> None:
    """embed_corpus hands the embedder only the context words the run reads, a chunk of
    occurrences at a time (a long sentence is no longer copied whole per occurrence): the
    vectors equal those of the sentence's whole contexts, OOV words at both ends included."""
    run_dir = tmp_path / "run"
    shutil.copytree(cli_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["context_size"] = context_size
    (run_dir / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    known, oov = ["the", "a", "of", "in", "mr", "city"], ["zorple", "blick", "quib"]
    sentence = [str(w) for w in rng.choice(known, 30)]
    for j in (0, 1, 2, 3, 15, 26, 27, 28, 29):
        sentence[j] = oov[j % 3]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{t} O\n" for t in sentence) + "\nthe O\nquib O\n\n")
    monkeypatch.setattr("netsurgeon.oov.embed._CONTEXT_CHUNK", 4)
    out = tmp_path / "vectors.txt"
    assert embed_corpus(run_dir, corpus, out, per_occurrence=True, device="cpu") == 10
    rows = [line.split(" ") for line in out.read_text(encoding="utf-8").splitlines()]
    sentences = [sentence, ["the", "quib"]]
    where = [(i, j) for i, s in enumerate(sentences) for j, t in enumerate(s) if t in oov]
    run = load_run(run_dir, device="cpu")
    assert run.embedder.encoder.context_size == context_size
    expected, _ = run.embedder.embed(
        [sentences[i][j] for i, j in where],
        [sentences[i][:j] for i, j in where],
        [sentences[i][j + 1 :] for i, j in where],
    )
    assert [row[0] for row in rows] == [sentences[i][j] for i, j in where]
    written = np.array([row[1:] for row in rows], dtype=np.float32)
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*gives every OOV word the same vector")  # unk runs, on purpose
def test_embeddings_encoding_option(
    synthetic: SyntheticTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Latin-1 data with UTF-8 embeddings, then the same embeddings in latin-1.
    sentence = "le O\ncafé B-LOC\nest O\n\n"
    train_file, dev_file = tmp_path / "train.txt", tmp_path / "dev.txt"
    train_file.write_bytes((sentence * 5).encode("latin-1"))
    dev_file.write_bytes(sentence.encode("latin-1"))
    rows = "le 0.1 0.2\ncafé 0.3 0.4\nest 0.5 0.6\n"
    utf8, latin = tmp_path / "utf8.txt", tmp_path / "latin.txt"
    utf8.write_bytes(rows.encode("utf-8"))
    latin.write_bytes(rows.encode("latin-1"))
    data = ["--train", str(train_file), "--dev", str(dev_file), "--tag-column", "1"]
    train = ["oov", "train", *data, *SMALL, "--method", "unk", "--encoding", "latin-1"]
    run = tmp_path / "run"
    assert main([*train, "--embeddings", str(utf8), "--out", str(run)]) == 0
    assert "train: OOV tokens 0.00 %" in capsys.readouterr().out
    err = _error([*train, "--embeddings", str(latin), "--out", str(tmp_path / "r2")], capsys)
    assert "latin.txt:2: not valid utf-8" in err and "--embeddings-encoding" in err
    latin_run = tmp_path / "latin-run"
    options = ["--embeddings", str(latin), "--embeddings-encoding", "latin-1"]
    assert main([*train, *options, "--out", str(latin_run)]) == 0
    assert json.loads((latin_run / "config.json").read_text())["embeddings_encoding"] == "latin-1"
    # evaluate and embed: the run's by default, or the option (with another --embeddings).
    evaluate = ["oov", "evaluate", str(run), "--data", str(dev_file)]
    assert main(evaluate) == 0
    assert "OOV tokens 0.00 %" in capsys.readouterr().out
    err = _error([*evaluate, "--embeddings", str(latin)], capsys)
    assert "--embeddings-encoding" in err
    assert main([*evaluate, *options]) == 0
    assert main(["oov", "evaluate", str(latin_run), "--data", str(dev_file)]) == 0
    words = tmp_path / "words.txt"
    words.write_text("zorple\n", encoding="utf-8")
    out = tmp_path / "v.txt"
    assert main(["oov", "embed", str(latin_run), "--words", str(words), "--out", str(out)]) == 0
    # The corpus and words files are read in the run's encoding (latin-1) by default.
    embed = ["oov", "embed", str(run), "--corpus", str(dev_file)]
    assert main([*embed, *options, "--out", str(out)]) == 0
    words.write_bytes("café\nzorple\n".encode("latin-1"))
    assert main(["oov", "embed", str(run), "--words", str(words), "--out", str(out)]) == 0
    assert [line.split()[0] for line in out.read_text(encoding="utf-8").splitlines()] == [
        "café",
        "zorple",
    ]
    err = _error(["oov", "embed", str(run), "--words", str(words), "--out", str(out),
                  "--encoding", "utf-8"], capsys)  # fmt: skip
    assert "words.txt:1: not valid utf-8" in err
    args = build_parser().parse_args(
        ["oov", "experiment", *data, "--embeddings-encoding", "cp1252", "--out", "x"]
    )
    assert args.embeddings_encoding == "cp1252" and args.encoding == "utf-8"


# Checks before any work (user report s15, items 6, 7, 8, 11, 12, 14, 20).


def _experiment(task: SyntheticTask, out: Path, *extra: str) -> list[str]:
    """A one-run experiment (random has no pre-training), small enough for a fast test."""
    return [
        "oov",
        "experiment",
        *_common(task),
        "--epochs",
        "1",
        "--methods",
        "random",
        "--seeds",
        "1",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize("missing", ["--train", "--dev", "--test", "--embeddings"])
def test_experiment_checks_every_input_file_before_the_first_run(
    synthetic: SyntheticTask, tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    out = tmp_path / "ex"
    argv = _experiment(synthetic, out, "--test", str(synthetic.dev))
    nosuch = tmp_path / "nosuch.txt"
    argv[argv.index(missing) + 1] = str(nosuch)
    err = _error(argv, capsys)
    assert "nosuch.txt" in err and "not found" in err
    assert not out.exists()  # no run trained, no folder left to --resume
    if missing == "--test":
        # The corrected command then runs, without --resume.
        argv[argv.index("--test") + 1] = str(synthetic.dev)
        assert main(argv) == 0
        assert set(json.loads((out / "results.json").read_text())["summary"]) == {"dev", "test"}


def test_experiment_checks_test_file_columns_and_run_folders_first(
    synthetic: SyntheticTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one_column = tmp_path / "tokens.txt"
    one_column.write_text("word\nother\n", encoding="utf-8")
    out = tmp_path / "ex"
    err = _error(_experiment(synthetic, out, "--test", str(one_column)), capsys)
    assert "tokens.txt:1: found 1 column(s)" in err
    assert not out.exists()
    # A run folder of the plan already holds a run: refused before the runs before it train.
    taken = out / "runs" / "comick-seed0"
    taken.mkdir(parents=True)
    (taken / "config.json").write_text("{}", encoding="utf-8")
    argv = _experiment(synthetic, out)
    argv[argv.index("--methods") + 1] = "random,comick"
    err = _error(argv, capsys)
    assert "comick-seed0 already holds a run" in err and "--resume" in err
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["comick-seed0"]


def test_out_that_is_a_file_is_refused_before_any_work(
    synthetic: SyntheticTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile.txt"
    afile.write_text("keep me\n", encoding="utf-8")
    train = ["oov", "train", *_common(synthetic), "--method", "random"]
    err = _error([*train, "--out", str(afile)], capsys)
    assert f"out (--out) {str(afile)!r} is an existing file; give a folder name" in err
    err = _error(_experiment(synthetic, afile), capsys)
    assert f"out (--out) {str(afile)!r} is an existing file; give a folder name" in err
    err = _error([*train, "--out", str(afile / "run")], capsys)
    assert f"out (--out) {str(afile / 'run')!r}: {str(afile)!r} is a file, not a folder" in err
    assert afile.read_text(encoding="utf-8") == "keep me\n"
    # Before any work: the --out check comes before the data is read.
    argv = [*train, "--out", str(afile)]
    argv[argv.index("--train") + 1] = str(tmp_path / "nosuch.txt")
    assert "--out" in _error(argv, capsys)


def test_embed_and_evaluate_refuse_a_folder_as_out(
    synthetic: SyntheticTask, cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ckdir"
    folder.mkdir()
    words = tmp_path / "words.txt"
    words.write_text("zorple\n", encoding="utf-8")
    for argv in (
        ["oov", "embed", str(cli_run), "--words", str(words)],
        ["oov", "embed", str(cli_run), "--corpus", str(synthetic.dev)],
        ["oov", "evaluate", str(cli_run), "--data", str(synthetic.dev)],
    ):
        err = _error([*argv, "--out", str(folder)], capsys)
        assert "--out" in err and f"{str(folder)!r} is a folder; give a file name" in err
        # Checked first: a missing run folder is not reached.
        argv[2] = str(tmp_path / "no-run")
        assert "is a folder; give a file name" in _error([*argv, "--out", str(folder)], capsys)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_context_size_must_be_positive_or_sentence(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(
            ["oov", "train", "--train", "t", "--dev", "d", "--out", "o", "--context-size", value]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    expected = f"argument --context-size: context size {value!r} is not a positive integer or "
    assert expected + "'sentence'" in err


def test_context_size_values() -> None:
    base = ["oov", "train", "--train", "t", "--dev", "d", "--out", "o"]
    parse = build_parser().parse_args
    assert parse(base).context_size is None
    assert parse([*base, "--context-size", "sentence"]).context_size is None
    assert parse([*base, "--context-size", "3"]).context_size == 3


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    [
        ("train", "--epochs", "0", "'0' is not a positive integer"),
        ("train", "--batch-size", "-3", "'-3' is not a positive integer"),
        ("train", "--patience", "x", "'x' is not an integer"),
        ("train", "--lr-tagger", "-1", "'-1' is not a positive number"),
        ("train", "--lr-oov", "nan", "'nan' is not a positive number"),
        ("train", "--momentum", "1", "'1' is not in [0, 1)"),
        ("train", "--dropout", "1.5", "'1.5' is not in [0, 1)"),
        ("train", "--pretrain-epochs", "-1", "'-1' is not an integer >= 0"),
        ("train", "--seed", "-1", "'-1' is not an integer >= 0"),
        ("train", "--max-vocab", "0", "'0' is not a positive integer"),
        ("experiment", "--seeds", "0", "'0' is not a positive integer"),
        ("experiment", "--train-limit", "0", "'0' is not a positive integer"),
    ],
)
def test_bad_option_values_name_the_option(
    command: str, option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["oov", command, "--train", "t", "--dev", "d", "--out", "o", f"{option}={value}"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err


def test_python_api_names_the_keyword() -> None:
    from netsurgeon.errors import ConfigError
    from netsurgeon.oov.run import TrainConfig

    with pytest.raises(ConfigError, match="lr_tagger must be positive, got nan"):
        TrainConfig(lr_tagger=float("nan"))
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\), got 1.5"):
        TrainConfig(dropout=1.5)
    for seed in (-1, 2**63):  # numpy takes no negative seed, torch none past int64
        with pytest.raises(
            ConfigError, match=rf"seed must be an integer in \[0, 2\*\*63\), got {seed}"
        ):
            TrainConfig(seed=seed)


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # undo the line wrapping


def test_help_shows_defaults_and_methods(capsys: pytest.CaptureFixture[str]) -> None:
    from netsurgeon.oov.embedders import METHODS
    from netsurgeon.oov.run import TrainConfig

    defaults = TrainConfig()
    for command in ("train", "experiment"):
        text = _help(["oov", command], capsys)
        for option, value in [
            ("--epochs EPOCHS", defaults.epochs),
            ("--batch-size BATCH_SIZE", defaults.batch_size),
            ("--patience PATIENCE", defaults.patience),
            ("--lr-tagger LR_TAGGER", defaults.lr_tagger),
            ("--lr-oov LR_OOV", defaults.lr_oov),
            ("--momentum MOMENTUM", defaults.momentum),
            ("--pretrain-loss {mse,cosine}", defaults.pretrain_loss),
            ("--char-dim CHAR_DIM", defaults.char_dim),
        ]:
            after = text.split(f" {option} ", 1)[1]
            assert f"(default: {value})" in after.split(" --", 1)[0], option
    text = _help(["oov", "train"], capsys)
    assert "how OOV words get a vector (default: comick)" in text
    text = _help(["oov", "experiment"], capsys)
    listed = ", ".join(METHODS)
    assert f"--methods METHODS comma-separated list of: {listed};" in text
    assert "(default: random,mimick,comick)" in text and "(default: 3)" in text


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ("", "--methods is empty; give a comma-separated list of: "),
        (" , ", "--methods is empty; give a comma-separated list of: "),
        ("random,comik", "--methods: unknown method(s) 'comik'; give a comma-separated list of: "),
    ],
)
def test_methods_errors_list_the_methods(
    synthetic: SyntheticTask,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    methods: str,
    message: str,
) -> None:
    from netsurgeon.oov.embedders import METHODS

    out = tmp_path / "ex"
    argv = _experiment(synthetic, out)
    argv[argv.index("--methods") + 1] = methods
    err = _error(argv, capsys)
    assert message + ", ".join(METHODS) in err
    assert not out.exists()


def test_cli_method_list_matches_the_library() -> None:
    from netsurgeon.oov import cli
    from netsurgeon.oov.embedders import METHODS

    assert tuple(METHODS) == cli._METHODS


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "random"], "--pretrain-epochs 1 has no effect with --method 'random'"),
        (["--method", "mimick", "--oov-head", "mlp"], "--oov-head mlp has no effect"),
        (
            ["--method", "mimick", "--task", "pos", "--tag-scheme", "iob2"],
            "--tag-scheme iob2 has no effect with --task pos",
        ),
    ],
)
def test_train_warns_about_options_the_method_ignores(
    synthetic: SyntheticTask, tmp_path: Path, extra: list[str], message: str
) -> None:
    args = ["oov", "train", *_common(synthetic), *extra, "--epochs", "1", "--out", str(tmp_path)]
    with pytest.warns(UserWarning, match=message):
        assert main(args) == 0


def test_experiment_does_not_warn_when_one_method_uses_the_option(
    synthetic: SyntheticTask, tmp_path: Path
) -> None:
    import warnings

    args = [*_common(synthetic), "--methods", "random,mimick", "--seeds", "1", "--epochs", "1"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*has no effect.*")
        assert main(["oov", "experiment", *args, "--out", str(tmp_path / "exp")]) == 0


def test_ner_refuses_a_column_without_entity_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `--task ner` on the POS column trained, warned once per tag and scored F1."""
    sentence = "Peter NNP B-PER\nruns VBZ O\n\n"
    train_file, dev_file = tmp_path / "train.txt", tmp_path / "dev.txt"
    train_file.write_text(sentence * 3, encoding="utf-8")
    dev_file.write_text(sentence, encoding="utf-8")
    rows = tmp_path / "vectors.txt"
    rows.write_text("peter 0.1 0.2\nruns 0.3 0.4\n", encoding="utf-8")
    data = ["--train", str(train_file), "--dev", str(dev_file), "--embeddings", str(rows)]
    for command in (["train", "--method", "unk"], ["experiment", "--methods", "unk"]):
        out = tmp_path / command[0]
        argv = ["oov", *command, "--task", "ner", "--tag-column", "1", *data, *SMALL]
        err = _error([*argv, "--out", str(out)], capsys)
        assert f"{train_file}:1: task='ner' (--task ner) needs entity tags (O, B-X, I-X)" in err
        assert "holds 'NNP'; use task='pos' (--task pos)" in err and not out.exists()
    # A typo names its line (before: its sentence's number, -DOCSTART- lines not counted).
    typo = tmp_path / "typo.txt"
    typo.write_text("-DOCSTART- -X- O\n\n" + sentence * 2 + "Anna NNP B_PER\n\n", encoding="utf-8")
    argv = ["oov", "train", "--task", "ner", "--tag-column", "2", "--train", str(typo), "--dev",
            str(dev_file), "--embeddings", str(rows), *SMALL, "--method", "unk"]  # fmt: skip
    err = _error([*argv, "--out", str(tmp_path / "typo")], capsys)
    assert f"{typo}:9: task='ner' (--task ner) needs entity tags" in err and "'B_PER'" in err
    # the entity column trains
    argv = ["oov", "train", "--task", "ner", "--tag-column", "2", *data, *SMALL, "--method", "unk"]
    assert main([*argv, "--out", str(tmp_path / "ok")]) == 0
    # Dev, test and evaluated files are checked too (before: only --train; a dev file without
    # entity tags scored F1 0 with one seqeval warning per tag).
    pos_only = tmp_path / "pos_only.txt"
    pos_only.write_text("Peter NNP NNP\nruns VBZ VBZ\n\n", encoding="utf-8")
    tagged = ["--train", str(train_file), "--embeddings", str(rows), "--task", "ner", *SMALL]
    for argv in (
        ["oov", "train", *tagged, "--dev", str(pos_only), "--method", "unk"],
        ["oov", "experiment", *tagged, "--dev", str(pos_only), "--methods", "unk"],
        ["oov", "experiment", *tagged, "--dev", str(dev_file), "--test", str(pos_only),
         "--methods", "unk"],
    ):  # fmt: skip
        out = tmp_path / "refused"
        err = _error([*argv, "--out", str(out)], capsys)
        assert f"{pos_only}:1: task='ner' (--task ner) needs entity tags" in err
        assert "holds 'NNP'" in err and not out.exists()
    err = _error(["oov", "evaluate", str(tmp_path / "ok"), "--data", str(pos_only)], capsys)
    assert f"{pos_only}:1: task='ner' (--task ner) needs entity tags" in err
    assert "the run was trained for NER on tag column 2: give a file with its entity tags" in err


def test_train_resume_says_when_there_is_nothing_to_resume_or_left_to_train(
    synthetic: SyntheticTask, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    args = ["oov", "train", *_common(synthetic), "--method", "random", "--epochs", "1"]
    expected = f"--resume was asked for, but there is no checkpoint at {out / 'checkpoint.pt'}"
    with pytest.warns(UserWarning, match=re.escape(expected) + "; starting from scratch"):
        assert main([*args, "--out", str(out), "--resume"]) == 0
    # Resumed once more, the finished run is not said to resume "at epoch 2".
    with caplog.at_level(logging.INFO, logger="netsurgeon.oov.train"):
        assert main([*args, "--out", str(out), "--resume"]) == 0
    assert f"{out} finished after epoch 1 (epochs=1); nothing left to train" in caplog.messages
    assert not any(m.startswith("resuming") for m in caplog.messages)
