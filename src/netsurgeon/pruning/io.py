"""Save and load (pruned) models without pickled code.

A checkpoint is a ``torch.save`` file holding only tensors and plain types:

* ``format`` and ``version``: the marker :data:`FORMAT` and :data:`FORMAT_VERSION`;
* ``arch``: ``{"name": ..., "kwargs": {...}}``, what
  :func:`netsurgeon.vision.models.build_model` needs to rebuild the unpruned architecture;
* ``modules``: the sizes of every resizable module (convolutions, batch norms, linears), for
  example ``{"layer1.0.conv1": {"type": "Conv2d", "in_channels": 64, "out_channels": 40,
  "groups": 1}}``;
* ``state_dict`` and ``extra`` (user metadata).

:func:`load` rebuilds the architecture with random initialisation, gives every recorded module
its recorded sizes, and loads the state dict strictly with ``weights_only=True``. Support for
another module type is one :func:`register_resizable` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.fileio import atomic_torch_save

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "is_checkpoint",
    "load",
    "model_from_checkpoint",
    "read_checkpoint",
    "register_resizable",
    "save",
]

FORMAT = "netsurgeon.checkpoint"
FORMAT_VERSION = 1

Sizes = Mapping[str, int]
ShapesFn = Callable[[nn.Module, Sizes], dict[str, tuple[int, ...]]]


@dataclass(frozen=True)
class _Resizable:
    """How to record a module type's sizes and which tensor shapes those sizes imply."""

    attrs: tuple[str, ...]
    shapes: ShapesFn


_RESIZABLE: dict[type[nn.Module], _Resizable] = {}


def register_resizable(
    module_type: type[nn.Module], *, attrs: tuple[str, ...], shapes: ShapesFn
) -> None:
    """Let checkpoints record and restore the sizes of ``module_type`` (and its subclasses).

    Args:
        module_type: The module class, for example ``nn.GroupNorm``.
        attrs: Integer attributes that pruning changes, recorded and restored by name.
        shapes: ``shapes(module, sizes)`` returns the shape of each of the module's own
            parameters and buffers (by attribute name) implied by ``sizes``; it raises
            ``ValueError`` for sizes that cannot be valid. Tensors that are ``None`` on the
            module must be left out.
    """
    _RESIZABLE[module_type] = _Resizable(tuple(attrs), shapes)


def _conv_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    groups, in_channels, out_channels = sizes["groups"], sizes["in_channels"], sizes["out_channels"]
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels={in_channels} and out_channels={out_channels} must be divisible by "
            f"groups={groups}"
        )
    shapes = {"weight": (out_channels, in_channels // groups, *module.kernel_size)}
    if module.bias is not None:
        shapes["bias"] = (out_channels,)
    return shapes


def _batchnorm_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    n = sizes["num_features"]
    shapes: dict[str, tuple[int, ...]] = {}
    if module.weight is not None:
        shapes["weight"] = (n,)
    if module.bias is not None:
        shapes["bias"] = (n,)
    if module.running_mean is not None:
        shapes["running_mean"] = (n,)
    if module.running_var is not None:
        shapes["running_var"] = (n,)
    return shapes


def _linear_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    shapes = {"weight": (sizes["out_features"], sizes["in_features"])}
    if module.bias is not None:
        shapes["bias"] = (sizes["out_features"],)
    return shapes


for _conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_resizable(_conv, attrs=("in_channels", "out_channels", "groups"), shapes=_conv_shapes)
for _bn in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_resizable(_bn, attrs=("num_features",), shapes=_batchnorm_shapes)
register_resizable(nn.Linear, attrs=("in_features", "out_features"), shapes=_linear_shapes)


def _spec_of(module: nn.Module) -> tuple[str, _Resizable] | None:
    """The registered type name and spec of ``module``, looked up along its class hierarchy."""
    for cls in type(module).__mro__:
        spec = _RESIZABLE.get(cls)
        if spec is not None:
            return cls.__name__, spec
    return None


def _current_shapes(module: nn.Module, names: list[str]) -> dict[str, tuple[int, ...]]:
    return {n: tuple(getattr(module, n).shape) for n in names}


def _record_modules(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Sizes of every resizable module, checked against the tensors they imply."""
    records: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        found = _spec_of(module)
        if found is None:
            continue
        type_name, spec = found
        sizes = {attr: getattr(module, attr) for attr in spec.attrs}
        try:
            expected = spec.shapes(module, sizes)
        except (ValueError, ZeroDivisionError) as exc:
            raise ConfigError(f"module {name!r} ({type_name}) has invalid sizes: {exc}") from exc
        actual = _current_shapes(module, list(expected))
        if actual != expected:
            raise ConfigError(
                f"module {name!r} ({type_name}) says {sizes} but its tensors have shapes "
                f"{actual}, not {expected}; whatever resized it must update those attributes"
            )
        records[name] = {"type": type_name, **sizes}
    return records


def _check_plain(value: Any, *, what: str, allow_tensors: bool) -> None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if allow_tensors and isinstance(value, torch.Tensor):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, what=what, allow_tensors=allow_tensors)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{what} must have string keys, got {key!r}")
            _check_plain(item, what=what, allow_tensors=allow_tensors)
        return
    allowed = "tensors, " if allow_tensors else ""
    raise ConfigError(
        f"{what} may hold only {allowed}str, int, float, bool, None, lists and dicts; "
        f"got a {type(value).__name__}: {value!r}"
    )


def _resolve_arch(
    model: nn.Module, arch: str | None, arch_kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    from netsurgeon.vision.models import list_models

    if arch_kwargs is not None and not isinstance(arch_kwargs, dict):
        raise ConfigError(f"arch_kwargs must be a dict, got {arch_kwargs!r}")
    recorded = getattr(model, "netsurgeon_arch", None)
    if not (isinstance(recorded, dict) and isinstance(recorded.get("name"), str)):
        recorded = None
    if arch is not None:
        if not isinstance(arch, str):
            raise ConfigError(f"arch must be a model name, got {arch!r}")
        # Naming the recorded architecture again keeps its kwargs (e.g. googlenet's flags).
        base = recorded.get("kwargs", {}) if recorded and recorded["name"] == arch else {}
        name, kwargs = arch, {**base, **(arch_kwargs or {})}
    elif recorded is not None:
        name = recorded["name"]
        kwargs = {**recorded.get("kwargs", {}), **(arch_kwargs or {})}
    else:
        raise ConfigError(
            f"cannot tell which architecture this {type(model).__name__} is: pass arch= (a name "
            f"from netsurgeon.vision.list_models(), or one added with register_builder) and, if "
            f"needed, arch_kwargs=, or build the model with netsurgeon.vision.build_model"
        )
    _check_plain(kwargs, what="arch_kwargs", allow_tensors=False)
    _check_head(model, kwargs.get("num_classes"))
    if name not in list_models():
        raise ConfigError(
            f"unknown architecture {name!r}: load() could not rebuild it; register its builder "
            f"with netsurgeon.vision.register_builder first"
        )
    return {"name": name, "kwargs": kwargs}


def _check_head(model: nn.Module, num_classes: object) -> None:
    """Catch a stale ``num_classes`` now rather than when the file is loaded."""
    from netsurgeon.vision.models import find_heads

    if not isinstance(num_classes, int):
        return
    try:
        head = model.get_submodule(find_heads(model)[0])
    except ConfigError:
        return
    outputs = head.out_features if isinstance(head, nn.Linear) else head.out_channels
    if outputs != num_classes:
        raise ConfigError(
            f"the architecture says num_classes={num_classes} but the model's classifier has "
            f"{outputs} outputs; pass arch_kwargs={{'num_classes': {outputs}}} or use "
            f"netsurgeon.vision.replace_head"
        )


def save(
    model: nn.Module,
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (pruned or not) to ``path`` atomically, without pickled code.

    Args:
        model: A model whose architecture is known: built by
            :func:`netsurgeon.vision.build_model` (it carries ``netsurgeon_arch``) or named by
            ``arch``.
        path: The file to write; its folder is created if needed.
        arch: The architecture name, overriding ``model.netsurgeon_arch``.
        arch_kwargs: Builder keyword arguments (JSON-able). They update the recorded ones when
            ``arch`` is omitted or names the recorded architecture, else they stand alone.
        extra: Metadata stored beside the weights (tensors and plain types only).

    Returns:
        The path written.

    Raises:
        ConfigError: Unknown architecture, non-plain metadata, or module attributes that do
            not match their tensors' shapes.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"save needs an nn.Module, got {type(model).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise ConfigError(f"extra must be a dict, got {extra!r}")
    _check_plain(extra or {}, what="extra", allow_tensors=True)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": _resolve_arch(model, arch, arch_kwargs),
        "modules": _record_modules(model),
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, path)
    return path


def is_checkpoint(obj: Any) -> bool:
    """True if ``obj`` (a loaded file's content) carries the netsurgeon format marker."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def _validate_payload(obj: Any, source: str | Path) -> dict[str, Any]:
    if not is_checkpoint(obj):
        if (
            isinstance(obj, Mapping)
            and obj
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            hint = (
                "it is a plain state dict; load it with "
                "netsurgeon.vision.build_model(name, weights=path)"
            )
        elif isinstance(obj, Mapping) and "state_dict" in obj:
            hint = (
                "it is a legacy {'state_dict': ...} file; load it with "
                "netsurgeon.vision.build_model(name, weights=path)"
            )
        else:
            hint = f"it holds a {type(obj).__name__} without the {FORMAT!r} marker"
        raise CheckpointError(f"{source}: not a netsurgeon checkpoint ({hint})")
    version = obj.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: netsurgeon checkpoint format version {version!r}; this netsurgeon reads "
            f"version {FORMAT_VERSION} (a newer file needs a newer netsurgeon)"
        )
    arch = obj.get("arch")
    problems = []
    if not (
        isinstance(arch, dict)
        and isinstance(arch.get("name"), str)
        and isinstance(arch.get("kwargs"), dict)
    ):
        problems.append("'arch' is not {'name': str, 'kwargs': dict}")
    modules = obj.get("modules")
    if not isinstance(modules, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("type"), str)
        for k, v in modules.items()
    ):
        problems.append("'modules' is not a dict of module records")
    state = obj.get("state_dict")
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        problems.append("'state_dict' is not a dict of tensors")
    if not isinstance(obj.get("extra", {}), dict):
        problems.append("'extra' is not a dict")
    if problems:
        raise CheckpointError(f"{source}: damaged netsurgeon checkpoint: {'; '.join(problems)}")
    return obj


def read_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint's content without building the model.

    Returns:
        The dict described in this module's docstring (``extra`` is there for callers).

    Raises:
        CheckpointError: The file is missing, corrupt, foreign, or of another format version.
    """
    from netsurgeon.vision.models import _torch_load

    path = Path(path)
    return _validate_payload(_torch_load(path, map_location), path)


def _resize(module: nn.Module, name: str, record: dict[str, Any], source: str | Path) -> None:
    found = _spec_of(module)
    if found is None or found[0] != record["type"]:
        actual = found[0] if found else type(module).__name__
        raise CheckpointError(
            f"{source}: module {name!r} was saved as {record['type']} but the rebuilt model has "
            f"{actual} there"
        )
    _, spec = found
    sizes = {attr: record.get(attr) for attr in spec.attrs}
    bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise CheckpointError(f"{source}: module {name!r} has invalid sizes {bad}")
    try:
        shapes = spec.shapes(module, sizes)
    except (ValueError, ZeroDivisionError) as exc:
        raise CheckpointError(f"{source}: module {name!r} has invalid sizes: {exc}") from exc
    for tensor_name, shape in shapes.items():
        old = getattr(module, tensor_name)
        if tuple(old.shape) == shape:
            continue
        new = torch.empty(shape, dtype=old.dtype, device=old.device)
        if tensor_name in module._parameters:
            module._parameters[tensor_name] = nn.Parameter(new, requires_grad=old.requires_grad)
        else:
            module._buffers[tensor_name] = new
    for attr, value in sizes.items():
        setattr(module, attr, value)


def model_from_checkpoint(payload: dict[str, Any], *, source: str | Path) -> nn.Module:
    """Rebuild the model a validated checkpoint describes; see :func:`load`.

    Args:
        payload: A checkpoint's content, as :func:`read_checkpoint` returns it (it is
            validated again here, so a loaded file's raw content is fine too).
        source: Named in error messages.
    """
    from netsurgeon.vision.models import build_architecture, load_state_dict_checked

    payload = _validate_payload(payload, source)
    arch = payload["arch"]
    reserved = {"name", "weights", "progress"} & set(arch["kwargs"])
    if reserved:
        raise CheckpointError(f"{source}: damaged netsurgeon checkpoint: arch kwargs {reserved}")
    try:
        model = build_architecture(arch["name"], **arch["kwargs"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(
            f"{source}: cannot rebuild architecture {arch['name']!r} with {arch['kwargs']!r}: "
            f"{exc} (a model from a custom builder needs register_builder before loading)"
        ) from exc
    for name, record in payload["modules"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise CheckpointError(
                f"{source}: module {name!r} is not in the rebuilt {arch['name']!r}"
            ) from exc
        _resize(module, name, record, source)
    # assign=True keeps the saved tensors' dtype (and the map_location device).
    load_state_dict_checked(model, payload["state_dict"], source=source, assign=True)
    model.netsurgeon_arch = {"name": arch["name"], "kwargs": dict(arch["kwargs"])}
    return model.eval()


def load(path: str | Path, *, map_location: Any = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save`, with ``weights_only=True`` loading.

    Args:
        path: The checkpoint.
        map_location: Passed to :func:`torch.load`; a device (name) also moves the rebuilt
            model's remaining buffers there.

    Returns:
        The model in eval mode, with ``model.netsurgeon_arch`` set.

    Raises:
        CheckpointError: The file is missing, corrupt, foreign, of another format version, of
            an unknown architecture, or does not fit the rebuilt architecture.
    """
    path = Path(path)
    model = model_from_checkpoint(read_checkpoint(path, map_location=map_location), source=path)
    if isinstance(map_location, (str, torch.device)):
        model.to(torch.device(map_location))
    return model
