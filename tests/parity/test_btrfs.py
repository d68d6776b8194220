"""containers-storage's layer operations on the btrfs driver (a loop-mounted btrfs),
and what only btrfs does: applydiff stages a snapshot, so the layer stays a subvolume
its children can be snapshots of."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from eventstore.drivers import btrfs_ioctl

from .contract import ParityContract
from .support import base_tar, change_tar


@pytest.fixture
def tmp_path(btrfs_tmp_path: Path) -> Path:
    return btrfs_tmp_path


class TestBtrfsParity(ParityContract):
    driver_name = "btrfs"

    def test_an_applied_diff_leaves_the_layer_a_subvolume(self, store):
        layer = store.create(content=io.BytesIO(base_tar()), writable=True)
        store.apply_diff(layer, io.BytesIO(change_tar()))
        data = store.driver.diff_path(layer)
        assert os.lstat(data).st_ino == btrfs_ioctl.FIRST_FREE_OBJECTID  # a subvolume's root
        child = store.create(parent=layer, writable=True)  # a snapshot of it
        assert store.changes(child) == []
        assert not store.driver.staging_path(layer).exists()
