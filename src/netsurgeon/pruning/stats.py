"""Measure what a model costs: parameters, MACs, size on disk and latency."""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop_count

from netsurgeon.errors import ConfigError, first_line
from netsurgeon.modes import kept_modes

__all__ = [
    "MacCounter",
    "ModelStats",
    "as_input_tuple",
    "batch_inputs",
    "check_input_size",
    "check_runs",
    "count_macs",
    "count_params",
    "format_comparison",
    "format_stats",
    "measure_latency",
    "move_inputs",
    "resolve_device",
    "state_size_bytes",
]

_DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def as_input_tuple(example_inputs: Any) -> tuple[Any, ...]:
    """Normalise ``example_inputs`` (a tensor or a sequence of inputs) to a tuple."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, Sequence) and not isinstance(example_inputs, str):
        return tuple(example_inputs)
    return (example_inputs,)


def move_inputs(
    inputs: Any,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    *,
    non_blocking: bool = False,
    channels_last: bool = False,
) -> Any:
    """``inputs`` (a tensor, or a tuple, list or dict of them and other values, nested) on
    ``device``; with ``dtype``, floating-point tensors also cast to it (a loader's float32
    images for a bfloat16 model, say); with ``channels_last``, 4-d tensors in that memory
    format."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            cast = dtype if dtype is not None and value.is_floating_point() else None
            value = value.to(device=device, dtype=cast, non_blocking=non_blocking)
            if channels_last and value.ndim == 4:
                value = value.contiguous(memory_format=torch.channels_last)
            return value
        if isinstance(value, (tuple, list)):
            items = [move(v) for v in value]
            return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        if isinstance(value, Mapping):
            return {k: move(v) for k, v in value.items()}
        return value

    return move(inputs)


def batch_inputs(batch: Any) -> tuple[Any, ...]:
    """The model's positional inputs in a loader's batch, as a tuple.

    The first item of a sequence (``(inputs, targets)``, ``(inputs, targets, index)``, or an
    unlabelled ``TensorDataset``'s ``[inputs]``), or the batch itself when it is not one; a
    tuple or list of inputs (a model with several) is spread. The criteria read batches the
    same way.

    Raises:
        ConfigError: The batch is a dict (which input would the model take?).
    """
    if isinstance(batch, Mapping):
        raise ConfigError(
            "data batches must be (inputs, targets) pairs or inputs, got a dict; wrap the "
            "loader so that it yields (inputs, targets)"
        )
    inputs = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    return as_input_tuple(inputs)


def check_reiterable(name: str, data: Any) -> None:
    """Refuse a one-pass iterable (a generator, an iterator) where data is read repeatedly.

    A second pass over a generator yields nothing, which would pass for an empty data set
    (or a silent no-op) far from the cause.
    """
    if data is not None and iter(data) is data:
        raise ConfigError(
            f"{name} is a one-pass {type(data).__name__}, but it is read several times; "
            "pass a list of batches or a DataLoader"
        )


def count_params(model: nn.Module) -> int:
    """Number of parameters, each shared parameter counted once."""
    return sum(p.numel() for p in model.parameters())


# Operations whose decompose() gave NotImplemented (no composite kernel), as it always will.
_NOT_COMPOSITE: set[Any] = set()
_aten = torch.ops.aten
# Normalisations decompose into elementwise arithmetic and reductions, never a matrix product
# or a convolution: run whole, they count the same 0 MACs without a decomposition's mode
# re-entry (52 of them in a mobilenet_v2 pass).
_MAC_FREE = frozenset({
    _aten.native_batch_norm.default, _aten.native_layer_norm.default,
    _aten.native_group_norm.default, _aten._native_batch_norm_legit.default,
    _aten._native_batch_norm_legit.no_stats, _aten._native_batch_norm_legit_no_training.default,
})  # fmt: skip


def _flat(value: Any) -> bool:
    """Whether ``value`` holds no tensor below its top level (an int list is flat)."""
    if isinstance(value, (list, tuple)):
        return not any(isinstance(v, (torch.Tensor, list, tuple, dict)) for v in value)
    return not isinstance(value, dict)


def _formula_flops(
    formula: Callable[..., Any], args: tuple[Any, ...], kwargs: Any, out: Any
) -> int:
    """``formula(*args, **kwargs, out_val=out)``, FlopCounterMode's registered formulas called
    on shapes directly where arguments are flat: their wrapper maps a pytree over every
    argument of every call, which cost more than the convolutions' formulas themselves."""
    inner = getattr(formula, "__wrapped__", None)  # the formula behind shape_wrapper
    if (
        inner is None
        or not isinstance(out, torch.Tensor)
        or not all(_flat(a) for a in args)
        or not all(_flat(v) for v in kwargs.values())
    ):
        return int(formula(*args, **kwargs, out_val=out))
    shapes = [a.shape if isinstance(a, torch.Tensor) else a for a in args]
    named = {k: v.shape if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return int(inner(*shapes, **named, out_shape=out.shape))


def _cpu_attention_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         *args: Any, **kwargs: Any) -> int:  # fmt: skip
    return int(sdpa_flop_count(query.shape, key.shape, value.shape))


def _recurrent_flops(inputs: torch.Tensor, weights: Sequence[torch.Tensor]) -> int:
    """A fused recurrent kernel: every step of every row multiplies its input and its hidden
    state by each weight matrix (input, hidden and projection weights; 2-D), once per layer
    and direction that the weights cover. A packed sequence's input holds its rows already."""
    rows = inputs.numel() // max(inputs.shape[-1], 1) if inputs.dim() else 0
    return 2 * rows * sum(w.numel() for w in weights if w.dim() == 2)


def _onednn_rnn_flops(inputs: torch.Tensor, weight0: torch.Tensor, weight1: torch.Tensor,
                      *args: Any, **kwargs: Any) -> int:  # fmt: skip
    return _recurrent_flops(inputs, (weight0, weight1))  # one layer and direction per call


def _cudnn_rnn_flops(inputs: torch.Tensor, weights: Sequence[torch.Tensor],
                     *args: Any, **kwargs: Any) -> int:  # fmt: skip
    return _recurrent_flops(inputs, weights)  # every layer and direction in one call


# Operations FlopCounterMode has no formula for: scaled_dot_product_attention's CPU kernel
# (the GPU kernels are in its registry), so attention scores went uncounted on the CPU; the
# fused kernels of nn.LSTM (oneDNN on the CPU, every recurrent layer on cuDNN or MIOpen),
# which counted 0 MACs (other recurrent layers on the CPU run counted matrix products).
_EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    torch.ops.aten.mkldnn_rnn_layer: _onednn_rnn_flops,
    torch.ops.aten._cudnn_rnn: _cudnn_rnn_flops,
    torch.ops.aten.miopen_rnn: _cudnn_rnn_flops,
}


class MacCounter(TorchDispatchMode):
    """Counts the multiply-accumulates of the operations run under it.

    The count is :class:`torch.utils.flop_counter.FlopCounterMode`'s total halved (its
    formulas, 2 FLOPs per MAC of convolutions and matrix products, and its decomposition of
    composite operations), without its per-module bookkeeping, which hooks every module call:
    on mobilenet_v2 at 224 px a counted forward pass took about 65 ms with FlopCounterMode and
    50 ms with this counter (30 ms uncounted), and pruning counts two of them. Higher-order
    operators (``torch.cond``, Triton kernels) are counted by FlopCounterMode itself. It also
    counts what FlopCounterMode has no formula for: attention on the CPU and the fused kernels
    of recurrent layers (oneDNN's LSTM, cuDNN's and MIOpen's RNN, LSTM and GRU).

    Example::

        with torch.no_grad(), MacCounter() as counter:
            model(inputs)
        counter.macs
    """

    supports_higher_order_operators = True

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self._fastpath: list[bool] = []  # one entry per (re-)entry: dispatch re-enters

    def __enter__(self) -> MacCounter:
        # nn.MultiheadAttention's (and TransformerEncoderLayer's) fused inference kernel has
        # no FLOP formula: counted through it, a ViT lost a third of its MACs. The unfused
        # path computes the same outputs with counted matrix products.
        self._fastpath.append(torch.backends.mha.get_fastpath_enabled())
        torch.backends.mha.set_fastpath_enabled(False)
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        torch.backends.mha.set_fastpath_enabled(self._fastpath.pop())

    @property
    def macs(self) -> int:
        """Multiply-accumulates counted so far."""
        return self.flops // 2

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.HigherOrderOperator):
            # torch.cond, Triton kernels: FlopCounterMode has the rules (cond counts the
            # larger branch); the module hooks cost little for one operation.
            inner = FlopCounterMode(display=False)
            with inner:
                out = func(*args, **kwargs)
            self.flops += int(inner.get_total_flops())
            return out
        if func in _MAC_FREE:
            return func(*args, **kwargs)
        if func is not torch.ops.prim.device.default and func not in _NOT_COMPOSITE:
            with self:  # count what a composite operation runs, as FlopCounterMode does
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
            _NOT_COMPOSITE.add(func)  # never decomposes: skip the mode re-entry next time
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket) or _EXTRA_FORMULAS.get(
            func._overloadpacket
        )
        if formula is not None:
            self.flops += _formula_flops(formula, args, kwargs, out)
        return out


def check_runs(model: nn.Module, example_inputs: Any, *, failure: str) -> None:
    """Run ``model`` once, in eval mode, on ``example_inputs``, so that inputs it cannot take
    (pooled down to nothing, say) are refused up front with the option to change, not as a
    traceback midway through the work.

    Raises:
        ConfigError: ``failure`` (what did not run), the model's own error, and the
            ``--input-size`` advice.
    """
    try:
        with kept_modes(model), torch.no_grad():
            model.eval()(*as_input_tuple(example_inputs))
    # Too small for its pooling, wrong channels, torchvision's torch._assert on the size...
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"{failure} ({first_line(exc)}); give an input size it accepts (--input-size)"
        ) from exc


def check_input_size(model: nn.Module, input_size: int, *, name: str | None = None) -> None:
    """:func:`check_runs` on one black ``input_size`` x ``input_size`` image, where the
    model's weights are and in their dtype.

    Raises:
        ConfigError: the model fails on such an image; the message names ``--input-size``.
    """
    image = torch.zeros(
        1,
        3,
        input_size,
        input_size,
        device=resolve_device(None, model),
        dtype=float_dtype(model),
    )
    failure = f"{name or type(model).__name__} does not run on {input_size}x{input_size} images"
    check_runs(model, image, failure=failure)


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs``.

    Counted with :class:`MacCounter` (:mod:`torch.utils.flop_counter`'s formulas: convolutions
    and matrix products, attention, recurrent layers); the model runs in eval mode without
    gradients and its training flags are restored afterwards. Tensor inputs go to the model's
    device, floating-point ones in its dtype.
    """
    inputs = move_inputs(
        as_input_tuple(example_inputs), resolve_device(None, model), float_dtype(model)
    )
    with kept_modes(model):
        model.eval()
        with torch.no_grad(), MacCounter() as counter:
            model(*inputs)
    return counter.macs


class _ByteCounter(io.RawIOBase):
    """A write-only stream that only counts what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.count += size
        return size


def state_size_bytes(model: nn.Module) -> int:
    """Bytes that ``torch.save(model.state_dict())`` writes: the model's size on disk.

    Counted as they are written, not held: a copy of a large model's weights in memory would
    cost as much again (half a gigabyte for vgg16).
    """
    counter = _ByteCounter()
    torch.save(model.state_dict(), counter)
    return counter.count


def resolve_device(
    device: str | torch.device | None, model: nn.Module | None = None
) -> torch.device:
    """Turn a device argument into a :class:`torch.device`.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``, a :class:`torch.device`, or ``None`` for the device that holds
            ``model``'s first parameter or buffer (CPU when it has none).
        model: The model whose device ``None`` stands for.

    Raises:
        ConfigError: The name is unknown, or CUDA is asked for but not available.
    """
    if device is None:
        for tensor in _tensors(model):
            return tensor.device
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"device={device!r} is not a device; use one of {', '.join(_DEVICE_CHOICES)}"
        ) from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"device={device!r} is not supported; use one of {', '.join(_DEVICE_CHOICES)}"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} asked for, but CUDA is not available; use 'cpu'")
        if resolved.index is None:
            # Name the current GPU, so it compares equal to the device a parameter reports.
            resolved = torch.device("cuda", torch.cuda.current_device())
        elif resolved.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={device!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return resolved


def measure_latency(
    model: nn.Module,
    example_inputs: Any,
    *,
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device | None = None,
) -> float:
    """Median wall-clock time of one forward pass, in milliseconds.

    The model runs in eval mode under :func:`torch.inference_mode`; its training flags are
    restored afterwards. On CUDA every run is synchronised so the time covers the kernels,
    not just their launch.

    Args:
        model: The model to time.
        example_inputs: A tensor or a sequence of positional inputs; tensors are moved to
            ``device``.
        warmup: Untimed runs first (allocator, caches, lazy initialisation); at least 0.
        repeats: Timed runs whose median is returned; at least 1.
        device: Where to run (see :func:`resolve_device`); ``None`` keeps the model where it
            is. A model moved for the measurement is moved back afterwards.

    Raises:
        ConfigError: ``warmup`` < 0, ``repeats`` < 1, or an unusable ``device``.
    """
    _check_int("warmup", warmup, minimum=0)
    _check_int("repeats", repeats, minimum=1)
    target = resolve_device(device, model)
    home = resolve_device(None, model)
    # Floating-point inputs in the model's dtype (float32 images for a bfloat16 model).
    inputs = move_inputs(as_input_tuple(example_inputs), target, float_dtype(model))
    moved = target != home
    if moved:
        model.to(target)
    sync = torch.cuda.synchronize if target.type == "cuda" else _no_sync
    times: list[float] = []
    try:
        with kept_modes(model), torch.inference_mode():
            model.eval()
            for _ in range(warmup):
                model(*inputs)
            sync()
            for _ in range(repeats):
                start = time.perf_counter()
                model(*inputs)
                sync()
                times.append(time.perf_counter() - start)
    finally:
        if moved:
            model.to(home)
    return statistics.median(times) * 1000.0


@dataclass(frozen=True)
class ModelStats:
    """What a model costs, measured on random images of one size.

    Attributes:
        params: Number of parameters.
        macs: Multiply-accumulates of one forward pass on a single image (batch 1).
        size_bytes: Size of the saved ``state_dict`` (see :func:`state_size_bytes`).
        latency_ms: Median forward time of one batch of ``batch_size`` images, in
            milliseconds, or ``None`` when latency was not measured.
        batch_size: Batch size used for ``latency_ms``.
        input_size: Height and width of the square input images.
        device: Where the latency was measured (``"cpu"``, ``"cuda:0"``...).
        threads: Torch's CPU threads during a latency measurement on the CPU (CPU latency
            depends on it), ``None`` otherwise.
    """

    params: int
    macs: int
    size_bytes: int
    latency_ms: float | None
    batch_size: int
    input_size: int
    device: str = "cpu"
    threads: int | None = None

    @classmethod
    def measure(
        cls,
        model: nn.Module,
        *,
        input_size: int = 224,
        batch_size: int = 1,
        channels: int = 3,
        latency: bool = True,
        warmup: int = 3,
        repeats: int = 10,
        device: str | torch.device | None = None,
    ) -> ModelStats:
        """Measure ``model`` on random ``channels`` x ``input_size`` x ``input_size`` images.

        Args:
            model: An image model taking one ``(N, C, H, W)`` tensor.
            input_size: Height and width of the images; at least 1.
            batch_size: Batch size of the latency measurement (MACs are always per image).
            channels: Input channels; at least 1.
            latency: Measure latency; ``False`` leaves ``latency_ms`` as ``None``.
            warmup: Untimed warm-up runs before the latency measurement.
            repeats: Timed runs; the median is reported.
            device: Where to run (see :func:`resolve_device`); ``None`` keeps the model
                where it is.

        Raises:
            ConfigError: A size, count or device is out of range.
        """
        _check_int("input_size", input_size, minimum=1)
        _check_int("batch_size", batch_size, minimum=1)
        _check_int("channels", channels, minimum=1)
        _check_int("warmup", warmup, minimum=0)
        _check_int("repeats", repeats, minimum=1)
        target = resolve_device(device, model)
        dtype = float_dtype(model)
        # A fixed seed makes repeated measurements see the same inputs.
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(
            batch_size, channels, input_size, input_size, generator=generator, dtype=dtype
        )
        home = resolve_device(None, model)
        macs = count_macs(model, images[:1].to(home))
        latency_ms = None
        if latency:
            latency_ms = measure_latency(
                model, images.to(target), warmup=warmup, repeats=repeats, device=target
            )
        return cls(
            params=count_params(model),
            macs=macs,
            size_bytes=state_size_bytes(model),
            latency_ms=latency_ms,
            batch_size=batch_size,
            input_size=input_size,
            device=str(target),
            threads=torch.get_num_threads() if latency and target.type == "cpu" else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return asdict(self)


def format_stats(stats: ModelStats, *, title: str = "value") -> str:
    """Render one :class:`ModelStats` as an aligned two-column text table."""
    rows = [(_label(name, stats), fmt(getattr(stats, name))) for name, fmt in _METRICS]
    return _render(("metric", title), rows)


def format_comparison(before: ModelStats, after: ModelStats) -> str:
    """Render a before/after table with an ``after/before`` ratio column.

    Example::

        metric                              before     after  after/before
        params                            11.690 M   2.939 M         0.251
        MACs (per image)                   1.814 G 464.023 M         0.256
        size on disk                      44.67 MiB 11.25 MiB         0.252
        latency (batch 1, cpu, 1 thread)  25.10 ms   9.80 ms         0.390
    """
    rows = []
    for name, fmt in _METRICS:
        value_before, value_after = getattr(before, name), getattr(after, name)
        rows.append(
            (
                _label(name, before),
                fmt(value_before),
                fmt(value_after),
                _ratio(value_after, value_before),
            )
        )
    return _render(("metric", "before", "after", "after/before"), rows)


def _label(name: str, stats: ModelStats) -> str:
    if name == "latency_ms":
        threads = "" if stats.threads is None else f", {stats.threads} thread"
        threads += "s" if stats.threads not in (None, 1) else ""
        return f"latency (batch {stats.batch_size}, {stats.device}{threads})"
    return _LABELS[name]


def _render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-align the first column, right-align the others."""
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _si(value: int) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3f} {suffix}"
    return str(value)


def _bytes(value: int) -> str:
    for factor, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= factor:
            return f"{value / factor:.2f} {suffix}"
    return f"{value} B"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _ratio(after: float | None, before: float | None) -> str:
    if after is None or before is None or before == 0 or not math.isfinite(before):
        return "n/a"
    return f"{after / before:.3f}"


_LABELS = {"params": "params", "macs": "MACs (per image)", "size_bytes": "size on disk"}
# Table rows, in order: ModelStats field and how to print it.
_METRICS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("params", _si),
    ("macs", _si),
    ("size_bytes", _bytes),
    ("latency_ms", _ms),
)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    # bool is an int subclass; True as a batch size is a bug at the call site.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be an integer >= {minimum}")


def _tensors(model: nn.Module | None) -> list[torch.Tensor]:
    if model is None:
        return []
    return [*model.parameters(), *model.buffers()]


def float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s first floating-point parameter or buffer (else float32): what
    its floating-point inputs must be."""
    for tensor in _tensors(model):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _no_sync() -> None:
    """CPU work is synchronous; nothing to wait for."""
