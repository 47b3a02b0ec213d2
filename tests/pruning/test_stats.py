"""Tests for netsurgeon.pruning.stats: parameters, MACs, size, latency and the tables."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from netsurgeon.errors import ConfigError
from netsurgeon.pruning.stats import (
    MacCounter,
    ModelStats,
    check_input_size,
    count_macs,
    count_params,
    format_comparison,
    format_stats,
    measure_latency,
    resolve_device,
    state_size_bytes,
)


def _small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 3*8*9 + 8 = 224
        nn.BatchNorm2d(8),  # 8 + 8 = 16
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),  # 8*4 + 4 = 36
    )


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.linear(y)


def test_check_input_size_names_the_option_and_keeps_the_modes() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 5), nn.BatchNorm2d(4)).train()
    check_input_size(model, 5)  # fits exactly
    with pytest.raises(
        ConfigError, match=r"^net does not run on 4x4 images \(.*\); give an input size it "
        r"accepts \(--input-size\)$"
    ):  # fmt: skip
        check_input_size(model, 4, name="net")
    assert all(m.training for m in model.modules())
    assert model[1].num_batches_tracked == 0  # ran in eval mode: statistics untouched
    # Before: a bfloat16 model failed on the float32 probe image, and the message blamed
    # --input-size for a dtype mismatch.
    check_input_size(model.to(torch.bfloat16), 5)


class _SizeAsserting(nn.Module):
    """Checks its input size with torch._assert, as torchvision's VisionTransformer does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.shape[2] == 8, f"Wrong image height! Expected 8 but got {x.shape[2]}!")
        return x


def test_check_input_size_refuses_a_size_a_model_asserts_against() -> None:
    """Before: the AssertionError escaped as a 40-line traceback (vit_b_16 at 64 px)."""
    check_input_size(_SizeAsserting(), 8)
    message = r"^vit does not run on 4x4 images \(Wrong image height! Expected 8 but got 4!\)"
    with pytest.raises(ConfigError, match=message):
        check_input_size(_SizeAsserting(), 4, name="vit")


def test_count_params_exact_for_small_cnn() -> None:
    assert count_params(_small_cnn()) == 224 + 16 + 36


def test_count_params_counts_a_shared_parameter_once() -> None:
    first, second = nn.Linear(5, 5, bias=False), nn.Linear(5, 5, bias=False)
    second.weight = first.weight
    assert count_params(nn.Sequential(first, second)) == 25


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "padding", "groups", "size"),
    [
        (3, 16, 3, 1, 1, 1, 12),
        (8, 8, 3, 2, 1, 8, 9),  # depthwise, strided
        (6, 12, 1, 1, 0, 3, 7),  # grouped pointwise
        (4, 5, 5, 1, 0, 1, 11),  # no padding shrinks the map
    ],
)
def test_count_macs_of_conv2d_matches_closed_form(
    cin: int, cout: int, kernel: int, stride: int, padding: int, groups: int, size: int
) -> None:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups)
    batch = 2
    out = (size + 2 * padding - kernel) // stride + 1
    expected = batch * cout * (cin // groups) * kernel * kernel * out * out
    assert count_macs(conv, torch.randn(batch, cin, size, size)) == expected


def test_count_macs_of_linear_matches_closed_form() -> None:
    assert count_macs(nn.Linear(7, 3), torch.randn(5, 7)) == 5 * 7 * 3


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def test_count_macs_of_attention_matches_closed_form() -> None:
    """Before: in eval mode without gradients the fused attention kernel ran uncounted (a ViT
    lost a third of its MACs, so target_macs=0.5 kept 0.67), and on the CPU the attention
    scores were never counted."""
    x = torch.randn(2, 5, 16)  # batch 2, 5 tokens of 16 features
    projections = 5 * 16 * 48 + 5 * 16 * 16  # q, k, v in one product, then the output
    scores = 2 * 5 * 5 * 16  # q k^T and the weighted sum of v, over both heads
    assert count_macs(_Attention().eval(), x) == 2 * (projections + scores)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True).eval()
    assert count_macs(layer, x) == 2 * (projections + scores + 2 * 5 * 16 * 32)
    assert torch.backends.mha.get_fastpath_enabled()  # the fast path is back on afterwards


def _recurrent_macs(rnn: nn.RNNBase, rows: int) -> int:
    """Every row (a step of one sequence) multiplies its input and its hidden state by every
    weight matrix of every layer and direction, and by the projection of an LSTM's."""
    gates = {"LSTM": 4, "GRU": 3}.get(type(rnn).__name__, 1)
    hidden, out = rnn.hidden_size, rnn.proj_size or rnn.hidden_size
    directions = 2 if rnn.bidirectional else 1
    total = 0
    for layer in range(rnn.num_layers):
        inputs = rnn.input_size if layer == 0 else out * directions
        per_row = gates * hidden * (inputs + out) + (hidden * out if rnn.proj_size else 0)
        total += directions * per_row
    return rows * total


@pytest.mark.parametrize(
    "rnn",
    [
        nn.LSTM(12, 8, batch_first=True),
        nn.LSTM(12, 8, num_layers=2, bidirectional=True),
        nn.LSTM(12, 8, proj_size=4),
        nn.GRU(12, 8, num_layers=2, bidirectional=True, batch_first=True),
        nn.RNN(12, 8, nonlinearity="relu"),
    ],
    ids=["lstm", "lstm-2-layers-bidirectional", "lstm-projection", "gru", "rnn"],
)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_count_macs_of_recurrent_layers_matches_closed_form(rnn: nn.RNNBase, device: str) -> None:
    """Before: nn.LSTM counted 0 MACs on the CPU (oneDNN's fused kernel has no formula in
    torch.utils.flop_counter), and every recurrent layer 0 on the GPU (cuDNN's)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    rnn = rnn.to(device)
    x = torch.randn(5, 3, 12, device=device)  # 15 rows: 5 steps of 3 sequences, or 3 of 5
    assert count_macs(rnn, x) == _recurrent_macs(rnn, 15)
    # A packed batch runs only its sequences' real steps: 5 + 4 + 2 rows.
    packed = nn.utils.rnn.pack_padded_sequence(
        torch.randn(3, 5, 12, device=device), torch.tensor([5, 4, 2]), batch_first=True
    )
    with torch.no_grad(), MacCounter() as counter:
        rnn(packed)
    assert counter.macs == _recurrent_macs(rnn, 11)


def test_count_macs_accepts_several_inputs() -> None:
    model = _TwoInputs()
    assert count_macs(model, (torch.randn(3, 4), torch.randn(3, 4))) == 2 * 3 * 4 * 2


def test_count_macs_and_latency_take_float32_inputs_for_a_bfloat16_model() -> None:
    """Before: both raised torch's dtype mismatch; ModelStats.measure already cast."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    x = torch.randn(2, 3, 8, 8)
    expected = count_macs(model, x)
    model = model.to(torch.bfloat16)
    assert count_macs(model, x) == expected
    assert measure_latency(model, x, warmup=0, repeats=1) > 0


def test_count_macs_restores_training_flags() -> None:
    model = _small_cnn().train()
    model[1].eval()
    count_macs(model, torch.randn(1, 3, 8, 8))
    assert model.training and model[0].training and not model[1].training


def test_resnet18_macs_at_224_match_published_count() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18()
    macs = count_macs(model, torch.randn(1, 3, 224, 224))
    assert macs == pytest.approx(1.814e9, rel=0.01)


class _ManyOps(nn.Module):
    """Every kind of operation torch.utils.flop_counter counts, one it decomposes, and the
    normalisations MacCounter runs without decomposing them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norms = nn.Sequential(nn.BatchNorm2d(8), nn.GroupNorm(2, 8), nn.LayerNorm([8, 8]))
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.conv1d = nn.Conv1d(4, 6, 3)
        self.fc = nn.Linear(6, 5)
        self.attention = nn.MultiheadAttention(5, 1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(self.depthwise(self.norms(self.conv(x))))  # (N, 4, 12, 12)
        x = self.conv1d(x.flatten(2))  # (N, 6, 142)
        x = self.fc(x.transpose(1, 2))  # (N, 142, 5): addmm
        x = x + torch.bmm(x, x.transpose(1, 2)) @ x / 100  # bmm, then matmul
        x = x + torch.einsum("nij,njk->nik", x[:, :5], x[:, :5].transpose(1, 2)).sum()
        q = x.unsqueeze(1)
        x = x + torch.nn.functional.scaled_dot_product_attention(q, q, q).squeeze(1)
        return self.attention(x, x, x)[0]


@pytest.mark.parametrize(
    ("training", "no_grad"),
    [(False, torch.no_grad), (True, torch.no_grad), (False, torch.inference_mode)],
)
def test_mac_counter_counts_what_flop_counter_mode_counts(training: bool, no_grad: Any) -> None:
    """MacCounter drops FlopCounterMode's per-module bookkeeping and must count the same,
    plus what FlopCounterMode misses: attention on the CPU (given here as a custom formula)
    and the fused attention kernel (turned off here as MacCounter turns it off).

    Under inference mode, composite operations such as ``linear`` reach the counter whole and
    count only once decomposed (0 MACs for ``nn.Linear`` otherwise).
    """
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    torchvision = pytest.importorskip("torchvision")
    cases = [
        (_ManyOps(), torch.randn(2, 3, 8, 8)),
        (torchvision.models.mobilenet_v3_small(num_classes=7), torch.randn(2, 3, 64, 64)),
        (torchvision.models.densenet121(num_classes=3), torch.randn(2, 3, 40, 40)),
    ]
    cpu_attention = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
            lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)
        )
    }
    for model, x in cases:
        model.train(training)
        reference = FlopCounterMode(display=False, custom_mapping=cpu_attention)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with no_grad(), reference:
                torch.manual_seed(0)  # the same dropout masks in training mode
                expected = model(x)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
        with no_grad(), MacCounter() as counter:
            torch.manual_seed(0)
            output = model(x)
        torch.testing.assert_close(output, expected)  # operations run whole compute the same
        assert reference.get_total_flops() > 0
        assert counter.flops == reference.get_total_flops(), type(model).__name__
        assert counter.macs == reference.get_total_flops() // 2


def test_formulas_get_the_shapes_flop_counter_mode_gives_them() -> None:
    """MacCounter calls a registered formula on shapes itself where the arguments are flat;
    a tensor inside a list still goes through the formula's own pytree mapping."""
    from torch.utils.flop_counter import flop_registry, shape_wrapper

    from netsurgeon.pruning.stats import _formula_flops

    aten = torch.ops.aten
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    args = (x, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0], 1)
    out = aten.convolution(*args)
    conv = flop_registry[aten.convolution]
    assert _formula_flops(conv, args, {}, out) == conv(*args, out_val=out) == 2 * out.numel() * 27
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    mm = flop_registry[aten.mm]
    assert _formula_flops(mm, (a, b), {}, a @ b) == mm(a, b, out_val=a @ b) == 2 * 3 * 5 * 7
    nested = shape_wrapper(lambda xs, out_shape=None: sum(s[0] for s in xs))
    assert _formula_flops(nested, ([x, w],), {}, out) == 2 + 4


def test_mac_counter_counts_the_larger_branch_of_torch_cond() -> None:
    """Higher-order operators go to FlopCounterMode's rules; before, they raised."""
    weight = torch.randn(4, 4)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda x: x @ weight, lambda x: x @ weight @ weight, (x,))

    for x in (torch.ones(2, 4), -torch.ones(2, 4)):  # either branch runs
        with torch.no_grad(), MacCounter() as counter:
            forward(x)
        assert counter.macs == 2 * (2 * 4 * 4)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_state_size_bytes_equals_file_written_by_torch_save(tmp_path: Path, name: str) -> None:
    """Counted while torch writes (nothing held): the same bytes as the file, across the
    zip container's alignment of many tensors and buffers."""
    if name == "resnet18":
        torchvision = pytest.importorskip("torchvision")
        model = torchvision.models.resnet18(weights=None)
    else:
        model = _small_cnn()
    path = tmp_path / "state.pt"
    # A file object, like a buffer, gets torch's default archive name, hence the same bytes.
    with path.open("wb") as handle:
        torch.save(model.state_dict(), handle)
    assert state_size_bytes(model) == path.stat().st_size


def test_state_size_bytes_grows_with_params() -> None:
    small, large = nn.Linear(10, 10), nn.Linear(100, 100)
    growth = state_size_bytes(large) - state_size_bytes(small)
    # float32: 4 bytes per extra parameter; the zip container's alignment padding varies a bit.
    extra = (count_params(large) - count_params(small)) * 4
    assert growth == pytest.approx(extra, abs=256)


def test_measure_latency_is_positive_and_restores_training_flags() -> None:
    model = _small_cnn().train()
    model[1].eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(torch.is_inference_mode_enabled()))
    latency = measure_latency(model, torch.randn(2, 3, 8, 8), warmup=2, repeats=5)
    assert latency > 0
    assert len(calls) == 2 + 5 and all(calls)
    assert model.training and model[0].training and not model[1].training


def test_measure_latency_runs_in_eval_mode() -> None:
    model = _small_cnn().train()
    modes = []
    model.register_forward_pre_hook(lambda module, _: modes.append(module.training))
    measure_latency(model, torch.randn(1, 3, 8, 8), warmup=0, repeats=2)
    assert modes == [False, False]


def test_measure_latency_accepts_several_inputs() -> None:
    latency = measure_latency(_TwoInputs(), [torch.randn(1, 4), torch.randn(1, 4)], repeats=1)
    assert latency > 0


@pytest.mark.parametrize(("name", "value"), [("warmup", -1), ("repeats", 0), ("repeats", 1.5)])
def test_measure_latency_rejects_bad_counts(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        measure_latency(_small_cnn(), torch.randn(1, 3, 8, 8), **{name: value})


def test_model_stats_measure_reports_macs_per_image() -> None:
    model = _small_cnn()
    one = ModelStats.measure(model, input_size=8, batch_size=1, latency=False)
    four = ModelStats.measure(model, input_size=8, batch_size=4, latency=False)
    conv_macs = 8 * 3 * 9 * 8 * 8
    assert one.macs == four.macs == conv_macs + 8 * 4
    assert one.params == four.params == count_params(model)
    assert one.size_bytes == state_size_bytes(model)
    assert one.latency_ms is None and four.batch_size == 4 and four.input_size == 8
    assert one.device == "cpu"


def test_model_stats_measure_latency_and_flags() -> None:
    model = _small_cnn().train()
    stats = ModelStats.measure(model, input_size=16, batch_size=2, warmup=1, repeats=3)
    assert stats.latency_ms is not None and stats.latency_ms > 0
    assert model.training


def test_cpu_latency_records_the_thread_count_it_ran_with() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stats = ModelStats.measure(_small_cnn(), input_size=8, repeats=1, warmup=0)
    finally:
        torch.set_num_threads(previous)
    assert stats.threads == 2
    assert "latency (batch 1, cpu, 2 threads)" in format_stats(stats)
    unmeasured = ModelStats.measure(_small_cnn(), input_size=8, latency=False)
    assert unmeasured.threads is None


def test_model_stats_is_frozen_and_json_ready() -> None:
    stats = ModelStats.measure(_small_cnn(), input_size=8, repeats=1, warmup=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.params = 0  # type: ignore[misc]
    assert ModelStats(**json.loads(json.dumps(stats.as_dict()))) == stats


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"input_size": 0}, "input_size"),
        ({"input_size": -3}, "input_size"),
        ({"channels": 0}, "channels"),
        ({"batch_size": True}, "batch_size"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": -2}, "warmup"),
        ({"device": "tpu"}, "tpu"),
    ],
)
def test_model_stats_measure_rejects_bad_arguments(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        ModelStats.measure(_small_cnn(), **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_resolve_device_defaults() -> None:
    assert resolve_device(None, _small_cnn()) == torch.device("cpu")
    assert resolve_device(None, nn.ReLU()) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def _stats(params: int, macs: int, size: int, latency: float | None) -> ModelStats:
    return ModelStats(params, macs, size, latency, batch_size=8, input_size=32)


def test_format_comparison_aligns_columns_and_computes_ratios() -> None:
    before = _stats(2_000_000, 4_000_000_000, 8 * 2**20, 40.0)
    after = _stats(500_000, 1_000_000_000, 2 * 2**20, 20.0)
    lines = format_comparison(before, after).splitlines()
    assert lines[0].split() == ["metric", "before", "after", "after/before"]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns, equal widths
    # Columns are separated by at least two spaces; cells hold at most single spaces.
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    assert cells == [
        ["params", "2.000 M", "500.000 k", "0.250"],
        ["MACs (per image)", "4.000 G", "1.000 G", "0.250"],
        ["size on disk", "8.00 MiB", "2.00 MiB", "0.250"],
        ["latency (batch 8, cpu)", "40.00 ms", "20.00 ms", "0.500"],
    ]


def test_format_comparison_without_latency_says_na() -> None:
    text = format_comparison(_stats(10, 10, 10, None), _stats(5, 5, 5, None))
    latency_row = text.splitlines()[-1]
    assert latency_row.split()[-3:] == ["n/a", "n/a", "n/a"]


def test_format_stats_lists_every_metric() -> None:
    text = format_stats(_stats(1234, 5_600_000, 999, 1.5), title="resnet")
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "resnet"]
    assert [line.split()[-2:] for line in lines[1:]] == [
        ["1.234", "k"],
        ["5.600", "M"],
        ["999", "B"],
        ["1.50", "ms"],
    ]
