"""The store contract on the overlay driver (skipped where overlay cannot mount)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventstore import errors
from eventstore.drivers import driver_class

from .contract import StoreContract
from .support import is_mounted, snapshot


def _unsupported() -> str | None:
    import tempfile

    return driver_class("overlay").supported(Path(tempfile.gettempdir()) / "layerstore-probe" / "overlay")


pytestmark = pytest.mark.skipif(_unsupported() is not None, reason=f"overlay unsupported: {_unsupported()}")


class TestOverlayStore(StoreContract):
    driver_name = "overlay"
    metadata_keys = {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}
    real_mounts = True

    def test_metadata_names_the_overlay_dirs(self, store):
        base = store.create()
        child = store.create(parent=base)
        meta = store.metadata(child)
        assert meta["LowerDir"] == str(store.driver.diff_path(base))
        assert meta["UpperDir"] == str(store.driver.diff_path(child))
        assert meta["MergedDir"] == str(store.driver.mount_path(child))
        assert Path(meta["WorkDir"]).is_dir()
        assert store.metadata(base)["LowerDir"] == ""

    def test_the_mount_is_an_overlay_of_the_chain(self, store):
        base = store.create()
        child = store.create(parent=base, writable=True)
        path = store.mount(child)
        assert is_mounted(path)
        with open("/proc/self/mountinfo") as f:
            line = next(l for l in f if l.split()[4] == os.path.realpath(path))
        assert " - overlay " in line
        assert str(store.driver.diff_path(base)) in line
        store.umount(child)

    def test_a_chain_of_100_layers_mounts_with_every_layers_files(self, store):
        parent = None
        ids = []
        for depth in range(100):
            parent = store.create(parent=parent)
            (store.driver.diff_path(parent) / f"file-{depth}").write_text(str(depth))
            ids.append(parent)
        path = Path(store.mount(ids[-1]))
        assert is_mounted(path)
        assert sorted(p.name for p in path.iterdir()) == sorted(f"file-{d}" for d in range(100))
        assert (path / "file-0").read_text() == "0"
        assert store.metadata(ids[-1])["LowerDir"].split(":")[-1] == str(store.driver.diff_path(ids[0]))
        assert store.umount(ids[-1]) == 0
        assert not is_mounted(path)

    def test_a_busy_mount_is_reported_and_the_count_stays(self, store):
        layer_id = store.create(writable=True)
        path = Path(store.mount(layer_id))
        store.driver.unmount_timeout = 0.2
        before = snapshot(store)
        with open(path / "open-file", "w"):
            with pytest.raises(errors.DriverError, match="busy"):
                store.umount(layer_id)
            with pytest.raises(errors.DriverError, match="busy"):
                store.delete(layer_id, force=True)
            assert snapshot(store) == before
        assert store.lookup(layer_id).mount_count == 1 and is_mounted(path)
        assert store.umount(layer_id) == 0
        assert not is_mounted(path)
