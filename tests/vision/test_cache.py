"""Tests of images cached on the training device (``make_loader(..., cache=True)``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from netsurgeon.errors import ConfigError
from netsurgeon.training import TrainConfig, fit
from netsurgeon.vision import cache as cache_module
from netsurgeon.vision.cache import CachedImageLoader, _random_resized_boxes, cache_plan
from netsurgeon.vision.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    build_transforms,
    load_image_data,
    make_loader,
)
from tests.vision.test_data import noise_folder

torch.set_num_threads(1)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# Non-square noise, so that resizing and cropping matter.
_noise_folder = partial(noise_folder, per_class=5, size=(23, 19))


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """Normalised float images back to uint8 values."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.cpu() * std + mean).mul(255).round().to(torch.uint8)


@pytest.mark.parametrize(
    ("size", "image"), [(16, (97, 71)), (80, (97, 71)), (100, (115, 100)), (128, (115, 100))]
)
def test_cached_evaluation_batches_equal_the_cpu_pipeline(
    tmp_path: Path, size: int, image: tuple[int, int]
) -> None:
    # 100 and 128 px of a 115 x 100 image: sizes where cropping the resized image in two
    # steps would land one pixel off the CPU pipeline's single centre crop.
    root = _noise_folder(tmp_path / "noise", size=image)
    dataset = ImageFolderDataset(root, transform=build_transforms(train=False, input_size=size))
    cached = make_loader(dataset, batch_size=4, train=False, num_workers=0, cache=True)
    plain = make_loader(dataset, batch_size=4, train=False, num_workers=0)
    assert isinstance(cached, CachedImageLoader) and isinstance(plain, DataLoader)
    assert len(cached) == len(plain) == 3 and cached.dataset is dataset
    pairs = list(zip(cached, plain, strict=True))
    for (images, labels), (want, want_labels) in pairs:
        assert images.dtype == torch.float32 and images.shape == want.shape
        torch.testing.assert_close(images, want, rtol=0, atol=1e-6)
        assert torch.equal(labels, want_labels)


def test_small_training_batches_are_padded_random_crops_and_flips(tmp_path: Path) -> None:
    root = _noise_folder(tmp_path / "noise", per_class=6)
    dataset = ImageFolderDataset(root, transform=build_transforms(train=True, input_size=16))
    loader = make_loader(dataset, batch_size=5, train=True, num_workers=0, cache=True, seed=2)
    plan = loader.plan
    assert (plan.augment, plan.side, plan.pad) == ("pad_crop", 16, 2)
    order = list(loader.sampler)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [5, 5, 2] and len(loader) == 3
    pad = plan.pad
    padded = torch.nn.functional.pad(loader.images, (pad,) * 4)
    flips = 0
    for position, image in enumerate(_uint8(torch.cat([b[0] for b in batches]))):
        source = padded[order[position]]
        windows = [
            source[:, dy : dy + 16, dx : dx + 16]
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
        ]
        crops = [
            flip
            for window in windows
            for flip in (False, True)
            if torch.equal(image, window.flip(-1) if flip else window)
        ]
        assert crops, f"sample {position} is no padded crop of its image"
        flips += crops[0]
    assert 0 < flips < 12  # both ways occur (12 random images: all alike has odds 2 / 4096)
    labels = torch.cat([b[1] for b in batches])
    assert labels.tolist() == [dataset.targets[i] for i in order]


def test_augmentation_depends_only_on_seed_and_epoch(tmp_path: Path) -> None:
    root = _noise_folder(tmp_path / "noise")
    data = load_image_data(root, input_size=40, val_fraction=0.2, seed=0)

    def epoch_images(seed: int, epoch: int) -> torch.Tensor:
        loader = make_loader(
            data.train, batch_size=3, train=True, num_workers=0, cache=True, seed=seed
        )
        loader.sampler.set_epoch(epoch)
        torch.manual_seed(epoch + 100)  # the global RNG plays no part
        return torch.cat([b[0] for b in loader])

    # A seed as large as TrainConfig allows still seeds the draws.
    assert epoch_images(seed=2**62, epoch=3).shape == (8, 3, 40, 40)
    first = epoch_images(seed=1, epoch=0)
    assert torch.equal(first, epoch_images(seed=1, epoch=0))
    assert not torch.equal(first, epoch_images(seed=1, epoch=1))
    assert not torch.equal(first, epoch_images(seed=2, epoch=0))
    assert first.shape == (8, 3, 40, 40)


def test_resized_crops_stay_in_the_image_and_in_the_transforms_ranges() -> None:
    generator = torch.Generator().manual_seed(0)
    side, scale, ratio = 64, (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = _random_resized_boxes(4000, side, scale, ratio, generator)
    left, top, right, bottom = boxes.unbind(1)
    w, h = right - left, bottom - top
    assert bool((left >= 0).all() and (top >= 0).all())
    assert bool((right <= side).all() and (bottom <= side).all())
    assert bool((w >= 1).all() and (h >= 1).all())
    assert torch.equal(boxes, boxes.round())  # whole pixels, as RandomResizedCrop's
    # Rounding to whole pixels moves a box's share and ratio a little past the ranges.
    share = w * h / side**2
    assert share.min() > 0.05 and share.max() <= 1.0
    aspect = w / h
    assert aspect.min() > 0.7 and aspect.max() < 1.45
    # Boxes that fit on the first try are log-uniform in ratio: both halves are drawn.
    assert (aspect < 1).float().mean().item() == pytest.approx(0.5, abs=0.05)
    whole = _random_resized_boxes(3, side, (1.0, 1.0), (1.0, 1.0), generator)
    assert whole.tolist() == [[0.0, 0.0, 64.0, 64.0]] * 3
    # Nothing fits (a share above the image): the whole image, as torchvision's fallback.
    fallback = _random_resized_boxes(2, side, (1.5, 2.0), (1.0, 1.0), generator)
    assert fallback.tolist() == [[0.0, 0.0, 64.0, 64.0]] * 2


def test_large_training_batches_are_resized_crops_of_the_cached_square(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for name, colour in (("cat", (200, 40, 10)), ("dog", (10, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (120, 90), colour).save(root / name / f"{name}{i}.png")
    dataset = ImageFolderDataset(root, transform=build_transforms(train=True, input_size=72))
    loader = make_loader(dataset, batch_size=4, train=True, num_workers=0, cache=True)
    plan = loader.plan
    assert (plan.augment, plan.side, plan.input_size) == ("resized_crop", 82, 72)
    assert loader.images.shape == (6, 3, 82, 82)
    for images, labels in loader:
        assert images.shape[1:] == (3, 72, 72)
        # Crops of a flat image are flat: every pixel keeps its class's colour.
        for image, label in zip(_uint8(images), labels, strict=True):
            colour = torch.tensor((200, 40, 10) if label == 0 else (10, 40, 200))
            assert torch.equal(image, colour.to(torch.uint8).view(3, 1, 1).expand_as(image))


def test_training_on_a_cached_loader(tmp_path: Path) -> None:
    root = _noise_folder(tmp_path / "noise")
    dataset = ImageFolderDataset(root, transform=build_transforms(train=True, input_size=16))
    loader = make_loader(dataset, batch_size=4, train=True, num_workers=0, cache=True, seed=3)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    history = fit(model, loader, loader, config=TrainConfig(device="cpu", epochs=2, progress=False))
    assert [e.samples for e in history.epochs] == [10, 10]
    assert loader.sampler.epoch == 1  # fit's set_epoch reached the sampler
    dropped = make_loader(
        dataset, batch_size=4, train=True, num_workers=0, cache=True, drop_last=True
    )
    assert len(dropped) == 2 and [len(b[0]) for b in dropped] == [4, 4]


def test_cache_refuses_what_it_cannot_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _noise_folder(tmp_path / "noise")
    custom = ImageFolderDataset(root, transform=T.Compose([T.Resize(16), T.ToTensor()]))
    with pytest.raises(ConfigError, match="needs the transforms of build_transforms"):
        make_loader(custom, batch_size=4, train=False, num_workers=0, cache=True)
    tensors = torch.utils.data.TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4))
    with pytest.raises(ConfigError, match=r"needs an ImageFolderDataset.*TensorDataset"):
        make_loader(tensors, batch_size=4, train=False, num_workers=0, cache=True)
    dataset = ImageFolderDataset(root, transform=build_transforms(train=True, input_size=224))
    monkeypatch.setattr(cache_module, "_free_bytes", lambda device: 2_000_000)
    # 10 images of 3 x 256 x 256 bytes, over half of 2,000,000 bytes (1.9 MiB)
    with pytest.raises(
        ConfigError, match=r"10 images .* at 256x256 needs 1\.9 MiB, over half of the 1\.9 MiB "
        r"free on cpu; train without the cache option"
    ):  # fmt: skip
        make_loader(dataset, batch_size=4, train=True, num_workers=0, cache=True)
    # Under torchrun, each process on the host holds a copy in host memory.
    monkeypatch.setattr(cache_module, "_free_bytes", lambda device: 8_000_000)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"needs 7\.5 MiB \(4 processes, one copy each\)"):
        make_loader(dataset, batch_size=4, train=True, num_workers=0, cache=True)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    # Transforms with other parameters than build_transforms' would be silently ignored.
    for changed in (
        T.Compose([T.RandomResizedCrop(64), T.RandomHorizontalFlip(p=0.0), T.ToTensor(),
                   T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]),
        T.Compose([T.RandomResizedCrop(64, ratio=(2.0, 3.0)), T.RandomHorizontalFlip(),
                   T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]),
        T.Compose([T.Resize(16), T.CenterCrop(16), T.RandomCrop(16, padding=2, fill=9),
                   T.RandomHorizontalFlip(), T.ToTensor(),
                   T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match="build_transforms, unchanged"):
            cache_plan(changed)


@pytest.mark.parametrize(
    ("train", "size", "augment", "side"),
    [(False, 16, None, 16), (True, 16, "pad_crop", 16), (False, 224, None, 224),
     (True, 224, "resized_crop", 256), (True, 100, "resized_crop", 114)],
)  # fmt: skip
def test_cache_plans_of_the_standard_transforms(
    train: bool, size: int, augment: str | None, side: int
) -> None:
    plan = cache_plan(build_transforms(train=train, input_size=size))
    assert (plan.augment, plan.side, plan.input_size) == (augment, side, size)
    assert (plan.mean, plan.std) == (IMAGENET_MEAN, IMAGENET_STD)
    image = Image.new("RGB", (300, 200), (1, 2, 3))
    cached = plan.fit(image)
    assert cached.dtype == torch.uint8 and cached.shape == (3, side, side)
    assert math.isclose(plan.scale[0], 0.08) if augment == "resized_crop" else True


def test_cli_finetune_with_cached_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netsurgeon.cli import main
    from netsurgeon.vision import iterative as it

    fitted: list[tuple[Any, ...]] = []  # fit's (training, validation) loaders
    iterated: list[CachedImageLoader] = []
    real_fit, real_iter = it.fit, CachedImageLoader.__iter__

    def spy_fit(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        fitted.append(args[:2])
        return real_fit(model, *args, **kwargs)

    def spy_iter(self: CachedImageLoader) -> Iterator[list[torch.Tensor]]:
        iterated.append(self)
        return real_iter(self)

    monkeypatch.setattr(it, "fit", spy_fit)
    monkeypatch.setattr(CachedImageLoader, "__iter__", spy_iter)
    root = _noise_folder(tmp_path / "noise", per_class=4)
    out = tmp_path / "ft.pt"
    code = main([
        "finetune", "cifar_resnet20", "--weights", "none", "--data", str(root),
        "--val-fraction", "0.25", "--input-size", "16", "--batch-size", "4", "--epochs", "1",
        "--workers", "0", "--device", "cpu", "--cache-data", "--out", str(out),
    ])  # fmt: skip
    assert code == 0 and out.is_file()
    # Training (augmented: 16 px is CIFAR-style pad-and-crop) and validation both read the
    # images cached on the device, and the epoch went through each of them.
    ((train, val),) = fitted
    assert isinstance(train, CachedImageLoader) and isinstance(val, CachedImageLoader)
    assert (train.plan.augment, val.plan.augment) == ("pad_crop", None)
    assert (len(train.dataset), len(val.dataset)) == (6, 2)
    assert any(loader is train for loader in iterated)
    assert any(loader is val for loader in iterated)


@needs_cuda
def test_cached_batches_on_a_gpu_equal_those_on_the_cpu(tmp_path: Path) -> None:
    root = _noise_folder(tmp_path / "noise", size=(97, 71))
    for size in (16, 80):
        dataset = ImageFolderDataset(root, transform=build_transforms(train=True, input_size=size))
        on_gpu = make_loader(
            dataset, batch_size=4, train=True, num_workers=0, cache=True, device="cuda"
        )
        on_cpu = make_loader(dataset, batch_size=4, train=True, num_workers=0, cache=True)
        assert on_gpu.images.is_cuda
        for (images, labels), (want, want_labels) in zip(on_gpu, on_cpu, strict=True):
            assert images.is_cuda and labels.is_cuda
            # The same crops; roi_align's float sums may round a value to the next integer.
            torch.testing.assert_close(images.cpu(), want, rtol=0, atol=1.01 / 255 / 0.224)
            assert torch.equal(labels.cpu(), want_labels)
