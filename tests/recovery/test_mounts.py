"""Mount counts that no longer match the kernel: unmounted behind the store's back (or
by a process killed before it recorded the unmount), or recorded in an earlier boot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from eventstore.opener import open_store
from replay.verify import check

from .support import (cli_ok, crash_at, events_after, last_lsn_on_disk, mounts_under, overlay_or_skip, reboot,
                      summary)


def reconciled(layer_id: str) -> list[tuple]:
    return [("recovery-started", None), ("mounts-reconciled", layer_id), ("recovery-finished", None)]


@pytest.mark.parametrize("how", ["umount-behind-its-back", "umount-killed-before-recording"])
def test_a_mount_the_kernel_no_longer_has_is_reset(root: Path, how: str):
    overlay_or_skip(root)
    with open_store(root, "overlay") as store:
        layer_id = store.create()
        steady = store.create()
        path = store.mount(layer_id)
        steady_path = store.mount(steady)
        if how == "umount-behind-its-back":
            store.mount(layer_id)  # count 2: a stale count resets to zero, not one less
    assert path in mounts_under(root)
    if how == "umount-behind-its-back":
        subprocess.run(["umount", path], check=True)
    else:
        crash_at("store.umount.after-driver", root, "umount", layer_id)
    assert path not in mounts_under(root)
    before = last_lsn_on_disk(root)

    with open_store(root) as store:
        events = events_after(store, before)
        assert summary(events) == reconciled(layer_id)
        assert (events[1].count, events[1].reason) == (0, "not in the kernel's mount table")
        rec = store.lookup(layer_id)
        assert (rec.mount_count, rec.mount_point) == (0, "")
        assert store.lookup(steady).mount_count == 1  # still mounted for real: untouched
        assert steady_path in mounts_under(root)
        assert check(store) == []
        assert store.mount(layer_id) == path  # and it mounts again
        assert store.umount(layer_id) == 0


def test_mounts_recorded_in_an_earlier_boot_are_reset(made: Path, driver: str, monkeypatch):
    with open_store(made) as store:
        layer_id = store.create()
    monkeypatch.setenv("LAYERSTORE_BOOT_ID", "boot-one")
    cli_ok(made, "mount", layer_id)
    cli_ok(made, "mount", layer_id)
    reboot(made, monkeypatch, "boot-two")
    before = last_lsn_on_disk(made)

    with open_store(made) as store:
        events = events_after(store, before)
        assert summary(events) == reconciled(layer_id)
        assert events[1].reason == "mounted in an earlier boot"
        assert store.lookup(layer_id).mount_count == 0
        assert check(store) == []
        store.mount(layer_id)
        assert store.lookup(layer_id).mount_boot == "boot-two"
