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
"""

from __future__ import annotations

import zlib

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from netsurgeon.errors import ConfigError
from netsurgeon.oov.batching import OccurrenceBatch

__all__ = [
    "ATTENTION_PARTS",
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
    save and load without storing a vector table.

    Args:
        dim: Embedding dimension.
        seed: Mixed into every word's generator seed.
        scale: Standard deviation of the vectors (match the pretrained vectors').
    """

    method = "random"
    trainable = False

    def __init__(self, *, dim: int, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__(dim=dim)
        if scale <= 0:
            raise ConfigError(f"random embedding scale must be positive, got {scale}")
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.long))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self._cache: dict[str, torch.Tensor] = {}

    def _vector(self, word: str) -> torch.Tensor:
        vector = self._cache.get(word)
        if vector is None:
            key = (zlib.crc32(word.lower().encode("utf-8")) + 1_000_003 * int(self.seed)) % 2**62
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
    """A bi-LSTM whose summary is the concatenated last forward and backward states."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return torch.cat([hidden[0], hidden[1]], dim=-1)


class _AttentionEmbedder(OOVEmbedder):
    """Shared machinery: encode some parts, attend over them, project to ``dim``."""

    has_attention = True
    parts: tuple[str, ...] = ()

    def __init__(self, *, dim: int, hidden: int = 128) -> None:
        super().__init__(dim=dim)
        if hidden < 1:
            raise ConfigError(f"LSTM hidden size must be positive, got {hidden}")
        width = 2 * hidden * len(self.parts)
        self.attention = nn.Linear(width, len(self.parts))
        self.output = nn.Linear(width, dim)

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

    def __init__(self, *, dim: int, hidden: int = 128) -> None:
        super().__init__(dim=dim, hidden=hidden)
        self.left = BiLSTMEncoder(dim, hidden)
        self.right = BiLSTMEncoder(dim, hidden)

    def _encode(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {
            "left": self.left(word_vectors[batch.left], batch.left_lengths),
            "right": self.right(word_vectors[batch.right], batch.right_lengths),
        }


class ComickEmbedder(_AttentionEmbedder):
    """The Comick module: three bi-LSTMs (left context, right context, characters) with
    attention over their summaries and a final linear layer to the embedding dimension.

    Args:
        dim: Embedding dimension (input of the context LSTMs, output of the module).
        n_chars: Size of the character vocabulary.
        char_dim: Character embedding size (20 in the poster).
        hidden: LSTM hidden size per direction (128 in the poster).
    """

    method = "comick"
    parts = ("word", "left", "right")

    def __init__(self, *, dim: int, n_chars: int, char_dim: int = 20, hidden: int = 128) -> None:
        super().__init__(dim=dim, hidden=hidden)
        _check_chars(n_chars, char_dim)
        self.char_embedding = nn.Embedding(n_chars, char_dim, padding_idx=0)
        self.word = BiLSTMEncoder(char_dim, hidden)
        self.left = BiLSTMEncoder(dim, hidden)
        self.right = BiLSTMEncoder(dim, hidden)

    def _encode(
        self, batch: OccurrenceBatch, word_vectors: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {
            "word": self.word(self.char_embedding(batch.chars), batch.char_lengths),
            "left": self.left(word_vectors[batch.left], batch.left_lengths),
            "right": self.right(word_vectors[batch.right], batch.right_lengths),
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
        states = self.word(self.char_embedding(batch.chars), batch.char_lengths)
        return self.output(states), None


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
) -> OOVEmbedder:
    """Build the embedder called ``method`` (one of :data:`METHODS`).

    Raises:
        ConfigError: unknown method or bad size.
    """
    if method == "random":
        return RandomEmbedder(dim=dim, seed=seed, scale=scale)
    if method == "unk":
        return UnkEmbedder(dim=dim)
    if method == "zero":
        return ZeroEmbedder(dim=dim)
    if method == "mimick":
        return MimickEmbedder(dim=dim, n_chars=n_chars, char_dim=char_dim, hidden=hidden)
    if method == "context":
        return ContextEmbedder(dim=dim, hidden=hidden)
    if method == "comick":
        return ComickEmbedder(dim=dim, n_chars=n_chars, char_dim=char_dim, hidden=hidden)
    raise ConfigError(f"OOV method {method!r} is not one of {list(METHODS)}")
