"""The CIFAR ResNets: layout, option-A shortcuts, tracing, legacy checkpoints, real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import fx

from netsurgeon.errors import CheckpointError, ConfigError
from netsurgeon.vision import (
    CifarResNet,
    cifar_resnet20,
    cifar_resnet32,
    cifar_resnet44,
    cifar_resnet56,
    cifar_resnet110,
)
from netsurgeon.vision.cifar_resnet import BasicBlock
from tests.conftest import shared_root

SHARED = shared_root()
CHECKPOINTS = SHARED / "data" / "resnet_cifar10"
CIFAR_VAL = SHARED / "data" / "cifar10-small" / "val"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _expected_keys(n: int) -> list[str]:
    """State-dict keys of the legacy checkpoints, without the ``module.`` prefix."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight", *(f"bn1.{t}" for t in bn)]
    for stage in (1, 2, 3):
        for i in range(n):
            for j in (1, 2):
                prefix = f"layer{stage}.{i}"
                keys += [f"{prefix}.conv{j}.weight", *(f"{prefix}.bn{j}.{t}" for t in bn)]
    return [*keys, "linear.weight", "linear.bias"]


def _legacy_file(path: Path, model: torch.nn.Module) -> Path:
    """Write ``model`` the way the original training script did (``module.``, no counters)."""
    state = {
        f"module.{k}": v for k, v in model.state_dict().items() if "num_batches_tracked" not in k
    }
    torch.save({"state_dict": state, "best_prec1": 91.0}, path)
    return path


@pytest.mark.parametrize(
    ("builder", "n", "millions"),
    [
        (cifar_resnet20, 3, 0.27),
        (cifar_resnet32, 5, 0.46),
        (cifar_resnet44, 7, 0.66),
        (cifar_resnet56, 9, 0.85),
        (cifar_resnet110, 18, 1.73),
    ],
)
def test_layout_names_and_size_match_the_paper(builder, n: int, millions: float) -> None:
    model = builder()
    assert list(model.state_dict()) == _expected_keys(n)
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 2) == millions  # He et al. 2016, table 6
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_widths_strides_and_head() -> None:
    model = cifar_resnet20(num_classes=7)
    assert model.conv1.in_channels == 3 and model.conv1.out_channels == 16
    assert [getattr(model, f"layer{s}")[0].conv1.stride for s in (1, 2, 3)] == [
        (1, 1),
        (2, 2),
        (2, 2),
    ]
    assert [getattr(model, f"layer{s}")[-1].conv2.out_channels for s in (1, 2, 3)] == [16, 32, 64]
    assert (model.linear.in_features, model.linear.out_features) == (64, 7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_option_a_shortcut_subsamples_and_zero_pads_channels() -> None:
    block = BasicBlock(16, 32, stride=2).eval()
    with torch.no_grad():  # silence the residual branch: output = relu(shortcut(x))
        block.conv2.weight.zero_()
        block.bn2.bias.zero_()
    x = torch.randn(2, 16, 8, 8)
    out = block(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :8], torch.zeros(2, 8, 4, 4))
    assert torch.equal(out[:, 24:], torch.zeros(2, 8, 4, 4))
    assert torch.equal(out[:, 8:24], F.relu(x[:, :, ::2, ::2]))
    assert not BasicBlock(16, 16).pad_shortcut


def test_fx_traces_and_sees_the_functional_pad() -> None:
    model = cifar_resnet20().eval()
    traced = fx.symbolic_trace(model)
    pads = [n for n in traced.graph.nodes if n.op == "call_function" and n.target is F.pad]
    assert len(pads) == 2  # layer2.0 and layer3.0
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


def test_kaiming_normal_initialisation() -> None:
    torch.manual_seed(0)
    weight = cifar_resnet20().layer3[1].conv2.weight  # 64 * 64 * 9 values
    expected = (2.0 / (64 * 9)) ** 0.5
    assert abs(weight.std().item() - expected) / expected < 0.05
    assert abs(weight.mean().item()) < 0.05 * expected


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        cifar_resnet20(num_classes=0)
    with pytest.raises(ConfigError, match="num_blocks"):
        CifarResNet(num_blocks=(3, 3))
    with pytest.raises(ConfigError, match="num_blocks"):
        CifarResNet(num_blocks=(3, 0, 3))
    with pytest.raises(ConfigError, match="no downloadable weights"):
        cifar_resnet20(weights="DEFAULT")
    with pytest.raises(ConfigError, match="weights"):
        cifar_resnet20(weights=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stride"):
        BasicBlock(16, 32, stride=3)
    with pytest.raises(TypeError):
        cifar_resnet20("x.th")  # type: ignore[misc]  # keyword-only


def test_loads_legacy_and_plain_state_dicts(tmp_path: Path) -> None:
    source = cifar_resnet20().eval()
    legacy = _legacy_file(tmp_path / "legacy.th", source)
    plain = tmp_path / "plain.pth"
    torch.save(source.state_dict(), plain)
    x = torch.randn(2, 3, 32, 32)

    class PathLike:  # an os.PathLike that is not a pathlib.Path
        def __fspath__(self) -> str:
            return str(plain)

    for path in (legacy, str(plain), PathLike()):
        model = cifar_resnet20(weights=path).eval()
        with torch.no_grad():
            assert torch.equal(model(x), source(x))


def test_checkpoint_of_another_depth_lists_the_missing_keys(tmp_path: Path) -> None:
    path = _legacy_file(tmp_path / "r20.th", cifar_resnet20())
    with pytest.raises(CheckpointError, match="missing keys") as info:
        cifar_resnet32(weights=path)
    assert "layer1.3.conv1.weight" in str(info.value)
    assert str(path) in str(info.value)


def test_checkpoint_with_wrong_shapes_lists_them(tmp_path: Path) -> None:
    state = cifar_resnet20().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(8, 16, 3, 3)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        cifar_resnet20(weights=path)
    message = str(info.value)
    assert "layer1.0.conv1.weight: checkpoint (8, 16, 3, 3) vs model (16, 16, 3, 3)" in message
    assert "unexpected keys (extra.weight)" in message


def test_other_num_classes_keeps_the_body_and_replaces_the_head(tmp_path: Path) -> None:
    source = cifar_resnet20()
    path = _legacy_file(tmp_path / "r20.th", source)
    model = cifar_resnet20(weights=path, num_classes=3)
    assert model.linear.out_features == 3
    for key, value in source.state_dict().items():
        if not key.startswith("linear."):
            assert torch.equal(model.state_dict()[key], value), key


def _cifar_sample(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    classes = sorted(p.name for p in CIFAR_VAL.iterdir() if p.is_dir())
    images, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted((CIFAR_VAL / name).glob("*.jpg"))[:per_class]:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(index)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return (x - MEAN) / STD, torch.tensor(labels)


@pytest.mark.shared
@pytest.mark.skipif(
    not (CHECKPOINTS.is_dir() and CIFAR_VAL.is_dir()),
    reason=f"real CIFAR-10 weights and images not found under {SHARED}",
)
@pytest.mark.parametrize(
    ("builder", "file"),
    [(cifar_resnet20, "resnet20-12fca82f.th"), (cifar_resnet32, "resnet32-d509ac18.th")],
)
def test_real_pretrained_weights_classify_cifar10(builder, file: str) -> None:
    x, y = _cifar_sample(per_class=30)
    model = builder(weights=CHECKPOINTS / file).eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    # ~92 % on the original test set, about 10 points less on these re-encoded JPEGs;
    # chance is 10 %.
    assert accuracy > 0.70
