"""A wide sweep of timm's architectures through netsurgeon's pruner: how much of each model can
go, are only zeroed filters removed without changing the outputs, and why are the channels that
stay kept?

Each model of ``timm_sweep_models.txt`` (one small variant per timm family, 210 names; or
``--models``) is built by ``timm.create_model(name, num_classes=10)`` with random weights and
random norm statistics (a zero-initialised classifier gets random weights, or every output
would be 0). Half the channels of every group netsurgeon finds prunable are zeroed, then
``prune(model, x, amount=0.5, criterion="l1")`` runs on a batch of 2 at ``--input-size`` (or
the model's own size where it needs one). The l1 ranking picks the zeroed filters first, so the
outputs must not change beyond rounding (``--double`` runs in float64 to tell rounding from a
real change).

Models run one after another in a worker process, watched by this one: a model that takes more
than ``--timeout`` seconds or more than ``--max-memory`` GiB is stopped and recorded, and the
worker restarts with the next. Every result is appended to ``OUT/results.jsonl`` as it is
measured, so a rerun with the same ``--out`` goes on where the last stopped. The summary
(markdown on stdout, ``--json-out`` for every figure) gives the failures, the share of
parameters left, the largest output changes, and the reasons for keeping channels ranked by
the number of models they affect (the classifier's "reaches the model's output" left out).

Run from the repository root (needs timm: ``pip install -e ".[timm]"``)::

    python benchmarks/timm_sweep.py --out /tmp/timm_sweep [--models a,b] [--input-size 96]
        [--timeout 120] [--max-memory 6] [--double] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

MODELS_FILE = Path(__file__).with_name("timm_sweep_models.txt")
MAX_PARAMS = 60e6  # larger models are skipped: minutes each on a 2-core CPU


def _measure(name: str, size: int, double: bool) -> dict[str, Any]:
    """Zero half of every prunable group of ``name`` and prune it; errors are recorded."""
    import timm
    import torch

    from exactness_common import randomise_norms, zero_half
    from netsurgeon.pruning import prune, trace_graph

    row: dict[str, Any] = {"model": name}
    stage = "create"
    try:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=10).eval()
        params = sum(p.numel() for p in model.parameters())
        row["params"] = params
        if params > MAX_PARAMS:
            return {**row, "stage": "skipped (over 60M parameters)"}
        randomise_norms(model)
        _randomise_zero_heads(model)
        dtype = torch.float64 if double else torch.float32
        model.to(dtype)
        stage = "forward"
        x = _example(model, size, dtype)
        row["input_size"] = int(x.shape[-1])
        stage = "trace"
        graph = trace_graph(model, x)
        groups = list(graph.groups.values())
        row["reasons"] = sorted(
            {r for g in groups for r in g.blocked if "reaches the model's output" not in r}
        )
        row["notes"] = list(graph.notes)
        torch.manual_seed(1)
        row["zeroed"] = zero_half(model, graph)
        with torch.no_grad():
            before = model(x)
        stage = "prune"
        start = time.perf_counter()
        result = prune(model, x, amount=0.5, criterion="l1")
        row["prune_seconds"] = time.perf_counter() - start
        stage = "pruned forward"
        with torch.no_grad():
            after = model(x)
        scale = float(before.abs().max())
        row.update(
            stage="ok",
            params_ratio=result.after.params / params,
            macs_ratio=result.after.macs / max(result.before.macs, 1),
            output_scale=scale,
            relative_output_change=float((after - before).abs().max()) / (scale or 1.0),
        )
    except Exception as exc:  # the failure is the result
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        row.update(
            stage=f"fails in {stage}",
            error=f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}",
            where=[f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames],
        )
    return row


def _randomise_zero_heads(model: Any) -> None:
    """Mixer- and gMLP-style classifiers start at zero; every output would then be 0."""
    import torch
    from torch import nn

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    heads = [head] if isinstance(head, nn.Module) else list(head or ())
    with torch.no_grad():
        for module in (m for h in heads for m in h.modules()):
            if isinstance(module, (nn.Linear, nn.Conv2d)) and not module.weight.any():
                nn.init.normal_(module.weight, std=0.02)


def _example(model: Any, size: int, dtype: Any) -> Any:
    """A batch of 2 at ``size``, or at the model's configured size if it needs one."""
    import torch

    configured = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    error: Exception | None = None
    for side in dict.fromkeys((size, int(configured[-1]))):
        x = torch.randn(2, 3, side, side, dtype=dtype)
        try:
            with torch.no_grad():
                model(x)
            return x
        except Exception as exc:  # e.g. a fixed position embedding: try the model's size
            error = exc
    assert error is not None
    raise error


def _worker(results: Path, progress: Path, names: list[str], size: int, double: bool) -> None:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    for name in names:
        with progress.open("a") as f:
            f.write(f"{time.time()} {name}\n")
        row = _measure(name, size, double)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")


def _done(results: Path) -> dict[str, dict[str, Any]]:
    if not results.exists():
        return {}
    rows = {}
    for line in results.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: measured again
            continue
        rows[row["model"]] = row
    return rows


def _rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run(names: list[str], out: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Measure every model not yet in ``out/results.jsonl``, in watched worker processes."""
    out.mkdir(parents=True, exist_ok=True)
    results, progress = out / "results.jsonl", out / "progress.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    while todo := [n for n in names if n not in _done(results)]:
        command = [sys.executable, __file__, "--worker", "--out", str(out), "--input-size",
                   str(args.input_size), *(["--double"] if args.double else []), *todo]  # fmt: skip
        progress.unlink(missing_ok=True)  # this worker's models only
        worker = subprocess.Popen(command, env=env)
        current, since, stopped = None, time.time(), None
        while worker.poll() is None:
            time.sleep(0.5)
            lines = progress.read_text().splitlines() if progress.exists() else []
            if lines and lines[-1].split(" ", 1)[1] != current:
                stamp, current = lines[-1].split(" ", 1)
                since = float(stamp)
                print(f"[{names.index(current) + 1}/{len(names)}] {current}", file=sys.stderr,
                      flush=True)  # fmt: skip
            if current is None or current in _done(results):
                continue
            if time.time() - since > args.timeout:
                stopped = f"stopped after {args.timeout:.0f} s"
            elif _rss_gib(worker.pid) > args.max_memory:
                stopped = f"stopped above {args.max_memory:g} GiB"
            if stopped:
                worker.kill()
                worker.wait()
                break
        if current is not None and current not in _done(results):
            stopped = stopped or f"worker died (exit {worker.returncode})"
            with results.open("a") as f:
                f.write(json.dumps({"model": current, "stage": stopped}) + "\n")
        elif worker.returncode and current is None:
            raise SystemExit(f"the worker failed to start (exit {worker.returncode})")
    done = _done(results)
    return {name: done[name] for name in names}


def _reason_kind(reason: str) -> str:
    """A reason without the names and numbers that differ between models."""
    reason = re.sub(r"\(node [^)]*\)", "", reason)
    reason = re.sub(r"'[^']*'", "'X'", reason)
    return re.sub(r"\d+", "#", reason).strip()


def summarise(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts, ratios, the largest output changes and the reasons ranked."""
    ok = [r for r in rows.values() if r["stage"] == "ok"]
    buckets = collections.Counter(
        "<= 0.3" if r["params_ratio"] <= 0.3 else "0.3 - 0.6" if r["params_ratio"] <= 0.6
        else "0.6 - 0.9" if r["params_ratio"] <= 0.9 else "> 0.9"
        for r in ok
    )  # fmt: skip
    by_reason: dict[str, set[str]] = collections.defaultdict(set)
    for r in ok:
        for reason in r["reasons"]:
            by_reason[_reason_kind(reason)].add(r["model"])
    ranked = sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {
        "models": len(rows),
        "stages": dict(collections.Counter(r["stage"] for r in rows.values())),
        "params_ratio_buckets": dict(buckets),
        "median_params_ratio": sorted(r["params_ratio"] for r in ok)[len(ok) // 2] if ok else None,
        "only_the_classifier_kept": sum(1 for r in ok if not r["reasons"]),
        "largest_changes": sorted(
            ((r["model"], r["relative_output_change"]) for r in ok), key=lambda t: -t[1]
        )[:5],
        "failures": {n: r for n, r in rows.items() if r["stage"] != "ok"},
        "reasons": [(kind, sorted(models)) for kind, models in ranked],
    }


def _markdown(summary: dict[str, Any], top: int) -> str:
    lines = [
        f"{summary['models']} models: "
        + ", ".join(f"{n} {stage}" for stage, n in sorted(summary["stages"].items())),
        f"median share of the parameters left: {summary['median_params_ratio']:.3f}",
        f"only the classifier kept (every other channel prunable): "
        f"{summary['only_the_classifier_kept']}",
        "",
        "| parameters left | models |",
        "|---|---|",
        *(
            f"| {k} | {summary['params_ratio_buckets'].get(k, 0)} |"
            for k in ("<= 0.3", "0.3 - 0.6", "0.6 - 0.9", "> 0.9")
        ),
        "",
        "largest output changes (of the output scale): "
        + ", ".join(f"{m} {c:.1e}" for m, c in summary["largest_changes"]),
        "",
    ]
    if summary["failures"]:
        lines += ["| failed model | stage | error |", "|---|---|---|"]
        lines += [
            f"| {n} | {r['stage']} | {r.get('error', '-')[:140]} |"
            for n, r in summary["failures"].items()
        ]
        lines.append("")
    lines += ["| models | reason for keeping channels | for example |", "|---|---|---|"]
    for kind, models in summary["reasons"][:top]:
        shown = kind.replace("|", "\\|")[:150]
        lines.append(f"| {len(models)} | {shown} | {', '.join(models[:3])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results.jsonl goes here")
    parser.add_argument("--models", default=None, help="comma-separated (default: the file)")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model")
    parser.add_argument("--max-memory", type=float, default=6.0, help="GiB per model")
    parser.add_argument("--double", action="store_true", help="float64 models and inputs")
    parser.add_argument("--top", type=int, default=25, help="reasons listed")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.worker:
        _worker(args.out / "results.jsonl", args.out / "progress.txt", rest, args.input_size,
                args.double)  # fmt: skip
        return
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        import timm
    except ImportError:
        parser.error('this benchmark needs timm: pip install -e ".[timm]"')
    names = (
        args.models.split(",")
        if args.models
        else [n.strip() for n in MODELS_FILE.read_text().splitlines() if n.strip()]
    )
    started = time.time()
    rows = run(names, args.out, args)
    summary = summarise(rows)
    print(_markdown(summary, args.top))
    from transfer_common import environment, write_json

    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "environment": {**environment(), "timm": timm.__version__},
        "seconds": time.time() - started,
        "summary": summary,
        "rows": rows,
    }
    write_json(args.json_out, payload)


if __name__ == "__main__":
    main()
