"""Tests of netsurgeon.fileio's checks and descriptions of files."""

from __future__ import annotations

import errno
import io
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from netsurgeon.cli import main
from netsurgeon.errors import ConfigError, NetsurgeonError, WriteError
from netsurgeon.fileio import (
    atomic_torch_save,
    atomic_write_bytes,
    check_file_target,
    check_folder_target,
    describe_torch_file,
    remove_stale_temporaries,
)
from tests.limits import file_size_limit


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


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_write_removes_temporaries_that_killed_writers_left(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    dead = _dead_pid()
    stale_file = tmp_path / f".model.ckpt.{dead}-abc123de.tmp"
    stale_file.write_bytes(b"half a checkpoint")
    stale_folder = tmp_path / f".model.ckpt.{dead}-def456gh.tmp"  # an exporter's folder
    stale_folder.mkdir()
    (stale_folder / "model.ckpt").write_bytes(b"half an export")
    live = tmp_path / f".model.ckpt.{os.getppid()}-ghi789jk.tmp"  # a writer still running
    live.write_bytes(b"being written")
    other = tmp_path / f".other.ckpt.{dead}-jkl012mn.tmp"  # another file's
    other.write_bytes(b"not ours")
    older_format = tmp_path / ".model.ckpt.x1y2z3w4.tmp"  # no process id: cannot tell
    older_format.write_bytes(b"kept")
    # The temporary of "model.ckpt.<n>-06-01" being written, not one of ours by a process n.
    dated = tmp_path / f".model.ckpt.{dead}-06-01.{os.getpid()}-pqr345st.tmp"
    dated.write_bytes(b"being written")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.ckpt", live.name, other.name, older_format.name, dated.name]
    )
    assert remove_stale_temporaries(tmp_path / "other.ckpt") == [other]


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path: Path) -> None:
    path = tmp_path / "out.pt"
    code = (
        "import os, sys\n"
        "from netsurgeon.fileio import atomic_open\n"
        "with atomic_open(sys.argv[1]) as handle:\n"
        "    handle.write(b'partial')\n"
        "    handle.flush()\n"
        "    os._exit(9)\n"  # as a SIGKILL would: no cleanup at all
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".out.pt.") and left[0].endswith(".tmp")
    atomic_torch_save({"w": torch.ones(3)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A read-only mounted folder (needs root and mount; skipped where unavailable)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("a read-only mount needs root and the mount command")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_folder_is_refused_before_any_work(read_only_folder: Path) -> None:
    target = read_only_folder / "sub" / "m.pt"
    expected = (
        f"--out '{target}': cannot write in '{read_only_folder}' (Read-only file system); "
        "choose another location"
    )
    with pytest.raises(ConfigError) as info:
        check_file_target(target, "--out")
    assert str(info.value) == expected
    with pytest.raises(ConfigError, match="Read-only file system"):
        check_folder_target(read_only_folder, "--out")
    with pytest.raises(ConfigError, match="Read-only file system"):
        check_folder_target(read_only_folder / "new", "--out")


def test_an_unwritable_folder_is_refused_whatever_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ConfigError) as info:
        check_file_target(tmp_path / "m.pt", "--checkpoint")
    assert str(info.value) == (
        f"--checkpoint '{tmp_path / 'm.pt'}': cannot write in '{tmp_path}' (Permission denied); "
        "choose another location"
    )
