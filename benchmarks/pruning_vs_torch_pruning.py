"""netsurgeon's pruning engine next to Torch-Pruning, in one process on one machine.

For each model (torchvision builders, random initialisation: the timings and MAC counts do not
depend on the weights' values), both engines prune their own deep copy of the same model with
the L1 filter norm, half the filters of every layer, and the final classifier's outputs kept:

* netsurgeon: ``prune(model, x, amount=0.5, criterion="l1", scope="layer")``;
* Torch-Pruning 1.6.1: ``tp.pruner.BasePruner`` (``MetaPruner`` is the same class) with
  ``tp.importance.GroupMagnitudeImportance(p=1)``, ``pruning_ratio=0.5`` and the final
  classifier in ``ignored_layers``.

It prints, per model and engine, the surgery time (tracing included; median over
``--surgery-repeats`` prunes of fresh copies, after both engines warmed up on a toy CNN), the
MACs and parameters after pruning, the CPU latency before and after at ``--batch-size``
(median of ``--repeats`` runs after ``--warmup`` runs; the unpruned and both pruned models are
timed in turn, so a change in machine load hits all three alike), and the ratio of the latency
speed-up to the MACs reduction; then our MAC count of each unpruned model next to
``tp.utils.count_ops_and_params``. The targets of issue 2 are checked in the last columns.

Run from the repository root, on a quiet machine::

    python benchmarks/pruning_vs_torch_pruning.py --threads 2 --json-out benchmarks/results.json

It needs the ``bench`` and ``vision`` extras (``pip install -e ".[vision,bench]"``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netsurgeon.pruning.stats import count_macs, count_params, measure_latency

DEFAULT_MODELS = ("alexnet", "resnet18", "vgg16", "mobilenet_v2")
MACS_TOLERANCE = 0.02  # our unpruned MAC count must be within 2 % of Torch-Pruning's
MIN_SPEEDUP_RATIO = 0.9  # latency speed-up at least 0.9x the MACs reduction


@dataclass
class EngineRun:
    """One engine's result on one model."""

    engine: str
    surgery_s: float | None = None
    params_after: int | None = None
    macs_after: int | None = None
    latency_after_ms: float | None = None
    error: str | None = None


@dataclass
class ModelRun:
    """Everything measured on one model."""

    model: str
    params_before: int
    macs_before: int
    tp_macs_before: int
    tp_conv_linear_macs_before: int
    tp_params_before: int
    latency_before_ms: float
    runs: list[EngineRun]

    @property
    def macs_rel_diff(self) -> float:
        """(ours - Torch-Pruning's) / Torch-Pruning's unpruned MAC count."""
        return (self.macs_before - self.tp_macs_before) / self.tp_macs_before

    @property
    def macs_rel_diff_conv_linear(self) -> float:
        """The same against Torch-Pruning's Conv/Linear layers only (no norm/activation/pool)."""
        reference = self.tp_conv_linear_macs_before
        return (self.macs_before - reference) / reference


def _final_classifier(model: nn.Module) -> nn.Module:
    """The last Linear layer in registration order: the head of every model benchmarked here."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear classifier")
    return linears[-1]


def _prune_ours(model: nn.Module, example: torch.Tensor) -> None:
    from netsurgeon.pruning import prune

    prune(model, example, amount=0.5, criterion="l1", scope="layer")


def _prune_torch_pruning(model: nn.Module, example: torch.Tensor) -> None:
    import torch_pruning as tp

    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[_final_classifier(model)],
    )
    pruner.step()


ENGINES: dict[str, Callable[[nn.Module, torch.Tensor], None]] = {
    "netsurgeon": _prune_ours,
    "torch-pruning": _prune_torch_pruning,
}


def _time_surgery(
    engine: str, base: nn.Module, example: torch.Tensor, repeats: int
) -> tuple[nn.Module, float]:
    """Median surgery time over ``repeats`` fresh deep copies; returns the last pruned copy."""
    times = []
    for _ in range(repeats):
        model = copy.deepcopy(base).eval()
        start = time.perf_counter()
        ENGINES[engine](model, example)
        times.append(time.perf_counter() - start)
    return model, statistics.median(times)


def _interleaved_latency(
    models: dict[str, nn.Module], batch: torch.Tensor, *, warmup: int, repeats: int
) -> dict[str, float]:
    """Median latency of each model, timed in round-robin so load drift hits all alike."""
    for model in models.values():
        measure_latency(model, batch, warmup=warmup, repeats=1, device="cpu")
    times: dict[str, list[float]] = {key: [] for key in models}
    for _ in range(repeats):
        for key, model in models.items():
            times[key].append(measure_latency(model, batch, warmup=0, repeats=1, device="cpu"))
    return {key: statistics.median(values) for key, values in times.items()}


def benchmark_model(name: str, args: argparse.Namespace) -> ModelRun:
    """Prune a copy of the model with each engine, then time all of them on CPU."""
    import torch_pruning as tp
    import torchvision

    torch.manual_seed(args.seed)
    base = torchvision.models.get_model(name, weights=None).eval()
    n_classes = _final_classifier(base).out_features
    example = torch.randn(1, 3, args.input_size, args.input_size)
    batch = torch.randn(args.batch_size, 3, args.input_size, args.input_size)
    tp_macs, tp_params, tp_layer_macs, _ = tp.utils.count_ops_and_params(
        base, example, layer_wise=True
    )
    tp_conv_linear = sum(
        int(macs or 0)
        for module, macs in tp_layer_macs.items()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    )
    runs: list[EngineRun] = []
    pruned: dict[str, nn.Module] = {}
    for engine in ENGINES:
        try:
            model, surgery_s = _time_surgery(engine, base, example, args.surgery_repeats)
            with torch.inference_mode():
                shape = tuple(model(example).shape)
            if shape != (1, n_classes):
                raise RuntimeError(f"output shape changed to {shape}")
        except Exception as exc:  # report a failing engine in the table, keep benchmarking
            runs.append(EngineRun(engine, error=f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        pruned[engine] = model
        runs.append(
            EngineRun(
                engine,
                surgery_s=surgery_s,
                params_after=count_params(model),
                macs_after=count_macs(model, example),
            )
        )
    latency = _interleaved_latency(
        {"unpruned": base, **pruned}, batch, warmup=args.warmup, repeats=args.repeats
    )
    for run in runs:
        run.latency_after_ms = latency.get(run.engine)
    return ModelRun(
        model=name,
        params_before=count_params(base),
        macs_before=count_macs(base, example),
        tp_macs_before=int(tp_macs),
        tp_conv_linear_macs_before=tp_conv_linear,
        tp_params_before=int(tp_params),
        latency_before_ms=latency["unpruned"],
        runs=runs,
    )


def warm_up_engines() -> None:
    """Run both engines once on a toy CNN so neither pays first-call costs in the timings."""
    toy = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()
    for engine in ENGINES:
        ENGINES[engine](copy.deepcopy(toy), torch.randn(1, 3, 16, 16))


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _si(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1e9:.3f} G" if value >= 1e9 else f"{value / 1e6:.2f} M"


def results_table(results: Sequence[ModelRun], batch_size: int) -> str:
    """The per-model, per-engine markdown table."""
    header = [
        "model",
        "engine",
        "surgery (s)",
        "params after",
        "MACs after",
        f"latency b{batch_size} before (ms)",
        f"latency b{batch_size} after (ms)",
        "speed-up",
        "MACs reduction",
        "speed-up / MACs red.",
        "targets",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        times = {r.engine: r.surgery_s for r in result.runs}
        for run in result.runs:
            if run.error is not None:
                cells = [result.model, run.engine, f"failed: {run.error}"] + [""] * 8
                lines.append("| " + " | ".join(cells) + " |")
                continue
            assert run.latency_after_ms is not None and run.macs_after is not None
            speedup = result.latency_before_ms / run.latency_after_ms
            reduction = result.macs_before / run.macs_after
            ratio = speedup / reduction
            verdicts = [f"speed-up {'ok' if ratio >= MIN_SPEEDUP_RATIO else 'MISSED'}"]
            if run.engine == "netsurgeon" and times.get("torch-pruning") is not None:
                faster = run.surgery_s is not None and run.surgery_s <= times["torch-pruning"]
                verdicts.append(f"surgery {'ok' if faster else 'MISSED'}")
            cells = [
                result.model,
                run.engine,
                _fmt(run.surgery_s, ".3f"),
                _si(run.params_after),
                _si(run.macs_after),
                _fmt(result.latency_before_ms, ".1f"),
                _fmt(run.latency_after_ms, ".1f"),
                f"{speedup:.2f}x",
                f"{reduction:.2f}x",
                f"{ratio:.2f}",
                ", ".join(verdicts),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def macs_table(results: Sequence[ModelRun]) -> str:
    """Our MAC count of each unpruned model next to Torch-Pruning's counter.

    Torch-Pruning's total also counts batch-norm, activation and pooling operations and one
    addition per bias output; the Conv/Linear column is its count for those layers alone.
    """
    lines = [
        "| model | params | MACs (netsurgeon) | MACs (tp.utils.count_ops_and_params) "
        "| difference | within 2 % | TP, Conv/Linear layers only | difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ok = abs(r.macs_rel_diff) <= MACS_TOLERANCE
        lines.append(
            f"| {r.model} | {_si(r.params_before)} | {r.macs_before:,} | {r.tp_macs_before:,} "
            f"| {r.macs_rel_diff:+.2%} | {'yes' if ok else 'NO'} "
            f"| {r.tp_conv_linear_macs_before:,} | {r.macs_rel_diff_conv_linear:+.2%} |"
        )
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """What the numbers depend on, written next to them."""
    import torch_pruning as tp
    import torchvision

    return {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_pruning": _distribution_version("torch-pruning", tp),
        "batch_size": args.batch_size,
        "input_size": args.input_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "surgery_repeats": args.surgery_repeats,
        "seed": args.seed,
        "weights": "random initialisation (torchvision builders, weights=None)",
    }


def _distribution_version(name: str, module: Any) -> str:
    # torch_pruning 1.6.1's __version__ still says 1.6.0; the installed distribution knows.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; it must be >= 1")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated torchvision builder names (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=16)
    parser.add_argument("--input-size", type=_positive_int, default=224)
    parser.add_argument("--repeats", type=_positive_int, default=10, help="timed runs (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument(
        "--surgery-repeats",
        type=_positive_int,
        default=3,
        help="prunes of fresh copies per engine; the median time is reported",
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup {args.warmup} is not allowed; it must be >= 0")
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not args.models:
        parser.error("--models is empty")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when an engine failed on a model."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = environment(args)
    print(
        f"# netsurgeon vs Torch-Pruning {env['torch_pruning']}: L1, amount 0.5, layer scope, "
        f"classifier kept\n\ntorch {env['torch']}, torchvision {env['torchvision']}, "
        f"{env['cpu']} ({env['cpu_count']} logical CPUs, {env['threads']} torch threads), "
        f"load average at start {env['load_average_at_start'][0]:.2f}; batch {args.batch_size}, "
        f"input {args.input_size}, latency = median of {args.repeats} runs after "
        f"{args.warmup} warm-up runs, models timed in turn; surgery = median of "
        f"{args.surgery_repeats} prunes of fresh copies; random initialisation.\n",
        flush=True,
    )
    warm_up_engines()
    results = []
    for name in args.models:
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        results.append(benchmark_model(name, args))
    env["load_average_at_end"] = list(os.getloadavg())
    print(results_table(results, args.batch_size))
    print()
    print(macs_table(results))
    print(f"\nload average at end {env['load_average_at_end'][0]:.2f}")
    if args.json_out is not None:
        payload = {
            "environment": env,
            "results": [{**asdict(r), "macs_rel_diff": r.macs_rel_diff} for r in results],
        }
        _write_json_atomic(args.json_out, payload)
    return 1 if any(run.error for r in results for run in r.runs) else 0


if __name__ == "__main__":
    sys.exit(main())
