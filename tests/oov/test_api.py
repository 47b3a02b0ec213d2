"""The public names of ``netsurgeon.oov`` (README's OOV API list)."""

from __future__ import annotations

import importlib
import importlib.util
import types

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
