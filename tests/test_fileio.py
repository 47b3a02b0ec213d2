"""Tests of netsurgeon.fileio's checks and descriptions of files."""

from __future__ import annotations

import errno
import io
import pickle
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from netsurgeon.cli import main
from netsurgeon.errors import ConfigError, NetsurgeonError, WriteError
from netsurgeon.fileio import (
    atomic_torch_save,
    atomic_write_bytes,
    check_file_target,
    describe_torch_file,
)


def test_describe_torch_file_names_the_kind_of_damage(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(64)}, good)
    data = good.read_bytes()
    cases = {
        b"": "an empty file (0 bytes)",
        data[: len(data) // 2]: f"a truncated or damaged PyTorch file ({len(data) // 2:,} bytes)",
        b"these are not weights\n": "a text file (22 bytes)",
        b"\x00\x01binary" * 3: "a file of another format (24 bytes)",
    }
    for i, (content, expected) in enumerate(cases.items()):
        path = tmp_path / f"f{i}.pt"
        path.write_bytes(content)
        assert describe_torch_file(path) == expected
    assert describe_torch_file(tmp_path / "absent.pt").startswith("unreadable")


def test_describe_torch_file_tells_a_plain_pickle_from_a_cut_legacy_file(tmp_path: Path) -> None:
    plain = pickle.dumps({"w": [0.0] * 8}, protocol=2)
    legacy = io.BytesIO()
    torch.save({"w": torch.zeros(64)}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.getvalue()
    cases = {
        plain: f"a pickle file not written by torch.save ({len(plain)} bytes)",
        plain[:-1]: f"a truncated or damaged PyTorch file ({len(plain) - 1} bytes)",
        # The legacy format starts with a whole pickle (a magic number) and goes on.
        data[: len(data) - 10]: f"a truncated or damaged PyTorch file ({len(data) - 10} bytes)",
    }
    for i, (content, expected) in enumerate(cases.items()):
        path = tmp_path / f"f{i}.pt"
        path.write_bytes(content)
        assert describe_torch_file(path) == expected


def test_check_file_target(tmp_path: Path) -> None:
    assert check_file_target(tmp_path / "new" / "deeper" / "x.ckpt", "--x") == (
        tmp_path / "new" / "deeper" / "x.ckpt"
    )  # a missing parent is created when the file is written
    folder = tmp_path / "ck"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"--checkpoint '.*ck' is a folder; give a file name"):
        check_file_target(folder, "--checkpoint")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with pytest.raises(ConfigError, match=r"plain\.txt' is a file, not a folder"):
        check_file_target(plain / "x.ckpt", "--checkpoint")


@contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """Files this process writes cannot grow past ``nbytes`` (Python ignores SIGXFSZ, so a
    write beyond it fails with EFBIG, as on a full disk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("writer", ["torch", "bytes"])
def test_a_failed_write_is_one_write_error_and_leaves_the_old_file(
    tmp_path: Path, writer: str
) -> None:
    path = tmp_path / "out.pt"
    path.write_bytes(b"the previous version")
    with file_size_limit(4096), pytest.raises(WriteError) as info:
        if writer == "torch":  # torch.save reports it as a RuntimeError ("unexpected pos")
            atomic_torch_save({"w": torch.zeros(10_000)}, path)
        else:
            atomic_write_bytes(path, bytes(10_000))
    error = info.value
    assert isinstance(error, NetsurgeonError) and isinstance(error, OSError)
    assert error.errno == errno.EFBIG and error.filename == str(path)
    assert str(error) == f"cannot write {path}: File too large"
    assert path.read_bytes() == b"the previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]  # no temporary file left


def test_the_command_line_reports_a_failed_write_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pruned.pt"
    argv = ["prune", "cifar_resnet20", "--weights", "none", "--amount", "0.5", "--out", str(out)]
    with file_size_limit(64 * 1024):
        code = main(argv)
    stderr = capsys.readouterr().err
    assert code == 1
    assert stderr == f"netsurgeon: error: cannot write {out}: File too large\n"
    assert not out.exists() and list(tmp_path.iterdir()) == []
