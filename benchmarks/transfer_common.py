"""Helpers shared by the ``transfer_*.py`` benchmarks: data, subsets, environment, output.

Not a benchmark itself; the scripts import it from their own folder.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from netsurgeon.errors import ConfigError
from netsurgeon.fileio import atomic_write_text
from netsurgeon.vision.data import ImageFolderDataset, split_indices

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """``$NETSURGEON_SHARED``, else the ``shared`` folder beside the repository."""
    env = os.environ.get("NETSURGEON_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def require(path: Path, what: str) -> Path:
    """Exit with a clear message when a data file or folder is absent."""
    if not path.exists():
        sys.exit(f"{what} not found at {path} (set NETSURGEON_SHARED or pass the path)")
    return path


def stratified_subset(
    dataset: ImageFolderDataset, size: int | None, *, seed: int
) -> ImageFolderDataset:
    """About ``size`` samples, the same share of every class, chosen by ``seed``."""
    if size is None or size >= len(dataset):
        return dataset
    if size < 1:
        raise ConfigError(f"subset size {size} is not allowed; use a positive integer")
    _, chosen = split_indices(dataset.targets, val_fraction=size / len(dataset), seed=seed)
    return dataset.subset(chosen, transform=dataset.transform)


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    import torchvision

    try:
        load: Sequence[float] | None = os.getloadavg()
    except OSError:
        load = None
    return {
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(load) if load else None,
        "argv": sys.argv,
    }


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically when ``path`` is given."""
    if path is not None:
        atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals."""
    return "-" if value is None else f"{100 * value:.2f}"


def log(message: str) -> None:
    """Progress on stderr, so stdout keeps only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stream_norms(model: torch.nn.Module) -> list[str]:
    """Batch norms right after every residual-stream producer of a CIFAR ResNet.

    Ignoring them blocks the stream channel groups (the stem's ``bn1`` and every block's
    ``bn2`` normalise channels of a stream) and leaves the inner ``conv1 -> bn1 -> conv2``
    channels of every block prunable.
    """
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and (n == "bn1" or (n.startswith("layer") and n.endswith(".bn2")))
    ]
    if not names:
        sys.exit("--keep-streams: the model has no CIFAR-ResNet 'bn1' / 'layer*.bn2' batch norms")
    return names


def stream_convs(model: torch.nn.Module) -> list[str]:
    """The convolutions that produce the residual streams: the one before each of
    :func:`stream_norms` (``conv1`` for the stem's ``bn1``, ``...conv2`` for a block's ``bn2``)."""
    return [name[: -len("bnK")] + "conv" + name[-1] for name in stream_norms(model)]


def accuracy_right_after_pruning(result: Any) -> float:
    """An :class:`~netsurgeon.vision.iterative.IterativeResult`'s accuracy before fine-tuning.

    That is the one-shot copy's accuracy when one was measured; otherwise the model after the
    slices, which is the one-shot model when the run has one slice and no steps after it.
    """
    if result.accuracy_pruned is not None:
        return result.accuracy_pruned
    return result.accuracy_after_slices
