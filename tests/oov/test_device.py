"""The OOV pipeline's ``device`` option: CPU results unchanged, GPU-trained runs portable.

The CUDA tests are skipped on machines without a GPU (CI); they train tiny runs there and
check that the files load, predict and resume on CPU.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from netsurgeon.cli import main
from netsurgeon.errors import ConfigError
from netsurgeon.oov import train as train_module
from netsurgeon.oov.batching import EncodedSentence, Occurrence, OccurrenceBatch, SentenceBatch
from netsurgeon.oov.io import on_cpu
from netsurgeon.oov.lstm import _packed_bilstm, bilstm
from netsurgeon.oov.run import TrainConfig, TrainedRun, load_run
from netsurgeon.oov.train import read_tagged, train
from netsurgeon.oov.vectors import load_embeddings
from tests.oov.synthetic import SyntheticTask
from tests.oov.test_cli import _common, _error
from tests.oov.test_train import _config, _untimed

TINY = {"method": "comick", "epochs": 2, "pretrain_epochs": 1}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
without_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the behaviour of a machine without CUDA"
)
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.fixture
def full_fp32() -> Iterator[None]:
    """cuDNN's LSTMs use TF32 on recent GPUs (errors near 1e-4); compare in full float32.

    Saved and restored by hand: pytest 9's monkeypatch undoes a setting of cuBLAS's
    ``allow_tf32`` (a computed attribute) with ``delattr``, which raises at teardown.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    yield
    matmul.allow_tf32, cudnn.allow_tf32 = saved


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _saved_tensors(run: Path) -> list[torch.Tensor]:
    # No map_location: tensors come back on the device they were saved from.
    files = [run / "model.pt", run / "checkpoint.pt"]
    return [t for f in files for t in _tensors(torch.load(f, weights_only=True))]


def _train(task: SyntheticTask, out: Path, **kwargs: Any) -> TrainedRun:
    return train(
        _config(task, **TINY), train_file=task.train, dev_file=task.dev, out=out, **kwargs
    ).run


@pytest.fixture(scope="module")
def cpu_run(synthetic: SyntheticTask, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)  # as the tests that compare with it: threads change rounding
    out = tmp_path_factory.mktemp("device") / "cpu"
    _train(synthetic, out, device="cpu")
    return out


def _dev_tokens(task: SyntheticTask) -> list[list[str]]:
    return read_tagged(task.dev, column=1).tokens


def _embed_inputs(tokens: list[list[str]]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Every token of the sentences as a word with its whole-sentence contexts."""
    words, lefts, rights = [], [], []
    for sentence in tokens:
        for j, token in enumerate(sentence):
            words.append(token)
            lefts.append(sentence[:j])
            rights.append(sentence[j + 1 :])
    return words, lefts, rights


@without_cuda
def test_explicit_cpu_equals_the_default(
    synthetic: SyntheticTask, cpu_run: Path, tmp_path: Path
) -> None:
    default = _train(synthetic, tmp_path / "default")
    assert default.device == torch.device("cpu")
    a = torch.load(cpu_run / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "default" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    history = [
        json.loads((run / "metrics.json").read_text())["history"]
        for run in (cpu_run, tmp_path / "default")
    ]
    assert _untimed(history[0]) == _untimed(history[1])

    tokens = _dev_tokens(synthetic)
    keep = {t for s in tokens for t in s}
    explicit, auto = load_run(cpu_run, keep=keep, device="cpu"), load_run(cpu_run, keep=keep)
    p1, p2 = explicit.predict(tokens), auto.predict(tokens)
    assert p1.tags == p2.tags and p1.occurrences == p2.occurrences
    assert p1.attention is not None and p2.attention is not None
    np.testing.assert_array_equal(p1.attention, p2.attention)
    inputs = _embed_inputs(tokens[:10])
    for got, expected in zip(
        explicit.embedder.embed(*inputs), auto.embedder.embed(*inputs), strict=True
    ):
        np.testing.assert_array_equal(got, expected)


def test_cpu_run_files(cpu_run: Path) -> None:
    tensors = _saved_tensors(cpu_run)
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    checkpoint = torch.load(cpu_run / "checkpoint.pt", weights_only=True)
    assert "cuda_rng" not in checkpoint
    # The device is a training option, not part of the run's configuration.
    config = json.loads((cpu_run / "config.json").read_text())
    assert "device" not in config
    assert TrainConfig.from_json(config).to_json() == config
    assert json.loads((cpu_run / "metrics.json").read_text())["device"] == "cpu"


@without_cuda
def test_cuda_without_cuda_is_one_config_error(
    synthetic: SyntheticTask, cpu_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"device='cuda' asked for, but CUDA is not available"):
        _train(synthetic, out, device="cuda")
    assert not out.exists()  # refused before anything is written
    with pytest.raises(ConfigError, match="device='cuda:0'"):
        load_run(cpu_run, device="cuda:0")
    run = load_run(cpu_run, keep=["mr"], device="cpu")
    with pytest.raises(ConfigError, match="device='cuda'"):
        run.to("cuda")
    assert run.device == torch.device("cpu")

    train_args = ["oov", "train", *_common(synthetic), "--out", str(out)]
    assert "device='cuda'" in _error([*train_args, "--device", "cuda"], capsys)
    exp_args = ["oov", "experiment", *_common(synthetic), "--out", str(tmp_path / "exp")]
    assert "device='cuda:1'" in _error([*exp_args, "--device", "cuda:1"], capsys)
    assert not out.exists() and not (tmp_path / "exp").exists()
    evaluate = ["oov", "evaluate", str(cpu_run), "--data", str(synthetic.dev)]
    assert "device='cuda'" in _error([*evaluate, "--device", "cuda"], capsys)
    words = tmp_path / "words.txt"
    words.write_text("zorple\n", encoding="utf-8")
    embed = ["oov", "embed", str(cpu_run), "--words", str(words), "--out", str(tmp_path / "v")]
    assert "device='cuda'" in _error([*embed, "--device", "cuda"], capsys)


def test_unknown_device_names(
    synthetic: SyntheticTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="device='gpu' is not a device"):
        _train(synthetic, tmp_path / "run", device="gpu")
    with pytest.raises(ConfigError, match="device='mps' is not supported"):
        load_run(tmp_path, device="mps")
    args = ["oov", "train", *_common(synthetic), "--out", str(tmp_path / "r"), "--device", "tpu"]
    err = _error(args, capsys)
    assert "device='tpu' is not a device; use one of auto, cpu, cuda, cuda:N" in err


@pytest.mark.usefixtures("full_fp32")
def test_cli_device_cpu(
    synthetic: SyntheticTask, cpu_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--device cpu`` gives what the default device gives (with a GPU: up to float rounding,
    once TF32 is off; before, the GPU's TF32 LSTMs differed from the CPU by 2e-5)."""
    evaluate = ["oov", "evaluate", str(cpu_run), "--data", str(synthetic.dev)]
    results = {}
    for name, extra in (("cpu", ["--device", "cpu"]), ("default", [])):
        assert main([*evaluate, *extra, "--out", str(tmp_path / f"{name}.json")]) == 0
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["cpu"]["metrics"] == results["default"]["metrics"]
    assert results["cpu"]["metrics"]["all"]["tokens"] > 0
    vectors = {}
    for name, extra in (("cpu", ["--device", "cpu"]), ("default", [])):
        out = tmp_path / f"{name}.txt"
        corpus = ["oov", "embed", str(cpu_run), "--corpus", str(synthetic.dev), "--out", str(out)]
        assert main([*corpus, *extra]) == 0
        assert "wrote" in capsys.readouterr().out
        vectors[name] = load_embeddings(out)
    cpu, default = vectors["cpu"], vectors["default"]
    assert len(cpu.words) > 0 and cpu.words == default.words
    torch.testing.assert_close(
        torch.as_tensor(cpu.vectors), torch.as_tensor(default.vectors), rtol=0, atol=1e-5
    )


def _batch() -> SentenceBatch:
    sentences = [
        EncodedSentence((5, 1, 6), (1,), (Occurrence("xy", (2, 3), (2, 5), (6, 3)),), (0, 1, 0)),
        EncodedSentence((1, 7), (0,), (Occurrence("z", (4,), (2,), (7, 3)),), (1, 0)),
    ]
    return SentenceBatch.collate(sentences)


@pytest.mark.parametrize("device", DEVICES)
def test_batches_move_to_device(device: str) -> None:
    batch = _batch()
    moved = batch.to(device)
    assert moved.tags is not None and batch.tags is not None
    pairs = [
        (moved.word_ids, batch.word_ids),
        (moved.lengths, batch.lengths),
        (moved.oov_index, batch.oov_index),
        (moved.tags, batch.tags),
    ]
    occurrences = moved.occurrences
    assert occurrences.words == batch.occurrences.words == ["xy", "z"]
    for name in ("chars", "char_lengths", "left", "left_lengths", "right", "right_lengths"):
        pairs.append((getattr(occurrences, name), getattr(batch.occurrences, name)))
    for got, original in pairs:
        assert got.device.type == device and original.device.type == "cpu"
        assert torch.equal(got.cpu(), original)
    untagged = SentenceBatch(
        batch.word_ids, batch.lengths, batch.oov_index, batch.occurrences, None
    )
    assert untagged.to(device).tags is None
    occurrence_batch = OccurrenceBatch.collate([Occurrence("q", (2,), (2,), (3,))]).to(device)
    assert occurrence_batch.chars.device.type == device and len(occurrence_batch) == 1


def test_on_cpu_copies_containers_and_keeps_cpu_tensors() -> None:
    model = nn.Linear(3, 2)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimiser.step()
    state = model.state_dict()
    moved = on_cpu(state)
    assert moved is not state and list(moved) == list(state)
    assert moved._metadata == state._metadata  # load_state_dict reads module versions there
    assert all(moved[k] is state[k] for k in state)  # CPU tensors are not copied
    saved = optimiser.state_dict()
    moved_optimiser = on_cpu(saved)
    assert moved_optimiser["state"] is not saved["state"]
    assert moved_optimiser["param_groups"] == saved["param_groups"]
    buffer = moved_optimiser["state"][0]["momentum_buffer"]
    assert buffer is saved["state"][0]["momentum_buffer"]
    assert on_cpu((1, "a", None)) == (1, "a", None)


def test_packed_path_of_cuda_equals_the_padded_one_on_cpu() -> None:
    # The branch bilstm takes on CUDA, run on CPU, where CI can check it.
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
    inputs, lengths = torch.randn(5, 6, 5), torch.tensor([6, 1, 3, 0, 5])
    torch.testing.assert_close(
        _packed_bilstm(lstm, inputs, lengths), bilstm(lstm, inputs, lengths), rtol=0, atol=1e-6
    )
    assert _packed_bilstm(lstm, inputs[:0], lengths[:0]).shape == (0, 6, 14)


@needs_cuda
@pytest.mark.usefixtures("full_fp32")
def test_bilstm_on_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
    inputs = torch.randn(5, 6, 5)
    lengths = torch.tensor([6, 1, 3, 0, 5])
    results = []
    for device in ("cpu", "cuda"):
        module = lstm.to(device)
        x = inputs.detach().to(device).requires_grad_()
        output = bilstm(module, x, lengths.to(device))
        output.pow(2).sum().backward()
        results.append(
            (output.detach().cpu(), x.grad.cpu(), module.weight_hh_l0_reverse.grad.cpu())
        )
        module.zero_grad()
    for got, expected in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # Zeros after a sequence's end, and for an empty one.
    assert torch.all(results[1][0][1, 1:] == 0) and torch.all(results[1][0][3] == 0)


@needs_cuda
@pytest.mark.usefixtures("full_fp32")
def test_cuda_run_loads_and_predicts_on_cpu(
    synthetic: SyntheticTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cuda"
    trained = _train(synthetic, out, device="cuda")
    assert trained.device.type == "cuda"
    assert all(t.device.type == "cpu" for t in _saved_tensors(out))
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "cuda_rng" in checkpoint
    assert json.loads((out / "metrics.json").read_text())["device"].startswith("cuda")

    tokens = [[], *_dev_tokens(synthetic)]  # an empty sentence too
    keep = {t for s in tokens for t in s}
    on_gpu = load_run(out, keep=keep, device="cuda")
    on_host = load_run(out, keep=keep, device="cpu")
    assert on_host.device == torch.device("cpu")
    inputs = _embed_inputs(tokens[:20])
    expected_vectors, expected_attention = on_gpu.embedder.embed(*inputs)
    for run in (on_host, trained):
        prediction, reference = run.predict(tokens), on_gpu.predict(tokens)
        assert prediction.tags == reference.tags
        np.testing.assert_allclose(prediction.attention, reference.attention, atol=1e-4)
        vectors, attention = run.embedder.embed(*inputs)
        np.testing.assert_allclose(vectors, expected_vectors, atol=1e-4)
        np.testing.assert_allclose(attention, expected_attention, atol=1e-4)
    assert on_gpu.embedder.embed([], [], [])[0].shape == (0, 8)
    # Moving a loaded run gives the same predictions as loading it there.
    assert on_host.to("cuda").predict(tokens).tags == on_gpu.predict(tokens).tags
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ConfigError, match=f"device='{missing}' asked for, but only"):
        load_run(out, device=missing)
    evaluate = ["oov", "evaluate", str(out), "--data", str(synthetic.dev), "--device", missing]
    assert "but only" in _error(evaluate, capsys)


@needs_cuda
@pytest.mark.parametrize(("first", "then"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_resume_on_another_device(
    synthetic: SyntheticTask,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: str,
    then: str,
) -> None:
    config = _config(synthetic, **{**TINY, "dropout": 0.1})
    real_evaluate = train_module._evaluate
    calls = {"n": 0}

    def interrupted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed during the second epoch's evaluation
        return real_evaluate(*args, **kwargs)

    files = {"train_file": synthetic.train, "dev_file": synthetic.dev, "out": tmp_path / "run"}
    monkeypatch.setattr(train_module, "_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, **files, device=first)
    monkeypatch.setattr(train_module, "_evaluate", real_evaluate)
    resumed = train(config, **files, resume=True, device=then)
    assert [h["epoch"] for h in resumed.metrics["history"]] == [1, 2]
    assert resumed.run.device.type == then
    assert all(t.device.type == "cpu" for t in _saved_tensors(tmp_path / "run"))
    assert load_run(tmp_path / "run", keep=["mr"], device="cpu").predict([["mr", "x"]]).tags
