"""Names and defaults of the settings the command line offers, free of heavy imports.

The modules that implement these settings take them from here (one definition each), and
the command line builds its parsers from them without importing PyTorch, so that ``--help``
and a mistyped option are answered at once.
"""

from __future__ import annotations

__all__ = [
    "CRITERION_NAMES",
    "DEFAULT_ALPHA",
    "DEFAULT_FEATURE_WEIGHT",
    "DEFAULT_TEMPERATURE",
    "EXPORTERS",
    "EXPORT_FORMATS",
    "SCOPES",
    "SLICE_LRS",
]

#: Names of :data:`netsurgeon.pruning.criteria.CRITERIA`, in its order.
CRITERION_NAMES = ("random", "l1", "l2", "activation", "apoz", "taylor", "bn_scale", "fpgm")
#: How filters are ranked against each other (see :func:`netsurgeon.pruning.prune`).
SCOPES = ("layer", "global", "global_macs")
#: How :func:`~netsurgeon.training.finetune_steps` sets the learning rate: hold
#: ``config.lr``, or restart ``config.schedule`` and anneal it over the call's steps.
SLICE_LRS = ("constant", "schedule")
#: Hinton et al.'s usual settings; the CLI and the iterative pruner default to them too.
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.9
#: Weight of the feature term: it beat 100 on all three seeds of the CIFAR ResNet benchmark
#: (``benchmarks/README.md``).
DEFAULT_FEATURE_WEIGHT = 300.0
#: What :mod:`netsurgeon.vision.export` writes, and the ONNX exporters it can use.
EXPORT_FORMATS = ("onnx", "torchscript")
EXPORTERS = ("dynamo", "legacy")
