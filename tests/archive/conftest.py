"""Fixtures for the archive tests: fresh layers under a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import Layer


@pytest.fixture
def layer(tmp_path: Path) -> Layer:
    return Layer(tmp_path)


@pytest.fixture
def new_layer(tmp_path: Path):
    count = iter(range(1000))
    return lambda: Layer(tmp_path, f"layer{next(count)}")
