"""The padded bidirectional LSTM equals PyTorch's packed-sequence LSTM."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from netsurgeon.errors import ConfigError
from netsurgeon.oov.lstm import bilstm, reverse_within_length


def _packed(lstm: nn.LSTM, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    output, _ = lstm(packed)
    return pad_packed_sequence(output, batch_first=True, total_length=inputs.shape[1])[0]


def test_reverse_within_length_keeps_padding_in_place() -> None:
    inputs = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0]])
    reversed_ = reverse_within_length(inputs, torch.tensor([3, 2, 1]))
    assert reversed_.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0], [6, 0, 0, 0]]


@pytest.mark.parametrize("training", [True, False])
def test_bilstm_equals_packed_lstm_outputs_and_gradients(training: bool) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(7, 5, batch_first=True, bidirectional=True).train(training)
    lengths = torch.tensor([9, 1, 4, 9, 2])
    inputs = torch.randn(5, 9, 7, requires_grad=True)
    expected = _packed(lstm, inputs, lengths)
    actual = bilstm(lstm, inputs, lengths)
    assert actual.shape == (5, 9, 10)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    assert actual[1, 1:].abs().sum() == 0  # padded positions are zero, as pad_packed gives
    wrt = [inputs, *lstm.parameters()]
    expected_grads = torch.autograd.grad((expected * expected.detach()).sum(), wrt)
    actual_grads = torch.autograd.grad((actual * expected.detach()).sum(), wrt)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bilstm_rejects_other_lstms() -> None:
    with pytest.raises(ConfigError, match="bidirectional=True"):
        bilstm(nn.LSTM(3, 4, batch_first=True), torch.zeros(1, 2, 3), torch.tensor([2]))
