"""Fixtures for the oov tests."""

from __future__ import annotations

import pytest
import torch

from tests.oov.synthetic import SyntheticTask, make_synthetic_task


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTask:
    """The synthetic task, shared read-only by the tests of a session."""
    return make_synthetic_task(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # The test machines are shared: keep each test on one core.
    torch.set_num_threads(1)
