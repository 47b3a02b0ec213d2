"""The command line's commands: the module that defines each, the extra it needs, its help.

Free of heavy imports, so that the command line can list every command while it loads only
the module of the one it runs (importing PyTorch and torchvision takes seconds).
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """Where a command is defined (its module has ``add_commands(subparsers)``), the extra its
    third-party imports come from (None: the core install), its one-line help, and the
    packages of that extra it cannot run without (checked before the command starts: its
    module imports them only when they are used)."""

    module: str
    extra: str | None
    help: str
    needs: tuple[str, ...] = ()


_VISION = ("torchvision", "PIL")
_PLOTS = (*_VISION, "matplotlib")


COMMANDS: dict[str, Command] = {
    "prune": Command(
        "netsurgeon.pruning.cli", None, "prune the filters of a torchvision model and save it"
    ),
    "stats": Command(
        "netsurgeon.pruning.cli", None, "print a model's parameters, MACs, size and latency"
    ),
    "models": Command("netsurgeon.pruning.cli", None, "list the model builder names"),
    "finetune": Command(
        "netsurgeon.vision.cli",
        "vision",
        "fine-tune a model on an image folder (transfer learning)",
        _VISION,
    ),
    "export": Command(
        "netsurgeon.vision.cli", "vision", "export a saved model to ONNX or TorchScript", _VISION
    ),
    "sweep": Command(
        "netsurgeon.vision.experiments_cli",
        "vision",
        "prune a model at many levels with many criteria, fine-tune, report",
        _PLOTS,
    ),
    "compare-models": Command(
        "netsurgeon.vision.experiments_cli",
        "vision",
        "training time per epoch, latency and accuracy of models, unpruned and pruned",
        _PLOTS,
    ),
    "demo": Command(
        "netsurgeon.vision.experiments_cli",
        "vision",
        "offline demo: train a small CNN on scikit-learn's digits, then a mini sweep",
        _PLOTS,
    ),
    "oov": Command(
        "netsurgeon.oov.cli", "nlp", "predicted embeddings for out-of-vocabulary words (Comick)"
    ),
}
