"""Image-folder datasets, their standard transforms, and data loaders for fine-tuning.

The layout is torchvision's ImageFolder: ``root/<class>/<image>``. Either ``root`` holds
``train/`` and ``val/`` folders of that layout, or one such folder is split with a seed.
Bad folders raise one :class:`~netsurgeon.errors.ConfigError` that names the path; unreadable
images are skipped, counted and reported in a single warning.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import multiprocessing
import multiprocessing.context
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info
from torchvision import transforms as T

from netsurgeon.distributed import is_distributed
from netsurgeon.errors import ConfigError, NetsurgeonError
from netsurgeon.training import (
    FINGERPRINT_KEYS,
    DataWaitTimer,
    init_distributed,
    resolve_device,
)

if TYPE_CHECKING:
    from netsurgeon.vision.cache import CachedImageLoader

__all__ = [
    "FINGERPRINT_KEYS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "DataWaitReport",
    "DeviceNormalizedLoader",
    "ImageData",
    "ImageFolderDataset",
    "RenormalizedLoader",
    "SeededRandomSampler",
    "build_transforms",
    "default_num_workers",
    "load_image_data",
    "make_loader",
    "measure_data_wait",
    "split_indices",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IMG_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
_TRAIN_NAMES = ("train",)
_VAL_NAMES = ("val", "valid", "validation")
# Inputs at or below this size get CIFAR-style pad-and-crop augmentation instead of
# RandomResizedCrop, which throws away too much of a tiny image.
_SMALL_INPUT_MAX = 64
# What PIL raises for files it cannot identify or decode.
_IMAGE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)

Transform = Callable[[Image.Image], Any]

log = logging.getLogger(__name__)


def _to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, scaling high-bit-depth pixels rather than clipping them.

    Pillow's ``convert("RGB")`` clips 16-bit, 32-bit integer and float pixels at 255, which
    turns most such images white. Here 16-bit pixels are scaled down by 256; 32-bit integer
    ones likewise where any exceeds 255 (16-bit data stored as 32 bits), and float ones are
    scaled from [0, 1] where they fit in it. Other pixels are clipped to [0, 255].
    """
    if image.mode.startswith("I;16"):
        pixels = np.asarray(image).astype(np.int64) >> 8
    elif image.mode == "I":
        pixels = np.asarray(image).astype(np.int64)
        pixels = pixels.clip(0, 65535) >> 8 if pixels.max(initial=0) > 255 else pixels
    elif image.mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if pixels.size and pixels.min() >= 0 and pixels.max() <= 1:
            pixels = pixels * 255
        pixels = pixels.round()
    else:
        return image.convert("RGB")
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).convert("RGB")


def _check_normalization(mean: Any, std: Any) -> tuple[list[float], list[float]]:
    """``mean`` and ``std`` as lists of 3 floats, the standard deviations positive."""
    checked = []
    for label, value in (("mean", mean), ("std", std)):
        ok = isinstance(value, (list, tuple)) and len(value) == 3
        ok = ok and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
        if not ok or (label == "std" and min(value) <= 0):
            rule = "3 positive numbers" if label == "std" else "3 numbers"
            raise ConfigError(f"{label}={value!r} is not allowed; give {rule}, one per channel")
        checked.append([float(v) for v in value])
    return checked[0], checked[1]


def build_transforms(
    *,
    train: bool,
    input_size: int = 224,
    small: bool | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Transform:
    """The standard transforms for fine-tuning, normalised as ImageNet models expect.

    Args:
        train: Augmenting training transforms, or deterministic evaluation ones.
        input_size: Side of the square tensor the model receives.
        small: CIFAR-style transforms for small images (resize, random crop after padding
            by ``input_size // 8``, which is 4 at 32 px, and flip) instead of ImageNet-style
            ones (RandomResizedCrop and flip for training; resize to ``input_size * 256 / 224``
            and centre crop for evaluation). ``None`` picks small when ``input_size <= 64``.
        mean: Per-channel mean subtracted from the ``[0, 1]`` pixels (ImageNet's by default;
            :func:`netsurgeon.vision.input_normalization` gives a model's own).
        std: Per-channel standard deviation they are divided by.

    Returns:
        A callable from a PIL image to a normalised ``3 x input_size x input_size`` tensor.

    Raises:
        ConfigError: ``input_size`` is not an integer of at least 8, or ``mean`` / ``std``
            are not 3 numbers (positive ones for ``std``).
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8:
        raise ConfigError(
            f"input_size={input_size!r} (--input-size) is not allowed; use an integer >= 8"
        )
    mean, std = _check_normalization(mean, std)
    if small is None:
        small = input_size <= _SMALL_INPUT_MAX
    finish = [T.ToTensor(), T.Normalize(mean, std)]
    if small:
        fit = [T.Resize(input_size), T.CenterCrop(input_size)]
        if train:
            pad = max(1, input_size // 8)
            return T.Compose(
                [*fit, T.RandomCrop(input_size, padding=pad), T.RandomHorizontalFlip(), *finish]
            )
        return T.Compose([*fit, *finish])
    if train:
        return T.Compose([T.RandomResizedCrop(input_size), T.RandomHorizontalFlip(), *finish])
    resize = round(input_size * 256 / 224)
    return T.Compose([T.Resize(resize), T.CenterCrop(input_size), *finish])


class _SkipLog:
    """Which samples of one folder scan turned out unreadable, shared with loader workers.

    Worker processes decode images, so the flags live in shared memory: the main process
    sees every skip, and all processes together warn only once.
    """

    def __init__(self, num_samples: int) -> None:
        self.flags: Any = multiprocessing.RawArray(ctypes.c_bool, max(1, num_samples))
        self.warned: Any = multiprocessing.Value(ctypes.c_bool, False)

    def mark(self, index: int) -> None:
        self.flags[index] = True

    def is_bad(self, index: int) -> bool:
        return bool(self.flags[index])

    def bad_indices(self) -> list[int]:
        return [i for i, bad in enumerate(self.flags) if bad]

    def warn_once(self, message: str) -> None:
        with self.warned.get_lock():
            if self.warned.value:
                return
            self.warned.value = True
        warnings.warn(message, stacklevel=3)

    def merge_processes(self) -> None:
        """Under ``torch.distributed``, mark what any process found unreadable.

        Each process loads its own shard, so each saw only its own unreadable files.
        """
        if not is_distributed():
            return
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        flags = torch.tensor(list(self.flags), dtype=torch.uint8, device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        for i in flags.nonzero().flatten().tolist():
            self.flags[i] = True

    def __getstate__(self) -> dict[str, Any]:
        # Shared ctypes can only travel to a process being started (DataLoader workers);
        # any other pickling (deepcopy, saving) gets a private copy instead of failing.
        if multiprocessing.context.get_spawning_popen() is not None:
            return {"flags": self.flags, "warned": self.warned, "shared": True}
        return {"flags": list(self.flags), "warned": bool(self.warned.value), "shared": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["shared"]:
            self.flags, self.warned = state["flags"], state["warned"]
            return
        self.flags = multiprocessing.RawArray(ctypes.c_bool, state["flags"])
        self.warned = multiprocessing.Value(ctypes.c_bool, state["warned"])


@dataclass
class _FolderScan:
    """The result of scanning one ImageFolder: classes, readable samples, skipped files."""

    root: Path
    classes: tuple[str, ...]
    samples: list[tuple[Path, int]]
    scan_skipped: list[Path]
    log: _SkipLog = field(repr=False)


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise ConfigError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise ConfigError(f"data folder {root} is not a folder")
    if not any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise ConfigError(f"data folder {root} is empty")


def _image_files(folder: Path) -> list[Path]:
    found = []
    top = os.path.realpath(folder)
    visited: set[str] = set()  # real paths: a folder linked twice is read once
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            target = os.path.realpath(os.path.join(dirpath, name))
            if top == target or top.startswith(target.rstrip(os.sep) + os.sep):
                # A link up the tree would read the class folder (and its siblings) forever.
                warnings.warn(
                    f"skipped {os.path.join(dirpath, name)}: it links to {target}, a folder "
                    f"that holds {folder}",
                    stacklevel=4,
                )
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS):
                found.append(Path(dirpath) / name)
    return found


def _readable(path: Path) -> str | None:
    """``None`` when PIL can identify and verify ``path``, else the reason it cannot."""
    try:
        with Image.open(path) as image:
            image.verify()
    except _IMAGE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _scan_folder(root: str | os.PathLike[str], *, verify: bool) -> _FolderScan:
    root = Path(root)
    _check_folder(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ConfigError(
            f"data folder {root} has no class sub-folders; expected the ImageFolder layout "
            f"{root}/<class>/<image>"
        )
    classes = tuple(p.name for p in class_dirs)
    samples: list[tuple[Path, int]] = []
    skipped: list[tuple[Path, str]] = []
    for label, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        if not files:
            raise ConfigError(
                f"class folder {class_dir} holds no images (looked for {', '.join(IMG_EXTENSIONS)})"
            )
        for path in files:
            reason = _readable(path) if verify else None
            if reason is None:
                samples.append((path, label))
            else:
                skipped.append((path, reason))
    if not samples:
        detail = f"; first: {skipped[0][0]} ({skipped[0][1]})" if skipped else ""
        raise ConfigError(
            f"data folder {root} holds no readable images ({len(skipped)} unreadable{detail})"
        )
    scan = _FolderScan(root, classes, samples, [p for p, _ in skipped], _SkipLog(len(samples)))
    if skipped:
        first, reason = skipped[0]
        scan.log.warn_once(
            f"skipped {len(skipped)} unreadable image(s) in {root}; first: {first} ({reason})"
        )
    return scan


class ImageFolderDataset(Dataset[tuple[Any, int]]):
    """An ImageFolder (``root/<class>/<image>``) that skips unreadable images.

    Files PIL cannot identify or verify are skipped while scanning. A file that still fails
    to decode later is replaced by the next readable sample, so a batch keeps its size and
    training goes on; either way the file is counted in :attr:`num_skipped`, listed in
    :attr:`skipped_files`, and the first one is named in a single warning.

    Args:
        root: The folder with one sub-folder per class.
        transform: Applied to each RGB PIL image; ``None`` returns the image.
        verify: Check every file with PIL's ``verify()`` while scanning (cheap: headers and
            compressed data, no decoding to pixels).
        num_classes: When given, the number of class folders must equal it.

    Raises:
        ConfigError: The folder is missing or empty, has no class sub-folders, a class folder
            has no images, no image is readable, or ``num_classes`` contradicts the data.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        transform: Transform | None = None,
        verify: bool = True,
        num_classes: int | None = None,
    ) -> None:
        scan = _scan_folder(root, verify=verify)
        _check_num_classes(num_classes, scan.classes, scan.root)
        self._scan = scan
        self._indices = list(range(len(scan.samples)))
        self.transform = transform

    @classmethod
    def _from_scan(
        cls, scan: _FolderScan, indices: Sequence[int], transform: Transform | None
    ) -> ImageFolderDataset:
        dataset = cls.__new__(cls)
        dataset._scan = scan
        dataset._indices = list(indices)
        dataset.transform = transform
        return dataset

    def subset(
        self, indices: Sequence[int], *, transform: Transform | None = None
    ) -> ImageFolderDataset:
        """The samples at ``indices`` (positions in this dataset) with another transform."""
        return self._from_scan(self._scan, [self._indices[i] for i in indices], transform)

    @property
    def root(self) -> Path:
        """The scanned folder."""
        return self._scan.root

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, sorted; a sample's label is its class's position here."""
        return self._scan.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name to label."""
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def samples(self) -> list[tuple[Path, int]]:
        """``(path, label)`` of every sample, in order."""
        return [self._scan.samples[i] for i in self._indices]

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [self._scan.samples[i][1] for i in self._indices]

    @property
    def skipped_files(self) -> list[Path]:
        """Unreadable files of the scanned folder: found while scanning or while loading."""
        at_load = [self._scan.samples[i][0] for i in self._scan.log.bad_indices()]
        return [*self._scan.scan_skipped, *at_load]

    @property
    def num_skipped(self) -> int:
        """How many files of the scanned folder were skipped as unreadable."""
        return len(self.skipped_files)

    def __len__(self) -> int:
        return len(self._indices)

    def _load(self, scan_index: int) -> Image.Image | None:
        path = self._scan.samples[scan_index][0]
        try:
            with Image.open(path) as image:
                return _to_rgb(image)
        except _IMAGE_ERRORS as exc:
            self._scan.log.mark(scan_index)
            self._scan.log.warn_once(
                f"skipped unreadable image {path} ({type(exc).__name__}: {exc}); it is replaced "
                f"by the next sample (every skipped image is counted: dataset.num_skipped)"
            )
            return None

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self._indices)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {n} samples")
        index %= n
        for offset in range(n):
            scan_index = self._indices[(index + offset) % n]
            if self._scan.log.is_bad(scan_index):
                continue
            image = self._load(scan_index)
            if image is None:
                continue
            label = self._scan.samples[scan_index][1]
            return (self.transform(image) if self.transform else image), label
        raise NetsurgeonError(f"no readable image left in {self.root}")


def _check_num_classes(num_classes: int | None, classes: Sequence[str], root: Path) -> None:
    if num_classes is None:
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} is not allowed; use a positive integer")
    if num_classes != len(classes):
        raise ConfigError(
            f"num_classes={num_classes} (--num-classes) contradicts the data: {root} has "
            f"{len(classes)} class folders ({', '.join(classes)}); leave it out to use theirs"
        )


def _check_val_fraction(val_fraction: Any) -> None:
    if isinstance(val_fraction, bool) or not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(
            f"val_fraction={val_fraction!r} (--val-fraction) is not allowed; use a number in (0, 1)"
        )


def split_indices(
    targets: Sequence[int], *, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """A seeded split, stratified by class, of sample positions into train and validation.

    Each class gives ``round(n * val_fraction)`` samples to validation, at least one when it
    has two or more, and always keeps at least one for training.

    Returns:
        Sorted train positions and sorted validation positions.

    Raises:
        ConfigError: ``val_fraction`` is not in (0, 1), or the split leaves no validation
            sample.
    """
    _check_val_fraction(val_fraction)
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(targets):
        by_class.setdefault(label, []).append(position)
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    if not val:
        raise ConfigError(
            f"val_fraction={val_fraction} leaves no validation sample out of {len(targets)}"
        )
    return sorted(train), sorted(val)


@dataclass(frozen=True)
class ImageData:
    """Training and validation datasets over the same classes."""

    train: ImageFolderDataset
    val: ImageFolderDataset
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def num_skipped(self) -> int:
        """Unreadable files skipped so far, training and validation together."""
        return len(self.skipped_files)

    @property
    def skipped_files(self) -> list[Path]:
        """Unreadable files skipped so far, training and validation together."""
        files = dict.fromkeys([*self.train.skipped_files, *self.val.skipped_files])
        return list(files)

    def merge_processes(self) -> None:
        """Under ``torch.distributed``, count the files any process skipped, on every process.

        Every process must call it (it is a collective operation); outside a distributed job
        it does nothing.
        """
        logs = {id(d._scan.log): d._scan.log for d in (self.train, self.val)}
        for log in logs.values():
            log.merge_processes()

    def fingerprint(self) -> dict[str, int | str]:
        """A cheap record of which image files the data are, to compare when a run resumes.

        The numbers of training and validation images, and a SHA-256 over every sample's
        split, path relative to its folder and size in bytes, in sorted order. Only the
        file sizes are read (one ``stat`` per image, no image content), so a file rewritten
        with content of the same size goes unnoticed; a file added, removed, renamed,
        moved to another class or split, or resized does not.

        Returns:
            ``{"data_train_images": ..., "data_val_images": ..., "data_sha256": ...}``, keys
            ready to merge into the settings a run records.
        """
        digest = hashlib.sha256()
        for split, dataset in (("train", self.train), ("val", self.val)):
            entries = sorted(
                (path.relative_to(dataset.root).as_posix(), _file_size(path))
                for path, _ in dataset.samples
            )
            for name, size in entries:
                digest.update(f"{split}\t{name}\t{size}\n".encode())
        values = (len(self.train), len(self.val), digest.hexdigest())
        return dict(zip(FINGERPRINT_KEYS, values, strict=True))


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone since the scan: loading it will skip it; -1 marks the change
        return -1


def _find_child(root: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def load_image_data(
    root: str | os.PathLike[str],
    *,
    input_size: int = 224,
    val_fraction: float | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    verify: bool = True,
    small: bool | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> ImageData:
    """Training and validation datasets from a data folder, with the standard transforms.

    Layouts:

    * ``root/train/<class>/...`` and ``root/val/<class>/...`` (``valid`` and ``validation``
      also name the validation folder): used as they are when ``val_fraction`` is ``None``.
    * ``root/<class>/...``: split with :func:`split_indices`; ``val_fraction`` is required.
      When ``root`` has a ``train`` folder, that folder is the one split.

    Args:
        root: The data folder.
        input_size: Side of the square model input; see :func:`build_transforms`.
        val_fraction: Share of each class held out for validation when splitting.
        seed: Seed of the split.
        num_classes: When given, must equal the number of class folders.
        verify: Verify every image with PIL while scanning; see :class:`ImageFolderDataset`.
        small: CIFAR-style transforms; ``None`` decides from ``input_size``.
        mean: Per-channel normalisation mean; see :func:`build_transforms`.
        std: Per-channel normalisation standard deviation.

    Raises:
        ConfigError: A folder is missing, empty or not in ImageFolder layout, the training and
            validation class folders differ, ``num_classes`` contradicts the data, or an
            argument is out of range.
    """
    root = Path(root)
    _check_folder(root)
    train_tf = build_transforms(train=True, input_size=input_size, small=small, mean=mean, std=std)
    eval_tf = build_transforms(train=False, input_size=input_size, small=small, mean=mean, std=std)
    train_dir = _find_child(root, _TRAIN_NAMES)
    val_dir = _find_child(root, _VAL_NAMES)
    if val_fraction is None:
        if train_dir is None or val_dir is None:
            has = "train/ but no val/ sub-folder" if train_dir else "no train/ and val/ sub-folders"
            raise ConfigError(
                f"data folder {root} has {has}; pass val_fraction (--val-fraction F) to split "
                f"{'train/' if train_dir else 'it'} into training and validation"
            )
        train = ImageFolderDataset(train_dir, transform=train_tf, verify=verify)
        val = ImageFolderDataset(val_dir, transform=eval_tf, verify=verify)
        if train.classes != val.classes:
            only_train = sorted(set(train.classes) - set(val.classes))
            only_val = sorted(set(val.classes) - set(train.classes))
            raise ConfigError(
                f"class folders differ between {train_dir} and {val_dir}: only in train: "
                f"{only_train or '-'}; only in val: {only_val or '-'}"
            )
        _check_num_classes(num_classes, train.classes, train_dir)
        return ImageData(train=train, val=val, classes=train.classes)
    _check_val_fraction(val_fraction)  # before the warning below: a bad value is an error only
    if train_dir is not None and val_dir is not None:  # allowed: val/ may be a held-out test
        warnings.warn(
            f"val_fraction (--val-fraction) splits {train_dir} for validation; {val_dir} is not "
            "used (leave val_fraction out to validate on it)",
            UserWarning,
            stacklevel=2,
        )
    folder = ImageFolderDataset(train_dir or root, verify=verify)
    _check_num_classes(num_classes, folder.classes, folder.root)
    train_idx, val_idx = split_indices(folder.targets, val_fraction=val_fraction, seed=seed)
    return ImageData(
        train=folder.subset(train_idx, transform=train_tf),
        val=folder.subset(val_idx, transform=eval_tf),
        classes=folder.classes,
    )


class SeededRandomSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on ``seed`` and the epoch.

    Like :class:`~torch.utils.data.DistributedSampler` on one process: the training loop calls
    :meth:`set_epoch`, so a resumed run sees exactly the orders an uninterrupted one sees.
    """

    def __init__(self, data_source: Sized, *, seed: int = 0) -> None:
        self.num_samples = len(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(Sampler[int]):
    """Evaluation indices ``rank, rank + world_size, ...``: each sample on exactly one process.

    :class:`~torch.utils.data.DistributedSampler` pads the shards to equal sizes by repeating
    samples, which suits training but would count those samples twice in an evaluation that
    sums over processes.
    """

    def __init__(self, data_source: Sized, *, rank: int, world_size: int) -> None:
        self.num_samples = len(data_source)
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))


class KeyedSampler(Sampler[tuple[int, int]]):
    """Wraps an index sampler and yields ``(index, seed)`` keys for :class:`SeededItems`.

    Each sample's seed depends only on the loader's seed, the epoch and the sample's index, so
    random augmentation gives the same images whatever the number of loader processes, whether
    they are kept alive between epochs, and whether the run was resumed.
    """

    def __init__(self, sampler: Sampler[int], *, seed: int = 0) -> None:
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order and the augmentation of ``epoch``."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Tuples of ints hash the same in every process and run (PYTHONHASHSEED is for str).
        for index in self.sampler:
            yield index, hash((self.seed, self.epoch, index)) % 2**63

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class SeededItems(Dataset[Any]):
    """A dataset indexed by :class:`KeyedSampler`'s ``(index, seed)`` keys.

    The random number generators of torch and Python's ``random`` (which torchvision's
    transforms draw from) are seeded with the key's seed while ``dataset[index]`` is built,
    then restored, so the caller's random streams (dropout, shuffles) are left as they were.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if get_worker_info() is not None:
            # In a loader process every draw belongs to some sample: nothing to restore.
            _seed_generators(seed)
            return self.dataset[index]
        torch_state, python_state = torch.random.get_rng_state(), random.getstate()
        _seed_generators(seed)
        try:
            return self.dataset[index]
        finally:
            torch.random.set_rng_state(torch_state)
            random.setstate(python_state)


def _seed_generators(seed: int) -> None:
    torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds GPUs: slow
    random.seed(seed)


def default_num_workers() -> int:
    """``min(4, CPU cores available to this process)``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(4, cores)


def _without_normalize(transform: Any) -> tuple[Transform, list[float], list[float]] | None:
    """``transform`` ending in ``PILToTensor`` instead of ``ToTensor`` + ``Normalize``.

    Returns the uint8 transform and the normalisation's mean and std, or ``None`` when
    ``transform`` does not end that way (as those of :func:`build_transforms` do).
    """
    steps = transform.transforms if isinstance(transform, T.Compose) else []
    if len(steps) < 2 or type(steps[-2]) is not T.ToTensor or type(steps[-1]) is not T.Normalize:
        return None
    normalize = steps[-1]
    return T.Compose([*steps[:-2], T.PILToTensor()]), list(normalize.mean), list(normalize.std)


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images as ``ToTensor`` + ``Normalize`` would give them, in the same float steps.

    ``mean`` and ``std`` are ``(1, C, 1, 1)`` tensors on the images' device
    (:func:`channel_stats`).
    """
    return images.float().div_(255).sub_(mean).div_(std)


def channel_stats(
    mean: Sequence[float], std: Sequence[float], *, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``mean`` and ``std`` as ``(1, C, 1, 1)`` tensors for :func:`normalize_uint8`."""
    shape = (1, len(mean), 1, 1)
    return (
        torch.tensor(mean, device=device).view(shape),
        torch.tensor(std, device=device).view(shape),
    )


class _LoaderWrapper:
    """A loader around ``self.loader``: its length, and its attributes (``sampler``,
    ``dataset``, ``batch_size``...) read through."""

    loader: Iterable[Any]

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


class DeviceNormalizedLoader(_LoaderWrapper):
    """Batches of uint8 images, moved to ``device`` and normalised there.

    ``make_loader(..., device="cuda")`` builds one for the data of :func:`load_image_data`:
    the loader processes then skip the conversion to float and send a quarter of the bytes
    (on an H200 with 16 CPU cores, the float pipeline kept a resnet18 waiting for data most
    of the time). The values are those of ``ToTensor`` then ``Normalize`` on the CPU, up to
    float rounding. Every other element of a batch (the labels) is moved to ``device`` too.
    The wrapped loader's attributes (``sampler``, ``dataset``, ``batch_size``...) read
    through.

    Args:
        loader: Yields ``(uint8 images, ...)`` batches, images ``N x C x H x W``.
        device: Where the batches go.
        mean, std: Per-channel normalisation of images scaled to [0, 1].
    """

    def __init__(
        self,
        loader: Iterable[Any],
        *,
        device: str | torch.device,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __iter__(self) -> Iterator[Any]:
        mean, std = channel_stats(self.mean, self.std, device=self.device)
        for images, *rest in self.loader:
            x = normalize_uint8(images.to(self.device, non_blocking=True), mean, std)
            yield [x, *(r.to(self.device, non_blocking=True) for r in rest)]


class RenormalizedLoader(_LoaderWrapper):
    """The batches of a loader whose images are normalised with one mean and std, normalised
    instead with another's (what a model's pretrained weights expect): per channel,
    ``x * std / to_std + (mean - to_mean) / to_std``, on the batch's device, the same values
    as normalising the images with ``to_mean`` and ``to_std`` directly, up to float rounding.
    The wrapped loader's attributes (``sampler``, ``dataset``...) read through.

    Args:
        loader: Yields ``(images, ...)`` batches, images ``N x C x H x W`` normalised with
            ``mean`` and ``std``.
        mean, std: Their normalisation.
        to_mean, to_std: The normalisation to give them instead.
    """

    def __init__(
        self,
        loader: Iterable[Any],
        *,
        mean: Sequence[float],
        std: Sequence[float],
        to_mean: Sequence[float],
        to_std: Sequence[float],
    ) -> None:
        mean, std = _check_normalization(mean, std)
        to_mean, to_std = _check_normalization(to_mean, to_std)
        self.loader = loader
        self.scale = tuple(s / t for s, t in zip(std, to_std, strict=True))
        self.shift = tuple((m - t) / d for m, t, d in zip(mean, to_mean, to_std, strict=True))

    def __iter__(self) -> Iterator[Any]:
        stats: tuple[torch.Tensor, torch.Tensor] | None = None
        for images, *rest in self.loader:
            if stats is None or stats[0].device != images.device:
                stats = channel_stats(self.shift, self.scale, device=images.device)
            shift, scale = stats
            yield [images * scale.to(images.dtype) + shift.to(images.dtype), *rest]


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    train: bool,
    num_workers: int | None = None,
    seed: int = 0,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    device: str | torch.device | None = None,
    cache: bool = False,
) -> DataLoader[Any] | DeviceNormalizedLoader | CachedImageLoader:
    """A data loader for training (shuffled by seed and epoch) or evaluation (in order).

    Under ``torch.distributed`` (initialised, or ``WORLD_SIZE > 1`` in the environment, in
    which case the process group is initialised here) each process gets its shard: for
    training through a :class:`~torch.utils.data.DistributedSampler`, for evaluation through
    a :class:`ShardSampler`, which gives every sample to exactly one process.

    Args:
        dataset: Any map-style dataset.
        batch_size: Samples per batch (per process under distributed training).
        train: Shuffle, with an order fixed by ``seed`` and the epoch; random transforms
            are seeded per sample by ``seed``, the epoch and the sample's index
            (:class:`KeyedSampler`), so the batches do not depend on ``num_workers``.
        num_workers: Loader processes; ``None`` is :func:`default_num_workers`. Workers are
            kept alive between epochs.
        seed: Seed of the shuffle and the augmentation.
        pin_memory: ``None`` pins when CUDA is available.
        drop_last: Drop a last incomplete batch. A training loader always drops a last batch
            of one sample (BatchNorm cannot train on it), with a log message.
        device: The device the batches are for (``"auto"``, ``"cuda"``...). When it is a GPU
            and ``dataset`` is an :class:`ImageFolderDataset` with a transform of
            :func:`build_transforms`, images travel as uint8 and are normalised on the GPU
            (:class:`DeviceNormalizedLoader`); otherwise it changes nothing.
        cache: Decode every image once (with ``num_workers`` processes) and keep them as
            uint8 on ``device`` (the CPU when ``None``); batches are then cut and augmented
            there, with no loader process (:class:`~netsurgeon.vision.cache.CachedImageLoader`).
            Needs an :class:`ImageFolderDataset` with a transform of :func:`build_transforms`,
            and the images must fit in half of the device's free memory.

    Raises:
        ConfigError: ``batch_size`` or ``num_workers`` is out of range, ``device`` is not
            a device, or the data set cannot be cached (see ``cache``).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is not allowed; use a positive integer")
    if num_workers is None:
        num_workers = default_num_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers={num_workers!r} is not allowed; use an integer >= 0")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    info = init_distributed()
    target = None if device is None else resolve_device(device, local_rank=info.local_rank)
    if cache and not isinstance(dataset, ImageFolderDataset):
        raise ConfigError(
            f"cache=True needs an ImageFolderDataset (load_image_data's); got "
            f"{type(dataset).__name__}"
        )
    uint8 = None
    if (
        not cache
        and target is not None
        and target.type == "cuda"
        and isinstance(dataset, ImageFolderDataset)
    ):
        uint8 = _without_normalize(dataset.transform)
        if uint8 is not None:
            dataset = dataset.subset(range(len(dataset)), transform=uint8[0])
    sampler: Sampler[int] | None
    if dist.is_available() and dist.is_initialized() and train:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
    elif dist.is_available() and dist.is_initialized():
        sampler = ShardSampler(dataset, rank=dist.get_rank(), world_size=dist.get_world_size())
    elif train:
        sampler = SeededRandomSampler(dataset, seed=seed)
    else:
        sampler = None
    if train and sampler is not None and not drop_last and len(sampler) % batch_size == 1:
        # BatchNorm cannot train on a batch of one sample (1x1 feature maps at small sizes).
        drop_last = len(sampler) > 1
        if drop_last and info.rank == 0:
            log.info(
                "%d training samples per process in batches of %d: the last batch, of one "
                "sample, is dropped each epoch",
                len(sampler),
                batch_size,
            )
    if cache:
        from netsurgeon.vision.cache import build_cached_loader

        return build_cached_loader(
            dataset,
            device=target or torch.device("cpu"),
            sampler=sampler,
            batch_size=batch_size,
            drop_last=drop_last,
            seed=seed,
            num_workers=num_workers,
            show_progress=info.rank == 0,
        )
    keyed: Sampler[Any] | None = sampler
    if train and sampler is not None:
        # Augmentation seeded per sample, not per loader process: see KeyedSampler.
        dataset, keyed = SeededItems(dataset), KeyedSampler(sampler, seed=seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=keyed,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
    if uint8 is None or target is None:
        return loader
    return DeviceNormalizedLoader(loader, device=target, mean=uint8[1], std=uint8[2])


@dataclass(frozen=True)
class DataWaitReport:
    """Where the time of a pass over a loader went."""

    batches: int
    wait_s: float
    total_s: float

    @property
    def wait_share(self) -> float:
        """Share of the wall time spent waiting for the next batch, in [0, 1]."""
        return self.wait_s / self.total_s if self.total_s > 0 else 0.0


def measure_data_wait(
    loader: Any,
    *,
    step: Callable[[Any], None] | None = None,
    max_batches: int | None = None,
) -> DataWaitReport:
    """Time one pass over ``loader`` and the share of it spent waiting for data.

    Args:
        loader: Any iterable of batches.
        step: The work done on each batch (e.g. a training step); without it the report
            measures bare loading speed, where the share is close to 1.
        max_batches: Stop after this many batches.

    Returns:
        The batch count, seconds blocked on the loader, and the total wall seconds. The
        training loop records the same per epoch in ``History``.
    """
    timer = DataWaitTimer(loader)
    start = time.perf_counter()
    batches = 0
    for batch in timer:
        if step is not None:
            step(batch)
        batches += 1
        if max_batches is not None and batches >= max_batches:
            break
    # Wait for the steps' GPU work, but never start CUDA for it: initialising the context
    # here would add its fraction of a second to a pass that ran on the CPU.
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return DataWaitReport(batches=batches, wait_s=timer.wait_s, total_s=time.perf_counter() - start)
