"""Batched OOV inference speed on CPU (target: >= 5,000 occurrences/s).

Times ``Embedder.embed(words, left_contexts, right_contexts)`` end to end (encoding the text,
padding, the three bi-LSTMs, attention and the output layer) for the Comick module at the
poster's sizes (char 20, LSTM 128) with 50d GloVe. Occurrences are the OOV tokens of
CoNLL-2003 dev when ``../shared`` is present, else generated words in generated sentences.
Weights do not change the speed, so an untrained module is used unless ``--run`` is given.

Besides the wall time, the process's CPU time and the load average before the timed runs are
printed: on a shared machine the wall time of a 1-thread run grows with the other jobs, its CPU
time much less.

Usage::

    python benchmarks/oov_inference.py [--run RUN] [--threads 1] [--batch-size 1024]
        [--occurrences 20000] [--context-size sentence] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from netsurgeon.oov.batching import TextEncoder
from netsurgeon.oov.embedders import build_embedder
from netsurgeon.oov.run import Embedder, load_run
from netsurgeon.oov.tagger import Tagger
from netsurgeon.oov.vectors import load_embeddings

SHARED = Path(
    os.environ.get("NETSURGEON_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")
)


def occurrences(n: int) -> tuple[list[str], list[list[str]], list[list[str]], str, int]:
    """``n`` OOV occurrences (word, left, right), from CoNLL-2003 dev if available, with a
    description and the number of occurrences that are cycled."""
    dev = SHARED / "data" / "conll2003" / "valid.txt"
    if dev.exists():
        from netsurgeon.oov.conll import read_conll

        sentences = [list(s.tokens) for s in read_conll(dev)]
        vocab = load_embeddings(keep={t for s in sentences for t in s})
        found = [
            (s[j], s[:j], s[j + 1 :]) for s in sentences for j, t in enumerate(s) if t not in vocab
        ]
        source = f"CoNLL-2003 dev OOV occurrences ({len(found)}, cycled)"
    else:
        rng = random.Random(0)
        words = ["the", "of", "said", "in", "a", "to", "on", "and", "was", "for"]
        found = []
        for _ in range(2000):
            sentence = [rng.choice(words) for _ in range(rng.randint(5, 25))]
            j = rng.randrange(len(sentence))
            sentence[j] = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 12)))
            found.append((sentence[j], sentence[:j], sentence[j + 1 :]))
        source = f"generated sentences (no ../shared; {len(found)}, cycled)"
    picked = [found[i % len(found)] for i in range(n)]
    words = [w for w, _, _ in picked]
    return words, [left for _, left, _ in picked], [r for _, _, r in picked], source, len(found)


def untrained_embedder(words: set[str], context_size: int | None) -> Embedder:
    """A Comick module at the poster's sizes over the packaged GloVe vectors."""
    embeddings = load_embeddings(keep=words)
    chars = TextEncoder.build_chars(words)
    encoder = TextEncoder(embeddings=embeddings, chars=chars, context_size=context_size)
    embedder = build_embedder(
        "comick", dim=embeddings.dim, n_chars=len(chars), char_dim=20, hidden=128
    )
    tagger = Tagger(embedder=embedder, n_tags=9)
    tagger.set_vectors(embeddings.vectors)
    return Embedder(tagger.eval(), encoder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--occurrences", type=int, default=20_000)
    parser.add_argument("--context-size", default="sentence")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    context = None if args.context_size == "sentence" else int(args.context_size)
    words, lefts, rights, source, cycle = occurrences(args.occurrences)
    if args.batch_size > cycle < len(words):
        # Inference runs each distinct character or context sequence of a batch once.
        print(
            f"warning: batches of {args.batch_size} hold copies of the {cycle} cycled "
            f"occurrences, which are computed once per batch: the figures overstate the speed"
        )
    vocab = set(words) | {t for c in lefts + rights for t in c}
    if args.run is not None:
        embedder = load_run(args.run, keep=vocab, device="cpu").embedder  # CPU threads are measured
    else:
        embedder = untrained_embedder(vocab, context)
    embedder.embed(words[:256], lefts[:256], rights[:256])  # warm-up
    load = os.getloadavg()[0]
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        vectors, _ = embedder.embed(words, lefts, rights, batch_size=args.batch_size)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    best = min(times)
    rate = len(words) / best
    # CPU time of the process: on a loaded machine it stays close to the unloaded wall time of
    # a 1-thread run, while the wall time grows with the other jobs.
    cpu = min(cpu_times)
    print(f"source: {source}")
    print(
        f"comick (dim {vectors.shape[1]}, LSTM 128, context {args.context_size}), "
        f"{args.threads} thread(s), batch {args.batch_size}: {len(words)} occurrences in "
        f"{best:.2f} s (best of {args.repeats}) = {rate:,.0f} occurrences/s; "
        f"CPU {cpu:.2f} s = {len(words) / cpu:,.0f} occurrences per CPU second; "
        f"load average before {load:.2f}"
    )
    if args.json:
        result = {
            "occurrences": len(words),
            "best_s": best,
            "times_s": times,
            "per_s": rate,
            "cpu_s": cpu_times,
            "per_cpu_s": len(words) / cpu,
            "load_before": load,
        }
        args.json.write_text(
            json.dumps({"source": source, **vars(args), **result}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
