"""Tests of image-folder datasets, transforms and loaders on tiny folders made with PIL."""

from __future__ import annotations

import copy
import io
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset
from torchvision import transforms as T

from netsurgeon.errors import ConfigError
from netsurgeon.training import TrainConfig, evaluate, fit
from netsurgeon.vision import data as data_module
from netsurgeon.vision.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeviceNormalizedLoader,
    ImageFolderDataset,
    KeyedSampler,
    RenormalizedLoader,
    SeededItems,
    SeededRandomSampler,
    build_transforms,
    default_num_workers,
    load_image_data,
    make_loader,
    measure_data_wait,
    split_indices,
)
from netsurgeon.vision.data import _without_normalize as without_normalize

torch.set_num_threads(1)

COLOURS = {"cat": (220, 30, 30), "dog": (30, 30, 220)}


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def make_folder(root: Path, per_class: int = 4, ext: str = "png", **size: int) -> Path:
    for name, colour in COLOURS.items():
        for i in range(per_class):
            shade = tuple(max(0, c - 10 * i) for c in colour)
            write_image(root / name / f"{name}{i}.{ext}", shade, **size)  # type: ignore[arg-type]
    return root


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(buffer, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[:150])
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """``train/`` and ``val/`` with classes cat and dog, plus one corrupt .jpg in train."""
    root = tmp_path / "data"
    make_folder(root / "train", per_class=4)
    make_folder(root / "val", per_class=2)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "train" / "dog" / "notes.txt").write_text("not an image, ignored")
    return root


# --------------------------------------------------------------------------- transforms


def test_eval_transform_resizes_crops_and_normalises() -> None:
    white = Image.new("RGB", (50, 30), (255, 255, 255))
    for size in (16, 96):
        tensor = build_transforms(train=False, input_size=size)(white)
        assert tensor.shape == (3, size, size)
        expected = torch.tensor(
            [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
        )
        assert torch.allclose(tensor.mean(dim=(1, 2)), expected, atol=1e-5)


def test_transforms_and_data_normalise_with_the_mean_and_std_given() -> None:
    white = Image.new("RGB", (50, 30), (255, 255, 255))
    tensor = build_transforms(train=False, input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)(white)
    assert torch.allclose(tensor, torch.full((3, 16, 16), 2.0))
    for bad, message in (
        ({"mean": (0.5, 0.5)}, r"^mean=\(0.5, 0.5\) is not allowed; give 3 numbers, one per"),
        ({"std": (0.5, 0.0, 0.5)}, r"^std=\(0.5, 0.0, 0.5\) is not allowed; give 3 positive"),
        ({"mean": "0.5"}, r"^mean='0.5' is not allowed"),
    ):
        with pytest.raises(ConfigError, match=message):
            build_transforms(train=True, input_size=16, **bad)


def test_load_image_data_normalises_with_the_mean_and_std_given(data_root: Path) -> None:
    data = load_image_data(data_root, input_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, verify=False)
    for part in (data.train, data.val):
        normalize = part.transform.transforms[-1]
        assert list(normalize.mean) == [0.5] * 3 and list(normalize.std) == [0.5] * 3
    with pytest.raises(ConfigError, match="std="):
        load_image_data(data_root, input_size=16, std=(1.0, -1.0, 1.0))


def test_train_transform_augments_and_small_images_are_pad_cropped() -> None:
    ramp = Image.fromarray(
        (torch.arange(32 * 32).reshape(32, 32) % 251).to(torch.uint8).numpy()
    ).convert("RGB")
    small = build_transforms(train=True, input_size=32)
    assert "RandomCrop" in repr(small) and "RandomResizedCrop" not in repr(small)
    large = build_transforms(train=True, input_size=96)
    assert "RandomResizedCrop" in repr(large)
    torch.manual_seed(0)
    outputs = [small(ramp) for _ in range(6)]
    assert all(o.shape == (3, 32, 32) for o in outputs)
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])
    assert build_transforms(train=True, input_size=32, small=False)(ramp).shape == (3, 32, 32)


@pytest.mark.parametrize("size", [0, 4, 32.0, True, "224"])
def test_bad_input_size(size: object) -> None:
    with pytest.raises(ConfigError, match=f"input_size={size!r}"):
        build_transforms(train=True, input_size=size)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- datasets


def test_train_and_val_folders_with_a_corrupt_image(data_root: Path) -> None:
    broken = data_root / "train" / "cat" / "broken.jpg"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_image_data(data_root, input_size=16)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and str(broken) in messages[0] and "skipped 1" in messages[0]
    assert data.classes == ("cat", "dog") and data.num_classes == 2
    assert (len(data.train), len(data.val)) == (8, 4)
    assert data.num_skipped == 1 and data.skipped_files == [broken]
    assert data.train.class_to_idx == {"cat": 0, "dog": 1}
    assert data.train.targets == [0] * 4 + [1] * 4
    image, label = data.val[2]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 16, 16) and label == 1
    # red cats, blue dogs: the normalised red channel is higher for a cat
    cat = data.val[0][0]
    assert cat[0].mean() > cat[2].mean()


def test_valid_is_also_a_validation_folder_name(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", per_class=2)
    make_folder(tmp_path / "valid", per_class=1)
    data = load_image_data(tmp_path, input_size=16)
    assert data.val.root == tmp_path / "valid"


def test_seeded_split_is_stratified_reproducible_and_disjoint(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "flat", per_class=10)
    first = load_image_data(root, input_size=16, val_fraction=0.3, seed=3)
    again = load_image_data(root, input_size=16, val_fraction=0.3, seed=3)
    other = load_image_data(root, input_size=16, val_fraction=0.3, seed=4)
    assert first.classes == ("cat", "dog")
    train_files = {p for p, _ in first.train.samples}
    val_files = {p for p, _ in first.val.samples}
    assert len(val_files) == 6 and len(train_files) == 14 and not train_files & val_files
    assert sorted(first.val.targets) == [0, 0, 0, 1, 1, 1]
    assert first.val.samples == again.val.samples
    assert first.val.samples != other.val.samples
    # training samples augment, validation samples do not
    assert torch.equal(first.val[0][0], first.val[0][0])
    assert "RandomCrop" in repr(first.train.transform)
    assert "RandomCrop" not in repr(first.val.transform)


def test_split_of_the_train_folder_when_root_has_one(data_root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_image_data(data_root, input_size=16, val_fraction=0.5, seed=0)
    assert data.train.root == data_root / "train"
    assert len(data.train) + len(data.val) == 8
    # A bad fraction is an error only (before: the "val/ is not used" warning came first).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match=r"val_fraction=1\.5 \(--val-fraction\)"):
            load_image_data(data_root, input_size=16, val_fraction=1.5)


def test_split_indices_edges() -> None:
    train, val = split_indices([0, 0, 1, 1, 1, 2], val_fraction=0.01, seed=0)
    assert len(val) == 2  # one from each class that has two or more samples
    assert sorted(train + val) == list(range(6))
    for fraction in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ConfigError, match="val_fraction="):
            split_indices([0, 1], val_fraction=fraction, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="leaves no validation sample"):
        split_indices([0, 1], val_fraction=0.5, seed=0)


def test_bad_folders_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match=f"{missing} does not exist"):
        load_image_data(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"{empty} is empty"):
        load_image_data(empty, val_fraction=0.2)
    flat = tmp_path / "flat"
    write_image(flat / "a.png", (1, 2, 3))
    with pytest.raises(ConfigError, match=f"{flat} has no class sub-folders"):
        load_image_data(flat, val_fraction=0.2)
    file = flat / "a.png"
    with pytest.raises(ConfigError, match=f"{file} is not a folder"):
        ImageFolderDataset(file)
    no_images = tmp_path / "no_images"
    (no_images / "cat").mkdir(parents=True)
    (no_images / "cat" / "readme.txt").write_text("x")
    with pytest.raises(ConfigError, match=f"class folder {no_images / 'cat'} holds no images"):
        ImageFolderDataset(no_images)
    unreadable = tmp_path / "unreadable"
    (unreadable / "cat").mkdir(parents=True)
    (unreadable / "cat" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(ConfigError, match=r"no readable images \(1 unreadable; first: .*x\.jpg"):
        ImageFolderDataset(unreadable)
    split_only = make_folder(tmp_path / "split_only", per_class=2)
    with pytest.raises(ConfigError, match="no train/ and val/ sub-folders; pass val_fraction"):
        load_image_data(split_only)
    # train/ without val/ is named as such, and splits; a split of train/ beside val/ warns
    # that val/ is not used (before: silently).
    layout = tmp_path / "layout"
    make_folder(layout / "train", per_class=4)
    with pytest.raises(ConfigError, match=(
        rf"^data folder {layout} has train/ but no val/ sub-folder; pass val_fraction "
        r"\(--val-fraction F\) to split train/ into training and validation$"
    )):  # fmt: skip
        load_image_data(layout)
    assert len(load_image_data(layout, val_fraction=0.5).val) == 4
    make_folder(layout / "val", per_class=2)
    with pytest.warns(UserWarning, match=(
        rf"^val_fraction \(--val-fraction\) splits {layout / 'train'} for validation; "
        rf"{layout / 'val'} is not used \(leave val_fraction out to validate on it\)$"
    )):  # fmt: skip
        assert len(load_image_data(layout, val_fraction=0.5).val) == 4
    assert len(load_image_data(layout).val) == 4


def test_num_classes_must_match_the_data(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=2)
    with pytest.raises(
        ConfigError, match=rf"num_classes=3 \(--num-classes\) contradicts the data: {root} has 2"
    ):
        load_image_data(root, val_fraction=0.5, num_classes=3)
    assert load_image_data(root, val_fraction=0.5, num_classes=2).num_classes == 2
    with pytest.raises(ConfigError, match="num_classes=0"):
        ImageFolderDataset(root, num_classes=0)


def test_train_and_val_classes_must_agree(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", per_class=1)
    write_image(tmp_path / "val" / "cat" / "a.png", (1, 1, 1))
    write_image(tmp_path / "val" / "bird" / "a.png", (1, 1, 1))
    with pytest.raises(ConfigError) as info:
        load_image_data(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "train") in message and str(tmp_path / "val") in message
    assert "only in train: ['dog']" in message and "only in val: ['bird']" in message


def test_an_image_that_fails_at_load_time_is_replaced_counted_and_warned_once(
    tmp_path: Path,
) -> None:
    root = make_folder(tmp_path / "d", per_class=3)
    bad = truncated_jpeg(root / "cat" / "cut.jpg")
    dataset = ImageFolderDataset(
        root, transform=build_transforms(train=False, input_size=16), verify=False
    )
    assert len(dataset) == 7 and dataset.num_skipped == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two epochs: the bad file is tried once, then skipped
            batches = list(DataLoader(dataset, batch_size=4))
    assert len(caught) == 1 and str(bad) in str(caught[0].message)
    assert sum(len(labels) for _, labels in batches) == 7  # batches keep their size
    assert dataset.num_skipped == 1 and dataset.skipped_files == [bad]
    # a verified scan catches the same file up front
    with pytest.warns(UserWarning, match="cut.jpg"):
        verified = ImageFolderDataset(root, verify=True)
    assert len(verified) == 6 and verified.skipped_files == [bad]


@pytest.mark.slow
def test_skips_in_loader_workers_are_counted_in_the_main_process(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=3)
    bad = truncated_jpeg(root / "dog" / "cut.jpg")
    dataset = ImageFolderDataset(
        root, transform=build_transforms(train=False, input_size=16), verify=False
    )
    loader = make_loader(dataset, batch_size=4, train=True, num_workers=2)
    assert loader.persistent_workers
    seen = sum(len(labels) for _, labels in loader)
    assert seen == 7
    assert dataset.num_skipped == 1 and dataset.skipped_files == [bad]


def test_datasets_survive_copying(data_root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_image_data(data_root, input_size=16)
    clone = copy.deepcopy(data.train)
    assert clone.samples == data.train.samples and clone.num_skipped == 1
    assert clone[0][0].shape == (3, 16, 16)
    assert isinstance(clone.subset([0])[0][0], Image.Image)  # no transform: a PIL image
    assert [clone[i][1] for i in range(len(clone))] == data.train.targets
    assert [label for _, label in clone] == data.train.targets  # iteration stops at the end
    assert clone[-1][1] == 1
    with pytest.raises(IndexError):
        clone[len(clone)]


# --------------------------------------------------------------------------- loaders


def test_seeded_sampler_depends_only_on_seed_and_epoch() -> None:
    data = list(range(20))
    a, b = SeededRandomSampler(data, seed=1), SeededRandomSampler(data, seed=1)
    assert list(a) == list(b) and sorted(a) == data and list(a) != data
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == data
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(SeededRandomSampler(data, seed=2)) != first
    assert len(a) == 20


def _first_batches(loader: Any, epoch: int, n: int = 2) -> torch.Tensor:
    loader.sampler.set_epoch(epoch)
    batches = []
    for inputs, _ in loader:
        batches.append(inputs)
        if len(batches) == n:
            break
    return torch.cat(batches)


def test_augmentation_depends_on_seed_epoch_and_index_not_on_loader_processes(
    tmp_path: Path,
) -> None:
    dataset = ImageFolderDataset(
        noise_folder(tmp_path / "d", per_class=6, size=(40, 30)),
        transform=build_transforms(train=True, input_size=16),
    )
    single = make_loader(dataset, batch_size=4, train=True, num_workers=0, seed=3)
    workers = make_loader(dataset, batch_size=4, train=True, num_workers=2, seed=3)
    reference = _first_batches(single, 0)
    _first_batches(workers, 1)  # the kept-alive workers' random streams move on...
    assert torch.equal(_first_batches(workers, 0), reference)  # ...and change nothing
    assert not torch.equal(_first_batches(single, 1), reference)  # another epoch's crops
    other_seed = make_loader(dataset, batch_size=4, train=True, num_workers=0, seed=4)
    assert not torch.equal(_first_batches(other_seed, 0), reference)


def test_seeded_items_restore_the_callers_random_streams() -> None:
    class Draws:
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> tuple[float, float]:
            return torch.rand(()).item(), random.random()

    items = SeededItems(Draws())
    torch.manual_seed(1)
    random.seed(1)
    expected = torch.rand(2), random.random()
    torch.manual_seed(1)
    random.seed(1)
    assert items[(0, 7)] == items[(3, 7)] != items[(0, 8)]  # the key's seed decides
    assert torch.equal(torch.rand(2), expected[0]) and random.random() == expected[1]


def test_make_loader_defaults(tmp_path: Path) -> None:
    dataset = ImageFolderDataset(
        make_folder(tmp_path / "d", per_class=2),
        transform=build_transforms(train=False, input_size=16),
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_num_workers() == min(4, cores or 1)
    train = make_loader(dataset, batch_size=3, train=True, num_workers=0, seed=5)
    assert isinstance(train.sampler, KeyedSampler) and train.sampler.seed == 5
    shuffle = train.sampler.sampler
    assert isinstance(shuffle, SeededRandomSampler) and shuffle.seed == 5
    assert train.pin_memory == torch.cuda.is_available()
    assert not train.persistent_workers
    evaluation = make_loader(dataset, batch_size=3, train=False, num_workers=0)
    assert isinstance(evaluation.sampler, SequentialSampler)
    assert [labels.tolist() for _, labels in evaluation] == [[0, 0, 1], [1]]
    with pytest.raises(ConfigError, match="batch_size=0"):
        make_loader(dataset, batch_size=0, train=True)
    with pytest.raises(ConfigError, match="num_workers=-1"):
        make_loader(dataset, batch_size=1, train=True, num_workers=-1)


@pytest.mark.parametrize("cache", [False, True])
def test_a_last_training_batch_of_one_sample_is_dropped(
    tmp_path: Path, cache: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a lone last sample reached BatchNorm on 1x1 maps (resnet18 at 32 px), which
    cannot train on it, and the run ended in a stack trace."""
    folder = make_folder(tmp_path / "d", per_class=2)  # 4 images
    dataset = ImageFolderDataset(folder, transform=build_transforms(train=True, input_size=16))
    with caplog.at_level("INFO", logger="netsurgeon.vision.data"):
        train = make_loader(dataset, batch_size=3, train=True, num_workers=0, cache=cache)
    assert [len(labels) for _, labels in train] == [3]
    assert "the last batch, of one sample, is dropped each epoch" in caplog.text
    kept = make_loader(dataset, batch_size=2, train=True, num_workers=0, cache=cache)
    assert [len(labels) for _, labels in kept] == [2, 2]
    evaluation = make_loader(dataset, batch_size=3, train=False, num_workers=0, cache=cache)
    assert [len(labels) for _, labels in evaluation] == [3, 1]  # every sample evaluated
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 16), torch.nn.BatchNorm2d(4)).train()
    for images, _ in train:
        model(images)  # 1x1 maps: a batch of one would raise


def test_a_link_up_the_tree_is_skipped_and_a_linked_folder_read_once(tmp_path: Path) -> None:
    """Before: train/cat/up -> .. read every class as cat, over and over, until ELOOP."""
    root = make_folder(tmp_path / "d", per_class=2)
    (root / "cat" / "up").symlink_to("..")
    (root / "dog" / "again").symlink_to(".")
    (root / "dog" / "inner").mkdir()
    (root / "dog" / "twice").symlink_to("inner")
    Image.new("RGB", (4, 4)).save(root / "dog" / "inner" / "x.png")
    with pytest.warns(UserWarning) as record:
        dataset = ImageFolderDataset(root, verify=False)
    skipped = sorted(str(w.message).split(":")[0] for w in record)
    assert skipped == [f"skipped {root / 'cat' / 'up'}", f"skipped {root / 'dog' / 'again'}"]
    assert sorted(dataset.targets) == [0, 0, 1, 1, 1]  # cat 2, dog 2 + inner/x.png once


def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    """Before: 16-bit, 32-bit and float images were clipped at 255: most turned white."""
    levels = np.array([[0, 5000], [30000, 65535]])
    images = {
        "i16.png": Image.fromarray(levels.astype(np.uint16)),
        "i32.tif": Image.fromarray(levels.astype(np.int32)),
        "small_i32.tif": Image.fromarray((levels // 257).astype(np.int32)),
        "f.tif": Image.fromarray((levels / 65535).astype(np.float32)),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as opened:
            rgb = np.asarray(data_module._to_rgb(opened))
        assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
        np.testing.assert_allclose(rgb[..., 0], [[0, 19], [117, 255]], atol=1, err_msg=name)
        assert (rgb == rgb[..., :1]).all()  # grey
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 40))
    assert np.asarray(data_module._to_rgb(rgba))[0, 0].tolist() == [10, 20, 30]


def noise_folder(root: Path, per_class: int = 3, size: tuple[int, int] = (19, 21)) -> Path:
    """Classes cat and dog of random-noise PNGs of ``size`` (width, height)."""
    generator = torch.Generator().manual_seed(1)
    for name in COLOURS:
        for i in range(per_class):
            pixels = torch.randint(0, 256, (*size[::-1], 3), dtype=torch.uint8, generator=generator)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.numpy()).save(root / name / f"{name}{i}.png")
    return root


@pytest.mark.parametrize(("train", "size"), [(False, 16), (True, 16), (False, 80), (True, 80)])
def test_standard_transforms_split_into_uint8_and_normalize(train: bool, size: int) -> None:
    transform = build_transforms(train=train, input_size=size)
    uint8, mean, std = without_normalize(transform)
    assert (mean, std) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert type(uint8.transforms[-1]).__name__ == "PILToTensor"
    assert uint8.transforms[:-1] == transform.transforms[:-2]
    image = Image.new("RGB", (20, 18), (200, 100, 50))
    assert uint8(image).dtype == torch.uint8 and uint8(image).shape == (3, size, size)
    assert without_normalize(lambda image: image) is None
    assert without_normalize(transform.transforms[-1]) is None


def test_device_normalized_batches_equal_the_cpu_pipeline(tmp_path: Path) -> None:
    root = noise_folder(tmp_path / "noise")
    transform = build_transforms(train=False, input_size=16)
    dataset = ImageFolderDataset(root, transform=transform)
    plain = make_loader(dataset, batch_size=4, train=False, num_workers=0, device="cpu")
    assert isinstance(plain, DataLoader)  # the CPU keeps the float pipeline
    uint8, mean, std = without_normalize(transform)
    raw = make_loader(
        dataset.subset(range(len(dataset)), transform=uint8),
        batch_size=4,
        train=False,
        num_workers=0,
    )
    moved = DeviceNormalizedLoader(raw, device="cpu", mean=mean, std=std)
    assert len(moved) == len(plain) == 2 and moved.batch_size == 4
    assert moved.sampler is raw.sampler
    pairs = list(zip(plain, moved, strict=True))
    for (images, labels), (got, got_labels) in pairs:
        assert got.dtype == torch.float32 and got.shape == images.shape
        torch.testing.assert_close(got, images, rtol=0, atol=1e-6)
        assert torch.equal(got_labels, labels)


def test_training_reads_a_device_normalized_loader(tmp_path: Path) -> None:
    root = noise_folder(tmp_path / "noise")
    transform = build_transforms(train=True, input_size=16)
    uint8, mean, std = without_normalize(transform)
    dataset = ImageFolderDataset(root, transform=uint8)
    loader = make_loader(dataset, batch_size=4, train=True, num_workers=0, seed=3)
    moved = DeviceNormalizedLoader(loader, device="cpu", mean=mean, std=std)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    history = fit(model, moved, moved, config=TrainConfig(device="cpu", epochs=2, progress=False))
    assert [e.samples for e in history.epochs] == [6, 6]
    assert loader.sampler.epoch == 1  # set_epoch reached the wrapped sampler


def test_renormalized_batches_equal_images_normalised_the_other_way(tmp_path: Path) -> None:
    """compare-models gives each model its images normalised as its weights expect."""
    root = noise_folder(tmp_path / "noise")
    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    def loader(mean: Any, std: Any) -> Any:
        transform = build_transforms(train=False, input_size=16, mean=mean, std=std)
        dataset = ImageFolderDataset(root, transform=transform)
        return make_loader(dataset, batch_size=4, train=False, num_workers=0)

    imagenet = loader(IMAGENET_MEAN, IMAGENET_STD)
    renormalized = RenormalizedLoader(
        imagenet, mean=IMAGENET_MEAN, std=IMAGENET_STD, to_mean=half[0], to_std=half[1]
    )
    assert len(renormalized) == 2 and renormalized.sampler is imagenet.sampler
    pairs = list(zip(loader(*half), renormalized, strict=True))
    for (images, labels), (got, got_labels) in pairs:
        torch.testing.assert_close(got, images, rtol=0, atol=1e-5)
        assert torch.equal(got_labels, labels)
    with pytest.raises(ConfigError, match=r"std=\(0.5, 0.0, 0.5\) is not allowed"):
        RenormalizedLoader(imagenet, mean=half[0], std=(0.5, 0.0, 0.5), to_mean=half[0],
                           to_std=half[1])  # fmt: skip


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_make_loader_refuses_cuda_without_a_gpu(tmp_path: Path) -> None:
    root = noise_folder(tmp_path / "noise")
    dataset = ImageFolderDataset(root, transform=build_transforms(train=False, input_size=16))
    with pytest.raises(ConfigError, match="cuda"):
        make_loader(dataset, batch_size=4, train=False, num_workers=0, device="cuda")


@needs_cuda
def test_make_loader_normalizes_on_the_gpu_only_for_standard_image_folders(
    tmp_path: Path,
) -> None:
    root = noise_folder(tmp_path / "noise")
    dataset = ImageFolderDataset(root, transform=build_transforms(train=False, input_size=16))
    moved = make_loader(dataset, batch_size=4, train=False, num_workers=0, device="cuda")
    assert isinstance(moved, DeviceNormalizedLoader)
    plain = make_loader(dataset, batch_size=4, train=False, num_workers=0)
    for (images, labels), (got, got_labels) in zip(plain, moved, strict=True):
        assert got.is_cuda and got_labels.is_cuda
        torch.testing.assert_close(got.cpu(), images, rtol=0, atol=1e-6)
        assert torch.equal(got_labels.cpu(), labels)
    custom = ImageFolderDataset(root, transform=T.Compose([T.Resize(16), T.ToTensor()]))
    kept = make_loader(custom, batch_size=4, train=False, num_workers=0, device="cuda")
    assert isinstance(kept, DataLoader)


class SlowDataset(Dataset):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        time.sleep(self.delay)
        return torch.zeros(2), 0


def test_measure_data_wait_share() -> None:
    slow = DataLoader(SlowDataset(0.02), batch_size=2)
    bare = measure_data_wait(slow)
    assert bare.batches == 3 and bare.wait_share > 0.9
    busy = measure_data_wait(
        DataLoader(SlowDataset(0.0), batch_size=2), step=lambda _: time.sleep(0.03), max_batches=2
    )
    assert busy.batches == 2 and busy.wait_share < 0.3
    assert busy.total_s >= 0.06 and busy.wait_s <= busy.total_s


@pytest.mark.parametrize("started", [False, True])
def test_measure_data_wait_synchronizes_only_a_started_gpu(
    monkeypatch: pytest.MonkeyPatch, started: bool
) -> None:
    # On a GPU machine, a CPU-only pass must not pay for starting CUDA (seen on an H200:
    # the share fell from over 0.9 to 0.39); a pass that used the GPU must wait for it.
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: started)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: calls.append("sync"))
    report = measure_data_wait(DataLoader(SlowDataset(0.0), batch_size=2))
    assert report.batches == 3
    assert calls == (["sync"] if started else [])


# --------------------------------------------------------------------------- end to end


class ColourNet(nn.Module):
    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_on_an_image_folder_matches_an_uninterrupted_run(
    tmp_path: Path, workers: int
) -> None:
    # Noise images, so that random crops and flips change the batches.
    root = noise_folder(tmp_path / "d", per_class=6, size=(24, 24))
    data = load_image_data(root, input_size=16, val_fraction=0.25, seed=0)
    train = make_loader(data.train, batch_size=3, train=True, num_workers=workers, seed=1)
    val = make_loader(data.val, batch_size=4, train=False, num_workers=0)
    config = TrainConfig(device="cpu", epochs=2, lr=0.05, progress=False)

    torch.manual_seed(0)
    reference = ColourNet()
    fit(reference, train, val, config=config)

    path = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    fit(
        ColourNet(),
        train,
        val,
        config=TrainConfig(device="cpu", epochs=1, lr=0.05, progress=False),
        checkpoint_path=path,
    )
    resumed = ColourNet()
    fit(resumed, train, val, config=config, checkpoint_path=path, resume=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.shared
def test_fine_tune_on_real_hymenoptera_jpegs(shared_dir: Path) -> None:
    root = shared_dir / "data" / "hymenoptera"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    data = load_image_data(root, input_size=64, num_classes=2)
    assert data.classes == ("ants", "bees") and data.num_skipped == 0
    assert (len(data.train), len(data.val)) == (244, 153)
    g = torch.Generator().manual_seed(0)
    train_idx = torch.randperm(len(data.train), generator=g)[:64].tolist()
    val_idx = torch.randperm(len(data.val), generator=g)[:48].tolist()
    train = make_loader(Subset(data.train, train_idx), batch_size=16, train=True, num_workers=0)
    val = make_loader(Subset(data.val, val_idx), batch_size=16, train=False, num_workers=0)
    images, labels = next(iter(train))
    assert images.shape == (16, 3, 64, 64) and set(labels.tolist()) <= {0, 1}
    model = ColourNet()
    history = fit(
        model, train, val, config=TrainConfig(device="cpu", epochs=1, lr=0.01, progress=False)
    )
    record = history.last
    assert record is not None and record.samples == 64 and record.steps == 4
    assert math.isfinite(record.train_loss) and record.val_accuracy is not None
    assert 0 <= record.val_accuracy <= 1
    assert record.val_accuracy == pytest.approx(evaluate(model, val, device="cpu")["accuracy"])


def test_fingerprint_tells_changed_files_apart_without_opening_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a resume compares to notice a data folder whose files changed under its path."""
    root = make_folder(tmp_path / "flat", per_class=4)

    def fingerprint(folder: Path = root) -> dict[str, Any]:
        return load_image_data(folder, input_size=16, val_fraction=0.25).fingerprint()

    first = fingerprint()
    assert set(first) == {"data_train_images", "data_val_images", "data_sha256"}
    assert (first["data_train_images"], first["data_val_images"]) == (6, 2)
    assert len(first["data_sha256"]) == 64 and fingerprint() == first
    # Relative paths: the same files elsewhere give the same fingerprint (the path is
    # recorded apart).
    copied = tmp_path / "copy"
    for path in root.rglob("*.png"):
        (copied / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        (copied / path.relative_to(root)).write_bytes(path.read_bytes())
    assert fingerprint(copied) == first
    # Sizes only: no image is opened (folders can be large).
    data = load_image_data(root, input_size=16, val_fraction=0.25)
    monkeypatch.setattr("netsurgeon.vision.data.Image.open", _no_open)
    assert data.fingerprint() == first
    monkeypatch.undo()
    # A file rewritten at another size, renamed, or added: each changes the fingerprint.
    write_image(root / "cat" / "cat0.png", (1, 2, 3), size=(40, 30))
    resized = fingerprint()
    assert resized["data_sha256"] != first["data_sha256"]
    assert resized["data_train_images"] == 6 and resized["data_val_images"] == 2
    (root / "dog" / "dog1.png").rename(root / "dog" / "dog9.png")
    renamed = fingerprint()
    assert renamed["data_sha256"] not in (first["data_sha256"], resized["data_sha256"])
    write_image(root / "dog" / "dog5.png", (30, 30, 200))
    added = fingerprint()
    assert (added["data_train_images"], added["data_val_images"]) == (7, 2)
    # train/ and val/ folders: which split a file is in counts.
    split = tmp_path / "split"
    make_folder(split / "train", per_class=3)
    make_folder(split / "val", per_class=1)
    before = load_image_data(split, input_size=16).fingerprint()
    assert (before["data_train_images"], before["data_val_images"]) == (6, 2)
    (split / "train" / "cat" / "cat2.png").rename(split / "val" / "cat" / "cat2.png")
    after = load_image_data(split, input_size=16).fingerprint()
    assert (after["data_train_images"], after["data_val_images"]) == (5, 3)


def _no_open(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the fingerprint must not open any image")
