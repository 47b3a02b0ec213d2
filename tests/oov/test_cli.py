from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netsurgeon.cli import build_parser, main
from netsurgeon.oov.conll import read_conll
from netsurgeon.oov.vectors import load_embeddings
from tests.oov.synthetic import SyntheticTask

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
def cli_run(synthetic: SyntheticTask, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["oov", "train", *_common(synthetic), "--method", "comick", "--out", str(out)]) == 0
    return out


def test_train_writes_run_and_summary(cli_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (cli_run / "model.pt").exists()
    config = json.loads((cli_run / "config.json").read_text())
    assert (
        config["method"] == "comick" and config["lr_tagger"] == 0.01 and config["lr_oov"] == 0.001
    )


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


def test_embed_words_and_corpus(synthetic: SyntheticTask, cli_run: Path, tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("zorple\nblick\n\nzorple\n", encoding="utf-8")
    out = tmp_path / "vectors.txt"
    assert main(["oov", "embed", str(cli_run), "--words", str(words), "--out", str(out)]) == 0
    emb = load_embeddings(out, normalise="none")
    assert emb.words == ["zorple", "blick"] and emb.dim == 8
    assert np.isfinite(emb.vectors).all()

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
    embed = ["oov", "embed", str(run), "--corpus", str(dev_file), "--encoding", "latin-1"]
    assert main([*embed, *options, "--out", str(out)]) == 0
    args = build_parser().parse_args(
        ["oov", "experiment", *data, "--embeddings-encoding", "cp1252", "--out", "x"]
    )
    assert args.embeddings_encoding == "cp1252" and args.encoding == "utf-8"
