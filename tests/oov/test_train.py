from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.oov import train as train_module
from netsurgeon.oov.conll import convert_scheme, detect_scheme, read_conll, write_conll
from netsurgeon.oov.evaluate import evaluate_data, evaluate_run
from netsurgeon.oov.run import TrainConfig, load_run
from netsurgeon.oov.train import read_tagged, train
from tests.oov.synthetic import SyntheticTask, make_synthetic_task, write_rows

# Small and fast; the higher learning rates make a few epochs enough on the tiny task.
FAST = {
    "task": "ner",
    "tag_column": 1,
    "oov_hidden": 16,
    "tagger_hidden": 16,
    "epochs": 4,
    "patience": 10,
    "pretrain_epochs": 3,
    "lr_tagger": 0.1,
    "lr_oov": 0.01,
}


def _untimed(history: list[dict]) -> list[dict]:
    """History records without their wall times, which differ between runs."""
    return [{k: v for k, v in record.items() if not k.endswith("_s")} for record in history]


def _config(files: SyntheticTask, **changes: object) -> TrainConfig:
    return TrainConfig(**{**FAST, "embeddings": str(files.embeddings), **changes})


@pytest.fixture(scope="module")
def comick_run(synthetic: SyntheticTask, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "comick"
    train(
        _config(synthetic, method="comick"),
        train_file=synthetic.train,
        dev_file=synthetic.dev,
        out=out,
    )
    return out


def test_run_folder_contents(comick_run: Path) -> None:
    names = {p.name for p in comick_run.iterdir()}
    assert {"config.json", "vocab.json", "model.pt", "checkpoint.pt", "metrics.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    metrics = json.loads((comick_run / "metrics.json").read_text())
    assert metrics["oov"]["dev"]["token_rate"] > 0.1
    assert metrics["oov"]["train"]["oov_tokens"] == 0
    assert len(metrics["history"]) == 4 and len(metrics["pretrain_history"]) == 3
    state = torch.load(comick_run / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_comick_learns_context_predictable_oov_words(
    synthetic: SyntheticTask, comick_run: Path, tmp_path: Path
) -> None:
    data = read_tagged(synthetic.dev, column=1)
    comick = evaluate_data(load_run(comick_run, keep={t for s in data.tokens for t in s}), data)
    random_result = train(
        _config(synthetic, method="random"),
        train_file=synthetic.train,
        dev_file=synthetic.dev,
        out=tmp_path / "random",
    )
    random_eval = evaluate_data(random_result.run, data)
    comick_oov = comick.metrics["oov_tokens"]["accuracy"]
    random_oov = random_eval.metrics["oov_tokens"]["accuracy"]
    # Every dev name is OOV with no character cue: only the context can tell PER from LOC.
    assert comick_oov >= 90.0
    assert comick_oov > random_oov + 20.0
    assert comick.metrics["all"]["f1"] > random_eval.metrics["all"]["f1"]


def _assert_loads_identically(run_dir: Path, synthetic: SyntheticTask) -> None:
    """Two loads of one run folder give the same tags, attention and embeddings."""
    data = read_tagged(synthetic.dev, column=1)
    keep = {t for s in data.tokens for t in s}
    first = load_run(run_dir, keep=keep)
    second = load_run(run_dir, keep=keep)
    assert not first.tagger.training
    p1, p2 = first.predict(data.tokens), second.predict(data.tokens)
    assert p1.tags == p2.tags
    assert p1.attention is not None and p2.attention is not None
    np.testing.assert_array_equal(p1.attention, p2.attention)
    v1, a1 = first.embedder.embed("zorple", ["mr"], ["said"])
    v2, a2 = second.embedder.embed("zorple", ["mr"], ["said"])
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(a1, a2)


def test_save_load_gives_identical_predictions(synthetic: SyntheticTask, comick_run: Path) -> None:
    _assert_loads_identically(comick_run, synthetic)


def test_mlp_head_run_saves_and_loads(synthetic: SyntheticTask, tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    config = _config(synthetic, oov_head="mlp", epochs=1, pretrain_epochs=1)
    train(config, train_file=synthetic.train, dev_file=synthetic.dev, out=out)
    assert json.loads((out / "config.json").read_text())["oov_head"] == "mlp"
    assert isinstance(load_run(out).tagger.oov.output, torch.nn.Sequential)
    _assert_loads_identically(out, synthetic)


def test_config_without_head_loads_as_linear(comick_run: Path, tmp_path: Path) -> None:
    # Runs written before the option existed have no "oov_head" in config.json.
    old = tmp_path / "old"
    shutil.copytree(comick_run, old)
    config = json.loads((old / "config.json").read_text())
    del config["oov_head"]
    (old / "config.json").write_text(json.dumps(config))
    run = load_run(old)
    assert run.config.oov_head == "linear"
    assert isinstance(run.tagger.oov.output, torch.nn.Linear)


def test_embed_api_single_and_batched(comick_run: Path) -> None:
    # On CPU: cuDNN's results (TF32 on recent GPUs) depend on the batch by more than 1e-6.
    run = load_run(comick_run, keep=["mr", "city", "the"], device="cpu")
    vector, attention = run.embedder.embed("zorple", ["the", "mr"], [])
    assert vector.shape == (8,) and attention is not None and attention.shape == (3,)
    assert attention.sum() == pytest.approx(1.0, abs=1e-6)
    words = ["zorple", "blick", "zorple"]
    lefts = [["the", "mr"], ["city"], ["the", "mr"]]
    vectors, attentions = run.embedder.embed(words, lefts, [[], ["the"], []], batch_size=2)
    assert vectors.shape == (3, 8) and attentions.shape == (3, 3)
    np.testing.assert_allclose(vectors[0], vector, atol=1e-6)
    np.testing.assert_allclose(vectors[2], vector, atol=1e-6)
    with pytest.raises(ConfigError, match="2 left"):
        run.embedder.embed(words, lefts[:2], [[], [], []])


def test_loading_a_run_leaves_the_global_random_stream_alone(comick_run: Path) -> None:
    """Before: building the tagger drew its first weights from torch's global generator."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_run(comick_run)
    assert torch.equal(torch.rand(3), expected)


def test_training_puts_the_callers_random_states_back(
    synthetic: SyntheticTask, tmp_path: Path
) -> None:
    """Before: train reseeded Python's, numpy's and torch's generators and left them so."""

    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    def seed() -> None:
        random.seed(123)
        np.random.seed(123)
        torch.manual_seed(123)

    seed()
    expected = draws()
    seed()
    train(_config(synthetic, method="mimick", epochs=1, pretrain_epochs=1),
          train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "run")  # fmt: skip
    assert draws() == expected


def test_the_dev_file_does_not_shape_the_model(synthetic: SyntheticTask, tmp_path: Path) -> None:
    """Before: the random vectors' scale was the spread of the train and dev words' vectors,
    so a dev file with other in-vocabulary words changed the random OOV vectors."""
    train_words = {t for s in read_tagged(synthetic.train, column=1).tokens for t in s}
    rows = synthetic.embeddings.read_text().splitlines()
    extra = [r.split()[0] for r in rows if r.split()[0] not in train_words][:3]
    assert extra  # embedding words the training file does not have
    dev2 = tmp_path / "dev2.txt"
    dev2.write_text(synthetic.dev.read_text() + "".join(f"{w} O\n" for w in extra) + "\n")
    vectors = []
    for name, dev in (("a", synthetic.dev), ("b", dev2)):
        result = train(_config(synthetic, method="random", epochs=1), train_file=synthetic.train,
                       dev_file=dev, out=tmp_path / name)  # fmt: skip
        vectors.append(result.run.embedder.embed("zorple", [], [])[0])
    np.testing.assert_array_equal(*vectors)
    scales = [json.loads((tmp_path / n / "vocab.json").read_text())["embeddings"]["scale"]
              for n in "ab"]  # fmt: skip
    assert scales[0] == scales[1]
    # A run written before (its scale counted the dev words) resumes at its own scale.
    vocab_path = tmp_path / "b" / "vocab.json"
    vocab = json.loads(vocab_path.read_text())
    vocab["embeddings"]["scale"] = scales[0] * 1.01
    vocab_path.write_text(json.dumps(vocab))
    train(_config(synthetic, method="random", epochs=2), train_file=synthetic.train,
          dev_file=dev2, out=tmp_path / "b", resume=True)  # fmt: skip
    assert json.loads(vocab_path.read_text())["embeddings"]["scale"] == scales[0] * 1.01


def test_resume_continues_to_the_same_weights(
    synthetic: SyntheticTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With --oov-dropout, whose draws must also continue where they stopped.
    config = _config(synthetic, method="comick", epochs=2, pretrain_epochs=1, oov_dropout=0.2)
    full = train(config, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "a")
    calls = {"n": 0}
    real_evaluate = train_module._evaluate

    def interrupted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed during the second epoch's evaluation
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "b")
    monkeypatch.setattr(train_module, "_evaluate", real_evaluate)
    with pytest.raises(ConfigError, match="--resume"):
        train(config, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "b")
    other = dataclasses.replace(config, lr_tagger=0.5)
    with pytest.raises(ConfigError, match="lr_tagger"):
        train(
            other,
            train_file=synthetic.train,
            dev_file=synthetic.dev,
            out=tmp_path / "b",
            resume=True,
        )
    # Other data: the same sentences in another order (same vocabularies, other file).
    shuffled = tmp_path / "shuffled.txt"
    blocks = synthetic.train.read_text(encoding="utf-8").strip().split("\n\n")
    shuffled.write_text("\n\n".join(reversed(blocks)) + "\n", encoding="utf-8")
    vocab_before = (tmp_path / "b" / "vocab.json").read_bytes()
    with pytest.raises(ConfigError, match=r"trained on other data \(its (chars, )?data differ"):
        train(config, train_file=shuffled, dev_file=synthetic.dev, out=tmp_path / "b", resume=True)
    assert (tmp_path / "b" / "vocab.json").read_bytes() == vocab_before  # nothing rewritten
    resumed = train(
        config, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "b", resume=True
    )
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2]
    assert _untimed(resumed.metrics["history"]) == _untimed(full.metrics["history"])
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def _same_weights(a: Path, b: Path) -> None:
    first = torch.load(a / "model.pt", weights_only=True)
    second = torch.load(b / "model.pt", weights_only=True)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


def test_resume_with_more_epochs_ends_as_a_longer_run(
    synthetic: SyntheticTask, tmp_path: Path
) -> None:
    config = _config(synthetic, method="mimick", epochs=3, pretrain_epochs=1)
    full = train(config, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "a")
    short = dataclasses.replace(config, epochs=1)
    train(short, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "b")
    resumed = train(
        config, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "b", resume=True
    )
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2, 3]
    assert _untimed(resumed.metrics["history"]) == _untimed(full.metrics["history"])
    _same_weights(tmp_path / "a", tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["epochs"] == 3
    shorter = dataclasses.replace(config, epochs=2)
    with pytest.raises(ConfigError, match=r"epochs=2 \(--epochs\), the run has already trained 3"):
        train(shorter, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "b",
              resume=True)  # fmt: skip
    assert json.loads((tmp_path / "b" / "config.json").read_text())["epochs"] == 3


def test_resume_with_more_patience_continues_a_run_stopped_early(
    synthetic: SyntheticTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flat dev score: the first epoch is the best, every later one a bad epoch.
    monkeypatch.setattr(train_module, "headline", lambda task, metrics: 0.0)
    config = _config(synthetic, method="random", epochs=6, patience=2)
    full = train(config, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "a")
    assert len(full.metrics["history"]) == 3
    impatient = dataclasses.replace(config, patience=1)
    stopped = train(
        impatient, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "b"
    )
    assert len(stopped.metrics["history"]) == 2
    resumed = train(
        config, train_file=synthetic.train, dev_file=synthetic.dev, out=tmp_path / "b", resume=True
    )
    assert _untimed(resumed.metrics["history"]) == _untimed(full.metrics["history"])
    _same_weights(tmp_path / "a", tmp_path / "b")


def test_pseudo_oov_occurrences_are_those_of_real_oov_tokens(synthetic: SyntheticTask) -> None:
    run = load_run(_trained_once(synthetic))
    tokens = ["mr", "zorple", "said", "the", "city"]  # "zorple" is OOV
    sentence = run.encoder.encode(tokens)
    assert sentence.oov_positions == (1,)
    rng = np.random.default_rng(0)
    everything = train_module._with_pseudo_oov(sentence, tokens, run.encoder, 1.0, rng)
    assert everything.word_ids == sentence.word_ids and everything.tags == sentence.tags
    assert everything.oov_positions == (1, 0, 2, 3, 4)
    by_position = dict(zip(everything.oov_positions, everything.occurrences, strict=True))
    every = run.encoder.encode(tokens, all_positions=True)
    assert by_position == dict(zip(every.oov_positions, every.occurrences, strict=True))
    assert train_module._with_pseudo_oov(sentence, tokens, run.encoder, 0.0, rng) is sentence


def _trained_once(synthetic: SyntheticTask) -> Path:
    out = synthetic.root / "one-epoch-random"
    if not (out / "model.pt").exists():
        train(_config(synthetic, method="random", epochs=1), train_file=synthetic.train,
              dev_file=synthetic.dev, out=out)  # fmt: skip
    return out


def test_oov_dropout_trains_the_module_where_training_has_no_oov_token(
    synthetic: SyntheticTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The synthetic training file has no OOV token: without --oov-dropout and pre-training
    the module never gets a gradient; with it, it learns the context cues on in-vocabulary
    names and tags the dev set's OOV names."""
    initial: dict[str, dict[str, torch.Tensor]] = {}
    real_build = train_module.build_tagger

    def recording_build(config: TrainConfig, **kwargs: object) -> object:
        tagger = real_build(config, **kwargs)  # type: ignore[arg-type]
        initial[str(config.oov_dropout)] = copy.deepcopy(tagger.oov.state_dict())
        return tagger

    monkeypatch.setattr(train_module, "build_tagger", recording_build)
    data = read_tagged(synthetic.dev, column=1)
    keep = {t for s in data.tokens for t in s}
    scores = {}
    for p in (0.0, 0.3):
        config = _config(synthetic, method="context", pretrain_epochs=0, oov_dropout=p)
        result = train(config, train_file=synthetic.train, dev_file=synthetic.dev,
                       out=tmp_path / str(p))  # fmt: skip
        assert result.metrics["oov"]["train"]["oov_tokens"] == 0
        # On the CPU, where build_tagger made the recorded initial weights (auto picks a GPU).
        run = load_run(tmp_path / str(p), keep=keep, device="cpu")
        trained = run.tagger.oov.state_dict()
        changed = [k for k, v in initial[str(p)].items() if not torch.equal(v, trained[k])]
        assert bool(changed) == (p > 0)
        scores[p] = evaluate_data(run, data).metrics["oov_tokens"]["accuracy"]
    assert scores[0.3] >= 90.0 and scores[0.3] > scores[0.0] + 20.0


def test_checkpoint_and_embeddings_mismatch(
    synthetic: SyntheticTask, comick_run: Path, tmp_path: Path
) -> None:
    lines = synthetic.embeddings.read_text().splitlines()
    short = tmp_path / "dim4.txt"
    short.write_text("\n".join(" ".join(line.split()[:5]) for line in lines) + "\n")
    with pytest.raises(CheckpointError, match=r"expects 8-dimensional embeddings.*dimension 4"):
        load_run(comick_run, embeddings=str(short))
    other = tmp_path / "other.txt"
    other.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CheckpointError, match=r"embedding vocabulary .* does not match"):
        load_run(comick_run, embeddings=str(other))
    broken = tmp_path / "broken"
    shutil.copytree(comick_run, broken)
    (broken / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as error:
        load_run(broken)
    # What the file looks like, in one line: not torch's paragraph advising weights_only=False.
    assert "model.pt: not a readable weights file: a text file (16 bytes); train the run " in str(
        error.value
    )
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)
    (broken / "model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"model.pt: missing weights file; .* --resume"):
        load_run(broken)
    (broken / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="corrupt configuration"):
        load_run(broken)
    with pytest.raises(CheckpointError, match="run folder not found"):
        load_run(tmp_path / "nothing")


def test_unseen_dev_tags_are_mapped_and_reported(synthetic: SyntheticTask, tmp_path: Path) -> None:
    dev = tmp_path / "dev.txt"
    write_rows(
        dev, [[("mr", "O"), ("Acme", "B-ORG"), ("said", "O")], [("the", "O"), ("x", "B-ORG")]]
    )
    result = train(
        _config(synthetic, method="unk", epochs=1, pretrain_epochs=0),
        train_file=synthetic.train,
        dev_file=dev,
        out=tmp_path / "run",
    )
    assert result.metrics["unseen_dev_tags"] == {"B-ORG": 2}
    evaluation = evaluate_run(tmp_path / "run", dev)
    assert evaluation.unseen_tags == {"B-ORG": 2}
    assert evaluation.metrics["all"]["gold"] == 2  # still scored, as misses
    assert evaluation.metrics["all"]["recall"] == 0.0


def test_a_stray_iob1_chunk_in_an_iob2_training_file_is_converted_not_the_dev_file(
    synthetic: SyntheticTask, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: one I-X chunk start made the run IOB1, and converted the dev file's B- tags."""
    sentences = read_conll(synthetic.train)
    rows = list(sentences[0].rows)
    at = next(i for i, row in enumerate(rows) if row[1].startswith("B-"))
    rows[at] = (rows[at][0], "I-" + rows[at][1][2:])
    stray = tmp_path / "stray.txt"
    write_conll(stray, [dataclasses.replace(sentences[0], rows=tuple(rows)), *sentences[1:]])
    with caplog.at_level("WARNING", logger="netsurgeon.oov.train"):
        result = train(
            _config(synthetic, method="unk", epochs=1, pretrain_epochs=0),
            train_file=stray,
            dev_file=synthetic.dev,
            out=tmp_path / "run",
        )
    assert re.search(r"stray\.txt mixes IOB schemes: \d+ chunks start as in IOB2 and 1 as in "
                     r"IOB1; reading it and the other files as iob2", caplog.text)  # fmt: skip
    assert json.loads((tmp_path / "run" / "vocab.json").read_text())["tag_scheme"] == "iob2"
    assert result.metrics["unseen_dev_tags"] == {}
    assert rows[at][1] not in result.run.tags  # trained as the B- tag it converts to
    assert evaluate_run(tmp_path / "run", synthetic.dev).metrics == result.metrics["best_dev"]


def test_files_in_the_other_iob_scheme_are_read_in_the_training_files(
    synthetic: SyntheticTask, tmp_path: Path
) -> None:
    """Before: an IOB1 dev file for an IOB2-trained run kept its I- tags, reported as unseen
    and scored as token errors (entity F1 was unaffected)."""
    dev_iob1 = tmp_path / "dev_iob1.txt"
    write_conll(dev_iob1, convert_scheme(read_conll(synthetic.dev), column=1, to="iob1"))
    assert detect_scheme(read_tagged(dev_iob1, column=1).tags) == "iob1"
    result = train(
        _config(synthetic, method="unk", epochs=1, pretrain_epochs=0),
        train_file=synthetic.train,
        dev_file=dev_iob1,
        out=tmp_path / "run",
    )
    assert result.metrics["unseen_dev_tags"] == {}
    assert json.loads((tmp_path / "run" / "vocab.json").read_text())["tag_scheme"] == "iob2"
    as_iob1 = evaluate_run(tmp_path / "run", dev_iob1)
    as_iob2 = evaluate_run(tmp_path / "run", synthetic.dev)
    assert as_iob1.unseen_tags == as_iob2.unseen_tags == {}
    assert as_iob1.metrics == as_iob2.metrics == result.metrics["best_dev"]
    assert as_iob1.metrics["all"]["gold"] > 0


def test_config_validation(synthetic: SyntheticTask) -> None:
    with pytest.raises(ConfigError, match="'fasttext'"):
        _config(synthetic, method="fasttext")
    with pytest.raises(ConfigError, match="'chunk'"):
        _config(synthetic, task="chunk")
    with pytest.raises(ConfigError, match="lr_oov must be positive"):
        _config(synthetic, lr_oov=0.0)
    with pytest.raises(ConfigError, match="context size"):
        _config(synthetic, context_size=0)
    with pytest.raises(ConfigError, match="OOV head 'deep'"):
        _config(synthetic, oov_head="deep")
    for value in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match=r"oov_dropout must be in \[0, 1\), got"):
            _config(synthetic, oov_dropout=value)
    assert _config(synthetic, method="comick", pretrain_epochs=None).effective_pretrain_epochs == 5
    assert _config(synthetic, method="random", pretrain_epochs=None).effective_pretrain_epochs == 0
    assert _config(synthetic, method="unk", pretrain_epochs=3).effective_pretrain_epochs == 0


def test_pretraining_is_only_for_the_learned_predictors(
    synthetic: SyntheticTask, tmp_path: Path
) -> None:
    """Before: --pretrain-epochs N pre-trained unk's vector too (the CLI said it had no effect)."""
    runs = {}
    for epochs in (0, 2):
        config = _config(synthetic, method="unk", epochs=1, pretrain_epochs=epochs)
        out = tmp_path / str(epochs)
        runs[epochs] = train(config, train_file=synthetic.train, dev_file=synthetic.dev, out=out)
    assert runs[2].metrics["pretrain_history"] == []
    _same_weights(tmp_path / "0", tmp_path / "2")


def test_missing_tag_column(synthetic: SyntheticTask, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tag column 3 does not exist"):
        train(
            _config(synthetic, tag_column=3),
            train_file=synthetic.train,
            dev_file=synthetic.dev,
            out=tmp_path / "x",
        )


def test_no_word_in_vocabulary(tmp_path: Path) -> None:
    task = make_synthetic_task(tmp_path / "t", n_train=5, n_dev=5)
    emb = tmp_path / "unrelated.txt"
    emb.write_text("zzz 1 2 3 4 5 6 7 8\n")
    with pytest.raises(ConfigError, match=r"no word of .*train.* or .*dev.* has a vector"):
        train(
            _config(task, embeddings=str(emb)),
            train_file=task.train,
            dev_file=task.dev,
            out=tmp_path / "r",
        )


def test_tag_scheme_conversion_on_reading(synthetic: SyntheticTask, tmp_path: Path) -> None:
    result = train(
        _config(synthetic, method="zero", epochs=1, pretrain_epochs=0, tag_scheme="iob1"),
        train_file=synthetic.train,
        dev_file=synthetic.dev,
        out=tmp_path / "run",
    )
    assert set(result.run.tags.tags) == {"O", "I-PER", "I-LOC"}
    data = read_tagged(synthetic.dev, column=1, scheme="iob1")
    assert "B-PER" not in {t for s in data.tags for t in s}
    with pytest.raises(ConfigError, match="'bio'"):
        _config(synthetic, tag_scheme="bio")


def test_load_run_without_keep_has_every_embedding_word(
    synthetic: SyntheticTask, comick_run: Path
) -> None:
    whole = load_run(comick_run, device="cpu")
    assert (
        len(whole.embeddings)
        == whole.embeddings.vocab_size
        == len(synthetic.embeddings.read_text().splitlines())
    )
    sentence = ["the", "mr", synthetic.in_vocab_names[0], "said", "near", "Paris"]
    prediction = whole.predict([sentence[:-1]])
    assert prediction.oov_mask == [[False] * 5]  # nothing in the vocabulary is replaced
    assert prediction.occurrences == []
    kept = load_run(comick_run, keep=sentence, device="cpu")
    assert kept.predict([sentence[:-1]]).tags == prediction.tags
    assert whole.predict([sentence]).oov_mask == [[False] * 5 + [True]]
    for word, left, right in [("xyzzy", ["the", "mr"], ["said"]), ("Paris", ["near"], [])]:
        expected, expected_attention = kept.embedder.embed(word, left, right)
        vector, attention = whole.embedder.embed(word, left, right)
        np.testing.assert_array_equal(vector, expected)
        np.testing.assert_array_equal(attention, expected_attention)


def _latin1_task(root: Path, embeddings_encoding: str) -> tuple[Path, Path, Path]:
    """Latin-1 data files and an embeddings file in ``embeddings_encoding``."""
    root.mkdir()
    sentence = "le O\ncafé B-LOC\nest O\n\n"
    train_file, dev_file, emb = root / "train.txt", root / "dev.txt", root / "emb.txt"
    train_file.write_bytes((sentence * 5).encode("latin-1"))
    dev_file.write_bytes(sentence.encode("latin-1"))
    rows = "le 0.1 0.2\ncafé 0.3 0.4\nest 0.5 0.6\n"
    emb.write_bytes(rows.encode(embeddings_encoding))
    return train_file, dev_file, emb


def test_data_and_embeddings_have_their_own_encodings(tmp_path: Path, comick_run: Path) -> None:
    train_file, dev_file, emb = _latin1_task(tmp_path / "utf8", "utf-8")
    fast = {**FAST, "method": "unk", "epochs": 1, "pretrain_epochs": 0}
    config = TrainConfig(**{**fast, "embeddings": str(emb), "encoding": "latin-1"})
    assert config.embeddings_encoding == "utf-8"
    out = tmp_path / "run"
    result = train(config, train_file=train_file, dev_file=dev_file, out=out)
    assert result.metrics["oov"]["train"]["oov_tokens"] == 0  # café has its vector
    assert json.loads((out / "config.json").read_text())["embeddings_encoding"] == "utf-8"
    assert "café" in load_run(out).embeddings
    # The same options resume the run.
    train(config, train_file=train_file, dev_file=dev_file, out=out, resume=True)
    with pytest.raises(
        ConfigError, match=r"differs \(embeddings_encoding: 'utf-8' then, 'latin-1' now\)"
    ):
        latin = dataclasses.replace(config, embeddings_encoding="latin-1")
        train(latin, train_file=train_file, dev_file=dev_file, out=out, resume=True)
    # Embeddings in latin-1 need --embeddings-encoding, whatever --encoding says.
    train_file, dev_file, emb = _latin1_task(tmp_path / "latin", "latin-1")
    config = dataclasses.replace(config, embeddings=str(emb))
    with pytest.raises(ConfigError, match=r"emb\.txt:2: not valid utf-8.*--embeddings-encoding"):
        train(config, train_file=train_file, dev_file=dev_file, out=tmp_path / "bad")
    config = dataclasses.replace(config, embeddings_encoding="latin-1")
    out = tmp_path / "latin-run"
    result = train(config, train_file=train_file, dev_file=dev_file, out=out)
    assert result.metrics["oov"]["train"]["oov_tokens"] == 0
    with pytest.raises(ConfigError, match=r"emb\.txt:2: not valid utf-8.*--embeddings-encoding"):
        load_run(out, embeddings_encoding="utf-8")
    assert "café" in load_run(out).embeddings
    # config.json of runs from before the option: the embeddings were read with --encoding.
    for run_dir, encoding in [(out, "latin-1"), (comick_run, "utf-8")]:
        old = tmp_path / f"old-{run_dir.name}"
        shutil.copytree(run_dir, old)
        saved = json.loads((old / "config.json").read_text())
        del saved["embeddings_encoding"], saved["oov_head"]
        (old / "config.json").write_text(json.dumps(saved))
        assert load_run(old).config.embeddings_encoding == encoding
    # ... and they resume with the options that trained them.
    train(
        config,
        train_file=train_file,
        dev_file=dev_file,
        out=tmp_path / "old-latin-run",
        resume=True,
    )


def test_relative_embeddings_path_is_stored_absolute(
    synthetic: SyntheticTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(synthetic.embeddings, work / "emb.txt")
    shutil.copy(synthetic.embeddings, work / "copy.txt")
    monkeypatch.chdir(work)
    config = _config(synthetic, embeddings="emb.txt", method="unk", epochs=1, pretrain_epochs=0)
    files = {"train_file": synthetic.train, "dev_file": synthetic.dev}
    out = tmp_path / "run"
    train(config, **files, out=out)
    absolute = str((work / "emb.txt").resolve())
    assert json.loads((out / "config.json").read_text())["embeddings"] == absolute
    assert json.loads((out / "vocab.json").read_text())["embeddings"]["source"] == absolute
    monkeypatch.chdir(tmp_path)  # another working folder
    assert load_run(out).embeddings.source == absolute
    evaluate_run(out, synthetic.dev)
    # Resuming: the same file, given relatively or absolutely, is the same setting.
    monkeypatch.chdir(work)
    train(config, **files, out=out, resume=True)
    train(dataclasses.replace(config, embeddings=absolute), **files, out=out, resume=True)
    with pytest.raises(
        ConfigError, match=r"differs \(embeddings: '[^']*emb\.txt' then, '[^']*copy\.txt' now\)"
    ):
        train(dataclasses.replace(config, embeddings="copy.txt"), **files, out=out, resume=True)
    # Runs from before the fix stored the path as typed.
    for name, key in [("config.json", None), ("vocab.json", "embeddings")]:
        saved = json.loads((out / name).read_text())
        (saved[key] if key else saved)["source" if key else "embeddings"] = "emb.txt"
        (out / name).write_text(json.dumps(saved))
    train(config, **files, out=out, resume=True)
    train(dataclasses.replace(config, embeddings=absolute), **files, out=out, resume=True)
    assert json.loads((out / "config.json").read_text())["embeddings"] == "emb.txt"  # as it was


def test_config_field_types_are_checked(synthetic: SyntheticTask) -> None:
    wrong = {
        "batch_size": 2.5,
        "seed": 1.5,
        "epochs": "3",
        "patience": True,  # a bool is not an integer here
        "tag_column": "x",
        "max_vocab": 2.0,
        "lr_tagger": "0.1",
        "dropout": None,
        "method": 3,
    }
    for name, value in wrong.items():
        with pytest.raises(ConfigError, match=rf"^{name} must be .*, got {value!r}$"):
            _config(synthetic, **{name: value})
    with pytest.raises(ConfigError, match="normalisation 'upper'"):
        _config(synthetic, normalise="upper")
    with pytest.raises(ConfigError, match="embedding format 'fasttext'"):
        _config(synthetic, embeddings_format="fasttext")
    with pytest.raises(
        ConfigError, match=r"unknown embeddings_encoding='utf-9' \(--embeddings-encoding\)"
    ):
        _config(synthetic, embeddings_encoding="utf-9")
    config = _config(synthetic, lr_oov=1, dropout=0, embeddings=synthetic.embeddings)
    assert config.lr_oov == 1 and config.embeddings == str(synthetic.embeddings)


def test_bad_config_fails_before_the_run_folder_is_written(
    synthetic: SyntheticTask, tmp_path: Path
) -> None:
    config = _config(synthetic, method="unk", epochs=1, pretrain_epochs=0)
    config.batch_size = 2.5  # type: ignore[assignment]  # changed after it was checked
    out = tmp_path / "run"
    files = {"train_file": synthetic.train, "dev_file": synthetic.dev, "out": out}
    with pytest.raises(ConfigError, match=r"batch_size must be an integer, got 2\.5"):
        train(config, **files)
    assert not out.exists()
    config.batch_size = 8
    train(config, **files)  # the corrected run is not refused as "already holds a run"
    assert (out / "model.pt").exists()


def test_embed_refuses_a_string_where_words_are_expected(comick_run: Path) -> None:
    embedder = load_run(comick_run, keep=["mr", "the", "said"], device="cpu").embedder
    with pytest.raises(ConfigError, match=r"left_context must be a sequence of words, not the "):
        embedder.embed("zorple", "the mr", ["said"])
    with pytest.raises(ConfigError, match=r"right_context .* string 'said'; split it"):
        embedder.embed("zorple", ["mr"], "said")
    # Flat lists for a list of words: one context word per word, not one list per word.
    with pytest.raises(ConfigError, match=r"left_context\[0\] is the string 'mr'"):
        embedder.embed(["zorple", "blick"], ["mr", "the"])
    with pytest.raises(ConfigError, match=r"right_context\[1\] is the string 'said'"):
        embedder.embed(["zorple", "blick"], [["mr"], []], [[], "said"])
    with pytest.raises(ConfigError, match="keep must be a collection of words, not the string"):
        load_run(comick_run, keep="zorple")


def test_embed_checks_its_words_like_embed_words(comick_run: Path) -> None:
    embedder = load_run(comick_run, keep=["mr"], device="cpu").embedder
    for bad in ["", "new york", "a\tb", "a\xa0b"]:
        with pytest.raises(ConfigError, match=r"^word must be a non-empty string without white"):
            embedder.embed(bad, ["mr"], [])
    with pytest.raises(ConfigError, match=r"^word\[1\] must be .*, got ''"):
        embedder.embed(["zorple", ""])
    for bad in [None, 123]:
        with pytest.raises(ConfigError, match=rf"word must be a string or .*, got {bad}"):
            embedder.embed(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"batch_size must be a positive integer, got 2\.5"):
        embedder.embed(["zorple"], batch_size=2.5)  # type: ignore[arg-type]
    # Before: a raw TypeError from str.lower (a pandas gap is nan, a number slips in).
    with pytest.raises(
        ConfigError, match=r"^left_context\[1\] must be a string \(a word\), got None"
    ):
        embedder.embed("zorple", ["mr", None], [])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"^right_context\[1\]\[0\] must be .*, got nan"):
        embedder.embed(["zorple", "blick"], [[], []], [["said"], [float("nan")]])  # type: ignore[list-item]
    # No words: empty arrays, with attention for a method that has it, as for n words.
    vectors, attention = embedder.embed([])
    assert vectors.shape == (0, 8)
    assert attention is not None and attention.shape == (0, 3)


def test_predict_refuses_a_string_sentence(comick_run: Path) -> None:
    run = load_run(comick_run, keep=["mr"], device="cpu")
    with pytest.raises(ConfigError, match=r"sentences\[0\] is the string 'mr zorple'"):
        run.predict(["mr zorple"])
    with pytest.raises(ConfigError, match="sentences must be a sequence of sentences"):
        run.predict("mr zorple")
    with pytest.raises(
        ConfigError, match=r"^sentences\[1\]\[1\] must be a string \(a token\), got 3"
    ):
        run.predict([["mr"], ["mr", 3]])  # type: ignore[list-item]
    attention = run.predict([["mr"]]).attention
    assert attention is not None and attention.shape == (0, 3)


def test_embed_and_predict_give_each_module_its_mode_back(
    comick_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = load_run(comick_run, keep=["mr"], device="cpu")
    run.tagger.train()
    run.tagger.oov.eval()  # mixed modes, as when only the OOV module is frozen
    modes = {name: m.training for name, m in run.tagger.named_modules()}

    def current() -> dict[str, bool]:
        return {name: m.training for name, m in run.tagger.named_modules()}

    run.embedder.embed("zorple", ["mr"], [])
    assert current() == modes
    run.predict([["mr", "zorple"]])
    assert current() == modes

    def boom(*args: object, **kwargs: object) -> None:
        assert not any(current().values())  # the forward pass runs in eval mode
        raise RuntimeError("boom")

    monkeypatch.setattr(run.tagger, "embed_oov", boom)
    with pytest.raises(RuntimeError, match="boom"):
        run.embedder.embed("zorple", ["mr"], [])
    assert current() == modes
    monkeypatch.setattr(run.tagger, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        run.predict([["mr", "zorple"]])
    assert current() == modes


def test_resume_by_another_netsurgeon_version_warns(
    synthetic: SyntheticTask, tmp_path: Path
) -> None:
    from netsurgeon import __version__
    from netsurgeon.oov.run import CHECKPOINT_FILE
    from netsurgeon.provenance import VERSION_KEY

    config = _config(synthetic, method="random", epochs=2)
    files = {"train_file": synthetic.train, "dev_file": synthetic.dev, "out": tmp_path / "r"}
    train(dataclasses.replace(config, epochs=1), **files)
    checkpoint = tmp_path / "r" / CHECKPOINT_FILE
    saved = torch.load(checkpoint, weights_only=True)
    assert saved[VERSION_KEY] == __version__
    del saved[VERSION_KEY]  # as before versions were recorded
    torch.save(saved, checkpoint)
    with pytest.warns(UserWarning, match="written by a netsurgeon that did not record its"):
        resumed = train(config, **files, resume=True)
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2]
    assert torch.load(checkpoint, weights_only=True)[VERSION_KEY] == __version__
