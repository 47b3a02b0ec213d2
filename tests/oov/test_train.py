from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.oov import train as train_module
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


def test_resume_continues_to_the_same_weights(
    synthetic: SyntheticTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(synthetic, method="comick", epochs=2, pretrain_epochs=1)
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
    with pytest.raises(CheckpointError, match=r"model.pt: not a readable weights file"):
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
    assert _config(synthetic, method="comick", pretrain_epochs=None).effective_pretrain_epochs == 5
    assert _config(synthetic, method="random", pretrain_epochs=None).effective_pretrain_epochs == 0


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
    with pytest.raises(ConfigError, match=r"no word of .* has a vector"):
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
