"""Fixtures for the log tests: a fresh root and its segments on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import Disk


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def disk(root: Path) -> Disk:
    return Disk(root)
