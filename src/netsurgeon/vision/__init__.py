"""Image-classification models for transfer learning: builders, a registry, safe weight loading."""

from __future__ import annotations

from netsurgeon.vision.cifar_resnet import (
    CifarResNet,
    cifar_resnet20,
    cifar_resnet32,
    cifar_resnet44,
    cifar_resnet56,
    cifar_resnet110,
)
from netsurgeon.vision.models import (
    build_model,
    list_models,
    load_state_dict_checked,
    register_builder,
    replace_head,
)

__all__ = [
    "CifarResNet",
    "build_model",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
    "cifar_resnet110",
    "list_models",
    "load_state_dict_checked",
    "register_builder",
    "replace_head",
]
