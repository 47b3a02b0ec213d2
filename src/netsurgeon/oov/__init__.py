"""Predicted embeddings for out-of-vocabulary words (the Comick module) and simple taggers.

The public functions and classes are importable from here, for example
``from netsurgeon.oov import TrainConfig, train_run, load_run, embed_words``. Training is
``train_run`` because ``netsurgeon.oov.train`` is the module that defines it (as
``netsurgeon.oov.train.train``); likewise ``netsurgeon.oov.embed`` and
``netsurgeon.oov.evaluate`` are modules.

The names below are imported on first use, so that ``netsurgeon --help`` (which imports
``netsurgeon.oov.cli``) does not pay for torch or the ``nlp`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ATTENTION_PARTS",
    "METHODS",
    "Embedder",
    "Embeddings",
    "Evaluation",
    "Sentence",
    "TrainConfig",
    "TrainResult",
    "TrainedRun",
    "embed_corpus",
    "embed_words",
    "evaluate_run",
    "load_embeddings",
    "load_run",
    "read_conll",
    "run_experiment",
    "train_run",
    "write_conll",
    "write_glove_text",
]

# Public name -> (module, name there).
_WHERE = {
    "ATTENTION_PARTS": ("embedders", "ATTENTION_PARTS"),
    "METHODS": ("embedders", "METHODS"),
    "Embedder": ("run", "Embedder"),
    "Embeddings": ("vectors", "Embeddings"),
    "Evaluation": ("evaluate", "Evaluation"),
    "Sentence": ("conll", "Sentence"),
    "TrainConfig": ("run", "TrainConfig"),
    "TrainResult": ("train", "TrainResult"),
    "TrainedRun": ("run", "TrainedRun"),
    "embed_corpus": ("embed", "embed_corpus"),
    "embed_words": ("embed", "embed_words"),
    "evaluate_run": ("evaluate", "evaluate_run"),
    "load_embeddings": ("vectors", "load_embeddings"),
    "load_run": ("run", "load_run"),
    "read_conll": ("conll", "read_conll"),
    "run_experiment": ("experiment", "run_experiment"),
    "train_run": ("train", "train"),
    "write_conll": ("conll", "write_conll"),
    "write_glove_text": ("vectors", "write_glove_text"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'netsurgeon.oov' has no attribute {name!r}")
    module, attribute = _WHERE[name]
    return getattr(importlib.import_module(f"netsurgeon.oov.{module}"), attribute)


def __dir__() -> list[str]:
    return sorted(__all__)
