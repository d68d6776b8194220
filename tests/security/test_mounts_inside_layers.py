"""Case 1 of issue 12: removal never crosses a filesystem boundary (DESIGN §4).

A container engine bind-mounts volumes into a layer's mount point; someone mounts a
tmpfs inside a half-made or orphaned layer. Delete, forced delete, recovery and the
orphan sweep must refuse (exit 3, naming the mount) or keep the thing, and every file
of the mounted filesystem must survive. The volumes here live on the same filesystem
as the store, so the bind mount has the store's ``st_dev``: only the mount table tells
it apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.recovery.support import crash_at, diff_dir, driver_dir, in_lost_found, new_id

from .support import bind_mount, cli, listing, make_volume, ok, one_line_error, tmpfs_mount, unmount


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    return make_volume(tmp_path / "volume")


def layer_json(root: Path, ref: str) -> dict:
    import json

    return json.loads(ok(root, "--json", "layer", ref))


def test_delete_force_refuses_a_volume_bind_mounted_into_the_mount_point(root: Path, driver: str,
                                                                        volume: Path):
    layer = ok(root, "create", "--writable", "--name", "c", driver=driver)
    mount_point = Path(ok(root, "mount", "c"))
    (mount_point / "data").mkdir()
    bind_mount(volume, mount_point / "data")
    if driver == "vfs":  # the same filesystem: st_dev alone cannot see this mount
        assert os.stat(mount_point / "data").st_dev == os.stat(mount_point).st_dev
    before, lsn = listing(volume), cli_last_lsn(root)

    err = one_line_error(cli(root, "delete", "--force", "c"), 3)

    assert str(mount_point / "data") in err
    assert listing(volume) == before
    assert cli_last_lsn(root) == lsn  # refused before anything was logged
    assert layer_json(root, "c")["mount-count"] == 1 and not layer_json(root, "c")["incomplete"]
    # once the volume is gone the same command deletes, and the volume never noticed
    unmount(mount_point / "data")
    assert ok(root, "delete", "--force", "c") == layer
    assert cli(root, "exists", "c").returncode == 1
    assert listing(volume) == before


def test_delete_refuses_a_tmpfs_mounted_in_the_layers_data(root: Path, driver: str):
    layer = ok(root, "create", "--writable", driver=driver)
    inside = diff_dir(root, driver, layer) / "cache"
    inside.mkdir()
    tmpfs_mount(inside)
    (inside / "file").write_bytes(b"on the tmpfs\n")
    lsn = cli_last_lsn(root)

    err = one_line_error(cli(root, "delete", layer), 3)

    assert str(inside) in err and "mounted" in err
    assert (inside / "file").read_bytes() == b"on the tmpfs\n"
    assert cli_last_lsn(root) == lsn
    unmount(inside)
    ok(root, "delete", layer)
    assert not driver_dir(root, driver, layer).exists()


def test_recovery_quarantines_a_half_made_layer_with_a_mount_inside(made: Path, driver: str):
    root = made
    layer = new_id()
    crash_at("store.create.after-driver", root, "create", "--id", layer)
    inside = diff_dir(root, driver, layer) / "mnt"
    inside.mkdir()
    tmpfs_mount(inside)
    (inside / "file").write_bytes(b"not the store's\n")

    out = ok(root, "recover")

    assert f"quarantined {layer}" in out and str(inside) in out
    assert (inside / "file").read_bytes() == b"not the store's\n"
    assert layer_json(root, layer)["quarantined"]
    # the operator unmounts; delete finishes the removal the crash began
    unmount(inside)
    ok(root, "delete", layer)
    assert not driver_dir(root, driver, layer).exists()


def make_orphan(root: Path, driver: str) -> Path:
    orphan = new_id()
    diff = diff_dir(root, driver, orphan)
    diff.mkdir(parents=True)
    (diff / "leftover").write_bytes(b"no event made me\n")
    return driver_dir(root, driver, orphan)


def test_the_orphan_sweep_keeps_an_orphan_with_a_tmpfs_inside(made: Path, driver: str):
    root = made
    guarded, plain = make_orphan(root, driver), make_orphan(root, driver)
    inside = guarded / "mnt"
    inside.mkdir()
    tmpfs_mount(inside)
    (inside / "file").write_bytes(b"someone's tmpfs\n")

    out = ok(root, "recover")

    assert (inside / "file").read_bytes() == b"someone's tmpfs\n"
    assert f"kept driver data {guarded.name} where it is" in out and str(inside) in out
    assert f"moved driver data {plain.name}" in out  # one item never blocks the rest
    assert not plain.exists() and in_lost_found(root, plain.name)
    history = ok(root, "history", "--type", "orphan-kept")
    assert guarded.name[:12] in history
    # kept, and reported again by the next sweep, until the operator acts
    assert f"kept driver data {guarded.name} where it is" in ok(root, "recover")
    unmount(inside)
    assert f"moved driver data {guarded.name}" in ok(root, "recover")
    assert not guarded.exists() and in_lost_found(root, guarded.name)


def cli_last_lsn(root: Path) -> int:
    from tests.store.support import last_lsn_on_disk

    return last_lsn_on_disk(root)
