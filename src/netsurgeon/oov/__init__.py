"""Predicted embeddings for out-of-vocabulary words (the Comick module) and simple taggers.

``netsurgeon.oov.train.train`` trains a run. The names below are imported on first use, so
that ``netsurgeon --help`` (which imports ``netsurgeon.oov.cli``) does not pay for torch or
the ``nlp`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ATTENTION_PARTS",
    "METHODS",
    "Embedder",
    "Embeddings",
    "Sentence",
    "TrainConfig",
    "TrainedRun",
    "evaluate_run",
    "load_embeddings",
    "load_run",
    "read_conll",
    "run_experiment",
    "write_conll",
]

_WHERE = {
    "ATTENTION_PARTS": "embedders",
    "METHODS": "embedders",
    "Embedder": "run",
    "Embeddings": "vectors",
    "Sentence": "conll",
    "TrainConfig": "run",
    "TrainedRun": "run",
    "evaluate_run": "evaluate",
    "load_embeddings": "vectors",
    "load_run": "run",
    "read_conll": "conll",
    "run_experiment": "experiment",
    "write_conll": "conll",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'netsurgeon.oov' has no attribute {name!r}")
    return getattr(importlib.import_module(f"netsurgeon.oov.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
