"""The training loop under ``torchrun --nproc_per_node 2`` with two CPU processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPT = Path(__file__).resolve().parent / "_ddp_train_script.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node 2 ARGS`` on the CPU, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        *args,
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_cpu_processes_end_with_identical_weights(tmp_path: Path) -> None:
    done = torchrun(str(SCRIPT), str(tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output

    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key

    tuned = [torch.load(tmp_path / f"steps{r}.pt", weights_only=True) for r in (0, 1)]
    for key in tuned[0]:
        assert torch.equal(tuned[0][key], tuned[1][key]), key
    assert not torch.equal(tuned[0]["5.weight"], states[0]["5.weight"])

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["world_size"] == 2
        assert report["sampler"] == "DistributedSampler"
        assert report["batches_per_epoch"] == 5  # 40 samples / 2 ranks / batch of 4
        assert report["finetune_steps"] == 7 and report["finetune_samples"] == 7 * 8
    # metrics are reduced over both ranks, so both report the whole data set
    timings = ("epoch_time_s", "val_time_s", "data_wait_s")
    metrics = [
        [{k: v for k, v in e.items() if k not in timings} for e in r["history"]["epochs"]]
        for r in reports
    ]
    assert metrics[0] == metrics[1]
    assert [e["samples"] for e in reports[0]["history"]["epochs"]] == [40, 40]
    # each rank draws its own dropout masks (seed + rank), and a resume of an epoch cut by
    # max_steps continues every rank's own streams: it ends as the uninterrupted fit
    dropout = [r["dropout"] for r in reports]
    assert dropout[0]["draws"] != dropout[1]["draws"]
    for report in dropout:
        assert report["resumed_equal"] and report["draws_resumed"] == report["draws"]
    # evaluation shards hold every sample once, however uneven: 21 + 20 of 41
    shards = [r["eval_shard"] for r in reports]
    assert sorted(shards[0] + shards[1]) == list(range(41))
    for report in reports:
        assert report["eval_sharded"]["accuracy"] == report["eval_whole"]["accuracy"]
        assert report["eval_sharded"]["loss"] == pytest.approx(report["eval_whole"]["loss"])

    # data criteria: each rank scores its own batches, the statistics are added over the
    # ranks, so both keep the same filters as one process scoring every batch
    import torch.nn.functional as F

    from netsurgeon.pruning import prune
    from tests._ddp_train_script import scoring_batches, scoring_model

    assert reports[0]["kept"] == reports[1]["kept"]
    for criterion, kept in reports[0]["kept"].items():
        model = scoring_model().eval()
        result = prune(model, torch.randn(1, 3, 8, 8), amount=0.5, criterion=criterion,
                       data=scoring_batches(), loss_fn=F.cross_entropy)  # fmt: skip
        assert kept == {k: v.tolist() for k, v in result.kept.items()}, criterion

    # and Molchanov's iterative schedule with Taylor ends with one model on both ranks
    assert reports[0]["iterative_steps"] == reports[1]["iterative_steps"] == 2
    iterative = [torch.load(tmp_path / f"iterative{r}.pt", weights_only=True) for r in (0, 1)]
    assert iterative[0].keys() == iterative[1].keys()
    for key in iterative[0]:
        assert torch.equal(iterative[0][key], iterative[1][key]), key
    assert iterative[0]["0.weight"].shape[0] < 8  # filters were removed

    # ranks that pass different weights all prune (and keep) rank 0's model
    assert reports[0]["started_apart"] == reports[1]["started_apart"]

    # BatchNorm recalibration where one rank's shard is empty: weighted by batches seen, so
    # both ranks hold what one process recalibrating on rank 0's two batches holds
    from netsurgeon.recalibrate import recalibrate_bn

    uneven = [r["uneven_recalibration"] for r in reports]
    assert [u["seen"] for u in uneven] == [2, 0]
    assert uneven[0]["mean"] == uneven[1]["mean"]
    alone = scoring_model()
    recalibrate_bn(alone, [x for x, _ in scoring_batches()[:2]], batches=None)
    assert uneven[0]["mean"] == pytest.approx(alone[1].running_mean.tolist(), abs=1e-6)

    # least-squares reconstruction where one rank's shard is empty: both ranks get the fit
    # that one process makes from rank 0's two batches
    from netsurgeon.reconstruction import reconstruct
    from tests._ddp_train_script import pruned_pair

    refit = [r["uneven_reconstruction"] for r in reports]
    assert refit[0] == refit[1]
    model, reference, kept = pruned_pair()
    before = model[3].weight.flatten().tolist()
    reconstruct(model, reference, [x for x, _ in scoring_batches()[:2]], kept=kept, batches=4)
    assert refit[0] == pytest.approx(model[3].weight.flatten().tolist(), abs=1e-5)
    assert refit[0] != pytest.approx(before, abs=1e-5)  # the refit changed the weights

    # only rank 0 writes the checkpoint, prints and shows progress
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    for key, value in checkpoint["model"].items():
        assert torch.equal(value, states[0][key])
    # BatchNorm recalibration: each rank saw 3 batches of its shard; the averaged statistics
    # are the same on both ranks, whatever they held before
    recal = [torch.load(tmp_path / f"recal{r}.pt", weights_only=True) for r in (0, 1)]
    assert recal[0]["seen"] == recal[1]["seen"] == 3
    assert torch.equal(recal[0]["mean"], recal[1]["mean"])
    assert torch.equal(recal[0]["var"], recal[1]["var"])

    # images cached on the device: each rank cuts its own shard, the weights stay identical
    shards = [set(r["cached_shard"]) for r in reports]
    assert len(shards[0]) == len(shards[1]) == 6 and shards[0] | shards[1] == set(range(12))
    cached = [torch.load(tmp_path / f"cached{r}.pt", weights_only=True) for r in (0, 1)]
    for key in cached[0]:
        assert torch.equal(cached[0][key], cached[1][key]), key

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ckpt.pt", "rank0.pt", "rank1.pt", "rank0.json", "rank1.json", "steps0.pt", "steps1.pt",
         "images", "cached0.pt", "cached1.pt", "recal0.pt", "recal1.pt", "iterative0.pt",
         "iterative1.pt", "whole.pt", "cut.pt"]
    )  # fmt: skip
    assert "rank0: epoch 2/2" in output
    assert "rank1:" not in output
    assert "no DistributedSampler" not in output  # make_loader's samplers shard the data
    assert output.count("rank0: epoch 1/2:") == 1
    assert output.count("epoch 1/2:   0%") == 1  # one progress bar per epoch, rank 0's


def _zero_image_data(path: Path) -> None:
    """Keep a PNG's structure and checksums but zero its pixel stream: it passes
    ``Image.verify`` while scanning and fails only when decoded, in one process's shard."""
    import struct
    import zlib

    raw = path.read_bytes()
    out, i = bytearray(raw[:8]), 8
    while i < len(raw):
        (n,) = struct.unpack(">I", raw[i : i + 4])
        kind, data = raw[i + 4 : i + 8], raw[i + 8 : i + 8 + n]
        if kind == b"IDAT":
            data = bytes(len(data))
        out += struct.pack(">I", n) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        i += 12 + n
    path.write_bytes(bytes(out))


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_finetune_command_under_torchrun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Messages once, every skipped image counted, and no resume under another process count."""
    from PIL import Image

    from netsurgeon.cli import main

    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 2)):
        for label in ("a", "b"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=generator)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    for label in ("a", "b"):
        _zero_image_data(tmp_path / "data" / "train" / label / "0.png")
    args = ["finetune", "cifar_resnet20", "--weights", "none", "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "ft.pt"), "--epochs", "1", "--batch-size", "2",
            "--workers", "0", "--resume"]  # fmt: skip
    done = torchrun("-m", "netsurgeon.cli", *args, "--amp", timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("resume was asked for, but there is no checkpoint") == 1, output
    assert output.count("amp=True needs CUDA") == 1, output
    assert "skipped 2 unreadable image(s)" in output, output

    # The checkpoint records two processes: one process may not continue it.
    assert main(args) == 2
    assert "processes: 2 then, 1 now" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_an_error_every_process_meets_is_printed_once(tmp_path: Path) -> None:
    """Before: each process printed it, the two lines sometimes run together."""
    done = torchrun(
        "-m", "netsurgeon.cli", "finetune", "cifar_resnet20", "--weights", "none",
        "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "ft.pt"),
    )  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("netsurgeon: ")]
    assert lines == [f"netsurgeon: error: data folder {tmp_path / 'missing'} does not exist"]
