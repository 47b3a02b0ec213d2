"""Run by tests/test_training_ddp.py under ``torchrun --nproc_per_node 2`` (CPU, gloo).

Each rank trains the same tiny CNN with :func:`netsurgeon.training.fit` and saves what the
test compares into the folder given as the only argument.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from netsurgeon.training import TrainConfig, evaluate, finetune_steps, fit, init_distributed
from netsurgeon.vision.data import make_loader


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    logging.basicConfig(level=logging.INFO, format=f"rank{rank}: %(message)s")
    info = init_distributed()
    assert dist.is_initialized() and dist.get_backend() == "gloo"

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    images = torch.rand(40, 3, 8, 8, generator=generator)
    images[labels == 1, 0] += 0.5
    train = make_loader(TensorDataset(images, labels), batch_size=4, train=True, num_workers=0)
    val = make_loader(TensorDataset(images, labels), batch_size=8, train=False, num_workers=0)

    # Different initial weights per rank: DDP must broadcast rank 0's.
    torch.manual_seed(100 + rank)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    config = TrainConfig(device="cpu", epochs=2, lr=0.1, schedule="cosine", progress=True)
    history = fit(model, train, val, config=config, checkpoint_path=out / "ckpt.pt")
    torch.save(model.state_dict(), out / f"rank{info.rank}.pt")
    # the inner step of iterative pruning, on a model whose ranks start out different again
    with torch.no_grad():
        model[-1].weight.add_(torch.rand(2, 4) * (rank + 1))
    steps = finetune_steps(model, train, steps=7, config=config, epoch_offset=3)
    torch.save(model.state_dict(), out / f"steps{info.rank}.pt")
    # BatchNorm recalibration on each rank's shard, then averaged over the ranks.
    from netsurgeon.recalibrate import recalibrate_bn

    torch.manual_seed(300 + rank)
    with torch.no_grad():
        model[1].running_mean.copy_(torch.randn(4))  # different per rank before
    seen = recalibrate_bn(model, train, batches=3)
    torch.save(
        {"mean": model[1].running_mean, "var": model[1].running_var, "seen": seen},
        out / f"recal{info.rank}.pt",
    )
    cached_shard = _cached_images(out / "images", config, rank=info.rank)
    # Evaluation over 41 samples (not a multiple of 2): each one on exactly one rank, so the
    # reduced figures are those of one process over the whole set.
    odd = TensorDataset(torch.cat([images, images[:1]]), torch.cat([labels, labels[:1]]))
    sharded = make_loader(odd, batch_size=8, train=False, num_workers=0)
    whole = evaluate(model, DataLoader(odd, batch_size=8), device="cpu")  # both ranks: all 41
    report = {
        "cached_shard": cached_shard,
        "world_size": info.world_size,
        "finetune_steps": steps.steps,
        "finetune_samples": steps.samples,
        "sampler": type(train.sampler.sampler).__name__,  # inside make_loader's KeyedSampler
        "batches_per_epoch": len(train),
        "eval_shard": [int(i) for i in sharded.sampler],
        "eval_sharded": evaluate(model, sharded, device="cpu"),
        "eval_whole": whole,
        "history": history.to_dict(),
    }
    report["dropout"] = _dropout_cut_and_resumed(out, train, val)
    report["kept"] = _prune_on_shards(rank=info.rank, world_size=info.world_size)
    report["iterative_steps"] = _iterative_taylor(out, train, val, rank=info.rank)
    report["started_apart"] = _prune_models_that_start_apart(train, val, rank=info.rank)
    report["uneven_recalibration"] = _recalibrate_uneven(rank=info.rank)
    report["uneven_reconstruction"] = _reconstruct_uneven(rank=info.rank)
    (out / f"rank{info.rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def _dropout_cut_and_resumed(out: Path, train: DataLoader, val: DataLoader) -> dict:
    """Dropout under DDP, one fit against one cut by max_steps and resumed: the ranks draw
    their own masks, and a resume goes on with each rank's own random streams."""
    from dataclasses import replace

    def fresh() -> nn.Module:
        torch.manual_seed(11)
        return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 8 * 8, 2))

    config = TrainConfig(device="cpu", epochs=3, lr=0.1, schedule="none", progress=False)
    whole = fresh()
    fit(whole, train, val, config=config, checkpoint_path=out / "whole.pt")
    draws = torch.rand(3).tolist()
    fit(fresh(), train, val, config=replace(config, max_steps=7), checkpoint_path=out / "cut.pt")
    dist.barrier()  # rank 0 has written the checkpoint
    resumed = fresh()
    fit(resumed, train, val, config=config, checkpoint_path=out / "cut.pt", resume=True)
    a, b = whole.state_dict(), resumed.state_dict()
    return {
        "resumed_equal": all(torch.equal(a[k], b[k]) for k in a),
        "draws": draws,
        "draws_resumed": torch.rand(3).tolist(),
    }


def _iterative_taylor(out: Path, train: DataLoader, val: DataLoader, *, rank: int) -> int:
    """Molchanov's schedule with Taylor under DDP: the ranks must end with one model."""
    from netsurgeon.vision.iterative import prune_and_finetune

    model = scoring_model()
    config = TrainConfig(device="cpu", epochs=1, lr=0.05, progress=False)
    result = prune_and_finetune(
        model, train, val, example_inputs=torch.randn(1, 3, 8, 8), config=config,
        criterion="taylor", target_macs=0.5, prune_steps=2, finetune_steps=2,
        finetune_epochs=1, criterion_batches=2, oneshot_baseline=False,
    )  # fmt: skip
    torch.save(model.state_dict(), out / f"iterative{rank}.pt")
    return len(result.steps)


def _prune_models_that_start_apart(train: DataLoader, val: DataLoader, *, rank: int) -> list:
    """Ranks pass different weights to prune_and_finetune: all prune rank 0's model."""
    from netsurgeon.vision.iterative import prune_and_finetune

    model = scoring_model()
    torch.manual_seed(500 + rank)
    with torch.no_grad():
        model[0].weight.normal_()  # another l1 ranking on each rank
    config = TrainConfig(device="cpu", epochs=1, progress=False)
    prune_and_finetune(
        model, train, val, example_inputs=torch.randn(1, 3, 8, 8), config=config,
        criterion="l1", amount=0.5, prune_steps=1, finetune_steps=0, finetune_epochs=0,
        oneshot_baseline=False,
    )  # fmt: skip
    return model[0].weight.flatten().tolist()


def _recalibrate_uneven(*, rank: int) -> dict[str, object]:
    """BatchNorm recalibration where rank 1's shard is empty: no hang, rank 0's statistics."""
    from netsurgeon.recalibrate import recalibrate_bn

    model = scoring_model()
    shard = [x for x, _ in scoring_batches()[:2]] if rank == 0 else []
    seen = recalibrate_bn(model, shard, batches=None)
    return {"seen": seen, "mean": model[1].running_mean.tolist()}


def pruned_pair() -> tuple[nn.Module, nn.Module, dict[str, torch.Tensor]]:
    """scoring_model() pruned by l1 (a layer lost inputs), its unpruned copy, the kept filters."""
    import copy

    from netsurgeon.pruning import prune

    model = scoring_model()
    reference = copy.deepcopy(model)
    result = prune(model, torch.randn(1, 3, 8, 8), amount=0.5, criterion="l1")
    return model, reference, result.kept


def _reconstruct_uneven(*, rank: int) -> list[float]:
    """Least-squares refit where rank 1's shard is empty: no hang, rank 0's fit."""
    from netsurgeon.reconstruction import reconstruct

    model, reference, kept = pruned_pair()
    shard = [x for x, _ in scoring_batches()[:2]] if rank == 0 else []
    fits = reconstruct(model, reference, shard, kept=kept, batches=4)
    assert "3" in [f.name for f in fits], fits
    return model[3].weight.flatten().tolist()


def scoring_model() -> nn.Module:
    """The same small CNN on every rank (and in the test, which prunes it in one process)."""
    torch.manual_seed(7)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip


def scoring_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four batches of different sizes; rank r scores batches r, r + 2, ..."""
    generator = torch.Generator().manual_seed(3)
    sizes = (5, 3, 4, 6)
    images = [torch.randn(n, 3, 8, 8, generator=generator) for n in sizes]
    return [(x, torch.randint(0, 3, (len(x),), generator=generator)) for x in images]


def _prune_on_shards(*, rank: int, world_size: int) -> dict[str, dict[str, list[int]]]:
    """Data criteria scored on each rank's own batches: which filters each rank keeps."""
    import torch.nn.functional as F

    from netsurgeon.pruning import prune

    shard = scoring_batches()[rank::world_size]
    kept = {}
    for criterion in ("taylor", "activation"):
        model = scoring_model().eval()
        result = prune(model, torch.randn(1, 3, 8, 8), amount=0.5, criterion=criterion,
                       data=shard, loss_fn=F.cross_entropy)  # fmt: skip
        kept[criterion] = {k: v.tolist() for k, v in result.kept.items()}
    return kept


def _cached_images(root: Path, config: TrainConfig, *, rank: int) -> list[int]:
    """A few steps on images cached by make_loader(cache=True); returns this rank's shard."""
    from PIL import Image

    from netsurgeon.vision.data import ImageFolderDataset, build_transforms

    if rank == 0:
        generator = torch.Generator().manual_seed(1)
        for i in range(12):
            pixels = torch.randint(0, 256, (9, 10, 3), dtype=torch.uint8, generator=generator)
            (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.numpy()).save(root / f"class{i % 2}" / f"{i}.png")
    dist.barrier()
    dataset = ImageFolderDataset(root, transform=build_transforms(train=True, input_size=8))
    loader = make_loader(dataset, batch_size=3, train=True, num_workers=0, cache=True)
    torch.manual_seed(200 + rank)  # different weights per rank again
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    finetune_steps(model, loader, steps=4, config=config)
    torch.save(model.state_dict(), root.parent / f"cached{rank}.pt")
    return [int(i) for i in loader.sampler]


if __name__ == "__main__":
    main(Path(sys.argv[1]))
