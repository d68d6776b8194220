"""More than 128 layers on overlay (containers-storage's layers.bats: 300 stacked layers,
each adding a file, all visible in one mount): through the kernel's new mount API, one
``lowerdir+`` per layer, the option page is no limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventstore import mountapi
from eventstore.opener import open_store
from tests.store.support import is_mounted, unmount_everything_under

from .support import skip_unless_driver_runs

LAYERS = 300


@pytest.fixture(autouse=True)
def _no_mount_outlives_the_test(tmp_path: Path):
    yield
    unmount_everything_under(tmp_path)


def test_300_stacked_layers_mount_with_every_layers_file(tmp_path: Path):
    skip_unless_driver_runs("overlay")
    if not mountapi.available():
        pytest.skip("the kernel has no fsconfig lowerdir+ (Linux 6.8+): overlay stops at 128 layers here")
    with open_store(tmp_path / "store", "overlay") as store:
        parent = None
        for i in range(LAYERS):  # as the bats test: create, mount, write one file, unmount
            layer = store.create(parent=parent, writable=True)
            root = Path(store.mount(layer))
            (root / str(i)).write_text(str(i))
            store.umount(layer)
            parent = layer
        top = store.create(parent=parent, writable=True)
        root = Path(store.mount(top))
        try:
            assert is_mounted(root)
            assert sorted(os.listdir(root), key=int) == [str(i) for i in range(LAYERS)]
            assert all((root / str(i)).read_text() == str(i) for i in range(LAYERS))
            with open("/proc/self/mountinfo") as f:
                line = next(entry for entry in f if entry.split()[4] == os.path.realpath(root))
            assert line.count("lowerdir+=") == LAYERS  # one lower dir per parent, none cut
        finally:
            store.umount(top)
        assert store.lookup(top).mount_count == 0 and not is_mounted(root)
        assert len(store.parents(top)) == LAYERS


def test_without_the_new_api_a_chain_stops_at_128(tmp_path: Path):
    skip_unless_driver_runs("overlay")
    from eventstore import errors
    from eventstore.drivers.overlay import MAX_DEPTH

    with open_store(tmp_path / "store", "overlay", driver_options={"new_mount_api": False}) as store:
        parent = None
        for _ in range(MAX_DEPTH + 1):
            parent = store.create(parent=parent)
        with pytest.raises(errors.DriverError, match=f"at most {MAX_DEPTH}"):
            store.create(parent=parent)
        root = Path(store.mount(parent))  # the deepest chain it allows still mounts, through mount(2)
        assert is_mounted(root)
        store.umount(parent)
