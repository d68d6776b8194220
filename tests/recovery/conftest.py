"""Fixtures for the recovery tests: a store root, the driver (every test that touches
layer data runs on vfs and, where the kernel allows, overlay), and a teardown that leaves
no mount and no immutable file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.opener import open_store

from .support import clear_immutable_under, overlay_or_skip, unmount_everything_under


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(params=["vfs", "overlay"])
def driver(request, root: Path) -> str:
    if request.param == "overlay":
        overlay_or_skip(root)
    return request.param


@pytest.fixture
def made(root: Path, driver: str) -> Path:
    """A new, empty store at ``root`` using ``driver`` (closed again)."""
    open_store(root, driver).close()
    return root


@pytest.fixture(autouse=True)
def _leave_nothing_behind(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)
    clear_immutable_under(tmp_path)
