"""An offline demo: train a small CNN on scikit-learn's digits, then a miniature sweep.

scikit-learn ships the 1,797 8x8 grayscale digit images of the UCI handwritten digits set, so
the demo needs no download. It trains :class:`DigitsCNN` (the sweep's base model), then prunes
it with three criteria at four levels, fine-tunes each briefly, and writes the same results,
plots and reports as ``netsurgeon sweep``. It takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from netsurgeon.errors import ConfigError, NetsurgeonError
from netsurgeon.training import TrainConfig
from netsurgeon.vision.data import SeededRandomSampler
from netsurgeon.vision.experiments import SweepConfig, SweepResult, run_sweep

__all__ = [
    "DEMO_CRITERIA",
    "DEMO_LEVELS",
    "SKLEARN_EXTRA",
    "DigitsCNN",
    "DigitsData",
    "load_digits_data",
    "run_demo",
]

# The extra that installs scikit-learn; named in the error raised when it is missing.
SKLEARN_EXTRA = "demo"
DEMO_CRITERIA: tuple[str, ...] = ("random", "l1", "taylor")
DEMO_LEVELS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)


class DigitsCNN(nn.Module):
    """A small CNN for 1 x 8 x 8 images: three conv-BN-ReLU blocks, pooling, a linear head.

    Args:
        num_classes: Outputs of the classifier.
        width: Filters of the first block; the next two have twice as many.
    """

    def __init__(self, *, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"num_classes={num_classes!r} is not allowed; use an integer >= 2")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"width={width!r} is not allowed; use a positive integer")
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@dataclass(frozen=True)
class DigitsData:
    """The digits as normalised ``(N, 1, 8, 8)`` float tensors, split by a seed."""

    train: TensorDataset
    val: TensorDataset
    num_classes: int


def load_digits_data(*, val_fraction: float = 0.25, seed: int = 0) -> DigitsData:
    """scikit-learn's bundled digits, split into training and validation sets.

    Pixels (0..16) are scaled by the training set's mean and standard deviation.

    Raises:
        NetsurgeonError: scikit-learn is not installed (the message names the extra).
        ConfigError: ``val_fraction`` is not in (0, 1).
    """
    if isinstance(val_fraction, bool) or not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r} is not allowed; use a number in (0, 1)")
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as exc:
        raise NetsurgeonError(
            "the demo needs scikit-learn (its digits images ship with it); install it with: "
            f"pip install 'netsurgeon[{SKLEARN_EXTRA}]'"
        ) from exc
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = round(len(labels) * val_fraction)
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return DigitsData(
        train=TensorDataset(images[train_idx], labels[train_idx]),
        val=TensorDataset(images[val_idx], labels[val_idx]),
        num_classes=int(labels.max()) + 1,
    )


def run_demo(
    out_dir: str | os.PathLike[str] = "netsurgeon-demo",
    *,
    base_epochs: int = 6,
    finetune_epochs: int = 1,
    criteria: tuple[str, ...] = DEMO_CRITERIA,
    levels: tuple[float, ...] = DEMO_LEVELS,
    seed: int = 0,
    device: str = "cpu",
    progress: bool | None = None,
) -> SweepResult:
    """Train :class:`DigitsCNN` on the digits, then sweep ``criteria`` x ``levels``.

    Rerunning with the same ``out_dir`` resumes (and reuses the trained base model). Torch
    runs on one thread for the duration (restored afterwards): the images are tiny.

    Args:
        out_dir: Where results, plots and reports go.
        base_epochs: Epochs training the base model.
        finetune_epochs: Epochs of fine-tuning after each prune.
        criteria: Pruning criteria.
        levels: Fractions of filters removed per layer.
        seed: Seeds the split, the shuffling and the initialisation.
        device: Where to train (``"cpu"``, ``"cuda"``, ``"auto"``).
        progress: Progress bars; ``None`` shows them on a terminal.

    Returns:
        The sweep's rows and written files.
    """
    # 8x8 images are far too small for intra-op parallelism to pay; on a busy machine extra
    # threads only spin and make the demo several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out_dir, base_epochs, finetune_epochs, criteria, levels, seed, device, progress)
    finally:
        torch.set_num_threads(threads)


def _run(
    out_dir: str | os.PathLike[str],
    base_epochs: int,
    finetune_epochs: int,
    criteria: tuple[str, ...],
    levels: tuple[float, ...],
    seed: int,
    device: str,
    progress: bool | None,
) -> SweepResult:
    data = load_digits_data(seed=seed)
    # An order that depends only on the seed and the epoch: a resumed demo must train each
    # trial on the batches an uninterrupted one does (a shared generator would carry the
    # draws of every earlier trial in this process).
    sampler = SeededRandomSampler(data.train, seed=seed)
    train_loader = DataLoader(data.train, batch_size=64, sampler=sampler)
    val_loader = DataLoader(data.val, batch_size=256)
    torch.manual_seed(seed)
    model = DigitsCNN(num_classes=data.num_classes)
    config = SweepConfig(
        criteria=criteria,
        levels=levels,
        finetune_epochs=finetune_epochs,
        base_epochs=base_epochs,
        criterion_batches=2,
        latency_batch_size=64,
        train=TrainConfig(optimizer="adam", lr=3e-3, seed=seed, device=device, progress=progress),
        info={"model": "digits_cnn", "data": "sklearn.datasets.load_digits", "demo": True},
    )
    return run_sweep(
        model, train_loader, val_loader, config=config, out_dir=Path(out_dir),
        title="netsurgeon demo: pruning a digits CNN",
    )  # fmt: skip
