"""The labelling network: word embedding -> bi-LSTM -> linear -> tags.

Its word table holds the pretrained vectors, frozen, and is not part of the saved weights (it
is rebuilt from the embeddings file, whose fingerprint the run records). At OOV positions the
OOV module's prediction replaces the table's row; in-vocabulary rows are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from netsurgeon.errors import ConfigError
from netsurgeon.oov.batching import OccurrenceBatch, SentenceBatch
from netsurgeon.oov.embedders import OOVEmbedder
from netsurgeon.oov.lstm import bilstm

__all__ = ["Tagger", "TaggerOutput"]


@dataclass
class TaggerOutput:
    """Logits ``(batch, time, tags)``, the OOV vectors used, and their attention (or None)."""

    logits: torch.Tensor
    oov_vectors: torch.Tensor
    attention: torch.Tensor | None


class Tagger(nn.Module):
    """A deliberately simple bi-LSTM tagger with a pluggable OOV embedder.

    Args:
        embedder: Predicts vectors for OOV occurrences; its ``dim`` is the embedding dimension.
        n_tags: Number of tags.
        hidden: LSTM hidden size per direction.
        dropout: Dropout on the LSTM input and output.
        seed: Seed of the fixed random sentence-boundary vectors used by contexts.
        scale: Standard deviation of those boundary vectors.
    """

    def __init__(
        self,
        *,
        embedder: OOVEmbedder,
        n_tags: int,
        hidden: int = 128,
        dropout: float = 0.0,
        seed: int = 0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if n_tags < 1:
            raise ConfigError(f"n_tags must be positive, got {n_tags}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        dim = embedder.dim
        self.dim = dim
        self.oov = embedder
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("boundary", torch.randn(2, dim, generator=generator) * scale)
        self.register_buffer("vectors", torch.zeros(0, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * hidden, n_tags)

    def set_vectors(self, vectors: np.ndarray | torch.Tensor) -> None:
        """Install the pretrained vectors (row ``i`` is table row ``i + 4``).

        Raises:
            ConfigError: the vectors' dimension is not the model's.
        """
        vectors = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ConfigError(
                f"embedding vectors have shape {tuple(vectors.shape)}, the model needs "
                f"dimension {self.dim}"
            )
        self.vectors = vectors.to(self.boundary.device)

    def word_table(self) -> torch.Tensor:
        """Pad and unknown rows (zeros), the boundary rows, then the pretrained vectors.

        This is the layout :mod:`netsurgeon.oov.batching` indexes (``N_SPECIAL_ROWS`` = 4).
        """
        zeros = self.boundary.new_zeros((2, self.dim))
        return torch.cat([zeros, self.boundary, self.vectors], dim=0)

    def embed_oov(
        self, occurrences: OccurrenceBatch, table: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vectors (and attention) the OOV module gives these occurrences."""
        return self.oov(occurrences, self.word_table() if table is None else table)

    def forward(self, batch: SentenceBatch) -> TaggerOutput:
        """Tag a batch of sentences."""
        table = self.word_table()
        if batch.word_ids.numel() and int(batch.word_ids.max()) >= table.shape[0]:
            raise ConfigError("word rows exceed the installed vectors; call set_vectors first")
        inputs = table[batch.word_ids]
        oov_vectors, attention = self.embed_oov(batch.occurrences, table)
        if len(batch.oov_index):
            rows, cols = batch.oov_index[:, 0], batch.oov_index[:, 1]
            inputs = inputs.index_put((rows, cols), oov_vectors.to(inputs.dtype))
        output = bilstm(self.lstm, self.dropout(inputs), batch.lengths)
        logits = self.classifier(self.dropout(output))
        return TaggerOutput(logits, oov_vectors, attention)
