"""The public names of ``netsurgeon.oov`` (README's OOV API list)."""

from __future__ import annotations

import importlib
import importlib.util
import types
from pathlib import Path

import pytest

import netsurgeon.oov


def test_public_functions_import_from_the_package() -> None:
    from netsurgeon.oov import (
        TrainConfig,
        embed_corpus,
        embed_words,
        evaluate_run,
        load_run,
        run_experiment,
        train_run,
    )

    assert train_run is importlib.import_module("netsurgeon.oov.train").train
    assert embed_words is importlib.import_module("netsurgeon.oov.embed").embed_words
    assert embed_corpus is importlib.import_module("netsurgeon.oov.embed").embed_corpus
    assert evaluate_run is importlib.import_module("netsurgeon.oov.evaluate").evaluate_run
    assert load_run is importlib.import_module("netsurgeon.oov.run").load_run
    assert TrainConfig is importlib.import_module("netsurgeon.oov.run").TrainConfig
    assert run_experiment is importlib.import_module("netsurgeon.oov.experiment").run_experiment
    for function in (train_run, embed_words, embed_corpus, evaluate_run, load_run):
        assert callable(function) and not isinstance(function, types.ModuleType)


def test_every_name_of_all_resolves_and_none_shadows_a_module() -> None:
    for name in netsurgeon.oov.__all__:
        value = getattr(netsurgeon.oov, name)
        assert not isinstance(value, types.ModuleType), name
        assert importlib.util.find_spec(f"netsurgeon.oov.{name}") is None, name
    assert sorted(netsurgeon.oov.__all__) == dir(netsurgeon.oov)
    # ``train`` stays the module that defines ``train_run``, as ``from ... import train`` gives.
    from netsurgeon.oov import train

    assert isinstance(train, types.ModuleType)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": 2.0}, "seeds must be a positive integer, got 2.0"),
        ({"seeds": True}, "seeds must be a positive integer, got True"),
        ({"seeds": "2"}, "seeds must be a positive integer, got '2'"),
        ({"methods": "comick"}, r"methods must be a list of method names, .*pass \['comick'\]"),
    ],
)
def test_run_experiment_refuses_bad_seeds_and_methods(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    """Before: TypeError for 2.0 and '2', True taken as 1, 'comick' read letter by letter."""
    from netsurgeon.errors import ConfigError
    from netsurgeon.oov import TrainConfig, run_experiment

    with pytest.raises(ConfigError, match=message):
        run_experiment(TrainConfig(), train_file=tmp_path / "t.txt", dev_file=tmp_path / "d.txt",
                       out=tmp_path / "out", **kwargs)  # type: ignore[arg-type]  # fmt: skip
    assert not (tmp_path / "out").exists()
