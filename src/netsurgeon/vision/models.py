"""A registry of image-classification builders, and loading weights into them safely.

:func:`build_model` builds any torchvision classification model, the CIFAR ResNets of
:mod:`netsurgeon.vision.cifar_resnet`, any timm model (``timm:NAME``, with the ``timm``
extra), or a builder registered with :func:`register_builder`, with random, downloaded
(torchvision, timm) or local weights. Every returned model carries
``model.netsurgeon_arch``, a plain dict saying how to rebuild its architecture with random
initialisation; :mod:`netsurgeon.pruning.io` stores it so that checkpoints hold no pickled code.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import torch
from torch import nn

from netsurgeon.errors import CheckpointError, ConfigError, NetsurgeonError, first_line
from netsurgeon.fileio import describe_torch_file, exported_format

__all__ = [
    "StateDictDifferences",
    "UnreadableFileError",
    "build_architecture",
    "build_model",
    "check_model",
    "find_heads",
    "input_normalization",
    "list_models",
    "load_state_dict_checked",
    "load_weights_into",
    "read_state_dict",
    "register_builder",
    "replace_head",
    "state_dict_differences",
]

#: Prefix of timm models' names: ``timm:efficientnet_b0`` builds
#: ``timm.create_model("efficientnet_b0", ...)``; a pretrained tag may follow the name
#: (``timm:resnet50.a1_in1k``).
TIMM_PREFIX = "timm:"

#: Told to users who mistype a model name.
LIST_MODELS_HINT = f"`netsurgeon models` lists every name; timm models are {TIMM_PREFIX}NAME"

_CIFAR_DEPTHS = (20, 32, 44, 56, 110)
_USER_BUILDERS: dict[str, Callable[..., nn.Module]] = {}

#: Side of the square images most models are built for (torchvision's ImageNet classifiers).
DEFAULT_INPUT_SIZE = 224
# Models built for another size: the CIFAR ResNets for 32 x 32 images (three stages of
# 3 x 3 convolutions and a global pool: 224 px costs 49 times the compute and memory),
# Inception v3 for 299 px, the size of its pretrained weights.
_INPUT_SIZES = {**{f"cifar_resnet{d}": 32 for d in _CIFAR_DEPTHS}, "inception_v3": 299}
# Sections of a checkpoint's ``extra`` that record the size a model was trained or pruned at.
_INPUT_SIZE_SOURCES = ("finetune", "iterative", "prune")

# netsurgeon defaults that differ from torchvision's: googlenet/inception_v3 without auxiliary
# heads, so random and pretrained models share one structure and return one tensor.
_NETSURGEON_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False},
    "inception_v3": {"aux_logits": False},
}
# Constructor flags that change behaviour and that torchvision sets for pretrained weights;
# read back from the model so a rebuilt architecture behaves the same.
_RECORDED_ATTRS: dict[str, tuple[str, ...]] = {
    "googlenet": ("aux_logits", "transform_input"),
    "inception_v3": ("aux_logits", "transform_input"),
}
# State-dict prefixes of auxiliary heads, dropped from local files when the model has none
# (torchvision drops them the same way after loading its own weights).
_AUX_PREFIXES: dict[str, tuple[str, ...]] = {
    "googlenet": ("aux1.", "aux2."),
    "inception_v3": ("AuxLogits.",),
}
# Passing init_weights explicitly silences torchvision's FutureWarning about its default.
_INIT_WEIGHTS_FLAG = frozenset({"googlenet", "inception_v3"})
# Wrappers whose prefixes are stripped from local state dicts (DataParallel, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 12


def _torchvision_models() -> ModuleType:
    try:
        import torchvision.models
    except ImportError as exc:  # pragma: no cover - torchvision is in the vision extra
        raise NetsurgeonError(
            "building models needs torchvision: pip install 'netsurgeon[vision]'"
        ) from exc
    return torchvision.models


def _torchvision_names() -> list[str]:
    models = _torchvision_models()
    return list(models.list_models(module=models))


def _cifar_builders() -> dict[str, Callable[..., nn.Module]]:
    from netsurgeon.vision import cifar_resnet

    return {f"cifar_resnet{d}": getattr(cifar_resnet, f"cifar_resnet{d}") for d in _CIFAR_DEPTHS}


def list_models() -> list[str]:
    """Names :func:`build_model` accepts, sorted: torchvision's, the CIFAR ResNets, user ones.

    timm's models, accepted as ``timm:NAME``, are not listed: ``timm.list_models()`` lists
    their names.
    """
    return sorted({*_torchvision_names(), *_cifar_builders(), *_USER_BUILDERS})


def _timm() -> ModuleType:
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"timm models ({TIMM_PREFIX}NAME) need timm: pip install 'netsurgeon[timm]'"
        ) from None
    return timm


def _timm_builder(name: str) -> Callable[..., nn.Module]:
    """``timm.create_model`` for ``timm:NAME``, whose name timm knows."""
    timm = _timm()
    arch = name.removeprefix(TIMM_PREFIX)
    if not arch or not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        suggestion = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown timm model {arch!r}{suggestion} (timm.list_models() lists every name)"
        )
    base, _, tag = arch.partition(".")
    if tag and arch not in timm.list_pretrained(arch):
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{base}.*")]
        raise ConfigError(
            f"timm has no pretrained tag {tag!r} for {base!r}; its tags: "
            f"{', '.join(tags) or 'none'} (give the name without a tag for timm's default)"
        )
    return functools.partial(timm.create_model, arch)


def input_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and standard deviation that the model ``name`` expects its
    ``[0, 1]`` pixels to be normalised with: those of its pretrained weights for a timm model
    (``(0.5, 0.5, 0.5)`` for Inception-style ones, for example), else ImageNet's. The
    commands that fine-tune normalise their images so.

    Args:
        name: A name from :func:`list_models`, or ``timm:NAME`` (unknown names get ImageNet's).
    """
    from netsurgeon.vision.data import IMAGENET_MEAN, IMAGENET_STD

    cfg = _timm_pretrained_cfg(name)
    mean, std = getattr(cfg, "mean", None), getattr(cfg, "std", None)
    if mean is not None and std is not None and len(mean) == len(std) == 3:
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return IMAGENET_MEAN, IMAGENET_STD


def _timm_pretrained_cfg(name: str) -> Any:
    """timm's pretrained config of ``timm:NAME``; None for other names, an unknown name or
    tag, or without timm."""
    if not name.startswith(TIMM_PREFIX):
        return None
    try:
        return _timm().models.get_pretrained_cfg(name.removeprefix(TIMM_PREFIX))
    except (ConfigError, RuntimeError):  # timm missing, or no such tag
        return None


def default_input_size(name: str) -> int:
    """Side of the square images the model ``name`` is built for.

    32 for the CIFAR ResNets, 299 for ``inception_v3``, the size of its pretrained weights for
    a timm model, else :data:`DEFAULT_INPUT_SIZE` (224). The command line uses it when
    ``--input-size`` is not given.

    Args:
        name: A name from :func:`list_models`, or ``timm:NAME`` (unknown names get the default).
    """
    if name.startswith(TIMM_PREFIX):
        size = getattr(_timm_pretrained_cfg(name), "input_size", None)
        return int(size[-1]) if size else DEFAULT_INPUT_SIZE
    return _INPUT_SIZES.get(name, DEFAULT_INPUT_SIZE)


def checkpoint_input_size(payload: Mapping[str, Any]) -> int:
    """The input size of a checkpoint read by :func:`netsurgeon.pruning.io.read_checkpoint`.

    The size recorded in its fine-tuning or pruning settings, else
    :func:`default_input_size` of its architecture.
    """
    extra = payload.get("extra")
    for key in _INPUT_SIZE_SOURCES:
        section = extra.get(key) if isinstance(extra, dict) else None
        size = section.get("input_size") if isinstance(section, dict) else None
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    arch = payload.get("arch")
    name = arch.get("name") if isinstance(arch, dict) else None
    return default_input_size(name) if isinstance(name, str) else DEFAULT_INPUT_SIZE


def register_builder(name: str, fn: Callable[..., nn.Module], *, overwrite: bool = False) -> None:
    """Make ``build_model(name)`` call ``fn``.

    ``fn`` is called with keyword arguments only: ``num_classes`` when one is requested, plus
    any extra keyword arguments given to :func:`build_model`. It must return a freshly
    initialised model; weights are loaded by :func:`build_model` (local files only).
    Registration lasts for the process, so register again before :func:`netsurgeon.pruning.io.load`
    in a new one.

    Args:
        name: The model name; a name that is taken needs ``overwrite=True``.
        fn: The builder.
        overwrite: Allow replacing an existing name.

    Raises:
        ConfigError: ``name`` is empty or taken, or ``fn`` is not callable.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a builder name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise ConfigError(f"the builder for {name!r} must be callable, got {fn!r}")
    if not overwrite and name in list_models():
        raise ConfigError(
            f"a model named {name!r} already exists; pass overwrite=True to replace it"
        )
    _USER_BUILDERS[name] = fn


def _lookup(name: str) -> tuple[str, Callable[..., nn.Module]]:
    """Return ``(kind, builder)`` with kind "user", "cifar", "timm" or "torchvision"."""
    if not isinstance(name, str):
        raise ConfigError(f"a model name must be a string, got {name!r}")
    if name in _USER_BUILDERS:
        return "user", _USER_BUILDERS[name]
    if name.startswith(TIMM_PREFIX):
        return "timm", _timm_builder(name)
    cifar = _cifar_builders()
    if name in cifar:
        return "cifar", cifar[name]
    if name in _torchvision_names():
        return "torchvision", _torchvision_models().get_model_builder(name)
    close = difflib.get_close_matches(name, list_models(), n=5, cutoff=0.6)
    suggestion = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown model {name!r}{suggestion} ({LIST_MODELS_HINT})")


def _is_plain(value: Any) -> bool:
    """True for values that survive JSON (and weights-only loading) unchanged in meaning."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _check_num_classes(num_classes: object) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    return num_classes


def _accepts_num_classes(fn: Callable[..., nn.Module]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume it does
        return True
    return any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)


# ---------------------------------------------------------------------------------------------
# Classifier heads


def find_heads(model: nn.Module) -> list[str]:
    """Qualified names of the classifier head and any auxiliary heads, the main one first.

    The main head is the last :class:`~torch.nn.Linear` registered in the model, or, without
    any, the last :class:`~torch.nn.Conv2d` (squeezenet). An auxiliary head is the last Linear
    inside a child module whose name contains ``aux`` (googlenet, inception_v3).

    Raises:
        ConfigError: The model has neither a Linear nor a Conv2d.
    """
    modules = list(model.named_modules())
    linears = [name for name, m in modules if isinstance(m, nn.Linear)]
    if linears:
        main = linears[-1]
    else:
        convs = [name for name, m in modules if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ConfigError(
                f"cannot find a classifier head (a Linear or Conv2d) in {type(model).__name__}"
            )
        main = convs[-1]
    heads = [main]
    for child_name, child in model.named_children():
        if "aux" not in child_name.lower():
            continue
        inner = [n for n, m in child.named_modules() if isinstance(m, nn.Linear)]
        if inner:
            qualified = f"{child_name}.{inner[-1]}" if inner[-1] else child_name
            if qualified != main:
                heads.append(qualified)
    return heads


def _head_classes(head: nn.Module) -> int:
    return head.out_features if isinstance(head, nn.Linear) else head.out_channels


def _fresh_head(old: nn.Module, num_classes: int) -> nn.Module:
    factory = {"device": old.weight.device, "dtype": old.weight.dtype}
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(
            old.in_features, num_classes, bias=old.bias is not None, **factory
        )
    elif isinstance(old, nn.Conv2d) and old.groups == 1:
        new = nn.Conv2d(
            old.in_channels,
            num_classes,
            old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            dilation=old.dilation,
            bias=old.bias is not None,
            padding_mode=old.padding_mode,
            **factory,
        )
    else:
        raise ConfigError(f"cannot replace a classifier head of type {type(old).__name__}")
    new.train(old.training)
    new.requires_grad_(old.weight.requires_grad)
    return new


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the classifier head(s) by freshly initialised ones with ``num_classes`` outputs.

    The main head and the auxiliary heads found by :func:`find_heads` keep their inputs, bias,
    dtype and device; a ``num_classes`` attribute of the model and ``model.netsurgeon_arch`` are
    updated. On an unpruned model the result has the structure that
    ``build_model(name, weights="none", num_classes=num_classes)`` builds. Heads that already
    have ``num_classes`` outputs are kept.

    Args:
        model: The model, changed in place.
        num_classes: The new number of outputs.

    Returns:
        The same model, for chaining.

    Raises:
        ConfigError: A bad ``num_classes`` or no recognisable head.
    """
    checked = _check_num_classes(num_classes)
    if checked is None:
        raise ConfigError("num_classes must be a positive integer, got None")
    for name in find_heads(model):
        old = model.get_submodule(name)
        if _head_classes(old) == checked:
            continue
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, _fresh_head(old, checked))
    if isinstance(getattr(model, "num_classes", None), int):
        model.num_classes = checked
    arch = getattr(model, "netsurgeon_arch", None)
    if isinstance(arch, dict) and isinstance(arch.get("kwargs"), dict):
        arch["kwargs"]["num_classes"] = checked
    return model


# ---------------------------------------------------------------------------------------------
# State dicts


def _listing(items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(shown) + more


class StateDictDifferences(NamedTuple):
    """How a state dict differs from a model's; every key list is sorted.

    Attributes:
        state: The state dict, with missing ``num_batches_tracked`` entries of batch norms
            filled with zero (checkpoints from PyTorch < 0.4.1), as PyTorch itself does.
        own: The model's state dict.
        missing: Keys of the model that ``state`` lacks.
        unexpected: Tensor keys of ``state`` that the model lacks.
        mismatched: Keys whose tensors have other shapes.
        not_tensors: Keys of ``state`` whose values are not tensors.
    """

    state: dict[str, Any]
    own: dict[str, torch.Tensor]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]
    not_tensors: list[str]


def state_dict_differences(model: nn.Module, state_dict: Mapping[str, Any]) -> StateDictDifferences:
    """What keeps ``state_dict`` from loading strictly into ``model`` (see the fields)."""
    own = model.state_dict()
    state = OrderedDict(state_dict)
    # Modules read their format version from the metadata (torchvision's MNASNet refuses a
    # state without). A state that lost it (a plain dict, or keys renamed on the way) gets the
    # model's own: the shape checks below catch a layout of another version.
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is None:
        metadata = getattr(own, "_metadata", None)
    if metadata is not None:
        state._metadata = metadata  # type: ignore[attr-defined]
    for key, tensor in own.items():
        owner_name, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked" and key not in state:
            owner = model.get_submodule(owner_name) if owner_name else model
            if isinstance(owner, nn.modules.batchnorm._BatchNorm):
                state[key] = torch.zeros_like(tensor)
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    return StateDictDifferences(
        state=state,
        own=own,
        missing=sorted(k for k in own if k not in state),
        unexpected=sorted(k for k in state if k not in own and k not in not_tensors),
        mismatched=sorted(
            k
            for k in own
            if isinstance(state.get(k), torch.Tensor) and state[k].shape != own[k].shape
        ),
        not_tensors=not_tensors,
    )


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    source: str | Path | None = None,
    assign: bool = False,
) -> None:
    """Load ``state_dict`` into ``model`` strictly, or explain exactly why it does not fit.

    Missing ``num_batches_tracked`` entries of batch norms (checkpoints from PyTorch < 0.4.1)
    are filled with zero, as PyTorch itself does for old checkpoints.

    Args:
        model: The model to load into.
        state_dict: Parameter and buffer tensors by qualified name.
        source: Where the state dict comes from, named in the error message.
        assign: Use the loaded tensors themselves (their dtype and device) instead of
            copying into the model's tensors.

    Raises:
        CheckpointError: Listing the mismatched shapes, the missing and the unexpected keys.
    """
    where = f" from {source}" if source is not None else ""
    diff = state_dict_differences(model, state_dict)
    state, own, not_tensors = diff.state, diff.own, diff.not_tensors
    missing, unexpected = diff.missing, diff.unexpected
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in diff.mismatched
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} mismatched shapes ({_listing(mismatched)})")
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
    if not_tensors:
        problems.append(f"{len(not_tensors)} non-tensor values ({_listing(not_tensors)})")
    if problems:
        raise CheckpointError(
            f"the checkpoint{where} does not fit {type(model).__name__}: " + "; ".join(problems)
        )
    try:
        model.load_state_dict(state, strict=True, assign=assign)
    # dtype or other problems the checks above cannot see; ValueError: a module's own check,
    # such as MNASNet's on a state saved without its version metadata.
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot load the checkpoint{where}: {exc}") from exc


class UnreadableFileError(CheckpointError):
    """``torch.load`` could not read the file at all (empty, truncated, another format)."""


# What to do about a file torch cannot read, unless the caller knows better (a --resume file).
_REPLACE_ADVICE = "replace it with a good copy (download, save or export it again)"


def _torch_load(path: Path, map_location: Any = "cpu", *, advice: str = _REPLACE_ADVICE) -> Any:
    """``torch.load`` with ``weights_only=True``; any failure becomes a CheckpointError.

    The error says what the file looks like (empty, truncated, not a PyTorch file) and ends
    with ``advice``.
    """
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a model file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    exported = exported_format(path)
    if exported is not None:
        raise CheckpointError(
            f"{path} is {exported} (as `netsurgeon export` writes), not a PyTorch model file; "
            f"give the .pt file it was exported from"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign or corrupt files
        text = str(exc)
        first_line = (text.strip().splitlines() or [type(exc).__name__])[0]
        if "Unsupported global" in text:
            raise CheckpointError(
                f"{path}: holds pickled objects (classes or functions) besides tensors and plain "
                f"types, which netsurgeon refuses to load (no pickled code is ever executed)"
            ) from exc
        if "WeightsUnpickler error:" in text:  # skip torch's generic advice to the detail
            detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
            first_line = f"weights-only unpickler: {detail[0] if detail else 'rejected'}"
        kind = describe_torch_file(path)
        # Torch's own words add nothing once the kind of damage is named ("EOFError", "KeyError:
        # 101", a paragraph about zip directories); keep them for an unrecognised format.
        plain = not kind.startswith("a file of another")
        detail = "" if plain else f" ({type(exc).__name__}: {first_line})"
        raise UnreadableFileError(
            f"{path}: not a readable PyTorch file: {kind}{detail}; {advice}"
        ) from exc


def _strip_wrapper_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _state_dict_from_object(obj: Any, path: Path) -> dict[str, Any]:
    """The state dict inside a loaded file: plain, ``{"state_dict": ...}`` or ``{"model": ...}``."""
    from netsurgeon.pruning.io import is_checkpoint

    if is_checkpoint(obj):
        return dict(obj["state_dict"])
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not obj or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"{path}: holds no state dict (no tensors by parameter name)")
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no tensors; keys: {_listing(sorted(obj))}")
    return _strip_wrapper_prefixes(dict(obj))


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a state dict from a local file with ``weights_only=True``, mapped to the CPU.

    Accepts a plain state dict (torchvision format), a legacy ``{"state_dict": ...}`` or
    ``{"model": ...}`` dict, and a netsurgeon checkpoint; ``module.`` and ``_orig_mod.``
    prefixes are stripped.

    Raises:
        CheckpointError: The file is missing, unreadable, or holds no state dict.
    """
    path = Path(path)
    return _state_dict_from_object(_torch_load(path), path)


def _load_state(
    model: nn.Module, state: dict[str, Any], *, source: Path, num_classes: int | None
) -> nn.Module:
    """Fit the head to the checkpoint's classes, load strictly, then fit ``num_classes``."""
    head_name = find_heads(model)[0]
    head = model.get_submodule(head_name)
    saved = state.get(f"{head_name}.weight")
    if (
        isinstance(saved, torch.Tensor)
        and saved.ndim == head.weight.ndim
        and saved.shape[1:] == head.weight.shape[1:]
        and saved.shape[0] != _head_classes(head)
    ):
        replace_head(model, int(saved.shape[0]))
    load_state_dict_checked(model, state, source=source)
    if num_classes is not None:
        replace_head(model, num_classes)
    return model


def load_weights_into(
    model: nn.Module, path: str | Path, *, num_classes: int | None = None
) -> nn.Module:
    """Load a local weights file into ``model``, then give it ``num_classes`` outputs.

    The head is first resized to the checkpoint's class count so the whole file loads
    strictly; if ``num_classes`` differs, the head is then replaced by a fresh one.

    Raises:
        CheckpointError: The file is unreadable or does not fit the model.
        ConfigError: A bad ``num_classes``.
    """
    num_classes = _check_num_classes(num_classes)
    path = Path(path)
    obj = _torch_load(path)
    state = _state_dict_from_object(obj, path)
    try:
        return _load_state(model, state, source=path, num_classes=num_classes)
    except CheckpointError as exc:
        from netsurgeon.pruning.io import is_checkpoint

        if is_checkpoint(obj):
            raise CheckpointError(
                f"{exc}; {path} is a netsurgeon checkpoint, perhaps of a pruned model: load it "
                f"with netsurgeon.load or build_model(name, weights=path)"
            ) from exc
        raise


# ---------------------------------------------------------------------------------------------
# Building


def _resolve_weights(name: str, kind: str, weights: object) -> tuple[str, Any]:
    """Classify ``weights`` as ("none", None), ("torchvision", enum), ("timm", None) (timm's
    pretrained weights) or ("file", Path)."""
    if weights is None:
        return "none", None
    if isinstance(weights, os.PathLike):
        path = Path(os.fspath(weights))
        if not path.is_file():
            raise ConfigError(f"weights file {str(path)!r} does not exist")
        return "file", path
    if not isinstance(weights, str) or not weights:
        raise ConfigError(
            f"weights must be 'none', 'DEFAULT', a torchvision weights name or a file path, "
            f"got {weights!r}"
        )
    if weights.lower() == "none":
        return "none", None
    names: list[str] = []
    if kind == "torchvision":
        enum = _torchvision_models().get_model_weights(name)
        names = list(enum.__members__)
        if weights == "DEFAULT":
            return "torchvision", enum.DEFAULT
        member = weights.removeprefix(f"{enum.__name__}.")
        if member in enum.__members__:
            return "torchvision", enum[member]
    path = Path(weights).expanduser()
    if path.is_file():
        return "file", path
    if kind == "timm" and weights == "DEFAULT":
        return "timm", None
    if kind != "torchvision" and weights == "DEFAULT":
        raise ConfigError(
            f"{name!r} has no downloadable weights (weights='DEFAULT'); pass weights='none' "
            f"(--weights none) or the path of a local checkpoint"
        )
    # The weights enum lists DEFAULT among its members (an alias): name each choice once.
    downloads = names or kind == "timm"
    choices = ["none", "DEFAULT", *(n for n in names if n != "DEFAULT")] if downloads else ["none"]
    allowed = ", ".join(repr(choice) for choice in choices)
    # timm picks pretrained weights by a tag in the model's name, not by a weights name.
    tag = f" (timm's pretrained weights by tag: {name}.TAG)" if kind == "timm" else ""
    raise ConfigError(
        f"weights={weights!r} (--weights) for {name!r} is neither an existing file nor one of "
        f"{allowed}{tag}"
    )


def _download(
    builder: Callable[..., nn.Module], weights: Any, progress: bool, kwargs: dict, name: str
) -> nn.Module:
    try:
        return builder(weights=weights, progress=progress, **kwargs)
    except OSError as exc:  # urllib's URLError and socket errors are OSErrors
        raise NetsurgeonError(
            f"could not download the pretrained weights {weights} of {name!r} from "
            f"{weights.url} ({exc}); pass weights='none' (--weights none) for random "
            f"initialisation, or the path of a local state-dict file (--weights PATH)"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build {name!r} with {weights} and {kwargs!r}: {exc}") from exc
    except RuntimeError as exc:
        if "hash" not in str(exc):
            raise
        raise NetsurgeonError(
            f"the downloaded weights {weights} of {name!r} are corrupt ({exc}); delete them from "
            f"{torch.hub.get_dir()}/checkpoints and retry, or pass weights='none' (--weights none) "
            "or a local path"
        ) from exc


def _download_timm(builder: Callable[..., nn.Module], kwargs: dict, name: str) -> nn.Module:
    """A timm model with its pretrained weights, which timm downloads (from the Hugging Face
    Hub) and caches; with another ``num_classes`` timm leaves out the pretrained head."""
    try:
        return builder(pretrained=True, **kwargs)
    except OSError as exc:  # the hub's offline and missing-file errors are OSErrors
        raise NetsurgeonError(
            f"could not download the pretrained weights of {name!r} through timm "
            f"({first_line(exc)}); pass weights='none' (--weights none) for random "
            f"initialisation, or the path of a local state-dict file (--weights PATH)"
        ) from exc
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot build {name!r} with pretrained weights and {kwargs!r}: "
                          f"{first_line(exc)}") from exc  # fmt: skip


def _drop_aux_heads(model: nn.Module, name: str) -> None:
    """Remove googlenet/inception_v3 auxiliary heads the way torchvision's builders do."""
    model.aux_logits = False
    for prefix in _AUX_PREFIXES[name]:
        attr = prefix.rstrip(".")
        # A plain None attribute, as the constructor leaves it with aux_logits=False.
        model._modules.pop(attr, None)
        setattr(model, attr, None)


def _call_builder(builder: Callable[..., nn.Module], name: str, kwargs: dict) -> nn.Module:
    try:
        model = builder(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, NetsurgeonError):
            raise
        raise ConfigError(f"cannot build {name!r} with {kwargs!r}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the builder of {name!r} returned {type(model).__name__}, not a Module")
    return model


def _from_netsurgeon_checkpoint(
    name: str, payload: dict, path: Path, kwargs: dict, num_classes: int | None
) -> nn.Module:
    from netsurgeon.pruning.io import model_from_checkpoint

    arch = payload["arch"]
    if arch["name"] != name:
        raise CheckpointError(f"{path}: holds a {arch['name']!r} model, not {name!r}")
    missing = object()
    conflicts = {
        k: v
        for k, v in kwargs.items()
        if k != "init_weights" and arch["kwargs"].get(k, missing) != v
    }
    if conflicts:
        raise ConfigError(
            f"{path} was saved with {arch['kwargs']!r}, which contradicts {conflicts!r}"
        )
    model = model_from_checkpoint(payload, source=path).train()
    if num_classes is not None:
        replace_head(model, num_classes)
    return model


def build_architecture(name: str, **kwargs: Any) -> nn.Module:
    """``build_model(name, weights="none", **kwargs)`` for models whose weights are loaded next.

    It skips initialisation that builders allow to skip (googlenet and inception_v3 spend
    seconds in theirs); the returned weights are arbitrary.
    """
    if name in _INIT_WEIGHTS_FLAG:
        kwargs.setdefault("init_weights", False)
    return build_model(name, weights="none", **kwargs)


def check_model(name: str, *, weights: str | os.PathLike[str] | None = "none") -> None:
    """Check, without building anything, that :func:`build_model` knows ``name`` and
    ``weights``: the cheap checks a command runs before it writes or trains anything.

    Raises:
        ConfigError: An unknown name (with close matches), or weights that are neither
            ``"none"``, a weights name the model has, nor an existing file.
    """
    kind, _builder = _lookup(name)
    _resolve_weights(name, kind, weights)


def build_model(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = "none",
    num_classes: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a classification model by name, with random, downloaded or local weights.

    Args:
        name: A name from :func:`list_models`, or ``timm:NAME`` for
            ``timm.create_model(NAME)`` (a pretrained tag may follow: ``timm:resnet50.a1_in1k``).
        weights: ``"none"`` or ``None`` for random initialisation; ``"DEFAULT"`` or a
            torchvision weights name (``"IMAGENET1K_V2"``, ``"ResNet50_Weights.IMAGENET1K_V2"``)
            to download them through torchvision (timm models: ``"DEFAULT"``, through timm,
            from the Hugging Face Hub); or the path of a local file (torchvision
            state dict, legacy ``{"state_dict": ...}``, or a netsurgeon checkpoint of ``name``,
            pruned or not), always read with ``weights_only=True``.
        num_classes: Outputs of the classifier. With pretrained weights of another class
            count, the head is replaced by a fresh one (see :func:`replace_head`); ``None``
            keeps the builder's default or the weights' count.
        progress: Show torchvision's download progress bar.
        **kwargs: Extra builder arguments; JSON-able values only, so that the architecture can
            be saved and rebuilt. googlenet and inception_v3 default to ``aux_logits=False``.

    Returns:
        The model in training mode, with ``model.netsurgeon_arch`` set to
        ``{"name": name, "kwargs": {...}}``, the arguments that rebuild its architecture.

    Raises:
        ConfigError: An unknown name (with close matches), a bad argument value, or a
            ``timm:`` name without timm installed.
        CheckpointError: A local file that is unreadable or does not fit.
        NetsurgeonError: Downloading pretrained weights failed (for example offline).
    """
    kind, builder = _lookup(name)
    num_classes = _check_num_classes(num_classes)
    if not isinstance(progress, bool):
        raise ConfigError(f"progress must be True or False, got {progress!r}")
    bad = sorted(k for k, v in kwargs.items() if not _is_plain(v))
    if bad:
        raise ConfigError(
            f"builder arguments must be JSON-able so the architecture can be saved and rebuilt; "
            f"got {', '.join(f'{k}={kwargs[k]!r}' for k in bad)}"
        )
    source, resolved = _resolve_weights(name, kind, weights)
    ctor = {**_NETSURGEON_DEFAULTS.get(name, {}), **kwargs}

    if source == "file":
        obj = _torch_load(resolved)
        from netsurgeon.pruning.io import is_checkpoint

        if is_checkpoint(obj):
            return _from_netsurgeon_checkpoint(name, obj, resolved, kwargs, num_classes)
        state = _state_dict_from_object(obj, resolved)
        if not ctor.get("aux_logits", True):
            prefixes = _AUX_PREFIXES.get(name, ())
            state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
        if name in _INIT_WEIGHTS_FLAG:
            ctor.setdefault("init_weights", False)  # every weight is overwritten anyway
        model = _call_builder(builder, name, ctor)
        _load_state(model, state, source=resolved, num_classes=num_classes)
    elif source == "torchvision":
        # With weights torchvision insists on building the auxiliary heads, then drops
        # googlenet's but keeps inception_v3's; drop them here unless asked for.
        keep_aux = ctor.pop("aux_logits", True) if name in _AUX_PREFIXES else True
        if keep_aux and name in _AUX_PREFIXES:
            ctor["aux_logits"] = True
        model = _download(builder, resolved, progress, ctor, name)
        if not keep_aux:
            _drop_aux_heads(model, name)
        if num_classes is not None:
            replace_head(model, num_classes)
    elif source == "timm":
        if num_classes is not None:
            ctor["num_classes"] = num_classes
        model = _download_timm(builder, ctor, name)
    else:
        if num_classes is not None:
            ctor["num_classes"] = num_classes
        if name in _INIT_WEIGHTS_FLAG:
            ctor.setdefault("init_weights", True)
        model = _call_builder(builder, name, ctor)

    arch_kwargs = {k: v for k, v in kwargs.items() if k != "init_weights"}
    if num_classes is not None or _accepts_num_classes(builder):
        try:
            arch_kwargs["num_classes"] = _head_classes(model.get_submodule(find_heads(model)[0]))
        except ConfigError:  # a user model without a recognisable head
            if num_classes is not None:
                arch_kwargs["num_classes"] = num_classes
    for attr in _RECORDED_ATTRS.get(name, ()):
        arch_kwargs[attr] = getattr(model, attr)
    model.netsurgeon_arch = {"name": name, "kwargs": arch_kwargs}
    return model.train()
