"""One layer recovery cannot repair is quarantined: reported once, refused by every
operation, and the rest of the store works."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from eventstore.drivers.vfs import VfsDriver
from eventstore.errors import LayerQuarantined
from eventstore.opener import open_store
from replay.verify import check

from .support import (
    cli_ok,
    diff_dir,
    events_after,
    last_lsn_on_disk,
    new_id,
    run_cli,
    spawn_cli,
    summary,
    traces_of,
    wait_for_driver_work,
)


def make_unremovable(root: Path, driver: str, layer_id: str) -> Path:
    """An immutable file inside the layer: the driver's rmtree fails with EPERM."""
    stuck = diff_dir(root, driver, layer_id) / "stuck"
    stuck.write_bytes(b"x")
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    return stuck


def test_a_layer_that_cannot_be_removed_is_quarantined_and_the_rest_works(made: Path, driver: str):
    with open_store(made) as store:
        base = store.create(names=["base"])
    good, bad = new_id(), new_id()
    # both creators die together, after the last open (every writer open recovers)
    creators = []
    try:
        for layer_id in (good, bad):
            creators.append(spawn_cli(made, "create", "--id", layer_id, "--parent", base,
                                      failpoints="store.create.after-driver=sleep:60"))
            wait_for_driver_work(made, driver, layer_id)
    finally:
        for creator in creators:
            creator.kill()
            creator.wait()
    stuck = make_unremovable(made, driver, bad)
    before = last_lsn_on_disk(made)

    with open_store(made) as store:
        events = events_after(store, before)
        assert summary(events) == [
            ("recovery-started", None),
            ("layer-marked-incomplete", good), ("layer-deleted", good),
            ("layer-marked-incomplete", bad), ("layer-quarantined", bad),
            ("recovery-finished", None),
        ]
        assert "recovery failed" in events[4].reason and "stuck" in events[4].reason
        assert store.lookup(bad).quarantined == events[4].reason
        for refused in (lambda: store.mount(bad), lambda: store.hold(bad), lambda: store.fs_info(bad),
                        lambda: store.metadata(bad), lambda: store.set_names(bad, ["x"]),
                        lambda: store.create(parent=bad)):
            with pytest.raises(LayerQuarantined):
                refused()
        # everything else works
        other = store.create(parent=base, names=["other"])
        store.mount(other)
        store.hold(base)
        assert store.umount(other) == 0
        assert check(store) == []
    assert traces_of(made, good) == []

    after = last_lsn_on_disk(made)
    with open_store(made):
        pass
    assert last_lsn_on_disk(made) == after  # reported once, not at every open

    layer = run_cli(made, "--json", "layer", bad)
    assert b"recovery failed" in layer.stdout
    assert run_cli(made, "mount", bad).returncode == LayerQuarantined.exit_code

    # the operator fixes the cause; deleting the layer finishes what recovery began
    subprocess.run(["chattr", "-i", str(stuck)], check=True)
    cli_ok(made, "delete", bad)
    assert traces_of(made, bad) == []


def test_a_complete_layer_recovery_fails_on_is_quarantined_once(root: Path, monkeypatch):
    with open_store(root, "vfs") as store:
        broken, fine = store.create(), store.create()
        store.mount(broken)
        store.mount(fine)

    def is_mounted(self, layer_id: str) -> bool:
        if layer_id == broken:
            raise OSError(5, "Input/output error")
        return self.exists(layer_id)

    monkeypatch.setattr(VfsDriver, "is_mounted", is_mounted)
    before = last_lsn_on_disk(root)
    with open_store(root) as store:
        events = events_after(store, before)
        assert summary(events) == [("recovery-started", None), ("layer-quarantined", broken),
                                   ("recovery-finished", None)]
        with pytest.raises(LayerQuarantined):
            store.mount(broken)
        store.mount(fine)
        after = store.log.last_lsn
    with open_store(root):
        pass
    assert last_lsn_on_disk(root) == after
