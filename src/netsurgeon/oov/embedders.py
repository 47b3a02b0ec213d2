"""Ways to give an out-of-vocabulary word a vector, behind one interface.

Every embedder maps a batch of occurrences (characters, left and right contexts) to vectors of
the embedding dimension and, where it has one, an attention matrix of shape ``(n, 3)`` over
:data:`ATTENTION_PARTS` whose rows sum to 1.

- ``random``: a fixed random vector per word form (the poster's baseline);
- ``unk``: one trained vector shared by all OOV words;
- ``zero``: the zero vector;
- ``mimick``: a character bi-LSTM (Pinter et al. 2017);
- ``context``: bi-LSTMs over the left and right contexts, with attention;
- ``comick``: both contexts and the characters, three bi-LSTMs with attention.

Without gradients on CPU (inference), the bi-LSTM summaries take a faster path
(:meth:`BiLSTMEncoder.summarise`) that gives the training path's results up to float rounding.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from netsurgeon.errors import ConfigError
from netsurgeon.oov.batching import OccurrenceBatch
from netsurgeon.oov.lstm import bilstm
from netsurgeon.oov.vectors import normaliser

__all__ = [
    "ATTENTION_PARTS",
    "HEADS",
    "METHODS",
    "ComickEmbedder",
    "ContextEmbedder",
    "MimickEmbedder",
    "OOVEmbedder",
    "RandomEmbedder",
    "UnkEmbedder",
    "ZeroEmbedder",
    "build_embedder",
]

ATTENTION_PARTS = ("word", "left", "right")
METHODS = ("random", "unk", "zero", "mimick", "context", "comick")
HEADS = ("linear", "mlp")


class OOVEmbedder(nn.Module):
    """Base class: ``forward(batch, word_vectors) -> (vectors, attention or None)``.

    ``word_vectors`` is the shared word table (special rows included) that context rows index.
    """

    method: str = ""
    has_attention: bool = False
    trainable: bool = True

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ConfigError(f"embedding dimension must be positive, got {dim}")
        self.dim = dim

    def forward(  # pragma: no cover - abstract
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class ZeroEmbedder(OOVEmbedder):
    """The zero vector for every OOV word."""

    method = "zero"
    trainable = False

    def forward(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return word_vectors.new_zeros((len(batch), self.dim)), None


class UnkEmbedder(OOVEmbedder):
    """One trained vector shared by every OOV word."""

    method = "unk"

    def __init__(self, *, dim: int) -> None:
        super().__init__(dim=dim)
        self.vector = nn.Parameter(torch.zeros(dim))

    def forward(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return self.vector.expand(len(batch), self.dim), None


class RandomEmbedder(OOVEmbedder):
    """A fixed random vector per word form, drawn from a generator seeded by the form.

    The same word always gets the same vector, also in a later process, so predictions survive
    save and load without storing a vector table. Words that normalise alike (``Paris`` and
    ``paris`` under ``lower``) share their vector, as they share a pretrained one.

    Args:
        dim: Embedding dimension.
        seed: Mixed into every word's generator seed.
        scale: Standard deviation of the vectors (match the pretrained vectors').
        normalise: Word normalisation (a name of
            :data:`~netsurgeon.oov.vectors.NORMALISERS`) applied before seeding.
    """

    method = "random"
    trainable = False

    def __init__(
        self, *, dim: int, seed: int = 0, scale: float = 1.0, normalise: str = "lower"
    ) -> None:
        super().__init__(dim=dim)
        if scale <= 0:
            raise ConfigError(f"random embedding scale must be positive, got {scale}")
        self._normalise = normaliser(normalise)
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.long))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self._cache: dict[str, torch.Tensor] = {}

    def _vector(self, word: str) -> torch.Tensor:
        vector = self._cache.get(word)
        if vector is None:
            form = self._normalise(word).encode("utf-8")
            key = (zlib.crc32(form) + 1_000_003 * int(self.seed)) % 2**62
            generator = torch.Generator().manual_seed(key)
            vector = torch.randn(self.dim, generator=generator) * float(self.scale)
            self._cache[word] = vector
        return vector

    def forward(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        if not len(batch):
            return word_vectors.new_zeros((0, self.dim)), None
        vectors = torch.stack([self._vector(word) for word in batch.words])
        return vectors.to(word_vectors.device), None


class BiLSTMEncoder(nn.Module):
    """A bi-LSTM whose summary is the concatenated last forward and backward states.

    ``forward`` runs the padded batch through :func:`~netsurgeon.oov.lstm.bilstm` (the training
    path, gradients flow). :meth:`summarise`
    takes index sequences and, without gradients on CPU, runs a leaner recurrence
    (:func:`_last_states`) that gives the same summaries up to float rounding.
    """

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # The fused padded bi-LSTM: the packed one is several times slower to train on CPU.
        outputs = bilstm(self.lstm, inputs, lengths)
        hidden = self.lstm.hidden_size
        lengths = lengths.to(outputs.device)
        last_forward = outputs[torch.arange(len(lengths), device=outputs.device), lengths - 1]
        return torch.cat([last_forward[:, :hidden], outputs[:, 0, hidden:]], dim=-1)

    def summarise(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        lookup: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Summaries of padded index sequences: ``forward(lookup(ids), lengths)``.

        Args:
            ids: ``(n, width)`` indices, padded on the right.
            lengths: ``(n,)`` lengths, each at least 1.
            lookup: Maps an index tensor to input vectors (an embedding or a table lookup).
        """
        # The recurrence below is for CPU; on CUDA the fused cuDNN LSTM of ``forward`` wins.
        on_cpu = ids.device.type == "cpu" and self.lstm.weight_hh_l0.device.type == "cpu"
        if torch.is_grad_enabled() or not on_cpu or not len(ids):
            return self(lookup(ids), lengths)
        return _last_states(self.lstm, ids, lengths, lookup)


def _gate_rows(weight: torch.Tensor, hidden: int) -> torch.Tensor:
    """PyTorch's gate order (input, forget, cell, output) as (input, forget, output, cell),
    with the cell gate doubled: ``tanh(x) = 2 * sigmoid(2x) - 1`` lets one sigmoid cover
    all four gates."""
    i, f, g, o = weight.split(hidden)
    return torch.cat([i, f, o, 2 * g])


def _last_states(
    lstm: nn.LSTM,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    lookup: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The bi-LSTM's concatenated last states, for inference on CPU.

    The same recurrence as ``nn.LSTM`` over a packed batch, with less work: each distinct
    index is projected once (not each token), and each direction runs by :func:`_run_direction`.
    """
    hidden = lstm.hidden_size
    width = int(lengths.max())
    if int(lengths.min()) < 1:
        raise ValueError(f"sequence lengths must be at least 1, got {int(lengths.min())}")
    lengths = lengths.to(ids.device)
    steps = torch.arange(width, device=ids.device)
    real = steps < lengths.unsqueeze(1)
    ids = ids[:, :width]
    distinct, inverse = torch.unique(ids[real], return_inverse=True)
    inputs = lookup(distinct)
    # Sequences as rows of ``inputs``, -1 after their end; the backward one reversed.
    forward = torch.full_like(ids, -1).masked_scatter_(real, inverse)
    backward_steps = (lengths.unsqueeze(1) - 1 - steps).clamp(min=0)
    backward = forward.gather(1, backward_steps).masked_fill_(~real, -1)
    states = []
    for suffix, sequences in (("", forward), ("_reverse", backward)):
        w_ih = _gate_rows(getattr(lstm, f"weight_ih_l0{suffix}"), hidden)
        w_hh = _gate_rows(getattr(lstm, f"weight_hh_l0{suffix}"), hidden)
        bias = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
        projected = torch.addmm(_gate_rows(bias, hidden), inputs, w_ih.t())
        states.append(_run_direction(projected, w_hh.t(), sequences, lengths))
    return torch.cat(states, dim=-1)


def _distinct_rows(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(array, axis=0, return_inverse=True)`` (lexicographic order), faster."""
    order = np.lexsort(array.T[::-1])  # the last key sorts first
    ordered = array[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = (ordered[1:] != ordered[:-1]).any(1)
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


def _longest_extensions(sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequences that are no prefix of another, and for each row one of them that extends it.

    Args:
        sequences: ``(n, width)`` non-negative indices, -1 after each sequence's end.

    Returns:
        ``(runs, run_of)``: the distinct sequences that are no proper prefix of another one,
        and for each input row the position in ``runs`` of a sequence that starts with it.
    """
    # In lexicographic order, with -1 below every index, a prefix of any sequence is a
    # prefix of the next distinct one.
    distinct, row_of = _distinct_rows(sequences)
    is_prefix = np.zeros(len(distinct), dtype=bool)
    is_prefix[:-1] = ((distinct[:-1] == distinct[1:]) | (distinct[:-1] < 0)).all(1)
    # A prefix reads from the first non-prefix sequence at or after it.
    positions = np.where(is_prefix, len(distinct), np.arange(len(distinct)))
    reader = np.minimum.accumulate(positions[::-1])[::-1]
    run_index = np.cumsum(~is_prefix) - 1
    return distinct[~is_prefix], run_index[reader[row_of]]


def _run_direction(
    projected: torch.Tensor, w_hh: torch.Tensor, sequences: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Last states of one LSTM direction (gates as :func:`_gate_rows` orders them).

    Args:
        projected: ``(k, 4 * hidden)`` input projections plus biases, one row per input.
        w_hh: ``(hidden, 4 * hidden)`` recurrent weights, transposed.
        sequences: ``(n, width)`` rows of ``projected``, -1 after each sequence's end.
        lengths: ``(n,)`` sequence lengths.

    A sequence that is a prefix of another (an identical one included) is not run: its last
    state is read from the longer one's states, which are all kept. Contexts cut from one
    sentence share prefixes in one direction. The sequences that run are sorted by length, so
    step ``t`` updates a contiguous block of the ones still running.
    """
    hidden = w_hh.shape[0]
    runs, run_of = _longest_extensions(sequences.numpy())
    run_lengths = (runs >= 0).sum(1)
    order = np.argsort(-run_lengths, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    run_lengths = run_lengths[order]
    time_major = torch.from_numpy(np.ascontiguousarray(runs[order].T))
    running = (run_lengths > np.arange(run_lengths[0])[:, None]).sum(1)
    # Step t's states are rows offsets[t] : offsets[t] + running[t] of ``outputs``.
    offsets = np.cumsum(running) - running
    outputs = projected.new_empty((int(running.sum()), hidden))
    c = projected.new_zeros((int(running[0]), hidden))  # twice the cell state
    scratch = torch.empty_like(c)
    previous = outputs[:0]
    for t, (offset, rows) in enumerate(zip(offsets.tolist(), running.tolist(), strict=True)):
        gates = projected.index_select(0, time_major[t, :rows])
        if t:  # the initial state is zero
            gates.addmm_(previous[:rows], w_hh)
        gates.sigmoid_()
        in_gate, forget_gate, out_gate, cell_gate = gates.view(rows, 4, hidden).unbind(1)
        c_t, sig_c, h_t = c[:rows], scratch[:rows], outputs[offset : offset + rows]
        # c = f * c + i * tanh(g) with tanh(g) = 2 * sigmoid(2g) - 1, all doubled
        c_t.mul_(forget_gate).addcmul_(in_gate, cell_gate, value=4).sub_(in_gate, alpha=2)
        # h = o * tanh(c) = o * (2 * sigmoid(2c) - 1)
        torch.sigmoid(c_t, out=sig_c)
        torch.mul(out_gate, sig_c, out=h_t).mul_(2).sub_(out_gate)
        previous = h_t
    last = offsets[lengths.numpy() - 1] + rank[run_of]
    return outputs[torch.from_numpy(last)]


class _AttentionEmbedder(OOVEmbedder):
    """Shared machinery: encode some parts, attend over them, project to ``dim``.

    ``head="linear"`` is the poster's last fully connected layer; ``head="mlp"`` puts a
    ``tanh`` hidden layer of ``hidden`` units before it, as Mimick's output does.
    """

    has_attention = True
    parts: tuple[str, ...] = ()

    def __init__(self, *, dim: int, hidden: int = 128, head: str = "linear") -> None:
        super().__init__(dim=dim)
        if hidden < 1:
            raise ConfigError(f"LSTM hidden size must be positive, got {hidden}")
        _check_head(head)
        width = 2 * hidden * len(self.parts)
        self.head = head
        self.attention = nn.Linear(width, len(self.parts))
        self.output: nn.Module = (
            nn.Linear(width, dim)
            if head == "linear"
            else nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        )

    def _encode(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not len(batch):
            n_parts = len(ATTENTION_PARTS)
            return word_vectors.new_zeros((0, self.dim)), word_vectors.new_zeros((0, n_parts))
        encoded = self._encode(batch, word_vectors)
        states = [encoded[part] for part in self.parts]
        weights = torch.softmax(self.attention(torch.cat(states, dim=-1)), dim=-1)
        weighted = torch.cat(
            [w.unsqueeze(-1) * s for w, s in zip(weights.unbind(-1), states, strict=True)], dim=-1
        )
        vectors = self.output(weighted)
        # Report weights over all three parts (zero for parts this method does not read).
        full = weights.new_zeros((len(batch), len(ATTENTION_PARTS)))
        for i, part in enumerate(self.parts):
            full[:, ATTENTION_PARTS.index(part)] = weights[:, i]
        return vectors, full


class ContextEmbedder(_AttentionEmbedder):
    """Bi-LSTMs over the left and the right context, attention over the two."""

    method = "context"
    parts = ("left", "right")

    def __init__(self, *, dim: int, hidden: int = 128, head: str = "linear") -> None:
        super().__init__(dim=dim, hidden=hidden, head=head)
        self.left = BiLSTMEncoder(dim, hidden)
        self.right = BiLSTMEncoder(dim, hidden)

    def _encode(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return _encode_contexts(self.left, self.right, batch, word_vectors)


class ComickEmbedder(_AttentionEmbedder):
    """The Comick module: three bi-LSTMs (left context, right context, characters) with
    attention over their summaries and a final linear layer to the embedding dimension.

    Args:
        dim: Embedding dimension (input of the context LSTMs, output of the module).
        n_chars: Size of the character vocabulary.
        char_dim: Character embedding size (20 in the poster).
        hidden: LSTM hidden size per direction (128 in the poster).
        head: ``"linear"`` (the poster's last fully connected layer) or ``"mlp"`` (a ``tanh``
            hidden layer of ``hidden`` units before it).
    """

    method = "comick"
    parts = ("word", "left", "right")

    def __init__(
        self,
        *,
        dim: int,
        n_chars: int,
        char_dim: int = 20,
        hidden: int = 128,
        head: str = "linear",
    ) -> None:
        super().__init__(dim=dim, hidden=hidden, head=head)
        _check_chars(n_chars, char_dim)
        self.char_embedding = nn.Embedding(n_chars, char_dim, padding_idx=0)
        self.word = BiLSTMEncoder(char_dim, hidden)
        self.left = BiLSTMEncoder(dim, hidden)
        self.right = BiLSTMEncoder(dim, hidden)

    def _encode(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {
            "word": _encode_chars(self.word, self.char_embedding, batch),
            **_encode_contexts(self.left, self.right, batch, word_vectors),
        }


class MimickEmbedder(OOVEmbedder):
    """Characters only: a character bi-LSTM and a one-hidden-layer MLP (Pinter et al. 2017)."""

    method = "mimick"

    def __init__(self, *, dim: int, n_chars: int, char_dim: int = 20, hidden: int = 128) -> None:
        super().__init__(dim=dim)
        _check_chars(n_chars, char_dim)
        self.char_embedding = nn.Embedding(n_chars, char_dim, padding_idx=0)
        self.word = BiLSTMEncoder(char_dim, hidden)
        self.output = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, dim)
        )

    def forward(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        if not len(batch):
            return word_vectors.new_zeros((0, self.dim)), None
        return self.output(_encode_chars(self.word, self.char_embedding, batch)), None


def _encode_contexts(
    left: BiLSTMEncoder,
    right: BiLSTMEncoder,
    batch: OccurrenceBatch,
    word_vectors: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Summaries of the left and right contexts (rows of ``word_vectors``)."""
    lookup = word_vectors.__getitem__
    return {
        "left": left.summarise(batch.left, batch.left_lengths, lookup),
        "right": right.summarise(batch.right, batch.right_lengths, lookup),
    }


def _encode_chars(
    encoder: BiLSTMEncoder, embedding: nn.Embedding, batch: OccurrenceBatch
) -> torch.Tensor:
    """Summaries of the occurrences' characters.

    Without gradients each distinct character sequence is encoded once: a word usually occurs
    several times in a batch.
    """
    if torch.is_grad_enabled():
        return encoder(embedding(batch.chars), batch.char_lengths)
    if len(batch) < 2:
        return encoder.summarise(batch.chars, batch.char_lengths, embedding)
    # The length column makes rows unique per (characters, length), whatever the padding holds.
    keyed = torch.cat([batch.char_lengths.unsqueeze(1), batch.chars], dim=1)
    distinct, inverse = _distinct_rows(keyed.cpu().numpy())
    distinct_tensor = torch.from_numpy(distinct).to(batch.chars.device)
    states = encoder.summarise(distinct_tensor[:, 1:], distinct_tensor[:, 0], embedding)
    return states[torch.from_numpy(inverse).to(states.device)]


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise ConfigError(f"output head {head!r} is not one of {list(HEADS)}")


def _check_chars(n_chars: int, char_dim: int) -> None:
    if n_chars < 2:
        raise ConfigError(f"character vocabulary needs at least 2 entries, got {n_chars}")
    if char_dim < 1:
        raise ConfigError(f"character embedding size must be positive, got {char_dim}")


def build_embedder(
    method: str,
    *,
    dim: int,
    n_chars: int = 2,
    char_dim: int = 20,
    hidden: int = 128,
    seed: int = 0,
    scale: float = 1.0,
    head: str = "linear",
    normalise: str = "lower",
) -> OOVEmbedder:
    """Build the embedder called ``method`` (one of :data:`METHODS`).

    ``head`` (one of :data:`HEADS`) is the output layer of the attention methods (``context``
    and ``comick``); the others ignore it. ``normalise`` is the word normalisation, which
    ``random`` applies to a word before seeding its vector.

    Raises:
        ConfigError: unknown method or head, or bad size.
    """
    _check_head(head)  # every method, so a bad head fails whichever method is chosen
    if method == "random":
        return RandomEmbedder(dim=dim, seed=seed, scale=scale, normalise=normalise)
    if method == "unk":
        return UnkEmbedder(dim=dim)
    if method == "zero":
        return ZeroEmbedder(dim=dim)
    if method == "mimick":
        return MimickEmbedder(dim=dim, n_chars=n_chars, char_dim=char_dim, hidden=hidden)
    if method == "context":
        return ContextEmbedder(dim=dim, hidden=hidden, head=head)
    if method == "comick":
        return ComickEmbedder(dim=dim, n_chars=n_chars, char_dim=char_dim, hidden=hidden, head=head)
    raise ConfigError(f"OOV method {method!r} is not one of {list(METHODS)}")
