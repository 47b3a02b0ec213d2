"""Fixtures shared by the vision tests."""

from __future__ import annotations

from typing import Any

import pytest

from netsurgeon.vision import data as data_module


@pytest.fixture
def normalizations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """The ``(mean, std)`` that each call of ``load_image_data`` is given, in order."""
    seen: list[tuple[Any, Any]] = []
    real = data_module.load_image_data

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs.get("mean"), kwargs.get("std")))
        return real(*args, **kwargs)

    monkeypatch.setattr(data_module, "load_image_data", spy)
    return seen
