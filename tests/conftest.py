"""Shared fixtures: the read-only real data in ../shared, when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """Where ../shared is: $NETSURGEON_SHARED, or the folder beside the repository."""
    env = os.environ.get("NETSURGEON_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The shared data folder; the test is skipped where it is absent."""
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"real data not found at {root} (set NETSURGEON_SHARED to its location)")
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
