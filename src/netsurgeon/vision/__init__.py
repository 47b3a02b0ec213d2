"""Transfer learning for image classifiers: models, data, fine-tuning, pruning experiments.

The names below load on first use, so that the command line's option definitions
(:mod:`~netsurgeon.vision.arguments`) import without PyTorch and torchvision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsurgeon.lazy import lazy_attributes

if TYPE_CHECKING:
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
        input_normalization,
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
    "input_normalization",
    "list_models",
    "load_image_data",
    "load_state_dict_checked",
    "make_loader",
    "prune_and_finetune",
    "register_builder",
    "replace_head",
    "run_sweep",
]

_MODULES = {
    "cache": ("CachedImageLoader",),
    "cifar_resnet": (
        "CifarResNet", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56",
        "cifar_resnet110",
    ),
    "data": ("load_image_data", "make_loader"),
    "experiments": ("SweepConfig", "compare_models", "run_sweep"),
    "export": ("export_model",),
    "iterative": ("IterativeResult", "finetune", "prune_and_finetune"),
    "models": (
        "build_model", "default_input_size", "input_normalization", "list_models",
        "load_state_dict_checked", "register_builder", "replace_head",
    ),
}  # fmt: skip
__getattr__, __dir__ = lazy_attributes(
    __name__,
    globals(),
    _MODULES,
    submodules=(
        "arguments", "cache", "cifar_resnet", "cli", "data", "demo", "experiments",
        "experiments_cli", "export", "iterative", "models", "report",
    ),
)  # fmt: skip
