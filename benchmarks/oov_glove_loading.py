"""GloVe text loading speed on a generated 400,000 x 100 file (target: >= 100,000 lines/s).

Measures ``netsurgeon.oov.vectors.load_embeddings`` in the two ways it is used:

- ``task words``: the normal case, the whole vocabulary is scanned (OOV test, fingerprint) and
  vectors are parsed for a task's words only (``--keep`` words, default 30,000, about
  CoNLL-2003's vocabulary);
- ``all words``: every vector parsed.

Floats are parsed with pyarrow when it is installed; ``--compare-exact`` also times both modes
with pyarrow switched off (numpy's ``loadtxt`` only, the fallback). The load average is printed
before and after, since the cores may be shared. Each mode's memory is one more load in a fresh
process: its peak resident memory above what that process held once the libraries were
imported, beside the size of the vectors kept.

Usage::

    python benchmarks/oov_glove_loading.py [--lines 400000] [--dim 100] [--keep 30000]
        [--repeats 3] [--compare-exact] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from netsurgeon.oov import vectors
from netsurgeon.oov.vectors import load_embeddings


def generate(path: Path, lines: int, dim: int, seed: int = 0) -> None:
    """Write a GloVe-like text file: ``w<i> v1 ... v_dim`` with 5-decimal values."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, lines, 10_000):
            block = rng.standard_normal((min(10_000, lines - start), dim)).astype(np.float32)
            handle.write(
                "".join(
                    f"w{start + i} " + " ".join(f"{x:.5f}" for x in row) + "\n"
                    for i, row in enumerate(block.tolist())
                )
            )


def _peak_rss_mb() -> float:
    # VmHWM is this process's own high-water mark; ru_maxrss also counts the parent's
    # memory, which a spawned child carries through fork and exec.
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    return int(kilobytes) / 1024


def _load_in_child(path: Path, keep: set[str] | None, use_arrow: bool, conn: Any) -> None:
    vectors._USE_ARROW = use_arrow
    vectors._arrow_csv()  # the parser library's import is not the load's memory
    before = _peak_rss_mb()
    emb = load_embeddings(path, keep=keep, normalise="none")
    conn.send((_peak_rss_mb() - before, emb.vectors.nbytes / 2**20))


def peak_memory(path: Path, keep: set[str] | None) -> tuple[float, float]:
    """MB a load adds to a fresh process's peak resident memory, and MB of vectors kept."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_load_in_child, args=(path, keep, vectors._USE_ARROW, send))
    child.start()
    send.close()  # the child's end only: a child that dies then ends recv() with EOFError
    try:
        added, kept = receive.recv()
    except EOFError:
        child.join()
        failed = f"the memory-measuring load failed (exit code {child.exitcode})"
        raise RuntimeError(failed) from None
    child.join()
    return added, kept


def measure(path: Path, keep: set[str] | None, repeats: int) -> dict[str, float]:
    """Best and median wall-clock seconds over ``repeats`` loads, CPU seconds of the best,
    and the memory of one more load in a fresh process."""
    times = []
    cpu = []
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        emb = load_embeddings(path, keep=keep, normalise="none")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    added_mb, vectors_mb = peak_memory(path, keep)
    return {
        "peak_added_mb": added_mb,
        "vectors_mb": vectors_mb,
        "best_s": min(times),
        "median_s": statistics.median(times),
        "cpu_s": cpu[times.index(min(times))],
        "kept": len(emb),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--keep", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compare-exact", action="store_true", help="also time with pyarrow switched off"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "glove.txt"
        generate(path, args.lines, args.dim)
        size_mb = path.stat().st_size / 1e6
        rng = np.random.default_rng(1)
        keep = {f"w{i}" for i in rng.choice(args.lines, size=args.keep, replace=False)}
        results = {
            "task words": measure(path, keep, args.repeats),
            "all words": measure(path, None, args.repeats),
        }
        if args.compare_exact:
            vectors._USE_ARROW = False  # the fallback parser (numpy) only
            results["task words, exact"] = measure(path, keep, args.repeats)
            results["all words, exact"] = measure(path, None, args.repeats)
            vectors._USE_ARROW = True
    print(
        f"file: {args.lines} lines x {args.dim} dims, {size_mb:.0f} MB; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'mode':<18} {'kept':>8} {'best s':>7} {'lines/s (best)':>15} {'median s':>9} "
        f"{'CPU s':>6} {'peak MB':>8} {'vectors MB':>10} {'load before/after':>18}"
    )
    for mode, r in results.items():
        rate = args.lines / r["best_s"]
        r["lines_per_s"] = rate
        load = f"{r['load_before']:.2f} / {r['load_after']:.2f}"
        print(
            f"{mode:<18} {r['kept']:>8} {r['best_s']:>7.2f} {rate:>15,.0f} "
            f"{r['median_s']:>9.2f} {r['cpu_s']:>6.2f} {r['peak_added_mb']:>8.0f} "
            f"{r['vectors_mb']:>10.0f} {load:>18}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, **results}, indent=2)
        )


if __name__ == "__main__":
    main()
