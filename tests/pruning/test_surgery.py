"""Layer surgery keeps dtype, device, layout, requires_grad and works for 1-D and grouped layers."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from netsurgeon.pruning import prune
from netsurgeon.pruning.surgery import (
    prune_conv,
    prune_linear,
    prune_norm,
    prune_parameter,
    prune_recurrent,
    restorable,
    zero_filters,
)


def test_conv1d_network_prunes_with_its_norms() -> None:
    model = nn.Sequential(
        nn.Conv1d(4, 12, 3, padding=1), nn.BatchNorm1d(12), nn.PReLU(12), nn.Conv1d(12, 6, 1),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 2),
    )  # fmt: skip
    x = torch.randn(2, 4, 16)
    result = prune(model, x, amount=0.5)
    assert result.channels == {"0": (12, 6), "3": (6, 3)}
    assert model[1].num_features == model[1].running_mean.numel() == 6
    assert model[2].num_parameters == model[2].weight.numel() == 6
    assert model[6].in_features == 3
    assert model(x).shape == (2, 2)


def test_dtype_and_requires_grad_are_kept() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    model = model.double()
    model[0].bias.requires_grad_(False)
    prune(model, torch.randn(1, 3, 8, 8, dtype=torch.float64), amount=0.5)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(b.dtype == torch.float64 for n, b in model.named_buffers() if "running" in n)
    assert model[0].bias.requires_grad is False and model[0].weight.requires_grad
    assert isinstance(model[0].weight, nn.Parameter)


def test_channels_last_layout_is_kept() -> None:
    """Before: every cut 3x3 (and 3-D) weight came back contiguous in a channels-last model."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
        nn.Conv2d(8, 4, 1),
    ).to(memory_format=torch.channels_last)  # fmt: skip
    x = torch.randn(2, 3, 12, 12).to(memory_format=torch.channels_last)
    prune(model, x, amount=0.5)
    assert model[0].weight.shape == (4, 3, 3, 3) and model[3].weight.shape == (4, 4, 3, 3)
    for conv in (model[0], model[3]):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not conv.weight.is_contiguous()
    conv3d = nn.Conv3d(4, 6, 3).to(memory_format=torch.channels_last_3d)
    prune_conv(conv3d, out_keep=torch.tensor([0, 2, 5]), in_keep=torch.tensor([1, 3]))
    assert conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d)
    plain = nn.Conv2d(4, 6, 3)  # a contiguous weight stays contiguous
    prune_conv(plain, out_keep=torch.tensor([0, 2, 5]))
    assert plain.weight.is_contiguous()


def test_a_stateless_instance_norm_follows_its_channels() -> None:
    """Before: InstanceNorm2d without affine or running statistics kept num_features=8 and
    warned on every forward of the pruned model."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 8, 8)
    prune(model, x, amount=0.5)
    assert model[1].num_features == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model(x).shape == (2, 4, 6, 6)


def test_grouped_conv_surgery_matches_a_masked_reference() -> None:
    conv = nn.Conv2d(8, 4, 3, padding=1, groups=2)
    x = torch.randn(1, 8, 5, 5)
    in_keep = torch.tensor([0, 2, 5, 7])  # two inputs kept in each group of four
    out_keep = torch.tensor([1, 3])  # one filter kept in each group of two
    masked = x.clone()
    drop = torch.ones(8, dtype=torch.bool)
    drop[in_keep] = False
    masked[:, drop] = 0
    expected = conv(masked)[:, out_keep]
    prune_conv(conv, out_keep=out_keep, in_keep=in_keep)
    assert (conv.in_channels, conv.out_channels, conv.groups) == (4, 2, 2)
    torch.testing.assert_close(conv(x[:, in_keep]), expected)


def test_linear_and_norm_surgery_select_rows() -> None:
    linear = nn.Linear(5, 4)
    weight = linear.weight.detach().clone()
    prune_linear(linear, out_keep=torch.tensor([0, 3]), in_keep=torch.tensor([1, 2, 4]))
    assert torch.equal(linear.weight, weight[[0, 3]][:, [1, 2, 4]])
    assert (linear.in_features, linear.out_features) == (3, 2)
    norm = nn.BatchNorm2d(4)
    norm.running_var.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    prune_norm(norm, torch.tensor([1, 3]))
    assert norm.running_var.tolist() == [2.0, 4.0] and norm.num_features == 2


def test_prune_norm_keeps_whole_groups_of_a_group_norm() -> None:
    norm = nn.GroupNorm(3, 6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(6.0))
    x = torch.randn(2, 6, 4, 4)
    expected = norm(x)[:, [0, 1, 4, 5]]
    prune_norm(norm, torch.tensor([0, 1, 4, 5]))
    assert (norm.num_groups, norm.num_channels) == (2, 4)
    assert norm.weight.tolist() == [0.0, 1.0, 4.0, 5.0]
    torch.testing.assert_close(norm(x[:, [0, 1, 4, 5]]), expected)
    for partial in ([0, 2], [1, 2], [0]):  # parts of groups, or groups out of alignment
        with pytest.raises(ValueError, match="whole groups of 2 channels"):
            prune_norm(nn.GroupNorm(3, 6), torch.tensor(partial))


@pytest.mark.parametrize(
    "rnn",
    [
        nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True),
        nn.GRU(6, 5),
        nn.RNN(6, 5, bias=False),
        nn.LSTMCell(6, 5),
    ],
    ids=["lstm", "gru", "rnn", "lstm-cell"],
)
def test_recurrent_input_surgery_matches_zeroed_inputs(rnn: nn.Module) -> None:
    """Input features whose values are zero can go: the layer computes the same from the rest."""
    x = torch.randn(3, 4, 6)
    if isinstance(rnn, nn.RNNCellBase):
        x = x[:, 0]
    keep = torch.tensor([0, 2, 3, 5])
    masked = x.clone()
    masked[..., [1, 4]] = 0
    with torch.no_grad():
        expected = rnn(masked)
    prune_recurrent(rnn, in_keep=keep)
    assert rnn.input_size == 4
    with torch.no_grad():
        actual = rnn(x[..., keep])
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(
    "rnn",
    [
        nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True),
        nn.GRU(4, 6, num_layers=3),
        nn.RNN(4, 6, bidirectional=True, bias=False),
    ],
    ids=["lstm", "gru", "rnn"],
)
def test_recurrent_hidden_surgery_matches_silenced_units(rnn: nn.Module) -> None:
    """Hidden units whose gate rows are all zero stay at zero: cutting them (from every layer
    and direction) leaves the other units' values as they were."""
    x = torch.randn(3, 5, 4)
    keep, drop = torch.tensor([0, 2, 3, 5]), torch.tensor([1, 4])
    zero_filters(rnn, drop)  # every gate's rows of the dropped units
    with torch.no_grad():
        output, states = rnn(x)
    directions = 2 if rnn.bidirectional else 1
    prune_recurrent(rnn, hidden_keep=keep)
    assert rnn.hidden_size == 4
    with torch.no_grad():
        pruned_output, pruned_states = rnn(x)
    kept = torch.cat([d * 6 + keep for d in range(directions)])
    torch.testing.assert_close(pruned_output, output[..., kept])
    states = states if isinstance(states, tuple) else (states,)
    pruned_states = pruned_states if isinstance(pruned_states, tuple) else (pruned_states,)
    for state, pruned in zip(states, pruned_states, strict=True):
        torch.testing.assert_close(pruned, state[..., keep])


def test_filters_rows_serve_every_kind_of_layer() -> None:
    from netsurgeon.pruning import Filters

    conv, up = nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 2)
    lstm = nn.LSTM(5, 6, num_layers=2, bidirectional=True)
    assert Filters("c", conv).rows().shape == (8, 27)
    assert Filters("u", up).rows().shape == (4, 32)
    rows = Filters("l", lstm).rows()
    # Per unit: 4 gates x (5 inputs + 6 states) x 2 directions, then 4 x (12 + 6) x 2.
    assert rows.shape == (6, 4 * 11 * 2 + 4 * 18 * 2)
    assert torch.equal(rows[2, :5], lstm.weight_ih_l0.detach()[2])  # unit 2's input gate row


def test_a_restored_recurrent_layer_computes_with_its_old_weights() -> None:
    lstm = nn.LSTM(6, 5, batch_first=True)
    x = torch.randn(2, 3, 6)
    with torch.no_grad():
        expected = lstm(x)[0]
    with pytest.raises(RuntimeError, match="later step failed"), restorable([lstm]):
        prune_recurrent(lstm, in_keep=torch.tensor([0, 1, 2]))
        raise RuntimeError("a later step failed")
    assert lstm.input_size == 6 and lstm.weight_ih_l0.shape == (20, 6)
    with torch.no_grad():
        torch.testing.assert_close(lstm(x)[0], expected)


def test_a_cut_scale_and_its_shape_are_restored_if_a_later_step_fails() -> None:
    scale = nn.Module()
    scale.shape, scale.weight = (6, 1, 1), nn.Parameter(torch.rand(6))
    expected = scale.weight.detach().clone()
    with pytest.raises(RuntimeError, match="later step failed"), restorable([scale]):
        prune_parameter(scale, "weight", torch.tensor([0, 2, 5]), 0, [("shape", 0)])
        assert scale.shape == (3, 1, 1) and scale.weight.shape == (3,)
        raise RuntimeError("a later step failed")
    assert scale.shape == (6, 1, 1)
    assert torch.equal(scale.weight, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN's weight layout)")
def test_a_pruned_lstm_on_the_gpu_keeps_its_weights_in_one_block() -> None:
    """cuDNN wants an LSTM's weights in one block; otherwise every forward warns and copies."""
    lstm = nn.LSTM(6, 5, num_layers=2, bidirectional=True).cuda()
    prune_recurrent(lstm, in_keep=torch.tensor([0, 2, 3, 5], device="cuda"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "weights are not part of single contiguous chunk"
        lstm(torch.randn(3, 2, 4, device="cuda"))
