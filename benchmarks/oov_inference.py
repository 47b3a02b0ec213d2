"""Batched OOV inference speed on CPU (target: >= 5,000 occurrences/s).

Times ``Embedder.embed(words, left_contexts, right_contexts)`` end to end (encoding the text,
padding, the three bi-LSTMs, attention and the output layer) for the Comick module at the
poster's sizes (char 20, LSTM 128) with 50d GloVe. Occurrences are the OOV tokens of
CoNLL-2003 dev when ``../shared`` is present, else generated words in generated sentences.
Weights do not change the speed, so an untrained module is used unless ``--run`` is given.

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


def occurrences(n: int) -> tuple[list[str], list[list[str]], list[list[str]], str]:
    """OOV occurrences (word, left, right): from CoNLL-2003 dev if available."""
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
        source = "generated sentences (no ../shared)"
    picked = [found[i % len(found)] for i in range(n)]
    words = [w for w, _, _ in picked]
    return words, [left for _, left, _ in picked], [r for _, _, r in picked], source


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
    words, lefts, rights, source = occurrences(args.occurrences)
    vocab = set(words) | {t for c in lefts + rights for t in c}
    if args.run is not None:
        embedder = load_run(args.run, keep=vocab).embedder
    else:
        embedder = untrained_embedder(vocab, context)
    embedder.embed(words[:256], lefts[:256], rights[:256])  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        vectors, _ = embedder.embed(words, lefts, rights, batch_size=args.batch_size)
        times.append(time.perf_counter() - start)
    best = min(times)
    rate = len(words) / best
    print(f"source: {source}")
    print(
        f"comick (dim {vectors.shape[1]}, LSTM 128, context {args.context_size}), "
        f"{args.threads} thread(s), batch {args.batch_size}: {len(words)} occurrences in "
        f"{best:.2f} s (best of {args.repeats}) = {rate:,.0f} occurrences/s"
    )
    if args.json:
        result = {"occurrences": len(words), "best_s": best, "times_s": times, "per_s": rate}
        args.json.write_text(
            json.dumps({"source": source, **vars(args), **result}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
