"""The store contract on the fuse-overlayfs driver (skipped where it cannot mount), and
a store moving between overlay and fuse-overlayfs."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

from eventstore.drivers import driver_class
from eventstore.store import LayerStore

from .contract import StoreContract
from .support import is_mounted, mounts_under


def _unsupported() -> str | None:
    return driver_class("fuse-overlayfs").supported(Path(tempfile.gettempdir()) / "layerstore-probe" / "overlay")


pytestmark = pytest.mark.skipif(_unsupported() is not None, reason=f"fuse-overlayfs unsupported: {_unsupported()}")


def fuse_daemons(path: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"fuse-overlayfs") and os.fsencode(path) in argv:
            found.append(int(pid))
    return found


class TestFuseOverlayStore(StoreContract):
    driver_name = "fuse-overlayfs"
    metadata_keys = {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}
    real_mounts = True

    def test_the_mount_is_fuse_overlayfs_of_the_chain(self, store):
        base = store.create()
        (store.driver.diff_path(base) / "from-base").write_text("base")
        child = store.create(parent=base, writable=True)
        path = store.mount(child)
        with open("/proc/self/mountinfo") as f:
            line = next(entry for entry in f if entry.split()[4] == os.path.realpath(path))
        assert " - fuse.fuse-overlayfs " in line
        assert (Path(path) / "from-base").read_text() == "base"
        assert store.umount(child) == 0 and not is_mounted(path)

    def test_a_mount_whose_daemon_was_killed_is_reconciled_and_mounted_again(self, store):
        layer_id = store.create(writable=True)
        path = store.mount(layer_id)
        for pid in fuse_daemons(path):
            os.kill(pid, signal.SIGKILL)
        store = self.reopen(store)  # recovery: the kernel lists it, but nothing serves it
        try:
            assert store.lookup(layer_id).mount_count == 0
            types = [row[3] for row in store.index.history(layer_id)]
            assert types[-1] == "mounts-reconciled"
            assert store.mount(layer_id) == path
            (Path(path) / "works").write_text("again")
            assert store.umount(layer_id) == 0
            assert mounts_under(store.root) == []
        finally:
            store.close()


def test_a_store_moves_between_overlay_and_fuse_overlayfs(tmp_path: Path):
    from eventstore.drivers.overlay import OverlayDriver

    if OverlayDriver.supported(tmp_path / "overlay") is not None:
        pytest.skip("the kernel's overlay cannot mount here")
    root = tmp_path / "store"
    with LayerStore.open(root, "overlay") as store:
        base = store.create(names=["base"])
        (store.driver.diff_path(base) / "etc").mkdir()
        (store.driver.diff_path(base) / "etc" / "hostname").write_text("base\n")
        child = store.create(parent=base, writable=True)
        (Path(store.mount(child)) / "etc" / "hostname").unlink()  # a kernel whiteout
        store.umount(child)
    (root / "driver").write_text("fuse-overlayfs\n")
    with LayerStore.open(root) as store:
        assert store.driver.name == "fuse-overlayfs" and store.driver.home == root / "overlay"
        merged = Path(store.mount(child))
        assert not (merged / "etc" / "hostname").exists()
        (merged / "etc" / "motd").write_text("written through fuse\n")
        store.umount(child)
    (root / "driver").write_text("overlay\n")
    with LayerStore.open(root) as store:
        merged = Path(store.mount(child))
        assert sorted(os.listdir(merged / "etc")) == ["motd"]
        store.umount(child)
        store.delete(child)
        store.delete(base)
        assert os.listdir(root / "overlay" / "l") == []
