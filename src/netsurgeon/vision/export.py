"""Export a (pruned) model to ONNX or TorchScript, and check the export against PyTorch.

ONNX goes through :func:`torch.onnx.export` with the ``torch.export``-based exporter (the
default since PyTorch 2.9; it needs the ``onnx`` and ``onnxscript`` packages) or, with
``exporter="legacy"``, the deprecated TorchScript-based one. TorchScript goes through
:func:`torch.jit.trace`. Both keep the batch dimension dynamic. :func:`verify_export` runs the
exported file (with onnxruntime for ONNX) and returns the largest difference from PyTorch's
outputs. The ONNX packages are the optional ``export`` extra:
``pip install 'netsurgeon[export]'``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netsurgeon.choices import EXPORT_FORMATS, EXPORTERS
from netsurgeon.errors import ConfigError, NetsurgeonError, first_line
from netsurgeon.fileio import as_write_error, fsync_folder, make_temporary
from netsurgeon.pruning.stats import check_runs, float_dtype, move_inputs
from netsurgeon.vision.models import DEFAULT_INPUT_SIZE, checkpoint_input_size

__all__ = [
    "EXPORTERS",
    "FORMATS",
    "ExportResult",
    "default_export_path",
    "export_checkpoint",
    "export_model",
    "verify_export",
]

FORMATS = EXPORT_FORMATS
_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
_EXTRA_HINT = "pip install 'netsurgeon[export]' (onnx, onnxscript, onnxruntime)"


@dataclass(frozen=True)
class ExportResult:
    """One export.

    Attributes:
        path: The file written.
        format: ``"onnx"`` or ``"torchscript"``.
        input_shape: Shape of the example input the model was exported with (the batch
            dimension is dynamic in the file).
        max_abs_diff: Largest absolute difference between the exported model's outputs and
            PyTorch's on a random batch, or ``None`` when not verified.
    """

    path: Path
    format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float | None = None


def _require(module: str, what: str) -> Any:
    if importlib.util.find_spec(module) is None:
        raise NetsurgeonError(f"{what} needs the {module!r} package: {_EXTRA_HINT}")
    return importlib.import_module(module)


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not allowed; use one of {', '.join(FORMATS)}")
    return format


def default_export_path(checkpoint: str | os.PathLike[str], format: str) -> Path:
    """``model.pt`` -> ``model.onnx`` or ``model.torchscript.pt`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + _SUFFIXES[_check_format(format)])


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A path in a temporary folder beside ``path``, renamed over it when the block succeeds.

    The exporters open the file themselves (so it gets the usual permissions); a failed or
    interrupted export leaves ``path`` as it was and no partial file behind. A failed write
    (a full disk, a read-only folder) is a :class:`~netsurgeon.errors.WriteError`.
    """
    folder = make_temporary(path, folder=True)
    try:
        tmp = folder / path.name
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        error = as_write_error(exc, path)
        if error is not None:
            raise error from exc
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    fsync_folder(path.parent)


def _opset_range(exporter: str) -> tuple[int, int]:
    """The opsets ``exporter`` writes without a (fallible) version conversion, inclusive.

    Read from torch where it says (the values below are torch 2.9's, for when it does not):
    the dynamo exporter's operator library is written for one opset and converting down from
    it fails for common operators (Pad), so it starts there; the legacy exporter covers
    ``ONNX_MIN_OPSET`` to ``ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET``.
    """
    constants: Any = None
    with contextlib.suppress(ImportError):
        from torch.onnx import _constants as constants
    if exporter == "dynamo":
        low = 18
        with contextlib.suppress(ImportError):
            from torch.onnx._internal.exporter import _constants as dynamo_constants

            low = int(getattr(dynamo_constants, "TORCHLIB_OPSET", low))
        return low, int(getattr(constants, "ONNX_MAX_OPSET", 23))
    return (
        int(getattr(constants, "ONNX_MIN_OPSET", 7)),
        int(getattr(constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)),
    )


def _check_opset(opset: object, exporter: str) -> int | None:
    """``opset`` if ``exporter`` can write it, else a ConfigError that says which can."""
    if opset is None:
        return None
    low, high = _opset_range(exporter)
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        hint = ""
        if exporter == "dynamo":
            legacy_low, legacy_high = _opset_range("legacy")
            if isinstance(opset, int) and legacy_low <= opset < low:
                hint = (
                    f"; for opset {opset} use exporter='legacy' (--exporter legacy; "
                    f"{legacy_low}-{legacy_high})"
                )
        raise ConfigError(
            f"opset={opset!r} (--opset) is not allowed with the {exporter} exporter; use {low} to "
            f"{high}{hint}"
        )
    return opset


def _written_opset(path: Path) -> int | None:
    """The default-domain opset an ONNX file declares (``None`` when it declares none)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    versions = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    return int(versions[0]) if versions else None


def _export_onnx(
    model: nn.Module, example: torch.Tensor, path: Path, *, exporter: str, opset: int | None
) -> None:
    _require("onnx", "ONNX export")
    _export_onnx_file(model, example, path, exporter=exporter, opset=opset)
    if opset is not None:
        # The dynamo exporter falls back to its own opset when a conversion fails, with only
        # a logged traceback; never hand out a file of another opset than asked for.
        written = _written_opset(path)
        if written != opset:
            raise ConfigError(
                f"the {exporter} exporter wrote opset {written}, not the requested {opset}; "
                "choose another opset (--opset) or exporter (--exporter)"
            )


def _export_onnx_file(
    model: nn.Module, example: torch.Tensor, path: Path, *, exporter: str, opset: int | None
) -> None:
    names = {"input_names": ["input"], "output_names": ["logits"]}
    if exporter == "dynamo":
        _require("onnxscript", "ONNX export")
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            verbose=False,
            external_data=False,  # one self-contained file (models under 2 GB)
            opset_version=opset,
            dynamic_shapes=({0: batch},),
            **names,
        )
        return
    with warnings.catch_warnings(), _native_stdout_discarded():
        # The legacy exporter is deprecated, and warns about constant folding of the
        # zero-padding shortcuts' strided slices; neither is the user's concern here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            **names,
        )


@contextlib.contextmanager
def _native_stdout_discarded() -> Iterator[None]:
    """Discard what native code writes to the process's stdout meanwhile.

    The legacy exporter turns its ONNX log on whatever the caller asked (torch 2.14's
    ``setup_onnx_logging`` tests a function object, not its result), and on failure its C++
    side prints the whole TorchScript graph to stdout, thousands of lines before the error.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (an embedded interpreter): nothing to redirect
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream but still the format many C++ runtimes load.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        # Through a Python file: given a path, a failed write (full disk) aborts the process.
        with open(path, "wb") as handle:
            torch.jit.save(traced, handle)


def export_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    format: str,
    input_size: int = DEFAULT_INPUT_SIZE,
    example_inputs: torch.Tensor | None = None,
    exporter: str = "dynamo",
    opset: int | None = None,
    verify: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-5,
) -> ExportResult:
    """Export ``model`` (in eval mode, on the CPU) to ``path``, written atomically.

    Args:
        model: An image classifier taking one ``(batch, 3, H, W)`` tensor; it is put in eval
            mode and moved to the CPU.
        path: The file to write.
        format: ``"onnx"`` or ``"torchscript"``.
        input_size: Side of the square example input (ignored with ``example_inputs``).
        example_inputs: The example batch to trace with; defaults to random
            ``(2, 3, input_size, input_size)`` images.
        exporter: ONNX only: ``"dynamo"`` (``torch.export``-based, needs onnxscript) or
            ``"legacy"`` (TorchScript-based, deprecated upstream).
        opset: ONNX opset; ``None`` takes the exporter's default. The dynamo exporter
            writes 18 to ``torch.onnx``'s newest (23 in torch 2.14), the legacy one 7 to 20;
            the written file is checked to declare this opset.
        verify: Run the exported file and compare it with PyTorch (see :func:`verify_export`)
            on the example batch and on a batch one larger, which shows a batch size fixed
            at export time.
        atol: With ``verify``, the allowed absolute difference (>= 0)...
        rtol: ...plus this share of PyTorch's largest output magnitude (>= 0), as in
            :func:`torch.allclose`: float32 rounding grows with the outputs' size.

    Raises:
        ConfigError: A bad argument (an opset the exporter cannot write among them), a model
            that does not run on the example inputs (too small for it, say), the file came
            out with another opset, or ``verify`` found outputs further apart than
            ``atol + rtol * max|output|`` or an export that fails on another batch size;
            ``path`` is then left as it was.
        NetsurgeonError: A package of the ``export`` extra is missing.
    """
    format = _check_format(format)
    for name, tolerance in (("atol", atol), ("rtol", rtol)):
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, (int, float))
            or not (0 <= tolerance < math.inf)  # inf would pass any difference unchecked
        ):
            raise ConfigError(
                f"{name}={tolerance!r} is not allowed; use a finite number >= 0 (--{name}), or "
                "skip the check (--verify no)"
            )
    if exporter not in EXPORTERS:
        raise ConfigError(
            f"exporter={exporter!r} is not allowed; use one of {', '.join(EXPORTERS)}"
        )
    if format == "onnx":
        opset = _check_opset(opset, exporter)
    if example_inputs is None:
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise ConfigError(f"input_size={input_size!r} is not allowed; use a positive integer")
        # Seeded, so that the reported export difference is the same in every run.
        generator = torch.Generator().manual_seed(0)
        example_inputs = torch.randn(2, 3, input_size, input_size, generator=generator)
    if not isinstance(example_inputs, torch.Tensor):
        raise ConfigError("example_inputs must be one tensor (batch, channels, height, width)")
    model = model.cpu().eval()
    example = move_inputs(example_inputs.detach(), "cpu", float_dtype(model))
    # A failure here is the input's, not the exporter's.
    shape = tuple(example.shape)
    check_runs(model, example, failure=f"the model does not run on example inputs of shape {shape}")
    path = Path(path)
    diff = None
    try:
        with torch.no_grad(), _atomic_target(path) as tmp:
            if format == "onnx":
                _export_onnx(model, example, tmp, exporter=exporter, opset=opset)
            else:
                _export_torchscript(model, example, tmp)
            if verify:  # before the file takes its place: a failed check leaves path as it was
                diff = _verified_difference(
                    tmp, model, example, format=format, atol=atol, rtol=rtol
                )
    except torch.onnx.errors.OnnxExporterError as exc:
        # The model uses an operation this exporter cannot write at this opset (the CIFAR
        # ResNets' strided slices need opset 10 with the legacy exporter, for instance).
        text = _ANSI_COLOUR.sub("", str(exc)).strip()  # torch.export colours its messages
        # Not the graph excerpt the message goes on with ("  [Caused by the value ...").
        reason = text.splitlines()[0].split("  [")[0] if text else type(exc).__name__
        raise ConfigError(
            f"the {exporter} exporter cannot write this model at "
            f"{'its default opset' if opset is None else f'opset {opset}'}: {reason}; "
            "try a higher opset (--opset)"
            + (
                " or the default exporter='dynamo' (--exporter dynamo)"
                if exporter == "legacy"
                else ""
            )
        ) from exc
    return ExportResult(
        path=path, format=format, input_shape=tuple(example.shape), max_abs_diff=diff
    )


_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _verified_difference(
    path: Path, model: nn.Module, example: torch.Tensor, *, format: str, atol: float, rtol: float
) -> float:
    """The export's largest difference from PyTorch; ConfigError when it is above
    ``atol + rtol * max|output|``."""
    # Also a batch of another size, so that a batch size fixed at export time shows.
    generator = torch.Generator().manual_seed(0)
    other = torch.randn(example.shape[0] + 1, *example.shape[1:], generator=generator)
    try:
        compared = [_compare(path, model, b, format=format) for b in (example, other)]
    except ConfigError as exc:
        raise ConfigError(f"{exc}; nothing was written") from exc
    diff = max(d for d, _ in compared)
    scale = max(s for _, s in compared)
    allowed = atol + rtol * scale
    if not diff <= allowed:
        raise ConfigError(
            f"the exported {format} model differs from PyTorch by up to {diff:.3g}, more than "
            f"atol + rtol x {scale:.3g} (its largest output) = {allowed:.3g}; nothing was "
            "written. If that difference is acceptable, raise --atol or --rtol, or skip the "
            "check (--verify no)"
        )
    return diff


def _run_exported(path: Path, inputs: torch.Tensor, format: str) -> torch.Tensor:
    if format == "onnx":
        ort = _require("onnxruntime", "checking an ONNX export")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return torch.from_numpy(session.run(None, {name: inputs.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(inputs)


def verify_export(
    path: str | os.PathLike[str],
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    format: str,
) -> float:
    """Largest absolute difference between the exported file's and ``model``'s outputs.

    ONNX files run in onnxruntime (CPU), TorchScript files in ``torch.jit.load``.

    Raises:
        NetsurgeonError: onnxruntime is not installed (ONNX only).
        ConfigError: the exported model fails on ``inputs`` or returns another shape.
    """
    return _compare(path, model, inputs, format=_check_format(format))[0]


def _compare(
    path: str | os.PathLike[str], model: nn.Module, inputs: torch.Tensor, *, format: str
) -> tuple[float, float]:
    """:func:`verify_export`'s difference, and the largest magnitude of PyTorch's outputs."""
    model = model.cpu().eval()
    inputs = move_inputs(inputs.detach(), "cpu", float_dtype(model))
    with torch.no_grad():
        expected = model(inputs)
    try:
        actual = _run_exported(Path(path), inputs, format)
    except (RuntimeError, ValueError) as exc:  # a shape baked in at export time, typically
        raise ConfigError(
            f"the exported {format} model fails on inputs of shape {tuple(inputs.shape)} "
            f"({first_line(exc)})"
        ) from exc
    if actual.shape != expected.shape:
        raise ConfigError(
            f"the exported model returns shape {tuple(actual.shape)}, "
            f"PyTorch {tuple(expected.shape)}"
        )
    difference = float((actual.float() - expected.float()).abs().max())
    return difference, float(expected.abs().max())


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    format: str,
    out: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
    exporter: str = "dynamo",
    opset: int | None = None,
    verify: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-5,
) -> ExportResult:
    """Load a netsurgeon checkpoint (:func:`netsurgeon.load`) and export it.

    Args:
        checkpoint: A file written by :func:`netsurgeon.save` (``netsurgeon prune``,
            ``finetune``...), pruned or not.
        format: ``"onnx"`` or ``"torchscript"``.
        out: The file to write; defaults to :func:`default_export_path`.
        input_size: Side of the example input; ``None`` takes the size recorded in the
            checkpoint's metadata (fine-tuning or pruning settings), else the architecture's
            (:func:`netsurgeon.vision.models.default_input_size`).
        exporter, opset, verify, atol, rtol: As in :func:`export_model`.

    Raises:
        CheckpointError: The file is missing, corrupt or not a netsurgeon checkpoint.
    """
    from netsurgeon.pruning.io import model_from_checkpoint, read_checkpoint

    format = _check_format(format)
    payload = read_checkpoint(checkpoint)
    target = Path(out) if out is not None else default_export_path(checkpoint, format)
    if target.exists() and target.samefile(checkpoint):
        raise ConfigError(
            f"out={str(target)!r} (--out) is the model being exported; writing there would replace "
            f"it: choose another file name"
        )
    model = model_from_checkpoint(payload, source=checkpoint)
    if input_size is None:
        input_size = checkpoint_input_size(payload)
    return export_model(
        model,
        target,
        format=format,
        input_size=input_size,
        exporter=exporter,
        opset=opset,
        verify=verify,
        atol=atol,
        rtol=rtol,
    )
