"""Images decoded once and kept on the training device, augmented there.

``make_loader(..., cache=True)`` builds a :class:`CachedImageLoader`: every image is decoded
and resized once (by the loader processes), stored as one uint8 tensor on the device, and
each batch is cut out of it and augmented there. On a GPU no loader process feeds the steps,
so a small model is no longer held back by JPEG decoding; a data set must fit in the
device's memory (``3 x S x S`` bytes per image, ``S`` the cached side).

What the cache keeps and how it augments, for the transforms of
:func:`~netsurgeon.vision.data.build_transforms` (only those, unchanged):

* evaluation: exactly the CPU pipeline's resized and centre-cropped image, so evaluation
  batches equal its batches.
* small training inputs (CIFAR style): the resized, centre-cropped image (``S`` = input
  size); batches are padded with zeros, randomly cropped and flipped: the same distribution
  as the CPU pipeline.
* larger training inputs (ImageNet style): the image resized to ``S = input * 256 / 224`` and
  centre-cropped to ``S x S``; batches are RandomResizedCrop boxes with the transform's scale
  and ratio ranges *within that square*, resized by bilinear sampling on the device
  (``torchvision.ops.roi_align``), then flipped. So crops never reach the parts of a
  non-square image outside its central square, small crops are enlarged from the ``S``-pixel
  square rather than from the full-resolution image, and the resampling is not PIL's: the
  augmentation is close to, not the same as, the CPU pipeline's. On a CPU these crops are
  slow (about 180 images per second on one core): keep the loader processes there.

The crop boxes and flips are drawn on the CPU from a generator seeded by the loader's seed
and the sampler's epoch (and rank, under ``torch.distributed``), so an epoch's batches are the
same in every run and after a resume, whatever the device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from torchvision import transforms as T
from tqdm.auto import tqdm

from netsurgeon.errors import ConfigError
from netsurgeon.vision.data import build_transforms, channel_stats, normalize_uint8

__all__ = ["CachePlan", "CachedImageLoader", "build_cached_loader", "cache_plan"]

# Share of the device's free memory the cache may take; the rest is for training.
_MAX_SHARE = 0.5


@dataclass(frozen=True)
class CachePlan:
    """How the images of one transform of ``build_transforms`` are cached and augmented."""

    fit: T.Compose  # PIL image -> uint8 S x S tensor
    side: int  # S
    input_size: int
    augment: str | None  # "pad_crop", "resized_crop" or None (evaluation)
    pad: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _size(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, Sequence) and len(value) == 1:
        return int(value[0])
    if isinstance(value, Sequence) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    return None


def _candidates(steps: Sequence[Any]) -> list[tuple[bool, int, bool]]:
    """``(train, input_size, small)`` settings of build_transforms that ``steps`` may be."""
    first = steps[0] if steps else None
    if isinstance(first, T.RandomResizedCrop):
        size = _size(first.size)
        return [] if size is None else [(True, size, False)]
    if isinstance(first, T.Resize) and len(steps) > 1 and isinstance(steps[1], T.CenterCrop):
        size = _size(steps[1].size)
        if size is None:
            return []
        return [(False, size, True), (True, size, True), (False, size, False)]
    return []


def cache_plan(transform: Any) -> CachePlan:
    """The cache plan for a transform built by :func:`~netsurgeon.vision.data.build_transforms`.

    Raises:
        ConfigError: ``transform`` is not exactly one of those transforms (other parameters,
            such as another flip probability or interpolation, would be silently ignored).
    """
    steps = list(transform.transforms) if isinstance(transform, T.Compose) else []
    for train, size, small in _candidates(steps):
        if size < 8:
            continue
        expected = build_transforms(train=train, input_size=size, small=small)
        # The reprs carry every parameter except RandomCrop's fill and padding options.
        if repr(expected) != repr(transform):
            continue
        crop = steps[2] if small and train else None
        if crop is not None and (
            crop.fill != 0 or crop.padding_mode != "constant" or crop.pad_if_needed
        ):
            continue
        norm = steps[-1]
        common: dict[str, Any] = {
            "mean": tuple(float(m) for m in norm.mean),
            "std": tuple(float(v) for v in norm.std),
            "scale": (1.0, 1.0),
            "ratio": (1.0, 1.0),
            "pad": 0,
            "input_size": size,
        }
        if not train:
            # Exactly what the CPU pipeline makes (resize and centre crop), so evaluation
            # batches equal its batches; nothing is cut at run time.
            fit = T.Compose([*steps[:2], T.PILToTensor()])
            return CachePlan(fit=fit, side=size, augment=None, **common)
        if small:
            common["pad"] = int(crop.padding)  # type: ignore[union-attr]
            fit = T.Compose([*steps[:2], T.PILToTensor()])
            return CachePlan(fit=fit, side=size, augment="pad_crop", **common)
        side = round(size * 256 / 224)
        common["scale"] = tuple(float(v) for v in steps[0].scale)
        common["ratio"] = tuple(float(v) for v in steps[0].ratio)
        fit = T.Compose([T.Resize(side), T.CenterCrop(side), T.PILToTensor()])
        return CachePlan(fit=fit, side=side, augment="resized_crop", **common)
    raise ConfigError(
        f"cache=True needs the transforms of build_transforms, unchanged (resize, crop, flip, "
        f"ToTensor, Normalize); this data set's transform is {transform!r}. Drop the cache "
        f"option or use load_image_data's transforms"
    )


def _free_bytes(device: torch.device) -> int | None:
    """Memory free for the cache on ``device``: the GPU's free memory, or the host's
    available memory (``MemAvailable``, which counts reclaimable page cache)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on Linux
        return None


def _readable(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _decode_all(
    dataset: Any, plan: CachePlan, num_workers: int, show_progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    source = dataset.subset(range(len(dataset)), transform=plan.fit)
    loader = DataLoader(source, batch_size=64, num_workers=num_workers)
    images = torch.empty((len(dataset), 3, plan.side, plan.side), dtype=torch.uint8)
    labels = torch.empty(len(dataset), dtype=torch.long)
    start = 0
    # disable=None: a bar on a terminal only.
    bar = tqdm(loader, desc="caching images", unit="batch", disable=None if show_progress else True)
    for batch, targets in bar:
        images[start : start + len(batch)] = batch
        labels[start : start + len(batch)] = targets
        start += len(batch)
    return images, labels


class CachedImageLoader:
    """Batches cut from images cached on ``device``, augmented there, normalised floats.

    Build it with ``make_loader(..., cache=True)``. It iterates like a ``DataLoader`` of
    ``[images, labels]`` batches already on ``device``, reshuffles through ``sampler``
    (``set_epoch``), and exposes ``dataset``, ``sampler``, ``batch_size`` and ``drop_last``.

    Args:
        images: ``N x 3 x S x S`` uint8 images on ``device``.
        labels: ``N`` labels on ``device``.
        plan: What the cache holds and how batches are augmented (:func:`cache_plan`).
        dataset: The data set the images came from (read through as ``dataset``).
        sampler: Yields sample indices; ``None`` visits them in order.
        batch_size: Samples per batch.
        drop_last: Drop a last incomplete batch.
        seed: Seed of the augmentation draws (mixed with the sampler's epoch).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        plan: CachePlan,
        dataset: Any,
        sampler: Sampler[int] | None,
        batch_size: int,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] != len(labels):
            raise ConfigError(
                f"images must be an N x 3 x S x S uint8 tensor with one label each; got "
                f"{tuple(images.shape)} {images.dtype} and {len(labels)} labels"
            )
        self.images = images
        self.labels = labels
        self.plan = plan
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.device = images.device
        self._mean, self._std = channel_stats(plan.mean, plan.std, device=self.device)

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.labels)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> list[int]:
        return list(self.sampler) if self.sampler is not None else list(range(len(self.labels)))

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        epoch = int(getattr(self.sampler, "epoch", 0))
        rank = int(getattr(self.sampler, "rank", 0))  # DistributedSampler: other draws per rank
        mixed = ((self.seed * 1_000_003 + epoch) * 4099 + rank) % 2**63  # any seed fits
        generator = torch.Generator().manual_seed(mixed)
        order = torch.tensor(self._order(), dtype=torch.long)
        # The epoch's draws go to the device in one copy: a copy per batch from pageable
        # memory would make the CPU wait for the GPU's queued work at every step.
        draws = {"order": order, **self._draw(len(order), generator)}
        draws = {k: v.to(self.device) for k, v in draws.items()}
        for start in range(0, len(order), self.batch_size):
            part = {k: v[start : start + self.batch_size] for k, v in draws.items()}
            if self.drop_last and len(part["order"]) < self.batch_size:
                break
            x = self._augment(self.images[part["order"]], part)
            x = normalize_uint8(x, self._mean, self._std)
            yield [x, self.labels[part["order"]]]

    def _draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The random flips, crop offsets or crop boxes of ``n`` samples, on the CPU."""
        plan = self.plan
        if plan.augment is None:
            return {}
        draws = {"flip": torch.rand(n, generator=generator) < 0.5}
        if plan.augment == "pad_crop":
            draws["offsets"] = torch.randint(0, 2 * plan.pad + 1, (n, 2), generator=generator)
        else:
            draws["boxes"] = _random_resized_boxes(n, plan.side, plan.scale, plan.ratio, generator)
        return draws

    def _augment(self, x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        plan = self.plan
        n, size = x.shape[0], plan.input_size
        if plan.augment is None:
            offset = round((plan.side - size) / 2.0)  # torchvision's CenterCrop offsets
            return x[:, :, offset : offset + size, offset : offset + size]
        if plan.augment == "pad_crop":
            x = F.pad(x, (plan.pad,) * 4)
            steps = torch.arange(size, device=self.device)
            rows = draws["offsets"][:, :1] + steps  # n x size
            cols = draws["offsets"][:, 1:] + steps
            batch = torch.arange(n, device=self.device)[:, None, None]
            # x[b, :, rows[b, i], cols[b, j]] -> n x size x size x C
            x = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
            x = x.permute(0, 3, 1, 2)
        else:
            from torchvision.ops import roi_align

            index = torch.arange(n, device=self.device, dtype=torch.float32)[:, None]
            rois = torch.cat([index, draws["boxes"]], dim=1)
            x = roi_align(x.float(), rois, output_size=(size, size), sampling_ratio=2, aligned=True)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        flip = draws["flip"].view(n, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)


def _random_resized_boxes(
    n: int,
    side: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """``n`` RandomResizedCrop boxes ``(x1, y1, x2, y2)`` in a ``side x side`` image.

    Like ``RandomResizedCrop.get_params``: up to ``attempts`` tries of an area share in
    ``scale`` and a log-uniform aspect ratio in ``ratio``; a box that never fits becomes the
    centre crop with the ratio clamped to the range (here, a square image: the whole image).
    """
    area = float(side * side)
    shares = torch.empty(n, attempts).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n, attempts).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * shares * aspect))
    h = torch.round(torch.sqrt(area * shares / aspect))
    fits = (w > 0) & (h > 0) & (w <= side) & (h <= side)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    pick = first.clamp(min=0)[:, None]
    w = torch.where(first >= 0, w.gather(1, pick)[:, 0], torch.full((n,), float(side)))
    h = torch.where(first >= 0, h.gather(1, pick)[:, 0], torch.full((n,), float(side)))
    u = torch.rand(n, 2, generator=generator)
    top = torch.floor(u[:, 0] * (side - h + 1))
    left = torch.floor(u[:, 1] * (side - w + 1))
    return torch.stack([left, top, left + w, top + h], dim=1)


def build_cached_loader(
    dataset: Any,
    *,
    device: torch.device,
    sampler: Sampler[int] | None,
    batch_size: int,
    drop_last: bool,
    seed: int,
    num_workers: int,
    show_progress: bool = True,
) -> CachedImageLoader:
    """Decode ``dataset`` once onto ``device``; see :class:`CachedImageLoader`.

    Raises:
        ConfigError: The transform is not one of ``build_transforms``, or the cache would take
            more than half of the device's free memory.
    """
    plan = cache_plan(dataset.transform)
    one = len(dataset) * 3 * plan.side * plan.side
    # Under torchrun every process on this host caches the whole data set in host memory
    # first; each GPU holds one copy.
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    places = [(torch.device("cpu"), one * ranks)]
    if device.type != "cpu":
        places.append((device, one))
    for place, need in places:
        free = _free_bytes(place)
        if free is not None and need > _MAX_SHARE * free:
            shared = place.type == "cpu" and ranks > 1
            copies = f" ({ranks} processes, one copy each)" if shared else ""
            raise ConfigError(
                f"caching {len(dataset)} images of {dataset.root} at {plan.side}x{plan.side} "
                f"needs {_readable(need)}{copies}, over half of the {_readable(free)} free on "
                f"{place}; train without the cache option (or with a smaller input size)"
            )
    images, labels = _decode_all(dataset, plan, num_workers, show_progress)
    return CachedImageLoader(
        images.to(device),
        labels.to(device),
        plan=plan,
        dataset=dataset,
        sampler=sampler,
        batch_size=batch_size,
        drop_last=drop_last,
        seed=seed,
    )
