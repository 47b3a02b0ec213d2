"""GloVe text loading speed on a generated 400,000 x 100 file (target: >= 100,000 lines/s).

Measures ``netsurgeon.oov.vectors.load_embeddings`` in the two ways it is used:

- ``task words``: the normal case, the whole vocabulary is scanned (OOV test, fingerprint) and
  vectors are parsed for a task's words only (``--keep`` words, default 30,000, about
  CoNLL-2003's vocabulary);
- ``all words``: every vector parsed.

Usage::

    python benchmarks/oov_glove_loading.py [--lines 400000] [--dim 100] [--keep 30000]
        [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

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


def measure(path: Path, keep: set[str] | None, repeats: int) -> dict[str, float]:
    """Best and median seconds over ``repeats`` loads."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        emb = load_embeddings(path, keep=keep, normalise="none")
        times.append(time.perf_counter() - start)
    return {"best_s": min(times), "median_s": statistics.median(times), "kept": len(emb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--keep", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
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
    print(f"file: {args.lines} lines x {args.dim} dims, {size_mb:.0f} MB; {platform.processor()}")
    print(f"{'mode':<12} {'kept':>8} {'best s':>8} {'lines/s (best)':>16} {'median s':>9}")
    for mode, r in results.items():
        rate = args.lines / r["best_s"]
        r["lines_per_s"] = rate
        print(f"{mode:<12} {r['kept']:>8} {r['best_s']:>8.2f} {rate:>16,.0f} {r['median_s']:>9.2f}")
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, **results}, indent=2)
        )


if __name__ == "__main__":
    main()
