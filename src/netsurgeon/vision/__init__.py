"""Transfer learning for image classifiers: models, data, fine-tuning, pruning experiments."""

from __future__ import annotations

from netsurgeon.vision.cache import CachedImageLoader
from netsurgeon.vision.cifar_resnet import (
    CifarResNet,
    cifar_resnet20,
    cifar_resnet32,
    cifar_resnet44,
    cifar_resnet56,
    cifar_resnet110,
)
from netsurgeon.vision.data import load_image_data, make_loader
from netsurgeon.vision.experiments import SweepConfig, compare_models, run_sweep
from netsurgeon.vision.export import export_model
from netsurgeon.vision.iterative import IterativeResult, finetune, prune_and_finetune
from netsurgeon.vision.models import (
    build_model,
    default_input_size,
    list_models,
    load_state_dict_checked,
    register_builder,
    replace_head,
)

__all__ = [
    "CachedImageLoader",
    "CifarResNet",
    "IterativeResult",
    "SweepConfig",
    "build_model",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
    "cifar_resnet110",
    "compare_models",
    "default_input_size",
    "export_model",
    "finetune",
    "list_models",
    "load_image_data",
    "load_state_dict_checked",
    "make_loader",
    "prune_and_finetune",
    "register_builder",
    "replace_head",
    "run_sweep",
]
