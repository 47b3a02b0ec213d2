"""He et al. (2016) ResNets for CIFAR, with the zero-padding ("option A") shortcuts.

The layout and parameter names match the widely used legacy checkpoints
(``resnet20-12fca82f.th`` and friends): a 3->16 stem ``conv1``/``bn1``, three stages
``layer1..3`` of ``n`` :class:`BasicBlock` s with widths 16/32/64, global average pooling and a
``linear`` 64->classes head. Where a block changes width or stride, its shortcut subsamples the
input and zero-pads the channel dimension; that is a functional ``F.pad`` call inside
``forward`` so that :func:`torch.fx.symbolic_trace` sees it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from netsurgeon.errors import ConfigError

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
    "cifar_resnet110",
]

_STAGE_WIDTHS = (16, 32, 64)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity or zero-padding shortcut.

    Args:
        in_planes: Input channels.
        planes: Output channels; where it differs from ``in_planes`` it must be twice as many.
        stride: Stride of the first convolution, 1 or 2; 2 must come with ``planes != in_planes``
            and the reverse, as in the original network.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, *, stride: int = 1) -> None:
        super().__init__()
        _check_positive_int("in_planes", in_planes)
        _check_positive_int("planes", planes)
        if stride not in (1, 2):
            raise ConfigError(f"stride must be 1 or 2, got {stride!r}")
        self.pad_shortcut = stride != 1 or in_planes != planes
        # Option A pads planes // 4 zero channels on each side of the subsampled input.
        if self.pad_shortcut and (stride != 2 or planes != 2 * in_planes or planes % 4):
            raise ConfigError(
                f"a zero-padding shortcut needs stride 2 and planes == 2 * in_planes (divisible "
                f"by 4), got in_planes={in_planes}, planes={planes}, stride={stride}"
            )
        self.planes = planes
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.pad_shortcut:
            pad = self.planes // 4
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6 * n + 2`` (He et al. 2016, section 4.2).

    Args:
        num_blocks: Blocks per stage, three positive integers (``(3, 3, 3)`` is ResNet-20).
        num_classes: Outputs of the ``linear`` head.
    """

    def __init__(self, *, num_blocks: Sequence[int] = (3, 3, 3), num_classes: int = 10) -> None:
        super().__init__()
        if isinstance(num_blocks, (str, bytes)) or not isinstance(num_blocks, Sequence):
            raise ConfigError(f"num_blocks must be three positive integers, got {num_blocks!r}")
        if len(num_blocks) != len(_STAGE_WIDTHS):
            raise ConfigError(f"num_blocks must be three positive integers, got {num_blocks!r}")
        for count in num_blocks:
            _check_positive_int("every entry of num_blocks", count)
        _check_positive_int("num_classes", num_classes)

        self.conv1 = nn.Conv2d(3, _STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STAGE_WIDTHS[0])
        in_planes = _STAGE_WIDTHS[0]
        self.layer1, in_planes = self._make_stage(in_planes, _STAGE_WIDTHS[0], num_blocks[0], 1)
        self.layer2, in_planes = self._make_stage(in_planes, _STAGE_WIDTHS[1], num_blocks[1], 2)
        self.layer3, in_planes = self._make_stage(in_planes, _STAGE_WIDTHS[2], num_blocks[2], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

        # The original initialisation: Kaiming normal for every conv and linear weight.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @staticmethod
    def _make_stage(
        in_planes: int, planes: int, blocks: int, stride: int
    ) -> tuple[nn.Sequential, int]:
        layers = []
        for index in range(blocks):
            layers.append(BasicBlock(in_planes, planes, stride=stride if index == 0 else 1))
            in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers), in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)`` for images of shape ``(batch, 3, H, W)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # Adaptive pooling equals the original avg_pool2d over the whole (square) map.
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


def _cifar_resnet(
    depth: int, *, weights: str | os.PathLike[str] | None, num_classes: int, progress: bool
) -> CifarResNet:
    del progress  # Kept for torchvision parity; local files need no progress bar.
    _check_positive_int("num_classes", num_classes)
    n = (depth - 2) // 6
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        model = CifarResNet(num_blocks=(n, n, n), num_classes=num_classes)
    else:
        model = _load_cifar_weights(depth, n, weights, num_classes)
    # What netsurgeon.pruning.io.save needs to rebuild the architecture.
    model.netsurgeon_arch = {"name": f"cifar_resnet{depth}", "kwargs": {"num_classes": num_classes}}
    return model


def _load_cifar_weights(depth: int, n: int, weights: object, num_classes: int) -> CifarResNet:
    if isinstance(weights, str) and weights == "DEFAULT":
        raise ConfigError(
            f"cifar_resnet{depth} has no downloadable weights (weights='DEFAULT'); pass the path "
            f"of a local checkpoint such as resnet{depth}-*.th, or weights=None"
        )
    if not isinstance(weights, (str, os.PathLike)):
        raise ConfigError(f"weights must be None or a file path, got {weights!r}")
    # Imported here because models.py imports this module to register the builders.
    from netsurgeon.vision.models import load_weights_into

    model = CifarResNet(num_blocks=(n, n, n))
    return load_weights_into(model, Path(weights), num_classes=num_classes)  # type: ignore[return-value]


def cifar_resnet20(
    *, weights: str | os.PathLike[str] | None = None, num_classes: int = 10, progress: bool = True
) -> CifarResNet:
    """ResNet-20 for CIFAR (0.27 M parameters).

    Args:
        weights: ``None`` for random initialisation, or the path of a local checkpoint: a plain
            state dict, a legacy ``{"state_dict": ...}`` file whose keys carry ``module.``, or
            a netsurgeon checkpoint of the same (unpruned) architecture.
        num_classes: Outputs of the head; with a checkpoint of another class count, the head is
            replaced by a freshly initialised one.
        progress: Unused (local files only); kept for torchvision parity.

    Raises:
        ConfigError: A bad argument value.
        CheckpointError: The file is unreadable or does not fit the architecture.
    """
    return _cifar_resnet(20, weights=weights, num_classes=num_classes, progress=progress)


def cifar_resnet32(
    *, weights: str | os.PathLike[str] | None = None, num_classes: int = 10, progress: bool = True
) -> CifarResNet:
    """ResNet-32 for CIFAR (0.46 M parameters); arguments as :func:`cifar_resnet20`."""
    return _cifar_resnet(32, weights=weights, num_classes=num_classes, progress=progress)


def cifar_resnet44(
    *, weights: str | os.PathLike[str] | None = None, num_classes: int = 10, progress: bool = True
) -> CifarResNet:
    """ResNet-44 for CIFAR (0.66 M parameters); arguments as :func:`cifar_resnet20`."""
    return _cifar_resnet(44, weights=weights, num_classes=num_classes, progress=progress)


def cifar_resnet56(
    *, weights: str | os.PathLike[str] | None = None, num_classes: int = 10, progress: bool = True
) -> CifarResNet:
    """ResNet-56 for CIFAR (0.85 M parameters); arguments as :func:`cifar_resnet20`."""
    return _cifar_resnet(56, weights=weights, num_classes=num_classes, progress=progress)


def cifar_resnet110(
    *, weights: str | os.PathLike[str] | None = None, num_classes: int = 10, progress: bool = True
) -> CifarResNet:
    """ResNet-110 for CIFAR (1.7 M parameters); arguments as :func:`cifar_resnet20`."""
    return _cifar_resnet(110, weights=weights, num_classes=num_classes, progress=progress)
