"""The store contract on the btrfs driver, on a loop-mounted btrfs (skipped, with the
reason, where none can be made)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from eventstore import errors

from .contract import StoreContract


@pytest.fixture
def tmp_path(btrfs_tmp_path: Path) -> Path:
    """The contract's store roots live on the session's btrfs."""
    return btrfs_tmp_path


class TestBtrfsStore(StoreContract):
    driver_name = "btrfs"
    metadata_keys = {"Dir", "SubvolumeID", "ReadOnly"}
    real_mounts = False

    def test_a_child_snapshot_freezes_its_read_only_parent(self, store):
        base = store.create()
        container = store.create(parent=base, writable=True)
        assert store.metadata(base)["ReadOnly"] == "true"
        assert store.metadata(container)["ReadOnly"] == "false"
        assert store.metadata(container)["SubvolumeID"] != store.metadata(base)["SubvolumeID"]

    def test_a_delete_across_a_mount_is_refused_and_finished_once_it_is_gone(self, store):
        layer_id = store.create(writable=True)
        proc = Path(store.mount(layer_id)) / "proc"
        proc.mkdir()
        store.umount(layer_id)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(proc)], check=True)
        try:
            with pytest.raises(errors.ForeignMount, match="is mounted inside it"):
                store.delete(layer_id)
            assert store.driver.exists(layer_id)
            # refused before it began (docs/security.md): nothing recorded, nothing deleted
            assert not store.lookup(layer_id).deleting
        finally:
            subprocess.run(["umount", str(proc)], check=True)
        store.delete(layer_id)
        assert not store.exists(layer_id) and not store.driver.exists(layer_id)
