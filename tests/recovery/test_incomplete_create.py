"""A create that never completed: its owner is gone, so the next open removes the layer
with every byte of it; while its owner lives, nobody touches it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventstore.errors import LayerIncomplete
from eventstore.opener import open_store
from replay.verify import check

from .support import (
    archive_or_skip,
    child_env,
    cli_ok,
    crash_at,
    driver_dir,
    events_after,
    last_lsn_on_disk,
    new_id,
    short_links_to,
    small_tar,
    summary,
    traces_of,
    wait_for_driver_work,
)

CREATE_FAILPOINTS = ["store.create.after-intent", "store.create.after-driver", "store.create.after-content"]


def removed_by_recovery(layer_id: str) -> list[tuple]:
    return [("recovery-started", None), ("layer-marked-incomplete", layer_id), ("layer-deleted", layer_id),
            ("recovery-finished", None)]


@pytest.mark.parametrize("failpoint", CREATE_FAILPOINTS)
def test_create_killed_before_completion_is_removed_with_all_its_data(made: Path, driver: str, failpoint: str):
    layer_id = new_id()
    crash_at(failpoint, made, "create", "--id", layer_id, "--name", "half")
    if failpoint != "store.create.after-intent":
        assert driver_dir(made, driver, layer_id).is_dir()
        if driver == "overlay":
            assert short_links_to(made, layer_id)
    before = last_lsn_on_disk(made)

    with open_store(made) as store:
        assert not store.exists(layer_id) and not store.exists("half")
        events = events_after(store, before)
        assert summary(events) == removed_by_recovery(layer_id)
        assert events[1].reason == "recovery"
        assert events[3].actions == 1
        assert check(store) == []
    assert traces_of(made, layer_id) == []


def test_a_half_made_child_is_removed_and_its_parent_stays_usable(made: Path, driver: str):
    with open_store(made) as store:
        parent = store.create(names=["base"])
    child = new_id()
    crash_at("store.create.after-driver", made, "create", "--id", child, "--parent", parent)
    with open_store(made) as store:
        assert [rec.id for rec in store.layers()] == [parent]
        assert store.index.children(parent) == []
        store.mount(parent)
        store.umount(parent)
        store.delete(parent)  # no child left to refuse it
        assert store.layers() == []
    assert traces_of(made, child) == [] and traces_of(made, parent) == []


def test_create_killed_after_its_content_loses_the_tar_split_too(made: Path, driver: str, tmp_path: Path):
    archive_or_skip("import_layer")
    tar = tmp_path / "layer.tar"
    tar.write_bytes(small_tar({"etc/hello": b"hello\n"}))
    layer_id = new_id()
    crash_at("store.create.after-content", made, "create", "--id", layer_id, str(tar))
    assert (made / "tarsplit" / f"{layer_id}.tar-split").exists()
    with open_store(made) as store:
        assert not store.exists(layer_id)
    assert traces_of(made, layer_id) == []


def test_a_layer_still_being_created_by_a_live_process_is_left_alone(made: Path, driver: str):
    layer_id = new_id()
    creator = subprocess.Popen(
        [sys.executable, "-m", "eventstore.cli", "--root", str(made), "create", "--id", layer_id],
        env=child_env("store.create.after-driver=sleep:30"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_driver_work(made, driver, layer_id)
        before = last_lsn_on_disk(made)
        with open_store(made) as store:
            assert store.lookup(layer_id).incomplete
            assert events_after(store, before) == []
            with pytest.raises(LayerIncomplete):
                store.delete(layer_id)
        assert cli_ok(made, "recover").strip() == "nothing to recover"  # the orphan sweep spares it too
        assert last_lsn_on_disk(made) == before
        assert driver_dir(made, driver, layer_id).is_dir()
    finally:
        creator.kill()
        creator.wait()

    with open_store(made) as store:  # now its owner is gone
        assert summary(events_after(store, before)) == removed_by_recovery(layer_id)
    assert traces_of(made, layer_id) == []


def test_recover_command_prints_what_it_did(made: Path, driver: str):
    layer_id = new_id()
    crash_at("store.create.after-driver", made, "create", "--id", layer_id)
    out = cli_ok(made, "recover")
    assert f"removed incomplete layer {layer_id}" in out
    assert traces_of(made, layer_id) == []
