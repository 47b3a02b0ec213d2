"""Tests of netsurgeon.fileio's checks and descriptions of files."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from netsurgeon.errors import ConfigError
from netsurgeon.fileio import check_file_target, describe_torch_file


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
