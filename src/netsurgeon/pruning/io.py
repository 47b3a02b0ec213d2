"""Save and load (pruned) models without pickled code.

A checkpoint is a ``torch.save`` file holding only tensors and plain types:

* ``format`` and ``version``: the marker :data:`FORMAT` and :data:`FORMAT_VERSION`;
* ``arch``: ``{"name": ..., "kwargs": {...}}``, what
  :func:`netsurgeon.vision.models.build_model` needs to rebuild the unpruned architecture;
* ``modules``: the sizes of every resizable module (convolutions, linears, batch and instance
  norms, PReLUs: every type that pruning resizes), for example ``{"layer1.0.conv1": {"type":
  "Conv2d", "in_channels": 64, "out_channels": 40, "groups": 1}}``, and the shape of every
  per-channel parameter cut with them in a module of another type (a layer scale), with the
  tuples of sizes its module views it to where pruning changed them: ``{"blocks.0.scale.scale":
  {"type": "Parameter", "shape": [40], "sizes": {"shape": [40, 1, 1]}}}``; and the sizes
  that modules of other types keep where pruning changed them, as those a module splits its
  channels at: ``{"blocks.0.mix": {"type": "Sizes", "values": {"splits": [10, 6]}}}``;
* ``state_dict`` and ``extra`` (user metadata).

:func:`load` rebuilds the architecture with random initialisation, gives every recorded module
its recorded sizes, and loads the state dict strictly with ``weights_only=True``. Support for
another module type is one :func:`register_resizable` call. :func:`save` rebuilds the
architecture on the ``meta`` device (no memory, no initialisation) and refuses a model that
:func:`load` could not restore, so a written file always loads.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.fileio import atomic_torch_save, check_file_target
from netsurgeon.pruning.graph import count_attribute, kept_size, size_tuple, wrapped_model
from netsurgeon.pruning.surgery import gates, sync_recurrent

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
        module_type: The module class, for example a per-channel layer of your own.
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


def _conv_transpose_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    shapes = _conv_shapes(module, sizes)  # checks the counts against the groups
    groups, in_channels, out_channels = sizes["groups"], sizes["in_channels"], sizes["out_channels"]
    shapes["weight"] = (in_channels, out_channels // groups, *module.kernel_size)
    return shapes


def _norm_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
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


def _group_norm_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    groups, channels = sizes["num_groups"], sizes["num_channels"]
    if groups < 1 or channels % groups:
        raise ValueError(f"num_channels={channels} must be divisible by num_groups={groups}")
    # A subclass may drop the shift (timm's GroupNorm1NoBias sets bias to None).
    return {n: (channels,) for n in ("weight", "bias") if getattr(module, n, None) is not None}


def _layer_norm_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    shape = tuple(sizes["normalized_shape"])
    return {n: shape for n in ("weight", "bias") if getattr(module, n, None) is not None}


def _prelu_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    return {"weight": (sizes["num_parameters"],)}


def _linear_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    shapes = {"weight": (sizes["out_features"], sizes["in_features"])}
    if module.bias is not None:
        shapes["bias"] = (sizes["out_features"],)
    return shapes


def _recurrent_shapes(module: nn.Module, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    """A recurrent layer's weights and biases, every layer and direction, or a cell's input
    weights: pruning changes their input features and (a layer's) hidden units."""
    if isinstance(module, nn.RNNCellBase):
        return {"weight_ih": (module.weight_ih.shape[0], sizes["input_size"])}
    units, per_unit = sizes["hidden_size"], gates(module)
    out = module.proj_size or units
    directions = ("", "_reverse") if module.bidirectional else ("",)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(module.num_layers):
        inputs = sizes["input_size"] if layer == 0 else out * len(directions)
        for sfx in directions:
            shapes[f"weight_ih_l{layer}{sfx}"] = (per_unit * units, inputs)
            shapes[f"weight_hh_l{layer}{sfx}"] = (per_unit * units, out)
            if module.bias:
                shapes[f"bias_ih_l{layer}{sfx}"] = (per_unit * units,)
                shapes[f"bias_hh_l{layer}{sfx}"] = (per_unit * units,)
            if module.proj_size:
                shapes[f"weight_hr_l{layer}{sfx}"] = (module.proj_size, units)
    return shapes


for _conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_resizable(_conv, attrs=("in_channels", "out_channels", "groups"), shapes=_conv_shapes)
for _conv in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register_resizable(
        _conv, attrs=("in_channels", "out_channels", "groups"), shapes=_conv_transpose_shapes
    )
# Every type netsurgeon.pruning.surgery resizes; save() refuses a model with another one resized.
for _norm in (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
):  # fmt: skip
    register_resizable(_norm, attrs=("num_features",), shapes=_norm_shapes)
register_resizable(nn.GroupNorm, attrs=("num_groups", "num_channels"), shapes=_group_norm_shapes)
register_resizable(nn.PReLU, attrs=("num_parameters",), shapes=_prelu_shapes)
register_resizable(nn.LayerNorm, attrs=("normalized_shape",), shapes=_layer_norm_shapes)
register_resizable(nn.Linear, attrs=("in_features", "out_features"), shapes=_linear_shapes)
for _recurrent in (nn.RNN, nn.LSTM, nn.GRU):
    register_resizable(_recurrent, attrs=("input_size", "hidden_size"), shapes=_recurrent_shapes)
for _recurrent in (nn.RNNCell, nn.LSTMCell, nn.GRUCell):
    register_resizable(_recurrent, attrs=("input_size",), shapes=_recurrent_shapes)


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


# Exactly these types (not subclasses such as numpy.float64, whose class would be pickled) are
# what load()'s weights_only=True unpickler accepts.
_PLAIN_TYPES = (str, bool, int, float, type(None))
_SEQUENCE_TYPES = (list, tuple)
_MAPPING_TYPES = (dict, OrderedDict)
_TENSOR_TYPES = (torch.Tensor, nn.Parameter)


def _check_plain(value: Any, *, what: str, allow_tensors: bool, where: str = "") -> None:
    """Refuse anything :func:`load` would reject as a pickled object, naming where it is.

    Args:
        value: The metadata to check, recursively.
        what: Its argument name (``"extra"``, ``"arch_kwargs"``), which starts the messages.
        allow_tensors: Whether tensors are allowed.
        where: The subscripts leading to ``value`` (``"['opt'][0]"``), for the message.

    Raises:
        ConfigError: A value or key of another type, naming its place, type and a conversion.
    """
    kind = type(value)
    if kind in _PLAIN_TYPES or (allow_tensors and kind in _TENSOR_TYPES):
        return
    if kind in _SEQUENCE_TYPES:
        for index, item in enumerate(value):
            _check_plain(item, what=what, allow_tensors=allow_tensors, where=f"{where}[{index}]")
        return
    if kind in _MAPPING_TYPES:
        for key, item in value.items():
            if type(key) is not str:
                raise ConfigError(
                    f"{what}{where} must have string keys, got {key!r} "
                    f"({_type_name(key)}){_conversion_hint(key, allow_tensors=False)}"
                )
            _check_plain(item, what=what, allow_tensors=allow_tensors, where=f"{where}[{key!r}]")
        return
    allowed = "tensors, " if allow_tensors else ""
    raise ConfigError(
        f"{what} may hold only {allowed}str, int, float, bool, None, lists, tuples and dicts "
        f"(exactly those types: load() unpickles no other class); {what}{where} is a "
        f"{_type_name(value)}: {value!r}{_conversion_hint(value, allow_tensors=allow_tensors)}"
    )


def _type_name(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _conversion_hint(value: Any, *, allow_tensors: bool) -> str:
    """How to turn ``value`` into a plain value, as a message suffix ("" if unknown)."""
    for plain in (bool, int, float, str):
        if isinstance(value, plain):  # a subclass: numpy.float64, an IntEnum, a StrEnum
            return f"; convert it with {plain.__name__}(x)"
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalars and arrays, tensors
        if getattr(value, "ndim", None) == 0:
            return "; convert it with x.item()"
        return "; convert it with torch.as_tensor(x)" if allow_tensors else "; use x.tolist()"
    if isinstance(value, Mapping):
        return "; convert it with dict(x)"
    if isinstance(value, (list, tuple)):
        return "; convert it with list(x)"
    return ""


def _resolve_arch(
    model: nn.Module, arch: str | None, arch_kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    from netsurgeon.vision.models import TIMM_PREFIX, check_model, list_models

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
        # timm records the name it built a model from.
        cfg = getattr(model, "pretrained_cfg", None)
        timm_arch = cfg.get("architecture") if isinstance(cfg, dict) else None
        hint = f" (here probably arch='{TIMM_PREFIX}{timm_arch}')" if timm_arch else ""
        raise ConfigError(
            f"cannot tell which architecture this {type(model).__name__} is: pass arch= (a name "
            f"from netsurgeon.vision.list_models(), {TIMM_PREFIX}NAME for a timm model, or one "
            f"added with register_builder){hint} and, if needed, arch_kwargs=, or build the "
            f"model with netsurgeon.vision.build_model"
        )
    _check_plain(kwargs, what="arch_kwargs", allow_tensors=False)
    _check_head(model, kwargs.get("num_classes"))
    if name.startswith(TIMM_PREFIX):
        check_model(name)  # timm must be installed and know the name, as load() will need
    elif name not in list_models():
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
            ``arch``. A ``DataParallel``, ``DistributedDataParallel`` or ``torch.compile``
            wrapper saves the model inside it.
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
    # A wrapper's state-dict keys carry a "module." or "_orig_mod." prefix: save what it wraps.
    while (wrapped := wrapped_model(model)) is not None:
        model = wrapped[0]
    path = check_file_target(path, "the checkpoint path")
    if extra is not None and not isinstance(extra, dict):
        raise ConfigError(f"extra must be a dict, got {extra!r}")
    _check_plain(extra or {}, what="extra", allow_tensors=True)
    resolved = _resolve_arch(model, arch, arch_kwargs)
    records = _record_modules(model)
    state = model.state_dict()
    records.update(_check_loadable(model, resolved, records, state))
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": resolved,
        "modules": records,
        "state_dict": state,
        "extra": dict(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, path)
    return path


def is_checkpoint(obj: Any) -> bool:
    """True if ``obj`` (a loaded file's content) carries the netsurgeon format marker."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def _validate_payload(obj: Any, source: str | Path) -> dict[str, Any]:
    if not is_checkpoint(obj):
        from netsurgeon.training import CHECKPOINT_FORMAT  # here: training imports pruning

        if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{source}: a training checkpoint, which resumes a fine-tuning run (--resume), "
                "not a model; give the model file the run saved (its --out)"
            )
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


class _Unfit(Exception):
    """A checkpoint's records do not fit the rebuilt architecture (message without a source)."""


def _resize(module: nn.Module, name: str, record: Mapping[str, Any]) -> None:
    """Give ``module`` the sizes in ``record``, with uninitialised tensors of the new shapes.

    Raises:
        _Unfit: ``record`` is of another module type or holds invalid sizes.
    """
    found = _spec_of(module)
    if found is None or found[0] != record["type"]:
        actual = found[0] if found else type(module).__name__
        raise _Unfit(
            f"module {name!r} was saved as {record['type']} but the rebuilt model has {actual} "
            f"there"
        )
    _, spec = found
    sizes = {attr: record.get(attr) for attr in spec.attrs}
    # A shape attribute (a LayerNorm's normalized_shape) is a tuple of sizes.
    sizes = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in sizes.items()}
    bad = {k: v for k, v in sizes.items() if not _valid_size(v)}
    if bad:
        raise _Unfit(f"module {name!r} has invalid sizes {bad}")
    try:
        shapes = spec.shapes(module, sizes)
    except (ValueError, ZeroDivisionError) as exc:
        raise _Unfit(f"module {name!r} has invalid sizes: {exc}") from exc
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
    sync_recurrent(module)


def _valid_size(value: object) -> bool:
    """A positive int, or a non-empty tuple of them."""
    if isinstance(value, tuple):
        return bool(value) and all(_valid_size(v) for v in value)
    return type(value) is int and value >= 1


def _apply_records(model: nn.Module, records: Mapping[str, Mapping[str, Any]], arch: str) -> None:
    """Resize the modules of a freshly built ``arch`` as ``records`` say.

    Raises:
        _Unfit: A recorded module is missing from ``model`` or does not take its record.
    """
    for name, record in records.items():
        if record["type"] == _PARAMETER:
            _resize_parameter(model, name, record, arch)
            continue
        if record["type"] == _SIZES:
            _set_sizes(model, name, record, arch)
            continue
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise _Unfit(f"module {name!r} is not in the rebuilt {arch!r}") from exc
        _resize(module, name, record)


def _resize_parameter(model: nn.Module, name: str, record: Mapping[str, Any], arch: str) -> None:
    """Give parameter ``name`` of ``model`` the recorded shape, uninitialised.

    Raises:
        _Unfit: The parameter is not in ``model``, or the shape is not one of as many
            positive sizes.
    """
    owner, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        module = None
    old = module._parameters.get(attr) if module is not None else None
    if old is None:
        raise _Unfit(f"parameter {name!r} is not in the rebuilt {arch!r}")
    shape = record.get("shape")
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) == old.dim()
        and all(type(size) is int and size >= 1 for size in shape)
    ):
        raise _Unfit(f"parameter {name!r} has an invalid recorded shape {shape!r}")
    sizes = record.get("sizes", {})
    if not isinstance(sizes, Mapping):
        raise _Unfit(f"parameter {name!r} has invalid recorded sizes {sizes!r}")
    for key, value in sizes.items():
        built = vars(module).get(key) if isinstance(key, str) and key[:1] != "_" else None
        if not (
            size_tuple(built)
            and isinstance(value, (list, tuple))
            and len(value) == len(built)
            and all(type(v) is int and v >= 1 for v in value)
        ):
            raise _Unfit(f"parameter {name!r} has an invalid recorded size {key!r}: {value!r}")
    new = torch.empty(tuple(shape), dtype=old.dtype, device=old.device)
    module._parameters[attr] = nn.Parameter(new, requires_grad=old.requires_grad)
    for key, value in sizes.items():
        setattr(module, key, tuple(value))


def _shape_problems(
    model: nn.Module, state: Mapping[str, torch.Tensor], rebuilt: nn.Module
) -> list[str]:
    """What keeps ``state`` (``model``'s state dict) from loading strictly into ``rebuilt``,
    as :func:`netsurgeon.vision.models.load_state_dict_checked` would find it."""
    from netsurgeon.vision.models import state_dict_differences

    diff = state_dict_differences(rebuilt, state)
    want, missing, unexpected, mismatched = diff.own, diff.missing, diff.unexpected, diff.mismatched
    problems = []
    if mismatched:
        shown = ", ".join(
            f"{k}: model {tuple(state[k].shape)} vs rebuilt {tuple(want[k].shape)}"
            for k in mismatched[:3]
        )
        problems.append(f"{len(mismatched)} mismatched shapes ({shown})")
        # A resized module of a type without a register_resizable() record cannot be restored.
        unknown = []
        for owner in sorted({k.rpartition(".")[0] for k in mismatched}):
            module = _submodule_or_none(model, owner)
            if module is not None and _spec_of(module) is None:
                unknown.append(f"{owner!r} ({type(module).__name__})")
        if unknown:
            problems.append(
                f"netsurgeon does not record the sizes of {', '.join(unknown)}; register that "
                f"type with netsurgeon.pruning.io.register_resizable"
            )
    for label, keys in (("missing from the model", missing), ("not in the rebuilt", unexpected)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} tensors {label} ({', '.join(keys[:3])}{more})")
    return problems


def _submodule_or_none(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:  # a state dict key that a hook added, not a module's tensor
        return None


# build_model's own arguments, which a builder's recorded kwargs must not hold.
_RESERVED_KWARGS = frozenset({"name", "weights", "progress"})


def _build(arch: Mapping[str, Any], *, meta: bool = False) -> nn.Module:
    """Build ``arch`` unpruned with arbitrary weights; ``meta``: without memory if it can be.

    Raises:
        _Unfit: Unusable builder arguments.
    """
    from netsurgeon.vision.models import build_architecture

    name, kwargs = arch["name"], arch["kwargs"]
    if meta:
        # A builder that needs real tensors (regnet computes its widths with them) is built
        # for real below, as load() would.
        with contextlib.suppress(Exception), warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # the builder's warnings are load()'s to give
            return build_architecture(name, **kwargs)
    try:
        return build_architecture(name, **kwargs)
    except (ConfigError, TypeError) as exc:
        raise _Unfit(f"cannot rebuild architecture {name!r} with {kwargs!r}: {exc}") from exc


def _check_loadable(
    model: nn.Module,
    arch: Mapping[str, Any],
    records: Mapping[str, Mapping[str, Any]],
    state: Mapping[str, torch.Tensor],
) -> dict[str, dict[str, Any]]:
    """Refuse now a model that :func:`load` could not restore from ``arch`` and ``records``.

    The architecture is built on the meta device where it can be, which allocates and
    initialises nothing, so this costs a fraction of a second even for large models.

    Returns:
        Records of the parameters of other modules that pruning resized (a layer scale
        cut with its channels) and of the sizes such modules keep (where they split
        channels), which ``records`` need too.

    Raises:
        ConfigError: Naming the architecture and the first names that do not fit.
    """
    reserved = sorted(_RESERVED_KWARGS & set(arch["kwargs"]))
    parameters: dict[str, dict[str, Any]] = {}
    try:
        if reserved:
            raise _Unfit(
                f"arch kwargs {reserved} are build_model's own arguments, not the builder's"
            )
        rebuilt = _build(arch, meta=True)
        _apply_records(rebuilt, records, arch["name"])
        parameters = _record_parameters(model, rebuilt)
        _apply_records(rebuilt, parameters, arch["name"])
        parameters.update(_record_sizes(model, rebuilt, parameters))
    except _Unfit as exc:
        problems = [str(exc)]
    else:
        problems = _shape_problems(model, state, rebuilt)
    if problems:
        raise ConfigError(
            f"this {type(model).__name__} does not fit architecture {arch['name']!r} with "
            f"{arch['kwargs']!r}, so load() could not rebuild it: {'; '.join(problems)}; pass "
            f"the arch= and arch_kwargs= that build this model"
        )
    return parameters


# The record type of a parameter, of a module whose sizes are not recorded, that pruning cut
# (a layer scale): its shape.
_PARAMETER = "Parameter"


def _record_parameters(model: nn.Module, rebuilt: nn.Module) -> dict[str, dict[str, Any]]:
    """Shapes of ``model``'s parameters that differ from the ``rebuilt`` architecture's in as
    many dimensions, where their module has no size record (a layer scale cut along with its
    channels). Any other difference is left for the shape check to report."""
    built = dict(rebuilt.named_parameters())
    records: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        owner = name.rpartition(".")[0]
        other = built.get(name)
        if (
            other is None
            or other.dim() != param.dim()
            or _spec_of(model.get_submodule(owner)) is not None
        ):
            continue
        changed = [d for d in range(param.dim()) if other.shape[d] != param.shape[d]]
        # A module that keeps the count itself needs register_resizable to restore it.
        if changed and not any(
            count_attribute(rebuilt.get_submodule(owner), other.shape[d]) for d in changed
        ):
            records[name] = {"type": _PARAMETER, "shape": list(param.shape)}
            sizes = _changed_tuples(model.get_submodule(owner), rebuilt.get_submodule(owner))
            if sizes:
                records[name]["sizes"] = sizes
    return records


# The record type of the sizes that a module of another type keeps and pruning changed (the
# sizes timm's MixedConv2d splits its channels at): ``{"values": {"splits": [10, 6]}}``.
_SIZES = "Sizes"


def _record_sizes(
    model: nn.Module, rebuilt: nn.Module, parameters: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The sizes kept by ``model``'s modules of types without a size record that differ from
    the ``rebuilt`` architecture's (those a parameter record holds aside)."""
    built = dict(rebuilt.named_modules())
    records: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        other = built.get(name)
        if other is None or _spec_of(module) is not None:
            continue
        held = {
            key
            for parameter, record in parameters.items()
            if parameter.rpartition(".")[0] == name
            for key in record.get("sizes", {})
        }
        changed = {
            attr: list(value) if type(value) in (list, tuple) else value
            for attr, value in vars(module).items()
            if attr[0] != "_"
            and attr not in held
            and kept_size(value)
            and type(old := vars(other).get(attr)) is type(value)
            and (type(value) is int or len(old) == len(value))
            and old != value
        }
        if changed:
            records[name] = {"type": _SIZES, "values": changed}
    return records


def _set_sizes(model: nn.Module, name: str, record: Mapping[str, Any], arch: str) -> None:
    """Give module ``name`` of ``model`` the recorded sizes, each of the built one's type.

    Raises:
        _Unfit: The module is not in ``model``, or a size does not fit the built one.
    """
    try:
        module = model.get_submodule(name)
    except AttributeError as exc:
        raise _Unfit(f"module {name!r} is not in the rebuilt {arch!r}") from exc
    values = record.get("values")
    if not isinstance(values, Mapping):
        raise _Unfit(f"module {name!r} has invalid recorded sizes {values!r}")
    for attr, value in values.items():
        built = vars(module).get(attr) if isinstance(attr, str) and attr[:1] != "_" else None
        fits = kept_size(built) and (
            type(value) is int
            if type(built) is int
            else isinstance(value, (list, tuple))
            and len(value) == len(built)
            and all(type(v) is int for v in value)
        )
        if not fits:
            raise _Unfit(f"module {name!r} has an invalid recorded size {attr!r}: {value!r}")
        setattr(module, attr, value if type(built) is int else type(built)(value))


def _changed_tuples(module: nn.Module, built: nn.Module) -> dict[str, list[int]]:
    """The tuples of sizes of ``module`` (the shape a layer scale is viewed to) that pruning
    changed from the ``built`` module's."""
    return {
        attr: list(value)
        for attr, value in vars(module).items()
        if attr[0] != "_"
        and size_tuple(value)
        and size_tuple(old := vars(built).get(attr))
        and len(old) == len(value)
        and old != value
    }


def model_from_checkpoint(payload: dict[str, Any], *, source: str | Path) -> nn.Module:
    """Rebuild the model a validated checkpoint describes; see :func:`load`.

    Args:
        payload: A checkpoint's content, as :func:`read_checkpoint` returns it (it is
            validated again here, so a loaded file's raw content is fine too).
        source: Named in error messages.
    """
    from netsurgeon.vision.models import load_state_dict_checked

    payload = _validate_payload(payload, source)
    arch = payload["arch"]
    reserved = _RESERVED_KWARGS & set(arch["kwargs"])
    if reserved:
        raise CheckpointError(f"{source}: damaged netsurgeon checkpoint: arch kwargs {reserved}")
    try:
        model = _build(arch)
    except _Unfit as exc:
        raise CheckpointError(
            f"{source}: {exc} (a model from a custom builder needs register_builder before loading)"
        ) from exc
    try:
        _apply_records(model, payload["modules"], arch["name"])
    except _Unfit as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
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
