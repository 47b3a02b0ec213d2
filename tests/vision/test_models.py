"""The model registry: names, random/downloaded/local weights, head replacement."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

import netsurgeon.vision as vision
from netsurgeon.errors import CheckpointError, ConfigError, NetsurgeonError
from netsurgeon.pruning import io
from netsurgeon.vision import build_model, list_models, register_builder, replace_head
from netsurgeon.vision import models as registry


def _structure(model: nn.Module) -> tuple[str, dict[str, tuple[int, ...]]]:
    """Everything that defines an architecture: module reprs and every tensor's shape."""
    return repr(model), {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _equal_outputs(a: nn.Module, b: nn.Module, size: int = 64) -> bool:
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.fixture
def no_user_builders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_USER_BUILDERS", {})


class TinyNet(nn.Module):
    def __init__(self, *, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def test_public_api_is_sorted_and_complete() -> None:
    # ruff's RUF022 order: case-sensitive, numbers compared as numbers.
    assert vision.__all__ == sorted(vision.__all__, key=_natural)
    assert all(hasattr(vision, name) for name in vision.__all__)


def test_list_models_covers_torchvision_and_cifar() -> None:
    names = list_models()
    expected = torchvision.models.list_models(module=torchvision.models)
    assert set(expected) <= set(names)
    assert {f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110)} <= set(names)
    assert names == sorted(names)


def test_default_input_size_per_family() -> None:
    assert vision.default_input_size("cifar_resnet20") == 32
    assert vision.default_input_size("cifar_resnet110") == 32
    assert vision.default_input_size("inception_v3") == 299
    assert vision.default_input_size("resnet18") == registry.DEFAULT_INPUT_SIZE == 224
    assert vision.default_input_size("someone_elses_net") == 224


def test_checkpoint_input_size_prefers_the_recorded_size(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    io.save(build_model("cifar_resnet20"), path, arch="cifar_resnet20")
    assert registry.checkpoint_input_size(io.read_checkpoint(path)) == 32  # the architecture's
    io.save(build_model("resnet18"), path, arch="resnet18")
    assert registry.checkpoint_input_size(io.read_checkpoint(path)) == 224
    io.save(build_model("resnet18"), path, arch="resnet18", extra={"finetune": {"input_size": 96}})
    assert registry.checkpoint_input_size(io.read_checkpoint(path)) == 96
    bad = {"finetune": {"input_size": True}, "prune": {"input_size": 0}}
    io.save(build_model("cifar_resnet20"), path, arch="cifar_resnet20", extra=bad)
    assert registry.checkpoint_input_size(io.read_checkpoint(path)) == 32


def test_random_build_records_how_to_rebuild() -> None:
    model = build_model("resnet18", num_classes=5)
    assert model.fc.out_features == 5 and model.training
    assert model.netsurgeon_arch == {"name": "resnet18", "kwargs": {"num_classes": 5}}
    default = build_model("cifar_resnet20", weights=None)
    assert default.netsurgeon_arch == {"name": "cifar_resnet20", "kwargs": {"num_classes": 10}}
    googlenet = build_model("googlenet", weights="none", num_classes=3, init_weights=False)
    assert googlenet.aux1 is None  # no auxiliary heads by default: one output tensor
    assert googlenet.netsurgeon_arch["kwargs"] == {
        "num_classes": 3,
        "aux_logits": False,
        "transform_input": False,
    }
    assert googlenet(torch.randn(1, 3, 64, 64)).shape == (1, 3)  # a tensor, even in training


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("resnet19")
    message = str(info.value)
    assert "'resnet19'" in message and "resnet18" in message
    assert "netsurgeon models" in message


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"weights": "IMAGENET_BOGUS"}, "IMAGENET1K_V1"),
        ({"weights": "missing/file.pth"}, "neither an existing file"),
        ({"weights": 7}, "weights"),
        ({"progress": "yes"}, "progress"),
        ({"norm_layer": nn.BatchNorm2d}, "JSON-able"),
        ({"no_such_arg": 1}, "no_such_arg"),
    ],
)
def test_bad_arguments_raise_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model("resnet18", **kwargs)


def test_default_weights_for_a_builder_without_downloads() -> None:
    with pytest.raises(ConfigError, match="no downloadable weights"):
        build_model("cifar_resnet20", weights="DEFAULT")


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"])
def test_offline_download_fails_with_one_clear_error(
    weights: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(NetsurgeonError) as info:
        build_model("resnet18", weights=weights, progress=False)
    message = str(info.value)
    assert "could not download" in message and "resnet18-f37072fd.pth" in message
    assert "--weights none" in message and "--weights PATH" in message
    assert isinstance(info.value.__cause__, URLError)


def _fake_download(monkeypatch: pytest.MonkeyPatch, state: dict) -> list[str]:
    """Serve ``state`` where torchvision would download; returns the URLs asked for."""
    urls: list[str] = []

    def serve(url: str, *args: object, **kwargs: object) -> dict:
        urls.append(url)
        return state

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", serve)
    return urls


def test_downloaded_weights_with_another_head_match_the_random_structure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torchvision's googlenet weights include the auxiliary heads, which it then drops.
    imagenet = torchvision.models.googlenet(aux_logits=True, init_weights=False).state_dict()
    urls = _fake_download(monkeypatch, imagenet)
    model = build_model("googlenet", weights="DEFAULT", num_classes=4)
    assert urls == [torchvision.models.GoogLeNet_Weights.DEFAULT.url]
    assert model.netsurgeon_arch == {
        "name": "googlenet",
        "kwargs": {"num_classes": 4, "aux_logits": False, "transform_input": True},
    }
    reference = build_model("googlenet", num_classes=4, init_weights=False)  # skip slow init
    assert _structure(model) == _structure(reference)
    assert torch.equal(model.conv1.conv.weight, imagenet["conv1.conv.weight"])
    assert model.fc.out_features == 4
    # The recorded kwargs rebuild the same behaviour, including the input transform.
    rebuilt = build_model("googlenet", init_weights=False, **model.netsurgeon_arch["kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.transform_input and _equal_outputs(model, rebuilt)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("resnet18", {}),
        ("squeezenet1_1", {}),  # a 1x1 conv head
        ("googlenet", {"aux_logits": True, "init_weights": False}),  # two auxiliary heads
        ("mobilenet_v3_small", {}),
        ("cifar_resnet20", {}),
    ],
)
def test_replace_head_gives_the_structure_of_a_fresh_build(name: str, kwargs: dict) -> None:
    model = build_model(name, **kwargs)
    body = {k: v.clone() for k, v in model.state_dict().items()}
    heads = registry.find_heads(model)
    assert replace_head(model, 7) is model
    reference = build_model(name, num_classes=7, **kwargs)
    assert _structure(model) == _structure(reference)
    assert model.netsurgeon_arch == reference.netsurgeon_arch
    for key, value in model.state_dict().items():  # everything but the heads is kept
        if not any(key.startswith(f"{head}.") for head in heads):
            assert torch.equal(value, body[key]), key
    if name == "googlenet":
        assert heads == ["fc", "aux1.fc2", "aux2.fc2"]


def test_replace_head_rejects_bad_counts() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        replace_head(build_model("cifar_resnet20"), 0)


def test_local_torchvision_state_dict(tmp_path: Path) -> None:
    source = build_model("resnet18", num_classes=3)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    # The class count comes from the file...
    model = build_model("resnet18", weights=str(path))
    assert model.fc.out_features == 3 and _equal_outputs(model, source)
    assert model.netsurgeon_arch == {"name": "resnet18", "kwargs": {"num_classes": 3}}
    # ...and a requested one replaces the head after loading.
    other = build_model("resnet18", weights=path, num_classes=5)
    assert _structure(other) == _structure(build_model("resnet18", num_classes=5))
    assert torch.equal(other.conv1.weight, source.conv1.weight)


class _PathLike:
    """An os.PathLike that is not a pathlib.Path (as some path libraries give)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def test_local_weights_given_as_any_path_like(tmp_path: Path) -> None:
    """Before: an os.PathLike other than Path was refused as 'neither a name nor a path'."""
    source = build_model("resnet18", num_classes=3)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    assert _equal_outputs(build_model("resnet18", weights=_PathLike(path)), source)
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=f"weights file {missing!r} does not exist"):
        build_model("resnet18", weights=_PathLike(Path(missing)))


def test_a_model_that_reads_its_version_metadata_saves_and_loads(tmp_path: Path) -> None:
    """Before: MNASNet (whose loader needs the state's version metadata) failed to load from
    any file with ``ValueError: version should be set to 1 or 2``, so prune, load and export
    of an MNASNet all crashed."""
    source = build_model("mnasnet0_5", num_classes=4)
    io.save(source, tmp_path / "model.pt")
    assert _equal_outputs(io.load(tmp_path / "model.pt"), source, size=32)
    torch.save(dict(source.state_dict()), tmp_path / "plain.pth")  # no metadata at all
    assert _equal_outputs(build_model("mnasnet0_5", weights=tmp_path / "plain.pth"), source, 32)


def test_local_legacy_file_with_module_prefix(tmp_path: Path) -> None:
    source = build_model("mobilenet_v3_small", num_classes=6)
    path = tmp_path / "legacy.th"
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "best_prec1": 50.0}, path)
    assert _equal_outputs(build_model("mobilenet_v3_small", weights=path), source)


def test_local_file_of_another_architecture_lists_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(build_model("resnet34").state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        build_model("resnet18", weights=path)
    message = str(info.value)
    assert str(path) in message and "unexpected keys" in message and "layer1.2.conv1" in message


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"definitely not a torch file", "not a readable PyTorch file"),
        (nn.ReLU(), "pickled objects"),
        ([1, 2, 3], "holds a list"),
        ({"epoch": 3}, "no tensors"),
    ],
)
def test_unreadable_local_files(tmp_path: Path, content: object, match: str) -> None:
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        build_model("resnet18", weights=path)


def test_netsurgeon_checkpoint_as_weights_keeps_pruned_shapes(tmp_path: Path) -> None:
    source = build_model("cifar_resnet20", num_classes=4)
    block = source.layer1[0]
    keep = torch.arange(0, 16, 2)  # prune the block's inner channels by hand
    with torch.no_grad():
        block.conv1.weight = nn.Parameter(block.conv1.weight[keep].clone())
        block.conv1.out_channels = 8
        for name in ("weight", "bias"):
            setattr(block.bn1, name, nn.Parameter(getattr(block.bn1, name)[keep].clone()))
        block.bn1.running_mean = block.bn1.running_mean[keep].clone()
        block.bn1.running_var = block.bn1.running_var[keep].clone()
        block.bn1.num_features = 8
        block.conv2.weight = nn.Parameter(block.conv2.weight[:, keep].clone())
        block.conv2.in_channels = 8
    path = io.save(source, tmp_path / "pruned.pt")
    model = build_model("cifar_resnet20", weights=path)
    assert model.training and model.layer1[0].conv1.out_channels == 8
    assert _equal_outputs(model, source, size=32)
    relabelled = build_model("cifar_resnet20", weights=path, num_classes=2)
    assert relabelled.linear.out_features == 2
    assert relabelled.netsurgeon_arch["kwargs"]["num_classes"] == 2
    with pytest.raises(ConfigError, match="contradicts"):
        build_model("cifar_resnet20", weights=path, num_blocks=[1, 1, 1])
    with pytest.raises(CheckpointError, match="holds a 'cifar_resnet20' model, not"):
        build_model("cifar_resnet32", weights=path)
    with pytest.raises(CheckpointError, match="pruned model"):
        vision.cifar_resnet20(weights=path)  # plain loading cannot take pruned shapes


def test_register_builder(no_user_builders: None, tmp_path: Path) -> None:
    register_builder("tinynet", TinyNet)
    assert "tinynet" in list_models()
    model = build_model("tinynet", num_classes=3, width=6)
    assert model.fc.out_features == 3 and model.features[0].out_channels == 6
    assert model.netsurgeon_arch == {"name": "tinynet", "kwargs": {"width": 6, "num_classes": 3}}
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    assert _equal_outputs(build_model("tinynet", weights=path, width=6), model, size=16)
    with pytest.raises(ConfigError, match="already exists"):
        register_builder("tinynet", TinyNet)
    with pytest.raises(ConfigError, match="already exists"):
        register_builder("resnet18", TinyNet)
    register_builder("tinynet", lambda **kw: TinyNet(width=5, **kw), overwrite=True)
    assert build_model("tinynet").features[0].out_channels == 5
    with pytest.raises(ConfigError, match="callable"):
        register_builder("other", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no downloadable weights"):
        build_model("tinynet", weights="DEFAULT")


def test_load_state_dict_checked_fills_old_batchnorm_counters() -> None:
    model = build_model("cifar_resnet20")
    state = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    target = build_model("cifar_resnet20")
    vision.load_state_dict_checked(target, state)
    assert _equal_outputs(target, model, size=32)
    del state["conv1.weight"]
    with pytest.raises(CheckpointError, match=r"from here.*missing keys \(conv1.weight\)"):
        vision.load_state_dict_checked(target, state, source="here")


def test_unknown_weights_list_each_choice_once_quoted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_model("resnet18", weights=str(tmp_path / "nosuch.pt"))
    message = str(info.value)
    assert message.endswith("is neither an existing file nor one of 'none', 'DEFAULT', "
                            "'IMAGENET1K_V1'")  # fmt: skip
    assert message.count("DEFAULT") == 1


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        ("empty", "an empty file (0 bytes)"),
        ("text", "a text file (14 bytes)"),
        ("truncated", "a truncated or damaged PyTorch file"),
    ],
)
def test_unreadable_weights_file_says_what_it_is_and_what_to_do(
    tmp_path: Path, damage: str, kind: str
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_model("cifar_resnet20").state_dict(), path)
    content = path.read_bytes()
    path.write_bytes({"empty": b"", "text": b"these weights\n", "truncated": content[:999]}[damage])
    with pytest.raises(CheckpointError) as info:
        build_model("cifar_resnet20", weights=path)
    message = str(info.value)
    assert message == (
        f"{path}: not a readable PyTorch file: {kind}"
        + (f" ({len(content[:999]):,} bytes)" if damage == "truncated" else "")
        + "; replace it with a good copy (download, save or export it again)"
    )


# ---------------------------------------------------------------------------------------------
# timm models: timm:NAME


def test_timm_models_build_by_prefixed_name_and_rebuild_from_the_record() -> None:
    timm = pytest.importorskip("timm")
    model = build_model("timm:resnet18", num_classes=4)
    assert model.netsurgeon_arch == {"name": "timm:resnet18", "kwargs": {"num_classes": 4}}
    assert _structure(model) == _structure(timm.create_model("resnet18", num_classes=4))
    assert vision.default_input_size("timm:inception_v3") == 299
    cfg = timm.models.get_pretrained_cfg("efficientnet_b3")
    assert vision.default_input_size("timm:efficientnet_b3") == cfg.input_size[-1] != 224
    assert vision.default_input_size("timm:no_such_net") == 224


def test_timm_default_weights_come_through_timm_with_the_head_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timm = pytest.importorskip("timm")
    create, calls = timm.create_model, []

    def served(name: str, **kwargs: object) -> nn.Module:
        """timm's pretrained path, without the download: the weights are marked instead."""
        calls.append((name, dict(kwargs)))
        pretrained = kwargs.pop("pretrained", False)
        model = create(name, **kwargs)
        if pretrained:
            torch.nn.init.constant_(model.conv1.weight, 0.5)
        return model

    monkeypatch.setattr(timm, "create_model", served)
    model = build_model("timm:resnet18.a1_in1k", weights="DEFAULT", num_classes=3)
    assert calls == [("resnet18.a1_in1k", {"pretrained": True, "num_classes": 3})]
    assert bool((model.conv1.weight == 0.5).all()) and model.fc.out_features == 3
    assert model.netsurgeon_arch == {"name": "timm:resnet18.a1_in1k", "kwargs": {"num_classes": 3}}


def test_timm_offline_download_fails_with_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    timm = pytest.importorskip("timm")

    def offline(name: str, **kwargs: object) -> nn.Module:
        raise FileNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(NetsurgeonError) as info:
        build_model("timm:resnet18", weights="DEFAULT")
    message = str(info.value)
    assert message.startswith("could not download the pretrained weights of 'timm:resnet18'")
    assert "--weights none" in message and "--weights PATH" in message


def test_timm_names_timm_does_not_know_or_without_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("timm")
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet1888'; did you mean "
                       r"timm:resnet18\b.*\(timm.list_models\(\) lists every name\)"):  # fmt: skip
        build_model("timm:resnet1888")
    with pytest.raises(ConfigError, match="unknown timm model ''"):
        build_model("timm:")
    with pytest.raises(ConfigError, match=r"^weights='a1_in1k' \(--weights\) for 'timm:resnet18' "
                       r"is neither an existing file nor one of 'none', 'DEFAULT' \(timm's "
                       r"pretrained weights by tag: timm:resnet18.TAG\)$"):  # fmt: skip
        build_model("timm:resnet18", weights="a1_in1k")
    with pytest.raises(ConfigError, match=r"^timm has no pretrained tag 'bogus' for 'resnet18'; "
                       r"its tags: a1_in1k, .*\(give the name without a tag"):  # fmt: skip
        build_model("timm:resnet18.bogus")
    with pytest.raises(ConfigError, match=r"\(\`netsurgeon models\` lists every name; timm "
                       r"models are timm:NAME\)"):  # fmt: skip
        build_model("efficientnet_b00")
    monkeypatch.setitem(sys.modules, "timm", None)  # an import of timm fails
    with pytest.raises(ConfigError, match=r"^timm models \(timm:NAME\) need timm: "
                       r"pip install 'netsurgeon\[timm\]'$"):  # fmt: skip
        build_model("timm:resnet18")
    assert vision.default_input_size("timm:resnet18") == 224


def test_a_pruned_timm_model_saves_and_loads_by_name(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from netsurgeon.pruning import prune

    model = build_model("timm:efficientnet_b0", num_classes=5).eval()
    prune(model, torch.randn(1, 3, 64, 64), amount=0.5)
    io.save(model, tmp_path / "b0.pt")
    loaded = io.load(tmp_path / "b0.pt")
    assert loaded.netsurgeon_arch == model.netsurgeon_arch
    assert _structure(loaded) == _structure(model) and _equal_outputs(model, loaded)
    with pytest.raises(ConfigError, match="unknown timm model 'efficientnet_b00'"):
        io.save(model, tmp_path / "never.pt", arch="timm:efficientnet_b00")
    assert not (tmp_path / "never.pt").exists()


def test_saving_a_model_timm_built_asks_for_its_timm_name(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", num_classes=3)
    with pytest.raises(ConfigError, match=r"pass arch= \(a name from .*, timm:NAME for a timm "
                       r"model, .*\) \(here probably arch='timm:resnet18'\)"):  # fmt: skip
        io.save(model, tmp_path / "r18.pt")
    io.save(model, tmp_path / "r18.pt", arch="timm:resnet18", arch_kwargs={"num_classes": 3})
    assert _equal_outputs(model, io.load(tmp_path / "r18.pt"))


def test_input_normalization_is_imagenets_or_the_timm_models_own() -> None:
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert vision.input_normalization("resnet18") == imagenet
    assert vision.input_normalization("cifar_resnet20") == imagenet
    pytest.importorskip("timm")
    assert vision.input_normalization("timm:resnet18") == imagenet
    assert vision.input_normalization("timm:inception_v3.tf_in1k") == ((0.5,) * 3, (0.5,) * 3)
    assert vision.input_normalization("timm:no_such_net") == imagenet
