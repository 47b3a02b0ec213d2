"""A bidirectional LSTM over padded batches, exact like packed sequences but much faster on CPU.

PyTorch runs packed sequences through a step-by-step kernel on CPU (one small matrix product,
sigmoid and product per time step, each recorded for autograd), which makes the backward pass
several times slower than the fused (oneDNN) kernel used for plain padded tensors. Padding at
the end of a sequence does not change the forward direction's outputs at real positions; for
the backward direction each sequence is reversed within its own length, run forward with the
reverse weights, and reversed back. The result equals ``pack_padded_sequence`` ->
``nn.LSTM`` -> ``pad_packed_sequence`` (zeros at padded positions), and the module's
``state_dict`` is the ``nn.LSTM``'s own, so saved weights do not change.

On CUDA, cuDNN runs packed sequences in one fused kernel, so there the packed module is used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from netsurgeon.errors import ConfigError

__all__ = ["bilstm", "reverse_within_length"]


def _reversal(lengths: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    """``(batch, steps)`` time indices that reverse each sequence within its length."""
    time = torch.arange(steps, device=device).expand(len(lengths), steps)
    lengths = lengths.to(device).unsqueeze(1)
    return torch.where(time < lengths, lengths - 1 - time, time)


def _take_steps(inputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    index = index.view(*index.shape, *([1] * (inputs.dim() - 2))).expand_as(inputs)
    return inputs.gather(1, index)


def reverse_within_length(inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of a ``(batch, time, ...)`` tensor within its first ``length`` steps.

    Positions at or after a sequence's length stay where they are.
    """
    return _take_steps(inputs, _reversal(lengths, inputs.shape[1], inputs.device))


def bilstm(lstm: nn.LSTM, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run a one-layer bidirectional, batch-first ``lstm`` on padded ``inputs``.

    Args:
        lstm: ``nn.LSTM(..., batch_first=True, bidirectional=True)`` with one layer.
        inputs: ``(batch, time, features)``, each sequence padded at its end.
        lengths: ``(batch,)`` true lengths (at least 1).

    Returns:
        ``(batch, time, 2 * hidden)``: forward then backward outputs, zero at padded positions.

    Raises:
        ConfigError: the LSTM is not a one-layer, bidirectional, batch-first LSTM.
    """
    if not (lstm.bidirectional and lstm.batch_first and lstm.num_layers == 1) or lstm.proj_size:
        raise ConfigError(
            "bilstm needs nn.LSTM(batch_first=True, bidirectional=True, num_layers=1, "
            f"proj_size=0), got {lstm}"
        )
    if inputs.device.type == "cuda":
        return _packed_bilstm(lstm, inputs, lengths)
    weights = lstm._flat_weights  # [w_ih, w_hh, b_ih, b_hh] then the same for the reverse
    per_direction = len(weights) // 2
    batch, steps = inputs.shape[:2]
    zeros = inputs.new_zeros(1, batch, lstm.hidden_size)
    reversal = _reversal(lengths, steps, inputs.device)  # its own inverse
    forward, _, _ = torch.lstm(
        inputs, (zeros, zeros), weights[:per_direction], lstm.bias, 1, 0.0, lstm.training,
        False, True,
    )  # fmt: skip
    reverse, _, _ = torch.lstm(
        _take_steps(inputs, reversal), (zeros, zeros), weights[per_direction:],
        lstm.bias, 1, 0.0, lstm.training, False, True,
    )  # fmt: skip
    output = torch.cat([forward, _take_steps(reverse, reversal)], dim=-1)
    mask = torch.arange(steps, device=inputs.device) < lengths.to(inputs.device).unsqueeze(1)
    return output * mask.unsqueeze(-1).to(output.dtype)


def _packed_bilstm(lstm: nn.LSTM, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """:func:`bilstm` through ``nn.LSTM`` on packed sequences: cuDNN's fused path on CUDA."""
    batch, steps = inputs.shape[:2]
    if not batch:
        return inputs.new_zeros((0, steps, 2 * lstm.hidden_size))
    lengths = lengths.cpu()
    # Packing refuses empty sequences; run them one padding step and zero it, as bilstm does.
    packed = pack_padded_sequence(
        inputs, lengths.clamp(min=1), batch_first=True, enforce_sorted=False
    )
    output = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=steps)[0]
    empty = lengths == 0
    if bool(empty.any()):
        output = output.masked_fill(empty.to(output.device).view(-1, 1, 1), 0.0)
    return output
