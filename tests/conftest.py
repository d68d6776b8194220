"""Fixtures any suite may ask for: a btrfs on a loop device, made once per session
(only when a test asks for it) and removed, image and all, at the end."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def btrfs_scratch() -> Iterator[Path]:
    """The mount point of a fresh, empty, loop-mounted btrfs; skips where none can be made."""
    from replay.loopfs import ScratchUnavailable, loop_btrfs

    scratch = loop_btrfs("2g")
    try:
        path = scratch.__enter__()
    except ScratchUnavailable as exc:
        pytest.skip(f"no loop-mounted btrfs here: {exc}")
    try:
        yield path
    finally:
        scratch.__exit__(None, None, None)


@pytest.fixture
def btrfs_tmp_path(btrfs_scratch: Path) -> Iterator[Path]:
    """A fresh directory on the session's btrfs, removed afterwards, subvolumes included.
    A module that imports it as ``tmp_path`` runs its tests (and the contract suites'
    stores and driver homes) on btrfs."""
    from replay.loopfs import remove_tree

    path = Path(tempfile.mkdtemp(prefix="test-", dir=btrfs_scratch))
    try:
        yield path
    finally:
        remove_tree(path)
